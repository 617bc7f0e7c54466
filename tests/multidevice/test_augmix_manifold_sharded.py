"""AugMix and Manifold Mixup in the sharded step's pattern (8 simulated CPU devices).

The mixer runs per device inside `jax.shard_map` (key folded with the device index), the model
under the global-view jit with the batch sharded on 'data', as the trainer does; AugMix also
under pmap.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from storm_jax import mixing
from storm_jax import models
from storm_jax.mixing import manifold

N_DEV = 8
PER_DEV = 2


def _mesh():
  return jax.make_mesh((N_DEV,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))


def test_augmix_device_local():
  mixer = mixing.get('augmix')
  mesh = _mesh()
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.integers(0, 256, (N_DEV * PER_DEV, 8, 8, 3)), jnp.float32)
  y = jax.nn.one_hot(jnp.arange(N_DEV * PER_DEV) % 3, 3)

  def one(key, x, y):
    return mixer(key, x, y)

  def local(key, x, y):
    return one(jax.random.fold_in(key, jax.lax.axis_index('data')), x, y)

  fn = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(), P('data'), P('data')),
                             out_specs=(P('data'), P('data'))))
  shard = NamedSharding(mesh, P('data'))
  key = jax.random.key(1)
  x_out, y_out = fn(key, jax.device_put(x, shard), jax.device_put(y, shard))
  assert x_out.shape == (3 * N_DEV * PER_DEV, 8, 8, 3)
  ref = jax.jit(lambda i, xs, ys: one(jax.random.fold_in(key, i), xs, ys))
  x_dev = np.split(np.asarray(x_out), N_DEV)
  y_dev = np.split(np.asarray(y_out), N_DEV)
  for i in range(N_DEV):
    sl = slice(i * PER_DEV, (i + 1) * PER_DEV)
    want_x, want_y = ref(i, x[sl], y[sl])
    np.testing.assert_allclose(x_dev[i], want_x, atol=1e-3, err_msg=f'device {i}')
    np.testing.assert_array_equal(y_dev[i], want_y)
    np.testing.assert_array_equal(x_dev[i][:PER_DEV], x[sl])  # each device's clean view first
  assert not np.allclose(x_dev[0][PER_DEV:], x_dev[1][PER_DEV:])
  # The JSD objective on the device-major global array (groups = devices) equals the mean of
  # the per-device objectives: views are matched inside each device's block.
  proj = jax.random.normal(jax.random.key(3), (3, 3))
  logits_of = lambda xs: jnp.mean(xs, axis=(1, 2)) / 64.0 @ proj
  got = jax.jit(lambda a, b: mixing.consistency_objective(
      logits_of(a), b, views=3, weight=12.0, groups=N_DEV))(x_out, y_out)
  per_device = [mixing.consistency_objective(logits_of(jnp.asarray(x_dev[i])),
                                             jnp.asarray(y_dev[i]), views=3, weight=12.0)
                for i in range(N_DEV)]
  np.testing.assert_allclose(got, np.mean(per_device), rtol=1e-5)
  # The same per-device computation under pmap.
  px, py = jax.pmap(local, axis_name='data', in_axes=(None, 0, 0))(
      key, x.reshape(N_DEV, PER_DEV, 8, 8, 3), y.reshape(N_DEV, PER_DEV, 3))
  np.testing.assert_allclose(np.asarray(px).reshape(x_out.shape), x_out, atol=1e-3)
  np.testing.assert_array_equal(np.asarray(py).reshape(y_out.shape), y_out)
  k_major = mixing.consistency_objective(logits_of(x_out), y_out, views=3, weight=12.0)
  assert not np.isclose(k_major, np.mean(per_device), rtol=1e-3)  # groups=1 misreads the rows


def _hand_mix(consumer, lam, perm):
  """Interceptor mixing the consumer's input per group of PER_DEV samples, written here."""
  lam, perm = np.asarray(lam), np.asarray(perm)

  def interceptor(next_fun, args, kwargs, context):
    if context.method_name == '__call__' and context.module.scope.path == (consumer,):
      h = args[0]
      parts = []
      for g in range(perm.shape[0]):
        block = h[g * PER_DEV:(g + 1) * PER_DEV]
        parts.append(lam[g] * block + (1 - lam[g]) * block[perm[g]])
      args = (jnp.concatenate(parts),) + tuple(args[1:])
    return next_fun(*args, **kwargs)

  return interceptor


def test_manifold_mixup_sharded_step():
  mesh = _mesh()
  shard = NamedSharding(mesh, P('data'))
  model = models.get('cnn_small', num_classes=4, width=2)
  x = jax.random.normal(jax.random.key(0), (N_DEV * PER_DEV, 8, 8, 3))
  y = jax.nn.one_hot(jnp.arange(N_DEV * PER_DEV) % 4, 4)
  variables = model.init(jax.random.key(1), x, train=False)

  def local(key, x, y, point):
    key = jax.random.fold_in(key, jax.lax.axis_index('data'))
    mixer = mixing.get('manifold_mixup', points=(point,))
    params = mixer.sample(key, x.shape)
    x_mix, y_mix = mixer.apply(params, x, y)
    return x_mix, y_mix, manifold.hidden_params(params)

  def step(variables, key, x, y, point):
    x_mix, y_mix, mix = jax.shard_map(
        functools.partial(local, point=point), mesh=mesh,
        in_specs=(P(), P('data'), P('data')), out_specs=(P('data'), P('data'), P('data')))(
            key, x, y)
    logits, _ = model.apply(variables, x_mix, train=True, mutable=['batch_stats'], mix=mix)
    return logits, y_mix, mix

  xs, ys = jax.device_put(x, shard), jax.device_put(y, shard)
  for point, consumer in ((1, 'conv2'), (2, 'conv3')):
    fn = jax.jit(functools.partial(step, point=point))
    logits, y_mix, mix = fn(variables, jax.random.key(2), xs, ys)
    assert mix['perm'].shape == (N_DEV, PER_DEV) and mix['lam'].shape == (N_DEV,)
    assert np.all(np.asarray(mix['point']) == point)
    lam, perm = np.asarray(mix['lam']), np.asarray(mix['perm'])
    assert len(np.unique(lam)) == N_DEV  # per-device draws
    # Labels: mixed inside each device's shard.
    y_np = np.asarray(y)
    for g in range(N_DEV):
      block = y_np[g * PER_DEV:(g + 1) * PER_DEV]
      np.testing.assert_allclose(y_mix[g * PER_DEV:(g + 1) * PER_DEV],
                                 lam[g] * block + (1 - lam[g]) * block[perm[g]], atol=1e-6)
    with nn.intercept_methods(_hand_mix(consumer, lam, perm)):
      want, _ = model.apply(variables, x, train=True, mutable=['batch_stats'])
    np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5, err_msg=f'point {point}')
    # The hidden gather stays on each device: no all-gather of activations.
    hlo = fn.lower(variables, jax.random.key(2), xs, ys).compile().as_text()
    assert 'all-gather' not in hlo
