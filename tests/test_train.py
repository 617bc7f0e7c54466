"""Tests of the train step, the objectives, evaluation and the loop (storm_jax.train).

Unit tests drive `train.train_step` / `train.eval_step` directly on the bundled digits with a
tiny CNN (seconds to compile); the end-to-end tests run `train_and_evaluate` on the smoke
config of `configs/digits_storm.py`, one per method family.
"""

from __future__ import annotations

import functools
import os
import pathlib
import signal

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from storm_jax import data
from storm_jax import mixing
from storm_jax import train
from storm_jax.utils import metric_writers

from _configs import load_config
from _configs import override

pytestmark = pytest.mark.usefixtures('key_reuse_checked', 'compilation_cache')

ROOT = pathlib.Path(__file__).resolve().parent.parent


def smoke_config(mix_name: str = 'none', hparams: dict | None = None, **overrides):
  config = load_config('digits_storm', 'smoke')
  config.mix.name = mix_name
  config.mix.hparams = dict(hparams or {})
  config.preview_images = 0
  config.tensorboard = False
  return override(config, overrides)


_STATES = {}


def setup_step(config):
  """(fresh train state, step context) for `config` on all devices.

  The initial state depends only on the model, optimiser and schedule length: it is built
  (compiled) once per module and copied, since the train step donates it.
  """
  info = train.dataset_info(config)
  mesh = train.make_mesh()
  ctx = train.make_context(config, mesh, info)
  spe, n = train.steps_per_epoch(config, info), train.total_steps(config, info)
  cache_key = (config.model.to_json(), config.optim.to_json(), config.seed, spe, n)
  if cache_key not in _STATES:
    tx, _ = train.make_optimizer(config, spe, n)
    _STATES[cache_key] = train.create_train_state(config, ctx.model, jax.random.key(config.seed),
                                                  mesh, tx=tx, input_shape=info.image_shape)
  state = jax.tree.map(jnp.copy, _STATES[cache_key])
  return state, ctx


def digits_batch(b: int = 16, start_step: int = 0):
  it = data.train_iterator('digits', global_batch_size=b, seed=0, start_step=start_step)
  return {k: jnp.asarray(v) for k, v in next(it).items()}


def forward(ctx, params, batch_stats, x):
  return ctx.model.apply({'params': params, 'batch_stats': batch_stats}, x, train=True,
                         mutable=['batch_stats'])


# --------------------------------------------------------------------------------------
# Objectives, label smoothing, the mixing switch.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize('mix_name,hparams', [('none', {}), ('mixup', {'alpha': 1.0})])
def test_label_smoothing_applied_exactly_once(mix_name, hparams):
  config = smoke_config(mix_name, hparams, label_smoothing=0.1)
  state, ctx = setup_step(config)
  batch = digits_batch()
  out = jax.jit(functools.partial(train.mixed_inputs, ctx))(state, batch, jax.random.key(1))
  y_mix, y_clean = np.asarray(out['y_mix']), np.asarray(out['y_clean'])
  np.testing.assert_allclose(y_mix.sum(-1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(y_clean.sum(-1), 1.0, rtol=1e-6)
  # Clean labels: on = 1 - eps + eps/N, off = eps/N (once, not twice).
  labels = np.asarray(batch['label'])
  np.testing.assert_allclose(y_clean[np.arange(16), labels], 0.9 + 0.01, rtol=1e-6)
  np.testing.assert_allclose(np.sort(y_clean, -1)[:, :-1], 0.01, rtol=1e-5)
  # Mixed labels: a class absent from both partners gets exactly eps/N.
  assert np.isclose(y_mix.min(), 0.01, rtol=1e-5)
  assert (y_mix >= 0.01 - 1e-6).all()


@pytest.mark.slow  # four steps and a forward pass: two programs
def test_mixing_off_boundary_does_not_retrace():
  config = smoke_config('mixup', {'alpha': 1.0}, **{'mix.off_after_step': 2,
                                                     'num_train_steps': 4})
  state, ctx = setup_step(config)
  def step_fn(state, batch, key):
    return train.train_step(state, batch, key, ctx=ctx)

  step = jax.jit(chex.assert_max_traces(step_fn, n=1))
  key = jax.random.key(3)
  mix_on = []
  for i in range(4):
    batch = digits_batch(start_step=i)
    if i == 3:  # Mixing is off: the loss is the plain clean cross-entropy.
      logits, _ = forward(ctx, state.params, state.batch_stats,
                          train.normalize(batch['image'], ctx.mean, ctx.std))
      want = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch['label']))
    state, metrics = step(state, batch, key)
    mix_on.append(float(metrics['mix_on']))
  assert mix_on == [1.0, 1.0, 0.0, 0.0]
  np.testing.assert_allclose(metrics['loss'], want, rtol=1e-5)


def test_mix_off_step_from_epochs():
  config = smoke_config(**{'num_train_steps': None, 'num_epochs': 10.0, 'mix.off_last_epochs': 2})
  info = train.dataset_info(config)
  spe = train.steps_per_epoch(config, info)
  assert train.mix_off_step(config, info) == 8 * spe
  config.mix.off_last_epochs = 0
  assert train.mix_off_step(config, info) == train.total_steps(config, info) == 10 * spe


def test_train_examples_sets_the_epoch_length():
  """dataset.train_examples (reduced protocols): an epoch is that many examples."""
  config = smoke_config(**{'num_train_steps': None, 'num_epochs': 3.0, 'batch_size': 16})
  info = train.dataset_info(config)
  assert train.steps_per_epoch(config, info) == info.num_train // 16
  config.dataset.train_examples = 100
  assert train.steps_per_epoch(config, info) == 100 // 16
  assert train.total_steps(config, info) == 3 * (100 // 16)
  config.dataset.train_examples = 10 * info.num_train  # more than the split: the split
  assert train.steps_per_epoch(config, info) == info.num_train // 16


@pytest.mark.parametrize('single_pass,objective', [
    (False, 'sum'), pytest.param(True, 'sum', marks=pytest.mark.slow),
    pytest.param(False, 'mean', marks=pytest.mark.slow)])
def test_clean_term_objective(single_pass, objective):
  """StoRM: loss = CE(f(x), y) + CE(f(x_mix), y_mix) ('sum') or half that ('mean'),
  batch-norm statistics chained."""
  config = smoke_config('storm', {'k': 2, 'beta': 1.0}, **{'mix.single_pass': single_pass,
                                                           'mix.objective': objective})
  state, ctx = setup_step(config)
  assert ctx.mixer.clean_loss_weight == 1.0
  batch = digits_batch()
  key = jax.random.key(5)
  step_key = train.step_key(key, state.step)
  inputs = jax.jit(functools.partial(train.mixed_inputs, ctx))(state, batch, step_key)
  if single_pass:
    logits, upd = forward(ctx, state.params, state.batch_stats,
                          jnp.concatenate([inputs['x'], inputs['x_mix']]))
    logits_clean, logits_mix = logits[:16], logits[16:]
  else:
    logits_clean, upd = forward(ctx, state.params, state.batch_stats, inputs['x'])
    logits_mix, upd = forward(ctx, state.params, upd['batch_stats'], inputs['x_mix'])
  ce = lambda z, t: np.mean(-np.sum(np.asarray(t) * jax.nn.log_softmax(z), -1))
  want = ce(logits_mix, inputs['y_mix']) + ce(logits_clean, inputs['y_clean'])
  want = want / 2 if objective == 'mean' else want
  want_stats = upd['batch_stats']
  new_state, metrics = jax.jit(functools.partial(train.train_step, ctx=ctx))(state, batch, key)
  np.testing.assert_allclose(metrics['loss'], want, rtol=1e-5)
  chex.assert_trees_all_close(new_state.batch_stats, want_stats, rtol=1e-5, atol=1e-6)
  assert not np.allclose(inputs['x_mix'], inputs['x'])  # It really mixed.


@pytest.mark.parametrize('keep', [True, pytest.param(False, marks=pytest.mark.slow)])
def test_rmix_saliency_pass_batch_stats(keep):
  """R-Mix: the saliency pass's batch-norm update is kept (reference) or discarded."""
  config = smoke_config('rmix', {'alpha': 1.0, 'grid_sizes': (2, 4)}, **{
      'mix.saliency_batch_stats': 'keep' if keep else 'discard'})
  state, ctx = setup_step(config)
  batch = digits_batch()
  key = jax.random.key(7)
  step_key = train.step_key(key, state.step)
  inputs = jax.jit(functools.partial(train.mixed_inputs, ctx))(state, batch, step_key)
  _, upd_clean = forward(ctx, state.params, state.batch_stats, inputs['x'])
  start = upd_clean['batch_stats'] if keep else state.batch_stats
  chex.assert_trees_all_close(inputs['batch_stats'], start, rtol=1e-6, atol=1e-7)
  _, upd = forward(ctx, state.params, start, inputs['x_mix'])
  new_state, metrics = jax.jit(functools.partial(train.train_step, ctx=ctx))(state, batch, key)
  chex.assert_trees_all_close(new_state.batch_stats, upd['batch_stats'], rtol=1e-5, atol=1e-6)
  assert np.isfinite(metrics['loss'])


@pytest.mark.slow
def test_rmix_no_gradient_through_mask():
  config = smoke_config('rmix', {'alpha': 1.0, 'grid_sizes': (2, 4)})
  state, ctx = setup_step(config)
  batch = digits_batch()

  def mixed_sum(params):
    s = state.replace(params=params)
    out = train.mixed_inputs(ctx, s, batch, jax.random.key(2))
    return jnp.sum(out['x_mix']) + jnp.sum(out['y_mix'])

  grads = jax.jit(jax.grad(mixed_sum))(state.params)
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads))


def test_multimix_trains_on_k_times_b():
  config = smoke_config('multimix', {'base': 'mixup', 'K': 3, 'alpha': 1.0})
  state, ctx = setup_step(config)
  batch = digits_batch()
  out = jax.jit(functools.partial(train.mixed_inputs, ctx))(state, batch, jax.random.key(1))
  assert out['x_mix'].shape == (48, 8, 8, 1) and out['y_mix'].shape == (48, 10)
  _, metrics = jax.jit(functools.partial(train.train_step, ctx=ctx))(state, batch,
                                                                    jax.random.key(1))
  assert np.isfinite(metrics['loss'])


def soft_ce(logits, labels):
  return np.mean(-np.sum(np.asarray(labels) * np.asarray(jax.nn.log_softmax(logits)), -1))


def js_by_hand(logits, b):
  """AugMix's Jensen-Shannon term of [clean; view 1; view 2] logits, by hand (float64): the
  mean over the views and the batch."""
  p = np.asarray(jax.nn.softmax(logits.reshape(3, b, -1)), np.float64)
  log_m = np.log(np.clip(p.mean(0), 1e-7, 1.0))
  return np.mean(np.sum(p * (np.log(p) - log_m), -1))


def assert_mixing_off_step_is_clean_ce(step, ctx, state, batch, key, x, y):
  """A 3-view (JSD) step with mixing off: three copies of the clean batch, no JS term."""
  state = state.replace(step=state.step + 1)
  logits, _ = forward(ctx, state.params, state.batch_stats, jnp.tile(x, (3, 1, 1, 1)))
  _, metrics = step(state, batch, key)
  assert float(metrics['mix_on']) == 0.0
  np.testing.assert_allclose(metrics['loss'], soft_ce(logits[:x.shape[0]], y), rtol=1e-5)


@pytest.mark.slow
def test_augmix_step_is_clean_ce_plus_12_js():
  """AugMix: the mixer gets pixel values, its output is normalised after; one forward pass over
  [clean; aug1; aug2] and loss = CE(f(x), y) + 12 JS; mixing off: the clean CE alone."""
  config = smoke_config('augmix', {}, **{'mix.off_after_step': 1})
  state, ctx = setup_step(config)
  assert ctx.mixer.needs_pixels and ctx.mixer.consistency_weight == 12.0
  batch = digits_batch()
  key = jax.random.key(11)
  y = jax.nn.one_hot(batch['label'], 10)
  # By hand: AugMix of the uint8 pixels (one device: the key folded with device index 0).
  pixels, _ = jax.jit(ctx.mixer)(jax.random.fold_in(train.step_key(key, 0), 0),
                                 batch['image'].astype(jnp.float32), y)
  x_mix = train.normalize(pixels / 255.0, ctx.mean, ctx.std)
  x = train.normalize(batch['image'], ctx.mean, ctx.std)
  np.testing.assert_allclose(x_mix[:16], x, rtol=1e-6)  # clean view first
  assert not np.allclose(x_mix[16:32], x, atol=0.1)  # the views are augmented
  logits, upd = forward(ctx, state.params, state.batch_stats, x_mix)
  js = js_by_hand(logits, 16)
  want = soft_ce(logits[:16], y) + 12.0 * js
  step = jax.jit(functools.partial(train.train_step, ctx=ctx))
  new_state, metrics = step(state, batch, key)
  assert js > 1e-4
  np.testing.assert_allclose(metrics['loss'], want, rtol=1e-5)
  chex.assert_trees_all_close(new_state.batch_stats, upd['batch_stats'], rtol=1e-5, atol=1e-6)
  assert_mixing_off_step_is_clean_ce(step, ctx, state, batch, key, x, y)  # same program


def _mix_input_of(consumer, lam, perm):
  """Interceptor replacing the input h of layer `consumer` by lam h + (1 - lam) h[perm]."""
  def interceptor(next_fun, args, kwargs, context):
    if context.method_name == '__call__' and context.module.scope.path == (consumer,):
      h = args[0]
      args = (lam * h + (1 - lam) * h[perm],) + tuple(args[1:])
    return next_fun(*args, **kwargs)
  return interceptor


def test_manifold_mixup_step_mixes_the_drawn_hidden_point():
  """Manifold Mixup: the step == the model with the block output mixed at the drawn point;
  mixing off: point -1 and the clean step."""
  config = smoke_config('manifold_mixup', {'alpha': 2.0, 'points': (1, 2)},
                        **{'mix.off_after_step': 1})
  state, ctx = setup_step(config)
  batch = digits_batch()
  key = jax.random.key(13)
  fn = jax.jit(functools.partial(train.mixed_inputs, ctx))
  inputs = fn(state, batch, train.step_key(key, 0))
  hidden = jax.device_get(inputs['hidden'])
  assert hidden['perm'].shape == (1, 16) and hidden['point'][0] in (1, 2)
  lam, perm, point = float(hidden['lam'][0]), hidden['perm'][0], int(hidden['point'][0])
  assert 0.0 < lam < 1.0 and not np.array_equal(perm, np.arange(16))
  x = train.normalize(batch['image'], ctx.mean, ctx.std)
  y = jax.nn.one_hot(batch['label'], 10)
  # A hidden point: the input is not mixed (the step normalises in its own program: equal up
  # to float32 rounding; a mixed input would differ by ~1).
  np.testing.assert_allclose(inputs['x_mix'], x, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(inputs['y_mix'], lam * y + (1 - lam) * y[perm], rtol=1e-6)
  # By hand: cnn_small's block `point` output feeds conv{point + 1}.
  with nn.intercept_methods(_mix_input_of(f'conv{point + 1}', lam, perm)):
    logits, upd = forward(ctx, state.params, state.batch_stats, x)
  step = jax.jit(functools.partial(train.train_step, ctx=ctx))
  new_state, metrics = step(state, batch, key)
  np.testing.assert_allclose(metrics['loss'], soft_ce(logits, inputs['y_mix']), rtol=1e-5)
  chex.assert_trees_all_close(new_state.batch_stats, upd['batch_stats'], rtol=1e-5, atol=1e-6)
  # Mixing off (same programs): no hidden point, the clean step.
  state = state.replace(step=state.step + 1)
  assert int(fn(state, batch, train.step_key(key, 1))['hidden']['point'][0]) == -1
  logits, _ = forward(ctx, state.params, state.batch_stats, x)
  _, metrics = step(state, batch, key)
  np.testing.assert_allclose(metrics['loss'], soft_ce(logits, y), rtol=1e-5)


@pytest.mark.slow
def test_saliencymix_step_boxes_the_fine_grained_saliency_peak():
  """SaliencyMix: the step passes OpenCV's fine-grained saliency of the uint8 batch; the
  pasted box is centred on the partner's saliency peak."""
  config = smoke_config('saliencymix', {'alpha': 1.0})
  state, ctx = setup_step(config)
  batch = digits_batch()
  key = train.step_key(jax.random.key(17), 0)
  inputs = jax.jit(functools.partial(train.mixed_inputs, ctx))(state, batch, key)
  x = train.normalize(batch['image'], ctx.mean, ctx.std)
  saliency = mixing.fine_grained_saliency(batch['image'])
  params = ctx.mixer.sample(jax.random.fold_in(key, 0), x.shape, saliency=saliency)
  want_x, want_y = ctx.mixer.apply(params, x, jax.nn.one_hot(batch['label'], 10))
  # The step normalises inside its own program: pixels equal up to float32 rounding.
  np.testing.assert_allclose(inputs['x_mix'], want_x, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(inputs['y_mix'], want_y)
  # The partner of sample 0 gives the box's centre: its map's first maximum.
  cy, cx = np.unravel_index(np.argmax(np.asarray(saliency)[int(params['perm'][0])]), (8, 8))
  pasted = ~np.isclose(np.asarray(inputs['x_mix']), np.asarray(x), rtol=0, atol=1e-5)
  changed = np.any(pasted, axis=(0, 3))  # [H, W]
  rows, cols = np.nonzero(changed)
  assert rows.size and rows.min() <= cy <= rows.max() and cols.min() <= cx <= cols.max()


def test_step_keys_differ_per_step_and_replay():
  """step_key(key, step): different draws per step, identical draws for the same step."""
  config = smoke_config('mixup', {'alpha': 1.0})
  state, ctx = setup_step(config)
  batch = digits_batch()
  fn = jax.jit(functools.partial(train.mixed_inputs, ctx))
  a = fn(state, batch, train.step_key(jax.random.key(0), 0))['x_mix']
  b = fn(state, batch, train.step_key(jax.random.key(0), 0))['x_mix']
  c = fn(state, batch, train.step_key(jax.random.key(0), 1))['x_mix']
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


# --------------------------------------------------------------------------------------
# Optimiser and schedules.
# --------------------------------------------------------------------------------------


def test_multistep_warmup_cosine_schedules():
  config = smoke_config(**{'optim.schedule': 'multistep', 'optim.milestones': (2, 4),
                           'optim.lr': 0.2, 'optim.gamma': 0.1})
  lr, _ = train.make_schedules(config, spe=10, num_steps=60)
  np.testing.assert_allclose([lr(0), lr(19), lr(20), lr(39), lr(40), lr(59)],
                             [0.2, 0.2, 0.02, 0.02, 0.002, 0.002], rtol=1e-6)
  config.optim.warmup_epochs = 1.0
  lr, _ = train.make_schedules(config, spe=10, num_steps=60)
  np.testing.assert_allclose([lr(0), lr(5), lr(10), lr(19), lr(20)],
                             [0.0, 0.1, 0.2, 0.2, 0.02], rtol=1e-6, atol=1e-9)
  config.optim.warmup_epochs = 0.0
  config.optim.schedule = 'cosine'
  lr, _ = train.make_schedules(config, spe=10, num_steps=100)
  np.testing.assert_allclose([lr(0), lr(50), lr(100)], [0.2, 0.1, 0.0], atol=1e-6)


def test_onecycle_matches_pytorch_endpoints():
  """R-Mix OneCycle: 3e-3 -> 0.3 at 30 % -> 3e-7; momentum 0.95 -> 0.85 -> 0.95."""
  config = smoke_config(**{'optim.schedule': 'onecycle', 'optim.lr': 0.3,
                           'optim.cycle_momentum': True})
  lr, mom = train.make_schedules(config, spe=10, num_steps=1000)
  np.testing.assert_allclose([lr(0), lr(300), lr(1000)], [3e-3, 0.3, 3e-7], rtol=1e-4)
  np.testing.assert_allclose([mom(0), mom(300), mom(1000)], [0.95, 0.85, 0.95], rtol=1e-6)
  # The optimiser steps with both schedules: torch.optim.SGD under OneCycleLR by hand over the
  # rise (momentum 0.95 -> 0.925 -> 0.875 -> 0.85, not the config's constant 0.9).
  config.optim.nesterov, config.optim.weight_decay = False, 0.01
  lr, mom = train.make_schedules(config, spe=1, num_steps=10)
  tx, _ = train.make_optimizer(config, 1, 10)
  p = jnp.array([1.0, -2.0])
  opt_state = tx.init(p)
  want_p, buf = np.array([1.0, -2.0]), np.zeros(2)
  grads = [jnp.array(g) for g in ([0.5, 0.25], [-1.0, 2.0], [3.0, 1.0], [0.5, -4.0])]
  for t, g in enumerate(grads):
    updates, opt_state = tx.update(g, opt_state, p)
    p = optax.apply_updates(p, updates)
    buf = float(mom(t)) * buf + (np.asarray(g) + 0.01 * want_p)
    want_p = want_p - float(lr(t)) * buf
  assert float(mom(3)) == pytest.approx(0.85)
  np.testing.assert_allclose(p, want_p, rtol=1e-6)


def test_sgd_matches_pytorch_update_rule():
  """torch.optim.SGD(lr, momentum, nesterov=True, weight_decay): two steps by hand."""
  config = smoke_config(**{'optim.schedule': 'constant', 'optim.lr': 0.1,
                           'optim.momentum': 0.9, 'optim.nesterov': True,
                           'optim.weight_decay': 0.01})
  tx, _ = train.make_optimizer(config, 10, 100)
  p = jnp.array([1.0, -2.0])
  opt_state = tx.init(p)
  want_p, buf = np.array([1.0, -2.0]), np.zeros(2)
  for g in (jnp.array([0.5, 0.25]), jnp.array([-1.0, 2.0])):
    updates, opt_state = tx.update(g, opt_state, p)
    p = optax.apply_updates(p, updates)
    d = np.asarray(g) + 0.01 * want_p
    buf = 0.9 * buf + d
    want_p = want_p - 0.1 * (d + 0.9 * buf)
  np.testing.assert_allclose(p, want_p, rtol=1e-6)


# --------------------------------------------------------------------------------------
# Evaluation.
# --------------------------------------------------------------------------------------


@pytest.mark.slow  # a step, then one eval program per batch size
def test_eval_is_exact_and_independent_of_batch_size():
  config = smoke_config('storm', {'k': 2, 'beta': 1.0})
  state, ctx = setup_step(config)
  state, _ = jax.jit(functools.partial(train.train_step, ctx=ctx))(state, digits_batch(),
                                                                  jax.random.key(0))
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  info = train.dataset_info(config)
  sharding = jax.sharding.NamedSharding(ctx.mesh, jax.sharding.PartitionSpec('data'))
  eval_fn = jax.jit(functools.partial(train.eval_step, ctx=ctx))
  results = []
  for bs in (7, 64, 296, 500):
    config.eval_batch_size = bs
    results.append(train.evaluate_split(eval_fn, variables, config, sharding))
  # Reference: every eval image, unmixed, in one forward pass.
  batches = list(data.eval_iterator('digits', global_batch_size=1000))
  images = np.concatenate([b['image'][b['mask']] for b in batches])
  labels = np.concatenate([b['label'][b['mask']] for b in batches])
  logits = ctx.model.apply(variables, train.normalize(images, ctx.mean, ctx.std), train=False)
  acc = float(np.mean(np.argmax(logits, -1) == labels))
  nll = float(np.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels)))
  for r in results:
    assert r['num_examples'] == info.num_eval == len(labels)
    assert r['accuracy'] == pytest.approx(acc, abs=1e-9)
    assert r['nll'] == pytest.approx(nll, rel=1e-5)
    assert r['top5_accuracy'] >= r['accuracy']


def test_nonfinite_loss_stops_naming_the_step(tmp_path):
  writer = metric_writers.MetricWriter(str(tmp_path), tensorboard=False)
  window = train.MetricsWindow(writer)
  for step, loss in ((11, 2.0), (12, np.nan), (13, np.inf)):
    window.add(step, {'loss': jnp.float32(loss)}, images=0)
  with pytest.raises(FloatingPointError, match='at step 12'):
    window.flush()
  rows = metric_writers.read_jsonl(writer.path)
  assert rows[-1] == {'step': 13, 'train_loss': 'nan'}  # written before raising


# --------------------------------------------------------------------------------------
# End to end, one per method family: train, checkpoint, resume.
# --------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize('mix_name,hparams', [
    ('none', {}),                                          # vanilla
    ('cutmix', {'alpha': 1.0}),                            # two-image mixing
    ('storm', {'k': 2, 'beta': 1.0}),                      # + clean CE term
    ('rmix', {'alpha': 1.0, 'grid_sizes': (2, 4)}),        # + saliency pass
    ('multimix', {'base': 'mixup', 'K': 2, 'alpha': 1.0}),  # K*B samples
    ('augmix', {}),                                        # pixels in, 3B rows, JSD
    ('manifold_mixup', {'alpha': 2.0}),                    # hidden-state mixing
])
def test_end_to_end_train_checkpoint_resume(tmp_path, mix_name, hparams):
  workdir = str(tmp_path / 'run')
  config = smoke_config(mix_name, hparams, num_train_steps=3, checkpoint_every_steps=2,
                        log_every_steps=1, preview_images=4 if mix_name == 'storm' else 0)
  first = train.train_and_evaluate(config, workdir)
  assert first['step'] == 3 and not first['stopped_early']
  assert 0.0 <= first['eval_accuracy'] <= 1.0 and np.isfinite(first['eval_nll'])
  assert first['eval_num_examples'] == train.dataset_info(config).num_eval
  ckpt_dir = os.path.join(workdir, 'checkpoints')
  assert sorted(int(s) for s in os.listdir(ckpt_dir) if s.isdigit()) == [2, 3]
  if mix_name == 'storm':
    assert os.path.getsize(os.path.join(workdir, 'mixed_batch.png')) > 1000
  # Resume: a longer run continues from step 3 instead of starting over.
  config.num_train_steps = 4
  second = train.train_and_evaluate(config, workdir)
  assert second['step'] == 4
  rows = metric_writers.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  train_steps = [r['step'] for r in rows if 'train_loss' in r]
  assert train_steps == [1, 2, 3, 4]  # No step replayed, none skipped.


@pytest.mark.slow  # the whole loop
def test_sigterm_saves_and_stops(tmp_path, monkeypatch):
  workdir = str(tmp_path / 'run')
  config = smoke_config('mixup', {'alpha': 1.0}, num_train_steps=50, checkpoint_every_steps=0)
  real = data.train_iterator

  def preempted(*args, **kwargs):
    for i, batch in enumerate(real(*args, **kwargs)):
      if i == 3:
        os.kill(os.getpid(), signal.SIGTERM)  # Delivered while the loop runs.
      yield batch

  monkeypatch.setattr(data, 'train_iterator', preempted)
  summary = train.train_and_evaluate(config, workdir)
  assert summary['stopped_early'] and summary['step'] < 50
  assert summary['status'] == 'preempted'
  steps = [int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints')) if s.isdigit()]
  assert steps == [summary['step']]
  written = metric_writers.read_summary(workdir)
  assert written['status'] == 'preempted' and written['step'] == summary['step']


@pytest.mark.parametrize('status,code', [('preempted', 75), ('finished', None),
                                         ('halted', None)])
def test_main_exit_status_tells_preempted_from_finished(tmp_path, monkeypatch, status, code):
  """A scheduler requeues on 75 (EX_TEMPFAIL): SIGTERM saved the run, it is not finished."""
  from absl.testing import flagsaver  # pylint: disable=g-import-not-at-top
  from storm_jax import main as main_lib  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(train, 'train_and_evaluate', lambda config, workdir: {'status': status})
  if not main_lib.FLAGS.is_parsed():
    main_lib.FLAGS(['main', f'--workdir={tmp_path}', f'--config={ROOT}/configs/digits_storm.py'])
  with flagsaver.flagsaver(workdir=str(tmp_path)):
    if code is None:
      main_lib.main(['main'])
    else:
      with pytest.raises(SystemExit) as e:
        main_lib.main(['main'])
      assert e.value.code == code

def test_main_uses_the_persistent_compilation_cache(tmp_path, monkeypatch):
  """`compilation_cache_dir` (default ~/.cache/storm_jax/jax) is where JAX caches programs."""
  from storm_jax import main as main_lib  # pylint: disable=g-import-not-at-top
  names = ('jax_compilation_cache_dir', 'jax_persistent_cache_min_compile_time_secs')
  old = {n: getattr(jax.config, n) for n in names}
  monkeypatch.delenv('JAX_COMPILATION_CACHE_DIR', raising=False)
  try:
    assert main_lib.use_compilation_cache('') is None
    assert jax.config.jax_compilation_cache_dir == old[names[0]]  # off: untouched
    monkeypatch.setenv('HOME', str(tmp_path))
    assert main_lib.use_compilation_cache('~/cache') == str(tmp_path / 'cache')
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / 'cache')
    monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', str(tmp_path / 'env'))
    assert main_lib.use_compilation_cache('~/cache') == str(tmp_path / 'env')
    assert smoke_config().compilation_cache_dir == '~/.cache/storm_jax/jax'
  finally:
    for n, v in old.items():
      jax.config.update(n, v)
