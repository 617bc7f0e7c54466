"""Tests for storm_jax.mixing.switch, Stochastic Mixup & CutMix as timm (docs/DESIGN.md#switch)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import _numpy_refs_a as ref
from storm_jax import mixing
from storm_jax.mixing.cutmix import apply as cutmix_apply
from storm_jax.mixing.mixup import apply as mixup_apply
from storm_jax.mixing.switch import apply as switch_apply

N_DRAWS = 8192


@pytest.mark.parametrize('variant', ref.JIT_VARIANTS)
@pytest.mark.parametrize('granularity', ['batch', 'example'])
@pytest.mark.parametrize('switch_prob', [0.0, 1.0])
def test_switch_prob_0_and_1_reduce_to_mixup_and_cutmix(variant, granularity, switch_prob):
  """T8: switch_prob 0 == Mixup, 1 == CutMix (corrected label), on the same params."""
  shape = (7, 32, 48, 3)
  x, y = ref.random_batch(0, shape)
  m = mixing.get('mixup_cutmix', switch_prob=switch_prob, granularity=granularity)
  for seed in range(2):
    params = m.sample(jax.random.key(seed), shape)
    np.testing.assert_array_equal(params['branch'], int(switch_prob))
    x_mix, y_mix = ref.maybe_jit(m.apply, variant)(params, x, y)
    base_apply = cutmix_apply if switch_prob == 1.0 else mixup_apply
    x_want, y_want = ref.maybe_jit(base_apply, variant)(params, x, y)
    # Same arithmetic; only XLA's fusion (e.g. FMA) may differ, by an ulp.
    np.testing.assert_allclose(x_mix, x_want, atol=1e-6, rtol=0)
    np.testing.assert_allclose(y_mix, y_want, atol=1e-7, rtol=0)


@pytest.mark.parametrize('variant', ref.JIT_VARIANTS)
def test_matches_numpy_reference_per_example(variant):
  """timm 'elem' on fixed params: each sample is its own Mixup or CutMix (32x48, B=7)."""
  shape = (7, 32, 48, 2)
  x, y = ref.random_batch(1, shape)
  rng = np.random.default_rng(1)
  params = {'branch': np.array([0, 1, 1, 0, 1, 0, 1], np.int32),
            'lam': rng.uniform(size=7).astype(np.float32),
            'cy': rng.integers(0, 32, 7).astype(np.int32),
            'cx': rng.integers(0, 48, 7).astype(np.int32),
            'perm': np.arange(7)[::-1].astype(np.int32)}
  x_mix, y_mix = ref.maybe_jit(switch_apply, variant)(params, x, y)
  x_mixup, y_mixup = ref.mixup(x, y, params['lam'], params['perm'])
  x_cut, y_cut = ref.cutmix(x, y, params['lam'], params['cy'], params['cx'], params['perm'])
  use_cut = params['branch'] == 1
  np.testing.assert_allclose(x_mix, np.where(use_cut[:, None, None, None], x_cut, x_mixup),
                             atol=1e-5, rtol=0)
  np.testing.assert_allclose(y_mix, np.where(use_cut[:, None], y_cut, y_mixup), atol=1e-6)
  # Batch mode: one branch for everyone, with the batch-mode references.
  for branch in (0, 1):
    batch_params = {**params, 'branch': np.int32(branch), 'lam': np.float32(0.4),
                    'cy': np.int32(30), 'cx': np.int32(3)}
    x_mix, y_mix = ref.maybe_jit(switch_apply, variant)(batch_params, x, y)
    x_ref, y_ref = (ref.cutmix(x, y, 0.4, 30, 3, params['perm']) if branch else
                    ref.mixup(x, y, np.float32(0.4), params['perm']))
    np.testing.assert_allclose(x_mix, x_ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(y_mix, y_ref, atol=1e-6)


def _draws(**hparams):
  m = mixing.get('mixup_cutmix', **hparams)
  keys = jax.random.split(jax.random.key(5), N_DRAWS)
  params = jax.vmap(lambda k: m.sample(k, (4, 8, 8, 1)))(keys)
  return np.asarray(params['branch']), np.asarray(params['lam'])


def test_branch_rate_and_alpha_wiring():
  """Each branch draws lam from its own alpha (torchvision #8440); rate == switch_prob."""
  branch, lam = _draws(mixup_alpha=100.0, cutmix_alpha=0.05, switch_prob=0.3)
  assert abs(branch.mean() - 0.3) < 0.02
  assert np.mean(np.abs(lam[branch == 1] - 0.5)) > 0.4   # Beta(0.05): near 0 or 1.
  assert np.mean(np.abs(lam[branch == 0] - 0.5)) < 0.05  # Beta(100): near 0.5.
  branch, lam = _draws(mixup_alpha=0.05, cutmix_alpha=100.0, switch_prob=0.7)
  assert abs(branch.mean() - 0.7) < 0.02
  assert np.mean(np.abs(lam[branch == 0] - 0.5)) > 0.4
  assert np.mean(np.abs(lam[branch == 1] - 0.5)) < 0.05


def test_zero_alpha_disables_its_branch():
  """timm: with one alpha at 0 only the other method runs, whatever switch_prob says."""
  branch, lam = _draws(mixup_alpha=0.0, cutmix_alpha=1.0, switch_prob=0.0)
  assert branch.min() == 1 and 0.45 < lam.mean() < 0.55
  branch, lam = _draws(mixup_alpha=1.0, cutmix_alpha=0.0, switch_prob=1.0)
  assert branch.max() == 0 and 0.45 < lam.mean() < 0.55


@pytest.mark.parametrize('variant', ref.JIT_VARIANTS)
@pytest.mark.parametrize('granularity', ['batch', 'example'])
def test_label_is_pixel_share(variant, granularity):
  """T2, T3 on both branches with identity images (B=7 odd, 32x48)."""
  x, y = ref.identity_batch(7, 32, 48)
  m = mixing.get('mixup_cutmix', granularity=granularity, pairing='perm')
  branches = set()
  for seed in range(6):
    params = m.sample(jax.random.key(seed), x.shape)
    branches |= set(np.ravel(np.asarray(params['branch'])).tolist())
    x_mix, y_mix = ref.maybe_jit(m.apply, variant)(params, x, y)
    np.testing.assert_allclose(np.asarray(y_mix).sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(ref.pixel_shares(x_mix), y_mix, atol=1e-6)
  assert branches == {0, 1}


def test_granularity_shapes():
  shape = (7, 16, 16, 3)
  batch = mixing.get('mixup_cutmix').sample(jax.random.key(0), shape)
  assert all(batch[k].shape == () for k in ('branch', 'lam', 'cy', 'cx'))
  np.testing.assert_array_equal(batch['perm'], np.arange(7)[::-1])  # timm flip pairing.
  example = mixing.get('mixup_cutmix', granularity='example').sample(jax.random.key(0), shape)
  assert all(example[k].shape == (7,) for k in ('branch', 'lam', 'cy', 'cx'))


def test_identity_permutation_is_noop_and_plain_function():
  x, y = ref.random_batch(2, (5, 16, 24, 3))
  for branch in (0, 1):
    params = {'branch': jnp.int32(branch), 'lam': jnp.float32(0.3), 'cy': jnp.int32(8),
              'cx': jnp.int32(12), 'perm': jnp.arange(5, dtype=jnp.int32)}
    x_mix, y_mix = switch_apply(params, x, y)
    np.testing.assert_array_equal(x_mix, x)
    np.testing.assert_array_equal(y_mix, y)
  a = mixing.mixup_cutmix(jax.random.key(3), x, y, switch_prob=0.5)
  b = mixing.get('mixup_cutmix')(jax.random.key(3), x, y)
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])


def test_tiny_alpha_is_finite():
  """Beta(1e-3) gives lam of exactly 0 or 1 in float32: no NaN, labels still sum to 1."""
  x, y = ref.random_batch(9, (6, 12, 20, 2))
  for seed in range(4):
    x_mix, y_mix = mixing.mixup_cutmix(jax.random.key(seed), x, y, mixup_alpha=1e-3,
                                       cutmix_alpha=1e-3)
    assert np.isfinite(x_mix).all() and np.isfinite(y_mix).all()
    np.testing.assert_allclose(np.asarray(y_mix).sum(1), 1.0, atol=1e-6)


@pytest.mark.parametrize('hparams, field', [
    ({'mixup_alpha': -1.0}, 'mixup_alpha'), ({'cutmix_alpha': float('nan')}, 'cutmix_alpha'),
    ({'mixup_alpha': 0.0, 'cutmix_alpha': 0}, 'alpha'), ({'switch_prob': 1.5}, 'switch_prob'),
    ({'pairing': 'pair'}, 'pairing'), ({'granularity': 'elem'}, 'granularity'),
    ({'mixup_alpha': True}, 'mixup_alpha')])
def test_bad_hparams_raise(hparams, field):
  with pytest.raises(ValueError, match=field):
    mixing.get('mixup_cutmix', **hparams)
