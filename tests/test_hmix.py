"""Tests for storm_jax.mixing.hmix (docs/DESIGN.md#hmix: reference-code semantics)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import _numpy_refs_a as ref
from storm_jax import mixing
from storm_jax.mixing.cutmix import apply as cutmix_apply
from storm_jax.mixing.hmix import apply as hmix_apply
from storm_jax.mixing.mixup import apply as mixup_apply

N_DRAWS = 8192
CASES = [  # shape, lam, r, cy, cx
    ((7, 32, 48, 3), 0.37, 0.5, 31, 2),   # clipped at a corner, non-square.
    ((8, 32, 32, 1), 0.75, 1.0, 16, 16),  # exact unclipped box, m = 1.
    ((8, 48, 32, 2), 0.2, 0.75, 40, 5),   # H > W.
    ((1, 8, 8, 3), 0.1, 0.5, 0, 7),
    ((7, 32, 48, 3), 0.6, 0.3, 12, 20),   # unclipped, floored box.
]


def _params(lam, r, cy, cx, perm):
  return {'lam': jnp.float32(lam), 'r': jnp.float32(r), 'cy': jnp.int32(cy),
          'cx': jnp.int32(cx), 'branch': jnp.int32(1), 'perm': jnp.asarray(perm, jnp.int32)}


@pytest.mark.parametrize('variant', ref.JIT_VARIANTS)
@pytest.mark.parametrize('case', range(len(CASES)))
def test_matches_numpy_reference(variant, case):
  shape, lam, r, cy, cx = CASES[case]
  x, y = ref.random_batch(case, shape)
  perm = np.arange(shape[0])[::-1]
  x_mix, y_mix = ref.maybe_jit(hmix_apply, variant)(_params(lam, r, cy, cx, perm), x, y)
  x_ref, y_ref = ref.hmix(x, y, np.float32(lam), np.float32(r), cy, cx, perm)
  np.testing.assert_allclose(x_mix, x_ref, atol=1e-5, rtol=0)
  np.testing.assert_allclose(y_mix, y_ref, atol=1e-6, rtol=0)


def test_anchor_pixel_share_is_exactly_lambda():
  """T3/T7: mean(M) == lam == label weight for any box (clipped or not), 0 <= m <= 1."""
  height, width = 16, 24
  x, y = ref.identity_batch(2, height, width)
  rng = np.random.default_rng(0)
  apply = jax.jit(hmix_apply)
  for _ in range(60):
    lam, r = rng.uniform(), rng.choice([rng.uniform(), 0.5, 0.75, 1.0])
    cy, cx = rng.integers(0, height), rng.integers(0, width)
    x_mix, y_mix = apply(_params(lam, r, cy, cx, [1, 0]), x, y)
    shares = ref.pixel_shares(x_mix)
    np.testing.assert_allclose(shares[:, [0, 1]], [[lam, 1 - lam], [1 - lam, lam]], atol=1e-6)
    np.testing.assert_allclose(y_mix, shares, atol=1e-6)
    assert np.all((np.asarray(x_mix) >= 0) & (np.asarray(x_mix) <= 1))  # 0 <= m <= 1.


@pytest.mark.parametrize('variant', ref.JIT_VARIANTS)
def test_r0_is_mixup(variant):
  """T8: r = 0 gives an empty box, c = 1 and m = lam: Mixup on the same lam and partners."""
  x, y = ref.random_batch(3, (7, 32, 48, 3))
  perm = np.random.default_rng(3).permutation(7)
  for lam in (0.0, 0.13, 0.5, 0.91, 1.0):
    params = _params(lam, 0.0, 5, 40, perm)
    x_mix, y_mix = ref.maybe_jit(hmix_apply, variant)(params, x, y)
    x_want, y_want = ref.maybe_jit(mixup_apply, variant)(params, x, y)
    if variant == 'nojit':  # op by op the arithmetic is identical.
      np.testing.assert_array_equal(x_mix, x_want)
      np.testing.assert_array_equal(y_mix, y_want)
    np.testing.assert_allclose(x_mix, x_want, atol=1e-6, rtol=0)  # XLA fusion: <= 1 ulp.
    np.testing.assert_allclose(y_mix, y_want, atol=1e-7, rtol=0)


@pytest.mark.parametrize('variant', ref.JIT_VARIANTS)
def test_r1_is_cutmix_for_exact_unclipped_box(variant):
  """T8: r = 1, 32x32, lam = 0.75, centre 16: 16x16 box, c = lam, m = 1 == CutMix."""
  x, y = ref.random_batch(4, (8, 32, 32, 3))
  params = _params(0.75, 1.0, 16, 16, np.roll(np.arange(8), 3))
  x_mix, y_mix = ref.maybe_jit(hmix_apply, variant)(params, x, y)
  x_cut, y_cut = ref.maybe_jit(cutmix_apply, variant)(params, x, y)
  np.testing.assert_array_equal(x_mix[:, 8:24, 8:24], x_cut[:, 8:24, 8:24])
  np.testing.assert_allclose(x_mix, x_cut, atol=1e-6, rtol=0)
  np.testing.assert_allclose(y_mix, y_cut, atol=1e-7, rtol=0)
  # A clipped box differs: CutMix corrects the label to lam' > lam, HMix keeps lam.
  clipped = _params(0.75, 1.0, 0, 0, np.roll(np.arange(8), 3))
  _, y_h = hmix_apply(clipped, x, y)
  _, y_c = cutmix_apply(clipped, x, y)
  assert not np.allclose(y_h, y_c)


@pytest.mark.parametrize('lam, r, expected', [(0.0, 1.0, 'partner'), (1.0, 0.5, 'anchor'),
                                              (1e-8, 1.0, None), (1 - 1e-8, 0.75, None),
                                              (0.0, 0.0, 'partner')])
def test_edge_cases(lam, r, expected):
  """c = 0 (full-image box: r = 1, lam = 0, exact centre) is guarded; lam = 1 is identity."""
  x, y = ref.random_batch(5, (4, 32, 32, 2))
  perm = np.array([3, 2, 0, 1])
  x_mix, y_mix = jax.jit(hmix_apply)(_params(lam, r, 16, 16, perm), x, y)
  assert np.isfinite(x_mix).all() and np.isfinite(y_mix).all()
  np.testing.assert_allclose(np.asarray(y_mix).sum(1), 1.0, atol=1e-6)
  if expected == 'partner':
    np.testing.assert_array_equal(x_mix, x[perm])
    np.testing.assert_array_equal(y_mix, y[perm])
  elif expected == 'anchor':
    np.testing.assert_allclose(x_mix, x, atol=1e-6)
    np.testing.assert_array_equal(y_mix, y)


def _draws(**hparams):
  m = mixing.get('hmix', **hparams)
  keys = jax.random.split(jax.random.key(9), N_DRAWS)
  params = jax.vmap(lambda k: m.sample(k, (4, 8, 8, 1)))(keys)
  return jax.tree.map(np.asarray, params)


def test_pure_hmix_defaults():
  params = _draws()
  assert np.all(params['branch'] == 1) and np.all(params['r'] == 0.5)
  assert abs(params['lam'].mean() - 0.5) < 0.01
  np.testing.assert_array_equal(params['perm'], np.broadcast_to([3, 2, 1, 0], (N_DRAWS, 4)))


def test_alternation_with_mixup_and_alpha_wiring():
  """mixup_alpha > 0: Mixup (r = 0, lam ~ Beta(mixup_alpha)) w.p. 1 - switch_prob."""
  params = _draws(alpha=0.05, mixup_alpha=100.0, switch_prob=0.3, r=0.75)
  branch, lam, r = params['branch'], params['lam'], params['r']
  assert abs(branch.mean() - 0.3) < 0.02
  np.testing.assert_array_equal(r, np.where(branch == 1, 0.75, 0.0))
  assert np.mean(np.abs(lam[branch == 1] - 0.5)) > 0.4
  assert np.mean(np.abs(lam[branch == 0] - 0.5)) < 0.05


def test_random_ratio():
  """r_gamma: r ~ Beta(r_gamma, r_gamma) per batch (the fixed r is then unused)."""
  r = _draws(r_gamma=0.5, r=0.9)['r']
  assert abs(r.mean() - 0.5) < 0.015
  assert abs(r.var() - 1 / (4 * (2 * 0.5 + 1))) < 0.01


@pytest.mark.parametrize('variant', ref.JIT_VARIANTS)
def test_sampled_label_is_pixel_share(variant):
  """T2/T3/T7 through sample + apply, B odd (the flip pairing's fixed point), 32x48."""
  x, y = ref.identity_batch(7, 32, 48)
  m = mixing.get('hmix', r_gamma=1.0, mixup_alpha=1.0)
  for seed in range(4):
    params = m.sample(jax.random.key(seed), x.shape)
    x_mix, y_mix = ref.maybe_jit(m.apply, variant)(params, x, y)
    np.testing.assert_allclose(np.asarray(y_mix).sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(ref.pixel_shares(x_mix), y_mix, atol=1e-6)
    lam = float(params['lam'])
    np.testing.assert_allclose(np.diag(np.asarray(y_mix))[[0, 1, 2, 4, 5, 6]], lam, atol=1e-6)
    np.testing.assert_allclose(x_mix[3], x[3])  # self-paired middle sample is unchanged.


def test_per_example_params_through_apply():
  x, y = ref.identity_batch(7, 16, 24)
  rng = np.random.default_rng(2)
  params = {'lam': rng.uniform(size=7).astype(np.float32), 'r': np.full(7, 0.8, np.float32),
            'cy': rng.integers(0, 16, 7).astype(np.int32),
            'cx': rng.integers(0, 24, 7).astype(np.int32), 'perm': np.roll(np.arange(7), 2)}
  x_mix, y_mix = jax.jit(hmix_apply)(params, x, y)
  np.testing.assert_allclose(ref.pixel_shares(x_mix), y_mix, atol=1e-6)
  np.testing.assert_allclose(np.diag(np.asarray(y_mix)), params['lam'], atol=1e-6)


def test_identity_permutation_and_plain_function():
  x, y = ref.random_batch(6, (5, 16, 24, 3))
  x_mix, y_mix = hmix_apply(_params(0.3, 0.5, 8, 12, np.arange(5)), x, y)
  np.testing.assert_array_equal(x_mix, x)
  np.testing.assert_array_equal(y_mix, y)
  a = mixing.hmix(jax.random.key(1), x, y, r=0.75)
  b = mixing.get('hmix', r=0.75)(jax.random.key(1), x, y)
  c = mixing.hmix(jax.random.key(2), x, y, r=0.75)
  np.testing.assert_array_equal(a[0], b[0])
  assert not np.array_equal(a[0], c[0])


def test_tiny_alpha_is_finite():
  """Beta(1e-3) gives lam of exactly 0 or 1 in float32: no NaN, labels still sum to 1."""
  x, y = ref.random_batch(9, (6, 12, 20, 2))
  for seed in range(4):
    x_mix, y_mix = mixing.hmix(jax.random.key(seed), x, y, alpha=1e-3, r_gamma=1e-3,
                               mixup_alpha=1e-3)
    assert np.isfinite(x_mix).all() and np.isfinite(y_mix).all()
    np.testing.assert_allclose(np.asarray(y_mix).sum(1), 1.0, atol=1e-6)


@pytest.mark.parametrize('field, value', [
    ('alpha', 0.0), ('r', 1.5), ('r', -0.1), ('r_gamma', 0.0), ('r_gamma', -2.0),
    ('mixup_alpha', -1.0), ('mixup_alpha', float('nan')), ('switch_prob', 2.0),
    ('pairing', 'pairs')])
def test_bad_hparams_raise(field, value):
  with pytest.raises(ValueError, match=field):
    mixing.get('hmix', **{field: value})
