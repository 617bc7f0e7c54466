"""Tests for storm_jax.mixing.gmix: the reference kernel on H x W images (docs/DESIGN.md#gmix)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import _numpy_refs_a as ref
from storm_jax import mixing
from storm_jax.mixing.gmix import apply as gmix_apply


def _params(lam, cy, cx, perm):
  return {'lam': jnp.float32(lam), 'cy': jnp.int32(cy), 'cx': jnp.int32(cx),
          'perm': jnp.asarray(perm, jnp.int32)}


@jax.jit
def _mask_of_apply(lam, cy, cx, zeros):
  """The anchor's per-pixel weight M [H, W] that `apply` uses, read off its output: the
  anchor image is all ones and its partner all zeros, so x_mix[0] = M exactly."""
  x = jnp.stack([jnp.ones_like(zeros), zeros])[..., None]
  y = jnp.eye(2, dtype=jnp.float32)
  return gmix_apply(_params(lam, cy, cx, [1, 0]), x, y)[0][0, ..., 0]


def applied_mask(lam, cy, cx, height, width):
  return _mask_of_apply(lam, cy, cx, jnp.zeros((height, width), jnp.float32))


@pytest.mark.parametrize('variant', ref.JIT_VARIANTS)
@pytest.mark.parametrize('shape, lam, cy, cx', [
    ((8, 32, 32, 3), 0.3, 5, 27), ((8, 32, 32, 1), 0.5, 16, 16), ((7, 32, 48, 2), 0.8, 30, 3),
    ((1, 48, 32, 3), 0.05, 40, 10), ((7, 32, 48, 2), 0.45, 0, 47)])
def test_matches_numpy_reference(variant, shape, lam, cy, cx):
  x, y = ref.random_batch(int(lam * 100), shape)
  perm = np.arange(shape[0])[::-1]
  x_mix, y_mix = ref.maybe_jit(gmix_apply, variant)(_params(lam, cy, cx, perm), x, y)
  x_ref, y_ref, _ = ref.gmix(x, y, np.float32(lam), cy, cx, perm)
  np.testing.assert_allclose(x_mix, x_ref, atol=1e-5, rtol=0)
  np.testing.assert_allclose(y_mix, y_ref, atol=1e-6, rtol=0)
  if shape[1] == shape[2]:  # the reference code's own (square-only) grid gives the same.
    x_sq, y_sq, _ = ref.gmix(x, y, np.float32(lam), cy, cx, perm, square_reference=True)
    np.testing.assert_allclose(x_mix, x_sq, atol=1e-5, rtol=0)
    np.testing.assert_allclose(y_mix, y_sq, atol=1e-6, rtol=0)


def test_centre_pixel_and_radial_monotonicity():
  """M = 1 at the centre for lam < 0.5 and 0 for lam >= 0.5 (0.5 takes the else branch);
  M decreases (lam < 0.5) / increases (lam >= 0.5) with the distance to the centre."""
  height, width, cy, cx = 32, 48, 9, 30
  d2 = ((np.arange(height)[:, None] - cy) ** 2 + (np.arange(width)[None, :] - cx) ** 2).ravel()
  order = np.argsort(d2, kind='stable')
  for lam in (0.0, 0.05, 0.3, 0.4999, 0.5, 0.7, 0.99, 1.0):
    m = np.asarray(applied_mask(jnp.float32(lam), cy, cx, height, width))
    assert m.shape == (height, width) and np.all((m >= 0) & (m <= 1))
    assert m[cy, cx] == (1.0 if lam < 0.5 else 0.0)
    profile = m.ravel()[order] * (1 if lam < 0.5 else -1)
    assert np.all(np.diff(profile) <= 1e-7)
    same_d2 = d2[order][1:] == d2[order][:-1]
    assert np.all(np.abs(np.diff(profile)[same_d2]) < 1e-7)  # radial: equal distance, equal M.


@pytest.mark.parametrize('s', [0.1, 0.05])
def test_centred_blob_mass(s):
  """Blob mass ~ s for a centred small blob (docs/DESIGN.md#gmix: N=32, s=0.1 -> 0.1000 +- 1e-3)."""
  anchor_blob = float(jnp.mean(applied_mask(jnp.float32(s), 16, 16, 32, 32)))
  partner_blob = float(jnp.mean(applied_mask(jnp.float32(1 - s), 16, 16, 32, 32)))
  assert abs(anchor_blob - s) < 1e-3
  assert abs(partner_blob - (1 - s)) < 1e-3
  # Non-square: the scale s H W keeps the mass at s.
  assert abs(float(jnp.mean(applied_mask(jnp.float32(s), 24, 32, 48, 64))) - s) < 1e-3


def test_swap_symmetry():
  """M(lam) = 1 - M(1 - lam) (roles swapped) except exactly at 0.5."""
  for lam in (0.1, 0.3, 0.45):
    a = applied_mask(jnp.float32(lam), 7, 11, 32, 48)
    b = applied_mask(jnp.float32(1 - lam), 7, 11, 32, 48)
    np.testing.assert_allclose(a, 1 - b, atol=1e-6)


@pytest.mark.parametrize('variant', ref.JIT_VARIANTS)
def test_label_is_realised_pixel_share(variant):
  """T2/T3: the label is mean(M) (truncated blobs at the border are corrected), not lam."""
  x, y = ref.identity_batch(7, 32, 48)
  m = mixing.get('gmix', pairing='perm')
  gaps = []
  for seed in range(5):
    params = m.sample(jax.random.key(seed), x.shape)
    x_mix, y_mix = ref.maybe_jit(m.apply, variant)(params, x, y)
    np.testing.assert_allclose(np.asarray(y_mix).sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(ref.pixel_shares(x_mix), y_mix, atol=1e-6)
    gaps.append(abs(float(jnp.mean(applied_mask(params['lam'], params['cy'], params['cx'],
                                                 32, 48))) - float(params['lam'])))
  assert max(gaps) > 1e-3  # the realised share is not simply lam.


@pytest.mark.parametrize('lam', [0.0, 1e-8, 1 - 1e-8, 1.0])
def test_extreme_lambdas_are_finite(lam):
  """lam in {0, 1} would be 0/0 at the centre: the blob parameter is clipped to 1e-6,
  leaving a one-pixel blob (the s -> 0 limit)."""
  x, y = ref.random_batch(7, (4, 32, 48, 3))
  perm = np.array([1, 0, 3, 2])
  x_mix, y_mix = jax.jit(gmix_apply)(_params(lam, 10, 20, perm), x, y)
  assert np.isfinite(x_mix).all() and np.isfinite(y_mix).all()
  blob_owner, rest = (x, x[perm]) if lam < 0.5 else (x[perm], x)
  np.testing.assert_allclose(x_mix[:, 10, 20], blob_owner[:, 10, 20], atol=1e-6)
  mask = np.ones((32, 48), bool)
  mask[10, 20] = False
  np.testing.assert_allclose(x_mix[:, mask], rest[:, mask], atol=1e-6)
  share = 1 / (32 * 48) if lam < 0.5 else 1 - 1 / (32 * 48)
  np.testing.assert_allclose(y_mix, share * y + (1 - share) * y[perm], atol=1e-6)


def test_sampling_defaults_and_distribution():
  m = mixing.get('gmix', alpha=0.5)
  keys = jax.random.split(jax.random.key(4), 8192)
  params = jax.tree.map(np.asarray, jax.vmap(lambda k: m.sample(k, (4, 32, 48, 1)))(keys))
  assert abs(params['lam'].mean() - 0.5) < 0.01
  assert abs(params['lam'].var() - 1 / (4 * 2)) < 0.01  # Beta(0.5, 0.5) variance 1/8.
  assert params['cy'].min() == 0 and params['cy'].max() == 31
  assert params['cx'].min() == 0 and params['cx'].max() == 47
  np.testing.assert_array_equal(params['perm'], np.broadcast_to([3, 2, 1, 0], (8192, 4)))


def test_identity_permutation_and_plain_function():
  x, y = ref.random_batch(8, (5, 16, 24, 3))
  x_mix, y_mix = gmix_apply(_params(0.3, 4, 4, np.arange(5)), x, y)
  np.testing.assert_allclose(x_mix, x, atol=1e-6)
  np.testing.assert_allclose(y_mix, y, atol=1e-7)
  a = mixing.gmix(jax.random.key(1), x, y)
  b = mixing.get('gmix')(jax.random.key(1), x, y)
  c = mixing.gmix(jax.random.key(2), x, y)
  np.testing.assert_array_equal(a[0], b[0])
  assert not np.array_equal(a[0], c[0])


def test_per_example_params_through_apply():
  x, y = ref.identity_batch(7, 16, 24)
  rng = np.random.default_rng(2)
  params = {'lam': rng.uniform(size=7).astype(np.float32),
            'cy': rng.integers(0, 16, 7).astype(np.int32),
            'cx': rng.integers(0, 24, 7).astype(np.int32), 'perm': np.roll(np.arange(7), 2)}
  x_mix, y_mix = jax.jit(gmix_apply)(params, x, y)
  np.testing.assert_allclose(ref.pixel_shares(x_mix), y_mix, atol=1e-6)
  for b in range(7):
    x_ref, y_ref, _ = ref.gmix(x, y, params['lam'][b], params['cy'][b], params['cx'][b],
                               params['perm'])
    np.testing.assert_allclose(x_mix[b], x_ref[b], atol=1e-6)
    np.testing.assert_allclose(y_mix[b], y_ref[b], atol=1e-6)


def test_tiny_alpha_is_finite():
  """Beta(1e-3) gives lam of exactly 0 or 1 in float32: no NaN, labels still sum to 1."""
  x, y = ref.random_batch(9, (6, 12, 20, 2))
  for seed in range(4):
    x_mix, y_mix = mixing.gmix(jax.random.key(seed), x, y, alpha=1e-3)
    assert np.isfinite(x_mix).all() and np.isfinite(y_mix).all()
    np.testing.assert_allclose(np.asarray(y_mix).sum(1), 1.0, atol=1e-6)


@pytest.mark.parametrize('field, value', [('alpha', 0.0), ('alpha', -1), ('pairing', 'x')])
def test_bad_hparams_raise(field, value):
  with pytest.raises(ValueError, match=field):
    mixing.get('gmix', **{field: value})
