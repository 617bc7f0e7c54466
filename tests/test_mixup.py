"""Tests for storm_jax.mixing.mixup (docs/DESIGN.md#mixup, #property-tests)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import _numpy_refs_a as ref
from storm_jax import mixing
from storm_jax.mixing.mixup import apply as mixup_apply

SHAPES = [(1, 8, 8, 3), (7, 32, 48, 1), (8, 16, 16, 4)]
N_DRAWS = 8192  # one vmapped Beta sampler compile serves every distribution test.


@pytest.mark.parametrize('variant', ref.JIT_VARIANTS)
@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('granularity', ['batch', 'example'])
def test_matches_numpy_reference(variant, shape, granularity):
  x, y = ref.random_batch(0, shape)
  rng = np.random.default_rng(1)
  batch_size = shape[0]
  lam = rng.uniform(size=() if granularity == 'batch' else (batch_size,)).astype(np.float32)
  perm = rng.permutation(batch_size).astype(np.int32)
  x_mix, y_mix = ref.maybe_jit(mixup_apply, variant)({'lam': lam, 'perm': perm}, x, y)
  x_ref, y_ref = ref.mixup(x, y, lam, perm)
  np.testing.assert_allclose(x_mix, x_ref, atol=1e-5, rtol=0)
  np.testing.assert_allclose(y_mix, y_ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize('variant', ref.JIT_VARIANTS)
@pytest.mark.parametrize('shape', SHAPES)
def test_sampled_mix_properties(variant, shape):
  """T1, T2, T5, T7: shapes, labels sum to 1, x_mix - x_p = lam (x - x_p), convexity."""
  m = mixing.get('mixup')
  x, y = ref.random_batch(2, shape)
  for seed in range(3):
    params = m.sample(jax.random.key(seed), shape)
    assert params['lam'].shape == () and params['perm'].dtype == jnp.int32
    if seed == 2:  # per-example weights through the same apply.
      params['lam'] = np.random.default_rng(seed).uniform(size=shape[0]).astype(np.float32)
    x_mix, y_mix = ref.maybe_jit(m.apply, variant)(params, x, y)
    assert x_mix.shape == x.shape and x_mix.dtype == x.dtype and y_mix.shape == y.shape
    lam = np.broadcast_to(np.asarray(params['lam']), (shape[0],))
    perm = np.asarray(params['perm'])
    assert sorted(perm.tolist()) == list(range(shape[0]))
    np.testing.assert_allclose(np.asarray(y_mix).sum(1), 1.0, atol=1e-6)
    xp = x[perm]
    np.testing.assert_allclose(np.asarray(x_mix) - xp, lam[:, None, None, None] * (x - xp),
                               atol=1e-5)
    lo, hi = np.minimum(x, xp), np.maximum(x, xp)
    assert np.all(x_mix >= lo - 1e-6) and np.all(x_mix <= hi + 1e-6)


@pytest.mark.parametrize('variant', ref.JIT_VARIANTS)
@pytest.mark.parametrize('batch_size', [1, 7, 8])
def test_label_weight_is_pixel_share(variant, batch_size):
  """T3/T7 with identity images: same partner for images and labels, share == lam exactly."""
  x, y = ref.identity_batch(batch_size, 6, 10)
  m = mixing.get('mixup', granularity='example' if batch_size == 7 else 'batch')
  params = m.sample(jax.random.key(3), x.shape)
  x_mix, y_mix = ref.maybe_jit(m.apply, variant)(params, x, y)
  np.testing.assert_allclose(ref.pixel_shares(x_mix), y_mix, atol=1e-6)
  # The anchor's share is lam unless it was paired with itself.
  lam = np.broadcast_to(np.asarray(params['lam']), (batch_size,))
  perm = np.asarray(params['perm'])
  for b in range(batch_size):
    expected = 1.0 if perm[b] == b else lam[b]
    assert abs(float(y_mix[b, b]) - expected) < 1e-6


def test_identity_permutation_is_noop():
  x, y = ref.random_batch(4, (7, 32, 48, 3))
  params = {'lam': jnp.float32(0.3), 'perm': jnp.arange(7, dtype=jnp.int32)}
  x_mix, y_mix = mixup_apply(params, x, y)
  np.testing.assert_array_equal(x_mix, x)
  np.testing.assert_array_equal(y_mix, y)


@pytest.mark.parametrize('lam', [0.0, 1e-8, 1 - 1e-8, 1.0])
def test_extreme_lambdas(lam):
  x, y = ref.random_batch(5, (8, 16, 24, 3))
  perm = np.roll(np.arange(8), 1).astype(np.int32)
  x_mix, y_mix = jax.jit(mixup_apply)({'lam': jnp.float32(lam), 'perm': perm}, x, y)
  assert np.isfinite(x_mix).all() and np.isfinite(y_mix).all()
  if lam == 0.0:
    np.testing.assert_array_equal(x_mix, x[perm])
    np.testing.assert_array_equal(y_mix, y[perm])
  if lam == 1.0:
    np.testing.assert_allclose(x_mix, x, atol=1e-6)
    np.testing.assert_array_equal(y_mix, y)


def _draw_lams(alpha, n, granularity='batch', batch_size=4):
  m = mixing.get('mixup', alpha=alpha, granularity=granularity)
  keys = jax.random.split(jax.random.key(11), n)
  return np.asarray(jax.vmap(lambda k: m.sample(k, (batch_size, 4, 4, 1))['lam'])(keys))


def test_lambda_distribution():
  """T11: Beta(alpha, alpha) mean 1/2 and variance 1 / (4 (2 alpha + 1))."""
  for alpha in (1.0, 0.2):
    lam = _draw_lams(alpha, N_DRAWS)
    assert abs(lam.mean() - 0.5) < 0.01
    assert abs(lam.var() - 1 / (4 * (2 * alpha + 1))) < 0.01


def test_small_alpha_still_mixes():
  """alpha < 1 is a U-shaped Beta, not 'no mixing' (Fixup #5); tiny alpha stays finite."""
  lam = _draw_lams(0.2, N_DRAWS)
  assert np.mean((lam > 0.01) & (lam < 0.99)) > 0.5
  assert np.mean(np.abs(lam - 0.5)) > 0.3  # more extreme than alpha=1 (0.25).
  x, y = ref.random_batch(6, (8, 8, 8, 3))
  for seed in range(5):
    x_mix, y_mix = mixing.mixup(jax.random.key(seed), x, y, alpha=1e-3)
    assert np.isfinite(x_mix).all() and np.isfinite(y_mix).all()
    np.testing.assert_allclose(np.asarray(y_mix).sum(1), 1.0, atol=1e-6)


def test_granularity_sharing():
  assert mixing.get('mixup').sample(jax.random.key(0), (8, 4, 4, 1))['lam'].shape == ()
  lam = _draw_lams(1.0, N_DRAWS, 'example', 8)
  assert lam.shape == (N_DRAWS, 8)
  assert np.all(np.std(lam, axis=1) > 1e-3)  # per example: the values differ within a batch.
  assert abs(lam.mean() - 0.5) < 0.02


def test_pairings():
  for pairing, expected in [('flip', [4, 3, 2, 1, 0]), ('roll', [4, 0, 1, 2, 3])]:
    params = mixing.get('mixup', pairing=pairing).sample(jax.random.key(0), (5, 4, 4, 1))
    np.testing.assert_array_equal(params['perm'], expected)
  perms = [np.asarray(mixing.get('mixup').sample(jax.random.key(s), (16, 4, 4, 1))['perm'])
           for s in range(3)]
  assert all(sorted(p.tolist()) == list(range(16)) for p in perms)
  assert not np.array_equal(perms[0], perms[1])


def test_determinism_and_plain_function():
  x, y = ref.random_batch(7, (6, 12, 20, 2))
  a = mixing.mixup(jax.random.key(5), x, y, alpha=0.4)
  b = mixing.get('mixup', alpha=0.4)(jax.random.key(5), x, y)
  c = mixing.mixup(jax.random.key(6), x, y, alpha=0.4)
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])
  assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize('field, value', [
    ('alpha', 0.0), ('alpha', -1.0), ('alpha', float('nan')), ('alpha', True), ('alpha', '1'),
    ('pairing', 'random'), ('granularity', 'pixel')])
def test_bad_hparams_raise(field, value):
  with pytest.raises(ValueError, match=field):
    mixing.get('mixup', **{field: value})
