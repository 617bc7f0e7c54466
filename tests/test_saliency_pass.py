"""The input-gradient saliency pass of the train step (docs/DESIGN.md#saliency-pass).

PuzzleMix / Co-Mixup / Guided-AP wiring: the clean term `2 clean_lam / N * CE(f(x), y)` taken
from the saliency pass itself, the pass's batch-norm mode, PuzzleMix's adversarial option and
its pixel-unit smoothness (the dataset's mean / std reach the op). Tiny CNN on the digits.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from storm_jax import errors
from storm_jax import mixing
from storm_jax import train
from storm_jax.mixing.puzzlemix import adversarial_start
from tests.test_train import digits_batch
from tests.test_train import load_config
from tests.test_train import setup_step
from tests.test_train import smoke_config

pytestmark = pytest.mark.usefixtures('key_reuse_checked')

GUIDED_AP = {'saliency': 'ap', 'pairing': 'greedy', 'prob': 1.0}


def _forward(ctx, params, batch_stats, x, train_mode=True):
  return ctx.model.apply({'params': params, 'batch_stats': batch_stats}, x, train=train_mode,
                         mutable=['batch_stats'])


def _ce(logits, labels):
  return jnp.mean(mixing.soft_cross_entropy(logits, labels))


def _by_hand_saliency(ctx, state, x, y, train_mode):
  """(saliency, mean CE, its batch-stats update) of the pass, computed here."""
  def loss(inputs):
    logits, upd = _forward(ctx, state.params, state.batch_stats, inputs, train_mode)
    return _ce(logits, y), upd['batch_stats']

  (value, stats), g = jax.value_and_grad(loss, has_aux=True)(x)
  return jnp.sqrt(jnp.mean(g * g, axis=-1)), value, stats


@pytest.mark.parametrize('objective,loss', [
    pytest.param('sum', 'softmax_bce', marks=pytest.mark.slow), ('mean', 'softmax_ce')])
def test_clean_term_is_the_saliency_pass_loss(objective, loss):
  """Guided-AP, clean_lam 1: loss = L(f(x_mix), y_mix) + 2/N CE(f(x), y) ('sum'; 'mean' divides
  by 1 + 2/N), the clean CE being the saliency pass's own (train mode, BN update kept, then the
  mixed pass); its parameter gradient is added, with no third forward pass."""
  config = smoke_config('guided_mixup', dict(GUIDED_AP, clean_lam=1.0),
                        **{'mix.objective': objective, 'loss': loss})
  state, ctx = setup_step(config)
  w = 2.0 * 1.0 / ctx.num_classes
  assert ctx.saliency_clean_weight == pytest.approx(w)
  batch = digits_batch()
  key = jax.random.key(4)
  inputs = jax.jit(functools.partial(train.mixed_inputs, ctx))(
      state, batch, train.step_key(key, state.step))
  x, y = inputs['x'], inputs['y_clean']
  _, clean_ce, clean_stats = _by_hand_saliency(ctx, state, x, y, True)
  np.testing.assert_allclose(inputs['clean_loss'], clean_ce, rtol=1e-6)
  chex.assert_trees_all_close(inputs['batch_stats'], clean_stats, rtol=1e-6, atol=1e-7)

  # By hand: the whole objective as one function of the parameters (two forward passes).
  def objective_fn(params):
    logits_c, upd = _forward(ctx, params, state.batch_stats, x)
    logits_m, upd = _forward(ctx, params, jax.lax.stop_gradient(upd['batch_stats']),
                             inputs['x_mix'])
    total = jnp.mean(mixing.LOSSES[loss](logits_m, inputs['y_mix'])) + w * _ce(logits_c, y)
    return (total / (1.0 + w) if objective == 'mean' else total), upd['batch_stats']

  (want, want_stats), want_grads = jax.jit(jax.value_and_grad(objective_fn, has_aux=True))(
      state.params)
  new_state, metrics = jax.jit(functools.partial(train.train_step, ctx=ctx))(state, batch, key)
  np.testing.assert_allclose(metrics['loss'], want, rtol=1e-5)
  np.testing.assert_allclose(metrics['l2_grads'], optax.tree.norm(want_grads), rtol=1e-4)
  chex.assert_trees_all_close(new_state.batch_stats, want_stats, rtol=1e-5, atol=1e-6)
  # The clean term's gradient is really there: the mixed term's alone differs.
  no_clean = jax.grad(lambda p: jnp.mean(mixing.LOSSES[loss](
      _forward(ctx, p, clean_stats, inputs['x_mix'])[0], inputs['y_mix'])))(state.params)
  scale = 1.0 if objective == 'sum' else 1.0 / (1.0 + w)
  assert not np.isclose(scale * float(optax.tree.norm(no_clean)), float(metrics['l2_grads']),
                        rtol=1e-3)


@pytest.mark.parametrize('mode', ['keep', pytest.param('discard', marks=pytest.mark.slow), 'eval'])
def test_saliency_batch_norm_mode(mode):
  """'keep': train mode, the pass's statistics update is the mixed pass's start; 'discard':
  train mode, update dropped; 'eval': running statistics (saliency of the eval-mode model),
  batch_stats untouched."""
  config = smoke_config('guided_mixup', GUIDED_AP, **{'mix.saliency_batch_stats': mode})
  train.validate_config(config)
  state, ctx = setup_step(config)
  # Running statistics that differ from any batch's, so train and eval mode differ.
  state = state.replace(batch_stats=jax.tree.map(lambda a: a + 0.5, state.batch_stats))
  batch = digits_batch()
  x = train.normalize(batch['image'], ctx.mean, ctx.std)
  y = jax.nn.one_hot(batch['label'], ctx.num_classes)
  out = jax.jit(functools.partial(train.saliency_pass, ctx))(state, x, y)
  assert out['clean_grads'] is None and out['adversarial'] is None
  sal, _, stats = _by_hand_saliency(ctx, state, x, y, mode != 'eval')
  np.testing.assert_allclose(out['saliency'], sal, rtol=1e-5, atol=1e-8)
  other, _, _ = _by_hand_saliency(ctx, state, x, y, mode == 'eval')  # the other BN mode's
  assert not np.allclose(out['saliency'], other, rtol=1e-3)
  want_stats = stats if mode == 'keep' else state.batch_stats
  chex.assert_trees_all_close(out['batch_stats'], want_stats, rtol=1e-6, atol=1e-7)
  if mode == 'keep':
    assert not np.allclose(jax.tree.leaves(stats)[0], jax.tree.leaves(state.batch_stats)[0])
  # The whole step: the mixed pass starts from the pass's statistics.
  key = jax.random.key(8)
  inputs = jax.jit(functools.partial(train.mixed_inputs, ctx))(
      state, batch, train.step_key(key, state.step))
  _, upd = _forward(ctx, state.params, want_stats, inputs['x_mix'])
  new_state, _ = jax.jit(functools.partial(train.train_step, ctx=ctx))(state, batch, key)
  chex.assert_trees_all_close(new_state.batch_stats, upd['batch_stats'], rtol=1e-5, atol=1e-6)


def test_eval_mode_step_leaves_only_the_mixed_pass_update():
  """PuzzleMix CIFAR setting (clean_lam 0 -> 'eval'): the step's new batch_stats are the mixed
  pass's update from the running statistics; the saliency is the eval-mode model's."""
  config = load_config('digits_storm', 'puzzlemix,smoke')
  config.preview_images = 0
  config.tensorboard = False
  assert config.mix.saliency_batch_stats == 'eval'
  config.mix.hparams.solver = 'chains'
  state, ctx = setup_step(config)
  batch = digits_batch()
  key = jax.random.key(6)
  inputs = jax.jit(functools.partial(train.mixed_inputs, ctx))(
      state, batch, train.step_key(key, state.step))
  chex.assert_trees_all_equal(inputs['batch_stats'], state.batch_stats)
  assert inputs['clean_grads'] is None
  _, upd = _forward(ctx, state.params, state.batch_stats, inputs['x_mix'])
  new_state, metrics = jax.jit(functools.partial(train.train_step, ctx=ctx))(state, batch, key)
  chex.assert_trees_all_close(new_state.batch_stats, upd['batch_stats'], rtol=1e-5, atol=1e-6)
  assert np.isfinite(metrics['loss'])


def test_puzzlemix_gets_the_dataset_normalisation():
  """The smoothness term and the adversarial clip are in [0, 1] pixels: the step's mixer has the
  dataset's mean / std; an explicit config value wins."""
  config = smoke_config('puzzlemix', {'block_nums': (2, 4)})
  info = train.dataset_info(config)
  ctx = train.make_context(config, train.make_mesh(), info)
  assert ctx.mixer.hparams['mean'] == tuple(info.mean)
  assert ctx.mixer.hparams['std'] == tuple(info.std)
  assert tuple(info.std) != (1.0,)
  config.mix.hparams.mean, config.mix.hparams.std = (0.0,), (1.0,)
  assert train.build_mixer(config, info).hparams['std'] == (1.0,)
  assert 'mean' not in train.build_mixer(smoke_config('mixup', {}), info).hparams


@pytest.mark.parametrize('adv_p', [0.0, pytest.param(1.0, marks=pytest.mark.slow)])
def test_puzzlemix_adversarial_switch(adv_p):
  """adv_p > 0: the pass runs on x + δ0 and the noise is u * clip(δ0 + (ε+2)/255 sign(g), ±ε/255)
  with g the pass's input gradient there (both coins up at adv_p = 1); adv_p = 0 (default): off."""
  eps = 10.0
  config = smoke_config('puzzlemix', {'block_nums': (2,), 'solver': 'chains', 'adv_p': adv_p,
                                      'adv_eps': eps, 'transport': False})
  state, ctx = setup_step(config)
  batch = digits_batch()
  x = train.normalize(batch['image'], ctx.mean, ctx.std)
  y = jax.nn.one_hot(batch['label'], ctx.num_classes)
  out = jax.jit(functools.partial(train.saliency_pass, ctx))(state, x, y, jax.random.key(12))
  if not adv_p:
    assert out['adversarial'] is None
    sal, _, _ = _by_hand_saliency(ctx, state, x, y, True)
    np.testing.assert_allclose(out['saliency'], sal, rtol=1e-5, atol=1e-8)
    return
  x_in, start, adv, u = adversarial_start(jax.random.key(12), x, adv_p=adv_p, adv_eps=eps, mean=ctx.mean,
                                          std=ctx.std)
  assert bool(adv.all())
  mean, std = np.asarray(ctx.mean), np.asarray(ctx.std)
  x01 = np.asarray(x) * std + mean
  start = np.asarray(start)
  assert np.abs(start).max() <= eps / 255 + 1e-7 and np.abs(start).max() > 0
  assert (x01 + start).min() >= -1e-6 and (x01 + start).max() <= 1 + 1e-6
  np.testing.assert_allclose(np.asarray(x_in), (x01 + start - mean) / std, rtol=1e-5, atol=1e-5)
  sal, _, _ = _by_hand_saliency(ctx, state, x_in, y, True)
  np.testing.assert_allclose(out['saliency'], sal, rtol=1e-5, atol=1e-8)
  g = jax.grad(lambda v: _ce(_forward(ctx, state.params, state.batch_stats, v)[0], y))(x_in)
  want = float(u) * np.clip(start + (eps + 2) / 255 * np.sign(np.asarray(g)), -eps / 255,
                            eps / 255)
  noise = np.asarray(out['adversarial']['noise'])
  np.testing.assert_allclose(noise, want, rtol=1e-5, atol=1e-7)  # float32 rounding of δ0
  assert np.array_equal(out['adversarial']['adv'], adv)
  nz = np.asarray(g) != 0
  assert np.array_equal(np.sign(noise[nz]), np.sign(np.asarray(g)[nz]))  # FGSM direction
  # The step's mixer adds it: with transport off and block_nums (2,), x_mix is the mask mix of
  # clip(x + δ) and clip(x + δ)[π] (pixel units), here checked against the op by hand.
  inputs = jax.jit(functools.partial(train.mixed_inputs, ctx))(
      state, batch, train.step_key(jax.random.key(12), state.step))
  mix_key, adv_key = jax.random.split(train.step_key(jax.random.key(12), state.step))
  sal_step = jax.jit(functools.partial(train.saliency_pass, ctx))(
      state, x, inputs['y_clean'], adv_key)
  params = ctx.mixer.sample(jax.random.fold_in(mix_key, 0), x.shape,
                            saliency=sal_step['saliency'], **sal_step['adversarial'])
  want_mix, _ = jax.jit(ctx.mixer.apply)(params, x, jax.nn.one_hot(batch['label'], 10))
  np.testing.assert_allclose(inputs['x_mix'], want_mix, rtol=1e-5, atol=1e-5)


def test_configs_pick_the_reference_bn_mode_and_digit_blocks():
  assert load_config('digits_storm', 'puzzlemix').mix.saliency_batch_stats == 'eval'
  assert load_config('digits_storm', 'comixup').mix.saliency_batch_stats == 'keep'
  assert load_config('digits_storm', 'guided_ap').mix.saliency_batch_stats == 'keep'
  assert load_config('digits_storm', 'rmix').mix.saliency_batch_stats == 'keep'
  assert load_config('tinyimagenet_puzzlemix').mix.saliency_batch_stats == 'keep'  # clean_lam 1
  config = load_config('digits_storm', 'puzzlemix,smoke')
  train.validate_config(config)
  config.mix.hparams.block_nums = (2, 4, 8, 16)  # CIFAR's default on 8x8 digits
  with pytest.raises(errors.UserError, match='block_nums.*divisible'):
    train.validate_config(config)


def test_clean_lam_needs_an_input_gradient_pass():
  config = smoke_config('guided_mixup', {'saliency': 'sr', 'clean_lam': 1.0})
  with pytest.raises(errors.UserError, match='mix.hparams.clean_lam'):
    train.validate_config(config)
  config = smoke_config('guided_mixup', dict(GUIDED_AP), **{'mix.saliency_batch_stats': 'x'})
  with pytest.raises(errors.UserError, match='mix.saliency_batch_stats'):
    train.validate_config(config)


@pytest.mark.parametrize('objective', ['sum', 'mean'])
def test_mixed_objective_takes_a_computed_clean_loss(objective):
  rng = np.random.default_rng(0)
  logits_mix, logits_clean = (jnp.asarray(rng.normal(size=(6, 5)), jnp.float32) for _ in '12')
  y = jax.nn.one_hot(jnp.arange(6) % 5, 5)
  w = jnp.float32(0.4)
  want = mixing.mixed_objective(logits_mix, y, logits_clean, y, clean_weight=w,
                                loss='softmax_bce', objective=objective)
  got = mixing.mixed_objective(logits_mix, y, clean_weight=w, loss='softmax_bce',
                               objective=objective,
                               clean_loss=jnp.mean(mixing.softmax_bce(logits_clean, y)))
  np.testing.assert_allclose(got, want, rtol=1e-6)
  mixed = jnp.mean(mixing.softmax_bce(logits_mix, y))
  got = mixing.mixed_objective(logits_mix, y, clean_weight=w, objective=objective,
                               loss='softmax_bce', clean_loss=jnp.float32(1.5))
  np.testing.assert_allclose(got, (mixed + 0.4 * 1.5) / (1.4 if objective == 'mean' else 1.0),
                             rtol=1e-6)


@pytest.mark.parametrize('method', ['comixup', 'guided_sr', 'guided_ap'])
def test_digits_configs_of_the_saliency_methods_validate(method):
  train.validate_config(load_config('digits_storm', method), device_count=1, process_count=1)
