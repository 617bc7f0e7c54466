"""Mixers inside `jax.shard_map` and `jax.pmap` on 8 simulated CPU devices.

Device-local mixing (the DDP behaviour of the reference code, docs/DESIGN.md#device-scope): each
device mixes its own shard with a key folded with its device index, so every shard gets its own λ's,
boxes and permutations, and no collective is needed.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from storm_jax import mixing

pytestmark = pytest.mark.usefixtures('key_reuse_checked')

# AugMix and Manifold Mixup break the pixel-share checks below by design (label-preserving
# pixel ops; hidden-state mixing): test_augmix_manifold_sharded.py covers them. PixMix and
# IPMix need a stream of mixing pictures and are label-preserving pixel ops too.
NAMES = [n for n in mixing.names()
         if n not in ('none', 'augmix', 'manifold_mixup', 'pixmix', 'ipmix')]
LABEL_PRESERVING = ('cutout',)
# No random draw at prob 1 (spectral-residual maps, greedy pairing): the shards here hold
# the same images up to a scale, so they mix alike.
DETERMINISTIC = ('guided_mixup',)
# Hyper-parameters that fit the small 8x12 test images (PuzzleMix's default grids need 16 | H, W).
HPARAMS = {'puzzlemix': dict(block_nums=(2,), neigh_size=2, t_size=2)}
N_DEV = 8
PER_DEV = 4


def _batch(h=8, w=12):
  b = N_DEV * PER_DEV
  # Identity images local to each shard: channel d marks local sample d.
  local = jnp.broadcast_to(jnp.eye(PER_DEV)[:, None, None, :], (PER_DEV, h, w, PER_DEV))
  x = jnp.tile(local, (N_DEV, 1, 1, 1)) * (1 + jnp.arange(b)[:, None, None, None] // PER_DEV)
  y = jnp.tile(jnp.eye(PER_DEV), (N_DEV, 1))
  return x.astype(jnp.float32), y


def _mix_one(mixer, key, x, y):
  """Mixes one shard with a key already folded with the shard's index."""
  skey, key = jax.random.split(key)
  kw = {'saliency': jax.random.uniform(skey, x.shape[:3])} if mixer.needs_saliency else {}
  return mixer.apply(mixer.sample(key, x.shape, **kw), x, y)


def _local_mix(mixer, key, x, y):
  """What one device does: fold in its index, mix its shard."""
  return _mix_one(mixer, jax.random.fold_in(key, jax.lax.axis_index('data')), x, y)


@functools.partial(jax.jit, static_argnums=0)
def _one_shard(mixer, key, index, x, y):
  return _mix_one(mixer, jax.random.fold_in(key, index), x, y)


def _reference(mixer, key, x, y):
  """The same computation, shard by shard, on one device (one compile, eight calls)."""
  x, y = jax.device_put((x, y), jax.devices()[0])
  return [_one_shard(mixer, key, i, x[i * PER_DEV:(i + 1) * PER_DEV],
                     y[i * PER_DEV:(i + 1) * PER_DEV]) for i in range(N_DEV)]


def _unshard(arr, k):
  """[N_DEV * k * PER_DEV, ...] device-major output -> list of per-device [k * PER_DEV, ...]."""
  return np.split(np.asarray(arr), N_DEV)


@pytest.mark.parametrize('name', NAMES)
def test_shard_map_device_local_mixing(name):
  mixer = mixing.get(name, **HPARAMS.get(name, {}))
  mesh = jax.make_mesh((N_DEV,), ('data',))
  x, y = _batch()
  fn = jax.jit(jax.shard_map(functools.partial(_local_mix, mixer), mesh=mesh,
                             in_specs=(P(), P('data'), P('data')),
                             out_specs=(P('data'), P('data'))))
  key = jax.random.key(0)
  # The batch lives sharded on 'data', as the trainer's global batch does.
  shard = jax.sharding.NamedSharding(mesh, P('data'))
  x_mix, y_mix = fn(key, jax.device_put(x, shard), jax.device_put(y, shard))
  ref = _reference(mixer, key, x, y)
  for i, (xs, ys) in enumerate(zip(_unshard(x_mix, mixer.multiplicity),
                                   _unshard(y_mix, mixer.multiplicity))):
    np.testing.assert_allclose(xs, ref[i][0], atol=1e-5, err_msg=f'device {i}')
    np.testing.assert_allclose(ys, ref[i][1], atol=1e-6, err_msg=f'device {i}')
    # No sample crosses a shard: every output pixel is made of its own shard's images,
    # whose values carry the shard number (i + 1).
    if name in LABEL_PRESERVING:  # holes are all-zero pixels; labels pass through
      total = xs.sum(-1)
      assert np.all((np.abs(total) < 1e-4) | (np.abs(total - (i + 1)) < 1e-4))
      np.testing.assert_array_equal(ys, np.eye(PER_DEV))
      continue
    np.testing.assert_allclose(xs.sum(-1), i + 1, atol=1e-4)
    np.testing.assert_allclose(xs.mean((1, 2)) / (i + 1), ys, atol=2e-5)
  # Distinct draws per shard (aimz #292): the shards' mixed labels are not all equal.
  per_dev = _unshard(x_mix if name in LABEL_PRESERVING else y_mix, mixer.multiplicity)
  if name in LABEL_PRESERVING:
    per_dev = [p / (i + 1) for i, p in enumerate(per_dev)]
  if name not in DETERMINISTIC:
    assert any(not np.allclose(per_dev[0], p) for p in per_dev[1:])


# pmap and global mixing: one method per code path (Beta λ, boxes, tiles, saliency masks,
# K outputs, no partner, FFT + sort); every method runs under shard_map above, which is what the trainer uses.
_CODE_PATHS = ['mixup', 'cutmix', 'storm', 'rmix', 'multimix', 'cutout', 'fmix']


@pytest.mark.parametrize('name', _CODE_PATHS)
def test_pmap(name):
  mixer = mixing.get(name)
  x, y = _batch()
  xs = x.reshape(N_DEV, PER_DEV, *x.shape[1:])
  ys = y.reshape(N_DEV, PER_DEV, -1)
  key = jax.random.key(1)
  fn = jax.pmap(functools.partial(_local_mix, mixer), axis_name='data', in_axes=(None, 0, 0))
  x_mix, y_mix = fn(key, xs, ys)
  ref = _reference(mixer, key, x, y)
  for i in range(N_DEV):
    np.testing.assert_allclose(x_mix[i], ref[i][0], atol=1e-5)
    np.testing.assert_allclose(y_mix[i], ref[i][1], atol=1e-6)


def test_global_mixing_under_jit_with_sharded_batch():
  """mix.scope=global: a jitted mixer over a batch sharded on 'data' == the unsharded result.

  The mesh axis is `Auto`, as in `train.make_mesh`: the partner gathers cross shards and XLA
  places the collectives. (Under an `Explicit` axis, jax asks every gather for an
  `out_sharding`; the mixers do not carry sharding annotations.)
  """
  mesh = jax.make_mesh((N_DEV,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
  sharding = jax.sharding.NamedSharding(mesh, P('data'))
  for name in _CODE_PATHS:
    mixer = mixing.get(name)
    x, y = _batch()
    key = lambda: jax.random.key(2)  # a fresh key object per call: the key-reuse checker is on
    kw = lambda: ({'saliency': jnp.ones(x.shape[:3])} if mixer.needs_saliency else {})
    f = jax.jit(lambda k, a, b: mixer.apply(mixer.sample(k, a.shape, **kw()), a, b))
    want = f(key(), x, y)
    got = f(key(), jax.device_put(x, sharding), jax.device_put(y, sharding))
    np.testing.assert_allclose(got[0], want[0], atol=1e-5, err_msg=name)
    np.testing.assert_allclose(got[1], want[1], atol=1e-6, err_msg=name)
