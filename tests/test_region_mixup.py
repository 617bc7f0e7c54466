"""Tests for Region Mixup (storm_jax/mixing/region_mixup.py), docs/DESIGN.md#region-mixup and
#property-tests.

The NumPy reference slices the fixed grid `[floor(j H / k), floor((j+1) H / k)) x
[floor(i W / k), floor((i+1) W / k))` directly, independently of StoRM's code.
"""

import importlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from storm_jax import mixing

region = importlib.import_module('storm_jax.mixing.region_mixup')
storm = importlib.import_module('storm_jax.mixing.storm')

SHAPE = (7, 30, 44, 3)  # odd B, non-square, k=4 divides neither side


def _data(shape, num_classes=10, seed=0):
  kx, ky = jax.random.split(jax.random.key(seed))
  x = jax.random.normal(kx, shape)
  y = jax.nn.one_hot(jax.random.randint(ky, (shape[0],), 0, num_classes), num_classes)
  return x, y


def _np_params(seed, shape, k, granularity='batch'):
  rng = np.random.default_rng(seed)
  b, h, w, _ = shape
  lead = () if granularity == 'batch' else (b,)
  return {'lam': jnp.asarray(rng.uniform(size=lead + (k * k,)), jnp.float32),
          'perms': jnp.asarray(np.stack([rng.permutation(b) for _ in range(k * k)]), jnp.int32),
          'points_h': region.grid_points(h, k), 'points_w': region.grid_points(w, k)}


def np_region_mixup(lam, perms, x, y, k):
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  b, h, w, _ = x.shape
  lam = np.broadcast_to(np.asarray(lam, np.float64).reshape(-1, k * k), (b, k * k))
  perms = np.asarray(perms)
  x_mix, y_mix = np.full_like(x, np.nan), np.zeros_like(y)
  for s in range(b):
    for i in range(k):  # column band
      for j in range(k):  # row band
        t = i * k + j
        rows = slice(j * h // k, (j + 1) * h // k)
        cols = slice(i * w // k, (i + 1) * w // k)
        d, lm = perms[t, s], lam[s, t]
        x_mix[s, rows, cols] = lm * x[s, rows, cols] + (1 - lm) * x[d, rows, cols]
        area = (rows.stop - rows.start) * (cols.stop - cols.start) / (h * w)
        y_mix[s] += area * (lm * y[s] + (1 - lm) * y[d])
  assert not np.isnan(x_mix).any()
  return x_mix, y_mix


def test_grid_points_are_floor_rule():
  np.testing.assert_array_equal(region.grid_points(30, 4), [7, 15, 22])
  np.testing.assert_array_equal(region.grid_points(32, 2), [16])
  assert region.grid_points(5, 1).shape == (0,)


@pytest.mark.parametrize('k,granularity,jit', [
    (2, 'batch', False), (2, 'batch', True), (3, 'example', True), (4, 'batch', True)])
def test_matches_numpy_reference(k, granularity, jit):
  x, y = _data(SHAPE)
  mixer = mixing.get('region_mixup', k=k, granularity=granularity)
  apply = jax.jit(mixer.apply) if jit else mixer.apply
  for seed in range(2):
    params = _np_params(seed, SHAPE, k, granularity)
    x_mix, y_mix = apply(params, x, y)
    rx, ry = np_region_mixup(params['lam'], params['perms'], x, y, k)
    np.testing.assert_allclose(x_mix, rx, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(y_mix, ry, atol=1e-6)


def test_sample_and_label_weight_equals_pixel_share():
  """Sampled params have the fixed grid; every source's label weight == its pixel share."""
  b, h, w, k = 8, 10, 14, 3
  x = jnp.broadcast_to(jnp.eye(b)[:, None, None, :], (b, h, w, b))
  y = jnp.eye(b)
  for granularity in ('batch', 'example'):
    mixer = mixing.get('region_mixup', k=k, granularity=granularity)

    @jax.jit
    def run(key, x, y):
      params = mixer.sample(key, x.shape)
      return params, mixer.apply(params, x, y)

    for seed in range(2):
      params, (x_mix, y_mix) = run(jax.random.key(seed), x, y)
      lead = () if granularity == 'batch' else (b,)
      assert params['lam'].shape == lead + (k * k,)
      assert params['perms'].shape == (k * k, b)
      np.testing.assert_array_equal(params['points_h'], [3, 6])  # floor(10 i / 3)
      np.testing.assert_array_equal(params['points_w'], [4, 9])  # floor(14 i / 3)
      np.testing.assert_allclose(np.asarray(y_mix).sum(-1), 1.0, atol=1e-6)
      np.testing.assert_allclose(y_mix, np.asarray(x_mix, np.float64).mean((1, 2)), atol=1e-6)
      for p in np.asarray(params['perms']):
        np.testing.assert_array_equal(np.sort(p), np.arange(b))


@pytest.mark.parametrize('granularity,jit', [('batch', False), ('batch', True),
                                             ('example', True)])
def test_k1_is_mixup_bit_exactly(granularity, jit):
  x, y = _data(SHAPE)
  params = _np_params(3, SHAPE, 1, granularity)
  mixup_params = {'lam': params['lam'][..., 0], 'perm': params['perms'][0]}
  region_apply, mixup_apply = mixing.get('region_mixup', k=1).apply, mixing.get('mixup').apply
  if jit:
    region_apply, mixup_apply = jax.jit(region_apply), jax.jit(mixup_apply)
  x_mix, y_mix = region_apply(params, x, y)
  rx, ry = mixup_apply(mixup_params, x, y)
  np.testing.assert_array_equal(x_mix, rx)
  np.testing.assert_array_equal(y_mix, ry)


def test_is_storm_with_equispaced_points():
  """Region Mixup's apply IS StoRM's; StoRM with the grid as its points gives the same."""
  assert region.apply is storm.apply
  x, y = _data(SHAPE)
  params = _np_params(4, SHAPE, 4)
  sx, sy = jax.jit(mixing.get('storm', k=4).apply)(params, x, y)
  rx, ry = jax.jit(mixing.get('region_mixup', k=4).apply)(params, x, y)
  np.testing.assert_array_equal(sx, rx)
  np.testing.assert_array_equal(sy, ry)


def test_identity_perms_and_batch_of_one():
  x, y = _data(SHAPE)
  params = _np_params(5, SHAPE, 2)
  params['perms'] = jnp.broadcast_to(jnp.arange(SHAPE[0], dtype=jnp.int32), (4, SHAPE[0]))
  x_mix, y_mix = jax.jit(region.apply)(params, x, y)
  np.testing.assert_array_equal(x_mix, x)
  np.testing.assert_allclose(y_mix, y, atol=1e-6)


def test_lambda_distribution_and_sharing():
  """lam ~ Beta(alpha, alpha): mean 1/2, variance 1/(4(2 alpha + 1)); per batch vs example."""
  draws, alpha = 3000, 0.5
  lam = {}
  for granularity in ('batch', 'example'):
    mixer = mixing.get('region_mixup', k=2, alpha=alpha, granularity=granularity)
    lam[granularity] = np.asarray(jax.jit(jax.vmap(lambda key: mixer.sample(key, (3, 8, 8, 1))[
        'lam']))(jax.random.split(jax.random.key(0), draws)))
  assert lam['batch'].shape == (draws, 4) and lam['example'].shape == (draws, 3, 4)
  for values in lam.values():
    assert abs(values.mean() - 0.5) < 0.015  # std of the mean <= 0.0033
    assert abs(values.var() - 1 / (4 * (2 * alpha + 1))) < 0.01
  # Per example: the 3 samples of one batch draw their own lam (almost surely different).
  assert (np.ptp(lam['example'], axis=1) > 0).mean() > 0.99


def test_loss_weight_and_tiny_alpha():
  mixer = mixing.get('region_mixup', alpha=1e-3)
  assert mixer.clean_loss_weight == 1.0
  x, y = _data((8, 16, 16, 3))
  x_mix, y_mix = jax.jit(mixer.__call__)(jax.random.key(0), x, y)
  assert np.isfinite(np.asarray(x_mix)).all() and np.isfinite(np.asarray(y_mix)).all()
  np.testing.assert_allclose(np.asarray(y_mix).sum(-1), 1.0, atol=1e-6)


@pytest.mark.parametrize('hp,field', [
    (dict(k=0), 'k'), (dict(k=1.5), 'k'), (dict(alpha=0.0), 'alpha'),
    (dict(alpha=math.inf), 'alpha'), (dict(pairing='x'), 'pairing'),
    (dict(granularity='pixel'), 'granularity'), (dict(beta=1.0), 'beta'),
])
def test_bad_hparams_raise(hp, field):
  with pytest.raises(ValueError, match=field):
    mixing.get('region_mixup', **hp)
