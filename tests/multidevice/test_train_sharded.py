"""8 simulated CPU devices: the sharded train step, per-device mixing, cross-mesh restore.

Run through tests/test_multidevice.py (it sets XLA_FLAGS before JAX starts).
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from storm_jax import checkpointing
from storm_jax import data
from storm_jax import train

from _configs import load_config
from _configs import override

pytestmark = pytest.mark.usefixtures('key_reuse_checked', 'compilation_cache')


def smoke_config(mix_name, hparams, **overrides):
  config = load_config('digits_storm', 'smoke')
  config.mix.name = mix_name
  config.mix.hparams = hparams
  return override(config, overrides)


_STATES = {}


def setup(config, devices):
  """(fresh state, ctx, jitted step, batch sharding); initial states are built once."""
  info = train.dataset_info(config)
  mesh = train.make_mesh(devices)
  steps = train.make_steps(config, mesh, info)
  cache_key = (len(devices), config.model.to_json(), config.optim.to_json())
  if cache_key not in _STATES:
    tx, _ = train.make_optimizer(config, train.steps_per_epoch(config, info),
                                 train.total_steps(config, info))
    _STATES[cache_key] = train.create_train_state(config, steps.ctx.model, jax.random.key(0),
                                                  mesh, tx=tx, input_shape=info.image_shape)
  state = jax.tree.map(jnp.copy, _STATES[cache_key])  # The step donates its state.
  return state, steps.ctx, steps.train, steps.batch_sharding


def batches(n, b=16):
  it = data.train_iterator('digits', global_batch_size=b, seed=0)
  return [next(it) for _ in range(n)]


def test_mesh_is_data_axis_auto():
  mesh = train.make_mesh()
  assert mesh.axis_names == ('data',) and mesh.shape['data'] == 8
  assert mesh.axis_types == (jax.sharding.AxisType.Auto,)


def test_sharded_step_equals_single_device_step_global_scope():
  config = smoke_config('storm', {'k': 2, 'beta': 1.0}, **{'mix.scope': 'global'})
  key = jax.random.key(0)
  results = {}
  for n in (8, 1):
    state, _, step, sharding = setup(config, jax.devices()[:n])
    losses = []
    for batch in batches(3):
      state, metrics = step(state, data.to_global(batch, sharding), key)
      losses.append(float(metrics['loss']))
    results[n] = (losses, jax.device_get(state.params), jax.device_get(state.batch_stats))
  assert len(state.params['head']['kernel'].sharding.device_set) == 1
  np.testing.assert_allclose(results[8][0], results[1][0], rtol=2e-5)
  chex.assert_trees_all_close(results[8][1], results[1][1], rtol=1e-4, atol=1e-6)
  chex.assert_trees_all_close(results[8][2], results[1][2], rtol=1e-4, atol=1e-6)


def test_device_scope_mixes_within_each_shard_with_its_own_draws():
  config = smoke_config('mixup', {'alpha': 1.0}, **{'mix.scope': 'device'})
  state, ctx, _, sharding = setup(config, jax.devices())
  batch = batches(1, b=64)[0]
  fn = jax.jit(functools.partial(train.mixed_inputs, ctx))
  out = jax.device_get(fn(state, data.to_global(batch, sharding), jax.random.key(3)))
  y_mix, labels = out['y_mix'], batch['label']
  lams = []
  for d in range(8):
    rows = slice(8 * d, 8 * d + 8)
    shard_classes = set(labels[rows].tolist())
    for row, label in zip(y_mix[rows], labels[rows]):
      assert set(np.flatnonzero(row > 1e-6).tolist()) <= shard_classes  # Partner in shard.
      lams.append(max(row[label], 1 - row[label]))
    del row
  per_shard = [set(np.round(lams[8 * d:8 * d + 8], 5)) for d in range(8)]
  # Each shard draws its own lambda: not all shards share one value.
  assert len(set().union(*per_shard)) > 2


def test_device_scope_step_runs_and_is_deterministic():
  config = smoke_config('storm', {'k': 2, 'beta': 1.0}, **{'mix.scope': 'device'})
  out = []
  _, _, step, sharding = setup(config, jax.devices())
  batch = data.to_global(batches(1)[0], sharding)
  for _ in range(2):
    state, _, _, _ = setup(config, jax.devices())
    state, metrics = step(state, batch, jax.random.key(0))
    out.append((float(metrics['loss']), jax.device_get(state.params)))
  assert np.isfinite(out[0][0]) and out[0][0] == out[1][0]
  chex.assert_trees_all_equal(out[0][1], out[1][1])


@pytest.mark.slow
def test_augmix_device_scope_views_per_device_block():
  """AugMix, 'device' scope: each device's block is [clean; aug1; aug2] of its own shard, with
  mixing on or off, and the loss is CE on the clean rows + 12 JS of the views matched inside
  each block (groups = devices)."""
  config = smoke_config('augmix', {}, **{'mix.scope': 'device', 'mix.off_after_step': 1})
  state, ctx, step, sharding = setup(config, jax.devices())
  batch = batches(1)[0]  # 16 = 8 devices x 2
  gbatch = data.to_global(batch, sharding)
  key = jax.random.key(0)
  fn = jax.jit(functools.partial(train.mixed_inputs, ctx))
  x = np.asarray(train.normalize(batch['image'], ctx.mean, ctx.std)).reshape(8, 1, 2, 8, 8, 1)
  off = jax.device_get(fn(state.replace(step=state.step + 1), gbatch, train.step_key(key, 1)))
  np.testing.assert_allclose(off['x_mix'].reshape(8, 3, 2, 8, 8, 1),
                             np.repeat(x, 3, axis=1), rtol=1e-6)
  inputs = jax.device_get(fn(state, gbatch, train.step_key(key, 0)))
  views = inputs['x_mix'].reshape(8, 3, 2, 8, 8, 1)
  np.testing.assert_allclose(views[:, :1], x, rtol=1e-6)  # each block starts with its shard
  assert not np.allclose(views[:, 1:], np.repeat(x, 2, axis=1), atol=0.1)
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  logits, _ = ctx.model.apply(variables, jnp.asarray(inputs['x_mix']), train=True,
                              mutable=['batch_stats'])
  p = np.asarray(jax.nn.softmax(logits), np.float64).reshape(8, 3, 2, 10)
  y = np.eye(10)[batch['label']].reshape(8, 2, 10)
  ce = np.mean(-np.sum(y * np.log(p[:, 0]), -1))
  log_m = np.log(np.clip(p.mean(1, keepdims=True), 1e-7, 1.0))
  js = np.mean(np.sum(p * (np.log(p) - log_m), -1))
  _, metrics = step(state, gbatch, key)
  np.testing.assert_allclose(metrics['loss'], ce + 12.0 * js, rtol=2e-5)


def test_ipmix_device_scope_mixes_each_shard_with_its_own_pictures():
  """IPMix (jsd), 'device' scope: the mixing pictures are sharded like the images, so device
  g's block is IPMix of its shard with its shard's pictures and its own key; the loss is CE on
  the clean rows + 12 JS of the views matched inside each block."""
  config = smoke_config('ipmix', {'patch_sizes': (2, 4)},
                        **{'mix.scope': 'device', 'dataset.mixing_set': 'fractals/8x8_64_seed0'})
  state, ctx, step, sharding = setup(config, jax.devices())
  batch = batches(1)[0]
  batch['mixing_pictures'] = next(data.mixing_iterator(
      'fractals/8x8_64_seed0', global_batch_size=16, seed=0, image_shape=(8, 8, 1)))
  gbatch = data.to_global(batch, sharding)
  assert gbatch['mixing_pictures'].sharding == gbatch['image'].sharding
  key = jax.random.key(0)
  inputs = jax.device_get(jax.jit(functools.partial(train.mixed_inputs, ctx))(
      state, gbatch, train.step_key(key, 0)))
  views = inputs['x_mix'].reshape(8, 3, 2, 8, 8, 1)
  y = np.eye(10, dtype=np.float32)[batch['label']]
  for g in (0, 5):  # device g: its two examples, its two pictures, the key folded with g
    rows = slice(2 * g, 2 * g + 2)
    pixels, _ = jax.jit(ctx.mixer)(
        jax.random.fold_in(train.step_key(key, 0), g), batch['image'][rows].astype(np.float32),
        y[rows], mixing_pictures=batch['mixing_pictures'][rows].astype(np.float32))
    want = train.normalize(pixels / 255.0, ctx.mean, ctx.std).reshape(3, 2, 8, 8, 1)
    np.testing.assert_allclose(views[g], want, rtol=1e-5, atol=1e-5)
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  logits, _ = ctx.model.apply(variables, jnp.asarray(inputs['x_mix']), train=True,
                              mutable=['batch_stats'])
  p = np.asarray(jax.nn.softmax(logits), np.float64).reshape(8, 3, 2, 10)
  ce = np.mean(-np.sum(y.reshape(8, 2, 10) * np.log(p[:, 0]), -1))
  log_m = np.log(np.clip(p.mean(1, keepdims=True), 1e-7, 1.0))
  js = np.mean(np.sum(p * (np.log(p) - log_m), -1))
  _, metrics = step(state, gbatch, key)
  np.testing.assert_allclose(metrics['loss'], ce + 12.0 * js, rtol=2e-5)


def test_manifold_mixup_device_scope_one_draw_per_device():
  config = smoke_config('manifold_mixup', {'alpha': 2.0}, **{'mix.scope': 'device',
                                                            'mix.off_after_step': 1})
  state, ctx, step, sharding = setup(config, jax.devices())
  gbatch = data.to_global(batches(1)[0], sharding)
  fn = jax.jit(functools.partial(train.mixed_inputs, ctx))
  hidden = jax.device_get(fn(state, gbatch, train.step_key(jax.random.key(0), 0))['hidden'])
  assert hidden['perm'].shape == (8, 2) and hidden['point'].shape == (8,)
  assert len(np.unique(hidden['lam'])) == 8 and set(hidden['point']) <= {0, 1, 2}
  off = fn(state.replace(step=state.step + 1), gbatch, train.step_key(jax.random.key(0), 1))
  np.testing.assert_array_equal(off['hidden']['point'], -1)
  _, metrics = step(state, gbatch, jax.random.key(0))
  assert np.isfinite(metrics['loss'])


def test_checkpoint_from_8_devices_restores_onto_1_device_mesh(tmp_path):
  config = smoke_config('storm', {'k': 2, 'beta': 1.0}, **{'mix.scope': 'global'})
  state8, _, step, sharding = setup(config, jax.devices())
  state8, _ = step(state8, data.to_global(batches(1)[0], sharding), jax.random.key(0))
  ckpt = checkpointing.Checkpointer(str(tmp_path))
  ckpt.save(1, state8)
  ckpt.wait()
  state1, _, _, _ = setup(config, jax.devices()[:1])
  restored = ckpt.restore(state1)
  ckpt.close()
  assert int(restored.step) == 1
  for leaf in jax.tree.leaves(restored):
    assert leaf.sharding.device_set == {jax.devices()[0]}
  chex.assert_trees_all_equal(jax.device_get(restored.params), jax.device_get(state8.params))
  chex.assert_trees_all_equal(jax.device_get(restored.opt_state),
                              jax.device_get(state8.opt_state))


def test_batch_not_divisible_by_devices_is_rejected():
  config = smoke_config('mixup', {'alpha': 1.0}, batch_size=12)
  with pytest.raises(ValueError, match='batch_size=12'):
    train.validate_config(config)
