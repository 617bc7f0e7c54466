"""Tests for storm_jax.mixing.cutmix (docs/DESIGN.md#cutmix, #property-tests, #pitfalls)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import _numpy_refs_a as ref
from storm_jax import mixing
from storm_jax.mixing.cutmix import apply as cutmix_apply
from storm_jax.mixing.cutmix import box_bounds, box_fraction, box_mask, sample_centre

N_DRAWS = 8192


def _fixed_cases():
  rng = np.random.default_rng(0)
  per_example = dict(lam=rng.uniform(size=7).astype(np.float32),
                     cy=rng.integers(0, 32, 7).astype(np.int32),
                     cx=rng.integers(0, 48, 7).astype(np.int32))
  return [
      ((7, 32, 48, 3), dict(lam=np.float32(0.37), cy=np.int32(31), cx=np.int32(2))),  # clipped.
      ((8, 32, 32, 1), dict(lam=np.float32(0.75), cy=np.int32(16), cx=np.int32(16))),  # exact.
      ((1, 8, 8, 3), dict(lam=np.float32(0.1), cy=np.int32(0), cx=np.int32(7))),
      ((8, 48, 32, 2), dict(lam=np.float32(0.2), cy=np.int32(40), cx=np.int32(5))),  # H > W.
      ((7, 32, 48, 2), per_example),
  ]


@pytest.mark.parametrize('variant', ref.JIT_VARIANTS)
@pytest.mark.parametrize('case', range(5))
@pytest.mark.parametrize('correct_lam', [True, False])
def test_matches_numpy_reference(variant, case, correct_lam):
  shape, params = _fixed_cases()[case]
  x, y = ref.random_batch(case, shape)
  perm = np.random.default_rng(case).permutation(shape[0]).astype(np.int32)
  params = {**params, 'perm': perm}
  fn = lambda p, x, y: cutmix_apply(p, x, y, correct_lam=correct_lam)
  x_mix, y_mix = ref.maybe_jit(fn, variant)(params, x, y)
  x_ref, y_ref = ref.cutmix(x, y, params['lam'], params['cy'], params['cx'], perm, correct_lam)
  np.testing.assert_array_equal(x_mix, x_ref.astype(np.float32))  # pure selection: exact.
  np.testing.assert_allclose(y_mix, y_ref, atol=1e-6, rtol=0)


def test_box_size_matches_float64_reference():
  """floor(H sqrt(1 - lam)) in float32 == the float64 reference except within float error."""
  height, width = 32, 48
  lam = np.linspace(0, 1, 4001, dtype=np.float32)
  side = np.sqrt(1.0 - lam.astype(np.float64))
  y1, y2, x1, x2 = (np.asarray(b) for b in box_bounds(
      np.full_like(lam, height // 2, dtype=np.int32), np.full_like(lam, width // 2, dtype=np.int32),
      jnp.sqrt(1.0 - jnp.asarray(lam)), height, width))
  for size, lo, hi in ((height, y1, y2), (width, x1, x2)):
    exact = size * side
    near_integer = np.abs(exact - np.round(exact)) < 1e-4
    expected = 2 * (np.floor(exact).astype(int) // 2)
    assert np.all((hi - lo == expected) | near_integer)
    assert np.mean(near_integer) < 0.05
  # Clipping: every centre, a few sizes, against the reference rule.
  for lam_value in (0.0, 0.3, 0.64, 0.9):
    cy, cx = np.meshgrid(np.arange(height), np.arange(width), indexing='ij')
    side32 = jnp.sqrt(1.0 - jnp.float32(lam_value))
    got = np.stack([np.asarray(b) for b in box_bounds(cy, cx, side32, height, width)], -1)
    want = np.array([[ref.rand_bbox(height, width, math.sqrt(1 - lam_value), i, j)
                      for j in range(width)] for i in range(height)])
    np.testing.assert_array_equal(got, want)


def test_unclipped_box_is_even_and_centred():
  """T10: an unclipped box is 2 * (cut // 2) wide, i.e. odd cuts lose one pixel."""
  height, width = 32, 48
  side = jnp.float32(15.5 / 32)  # cut_h = 15, cut_w = floor(23.25) = 23.
  box = box_bounds(jnp.int32(16), jnp.int32(24), side, height, width)
  mask = np.asarray(box_mask(box, height, width))
  rows, cols = np.nonzero(mask)
  assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (9, 23, 13, 35)
  assert mask.sum() == 14 * 22 == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
  assert box_fraction(box, height, width) == np.float32(308) / np.float32(height * width)


@pytest.mark.parametrize('variant', ref.JIT_VARIANTS)
def test_label_is_pixel_share_per_sample(variant):
  """Clipped boxes: each label weight is 1 - pasted_area / HW; T3, T6 (docs/DESIGN.md#pitfalls)."""
  batch_size, height, width = 7, 32, 48
  x, y = ref.identity_batch(batch_size, height, width)
  m = mixing.get('cutmix', granularity='example')
  fractional = 0
  for seed in range(4):
    params = m.sample(jax.random.key(seed), x.shape)
    x_mix, y_mix = ref.maybe_jit(m.apply, variant)(params, x, y)
    x_mix = np.asarray(x_mix)
    assert set(np.unique(x_mix).tolist()) <= {0.0, 1.0}  # one source per pixel.
    np.testing.assert_array_equal(x_mix.sum(-1), 1.0)
    np.testing.assert_allclose(ref.pixel_shares(x_mix), y_mix, atol=1e-6)
    area = [(b[1] - b[0]) * (b[3] - b[2]) for b in zip(*(np.asarray(v) for v in box_bounds(
        params['cy'], params['cx'], jnp.sqrt(1 - params['lam']), height, width)))]
    perm = np.asarray(params['perm'])
    for b in range(batch_size):
      if perm[b] != b:
        assert abs(float(y_mix[b, b]) - (1 - area[b] / (height * width))) < 1e-6
        fractional += 0.0 < float(y_mix[b, b]) < 1.0
  assert fractional >= 10  # not the 0/1 of integer division (fastai2 PR #368).


@pytest.fixture(scope='module')
def many_draws():
  """N_DRAWS per-batch CutMix draws on 32x32 (one vmapped sampler compile)."""
  m = mixing.get('cutmix')
  keys = jax.random.split(jax.random.key(7), N_DRAWS)
  params = jax.vmap(lambda k: m.sample(k, (2, 32, 32, 1)))(keys)
  return jax.tree.map(np.asarray, params)


def test_expected_corrected_lambda(many_draws):
  """docs/DESIGN.md#cutmix-clipping: E[lam] = 0.5 but clipping gives E[lam'] ~ 0.70 at 32x32."""
  lam = many_draws['lam']
  box = box_bounds(many_draws['cy'], many_draws['cx'], jnp.sqrt(1 - lam), 32, 32)
  lam_corrected = 1 - np.asarray(box_fraction(box, 32, 32))
  assert abs(lam.mean() - 0.5) < 0.01
  assert abs(lam_corrected.mean() - 0.7008) < 0.006  # float64 simulation: 0.7008 (1e6 draws).
  assert np.all(lam_corrected >= lam - 1e-6)  # box area <= cut_h * cut_w <= (1 - lam) H W.
  assert np.all((lam_corrected >= 0) & (lam_corrected <= 1))


def test_centres_uniform_and_box_reaches_every_border():
  """Box may touch the first/last row and column (timm PR #2739); H/W not swapped."""
  height, width = 32, 48
  cy, cx = sample_centre(jax.random.key(3), height, width, (N_DRAWS,))
  cy, cx = np.asarray(cy), np.asarray(cx)
  assert cy.min() == 0 and cy.max() == height - 1 and cx.min() == 0 and cx.max() == width - 1
  assert np.abs(np.bincount(cy, minlength=height) / N_DRAWS - 1 / height).max() < 0.012
  box = box_bounds(cy, cx, jnp.full(cy.shape, 0.3), height, width)
  covered = np.asarray(box_mask(box, height, width)).any(0)
  assert covered.shape == (height, width) and covered.all()


@pytest.mark.parametrize('lam, cy, cx, expected_lam', [
    (1.0, 5, 7, 1.0),            # cut = 0: empty box, identity.
    (1 - 1e-8, 5, 7, 1.0),
    (0.0, 16, 24, 0.0),          # full box only at the exact centre (even H, W).
    (0.0, 0, 0, 0.75),           # a quarter-image box at the corner.
    (1e-8, 17, 24, 1 / 32),      # odd centre: the last row survives.
])
def test_extreme_lambdas(lam, cy, cx, expected_lam):
  x, y = ref.random_batch(1, (4, 32, 48, 3))
  perm = np.array([1, 2, 3, 0], np.int32)
  params = {'lam': jnp.float32(lam), 'cy': jnp.int32(cy), 'cx': jnp.int32(cx), 'perm': perm}
  x_mix, y_mix = jax.jit(cutmix_apply)(params, x, y)
  assert np.isfinite(x_mix).all() and np.isfinite(y_mix).all()
  np.testing.assert_allclose(y_mix, expected_lam * y + (1 - expected_lam) * y[perm], atol=1e-6)
  if expected_lam == 1.0:
    np.testing.assert_array_equal(x_mix, x)
  if expected_lam == 0.0:
    np.testing.assert_array_equal(x_mix, x[perm])


def test_identity_permutation_and_batch_of_one():
  x, y = ref.random_batch(2, (7, 32, 48, 3))
  params = {'lam': jnp.float32(0.3), 'cy': jnp.int32(9), 'cx': jnp.int32(30),
            'perm': jnp.arange(7, dtype=jnp.int32)}
  x_mix, y_mix = cutmix_apply(params, x, y)
  np.testing.assert_array_equal(x_mix, x)
  np.testing.assert_array_equal(y_mix, y)
  x1, y1 = x[:1], y[:1]
  x_mix, y_mix = mixing.cutmix(jax.random.key(0), x1, y1)
  np.testing.assert_array_equal(x_mix, x1)
  np.testing.assert_array_equal(y_mix, y1)


def test_granularity():
  shape = (7, 16, 24, 1)
  batch = mixing.get('cutmix').sample(jax.random.key(0), shape)
  assert batch['lam'].shape == batch['cy'].shape == batch['cx'].shape == ()
  example = mixing.get('cutmix', granularity='example').sample(jax.random.key(0), shape)
  assert example['lam'].shape == example['cy'].shape == example['cx'].shape == (7,)
  boxes = np.stack([np.asarray(b) for b in box_bounds(
      example['cy'], example['cx'], jnp.sqrt(1 - example['lam']), 16, 24)], -1)
  assert len({tuple(b) for b in boxes}) > 1  # one box per sample.


def test_determinism_and_plain_function():
  x, y = ref.random_batch(3, (6, 12, 20, 2))
  a = mixing.cutmix(jax.random.key(5), x, y, alpha=0.4, pairing='flip')
  b = mixing.get('cutmix', alpha=0.4, pairing='flip')(jax.random.key(5), x, y)
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])
  outs = [np.asarray(mixing.cutmix(jax.random.key(s), x, y)[0]) for s in range(6, 9)]
  assert not all(np.array_equal(outs[0], o) for o in outs[1:])


def test_tiny_alpha_is_finite():
  """Beta(1e-3) gives lam of exactly 0 or 1 in float32: no NaN, labels still sum to 1."""
  x, y = ref.random_batch(9, (6, 12, 20, 2))
  for seed in range(4):
    x_mix, y_mix = mixing.cutmix(jax.random.key(seed), x, y, alpha=1e-3)
    assert np.isfinite(x_mix).all() and np.isfinite(y_mix).all()
    np.testing.assert_allclose(np.asarray(y_mix).sum(1), 1.0, atol=1e-6)


@pytest.mark.parametrize('field, value', [
    ('alpha', 0.0), ('alpha', -0.5), ('alpha', float('inf')), ('pairing', 'shuffle'),
    ('granularity', 'elem'), ('correct_lam', 'yes')])
def test_bad_hparams_raise(field, value):
  with pytest.raises(ValueError, match=field):
    mixing.get('cutmix', **{field: value})
