"""Tests for storm_jax.mixing.fmix (docs/DESIGN.md#fmix)."""

from __future__ import annotations

import importlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import _numpy_refs_a as ref
from storm_jax import mixing

fmix_lib = importlib.import_module('storm_jax.mixing.fmix')  # `mixing.fmix` is the function.


def _numpy_mask(spectrum, lam, ceil, height, width, max_soft):
  """FMix `make_low_freq_image` + `binarise_mask` (ecs-vlc/FMix) in float64 for a given draw."""
  m = np.fft.irfft2(spectrum[..., 0] + 1j * spectrum[..., 1], s=(height, width))
  idx = m.reshape(-1).argsort()[::-1]
  size = height * width
  num = math.ceil(lam * size) if ceil else math.floor(lam * size)
  eff_soft = max_soft
  if max_soft > lam or max_soft > 1 - lam:
    eff_soft = min(lam, 1 - lam)
  soft = int(size * eff_soft)
  mask = np.zeros(size)
  mask[idx[:num + soft]] = 1
  mask[idx[num - soft:]] = 0
  mask[idx[num - soft:num + soft]] = np.linspace(1, 0, 2 * soft)
  return mask.reshape(height, width), num


def _numpy_amplitude(height, width, decay):
  """`fftfreqnd` + `get_spectrum`'s scale, with the reference's extra odd-W bin dropped."""
  fy = np.fft.fftfreq(height)[:, None]
  fx = np.fft.fftfreq(width)[:width // 2 + 2 if width % 2 else width // 2 + 1]
  freqs = np.sqrt(fx * fx + fy * fy)
  scale = 1.0 / np.maximum(freqs, 1.0 / max(width, height)) ** decay
  return scale[:, :width // 2 + 1]


@pytest.mark.parametrize('shape,lam,ceil,max_soft', [
    ((4, 32, 32, 3), 0.37, True, 0.0),
    ((4, 32, 32, 3), 0.81, False, 0.1),   # soft ramp.
    ((3, 24, 35, 2), 0.5, True, 0.0),     # odd W, non-square.
    ((3, 24, 35, 2), 0.2, False, 0.4),    # max_soft > lam: eff_soft = lam.
])
def test_matches_numpy_reference(shape, lam, ceil, max_soft):
  _, height, width, _ = shape
  x, y = ref.random_batch(1, shape)
  rng = np.random.default_rng(int(lam * 100))
  spectrum = (rng.normal(size=(height, width // 2 + 1, 2)) *
              _numpy_amplitude(height, width, 3.0)[..., None]).astype(np.float32)
  perm = rng.permutation(shape[0]).astype(np.int32)
  params = {'lam': np.float32(lam), 'spectrum': spectrum, 'ceil': np.bool_(ceil), 'perm': perm}
  want_mask, num = _numpy_mask(spectrum.astype(np.float64), lam, ceil, height, width, max_soft)
  got_mask, share = fmix_lib.mask(params, height, width, max_soft)
  # float32 vs float64 FFT: ranks may swap only between near-equal pixels.
  assert np.abs(np.asarray(got_mask) - want_mask).sum() <= 2.0
  assert float(share) == np.float32(num / (height * width))
  np.testing.assert_allclose(np.asarray(got_mask).mean(), num / (height * width), atol=1e-6)
  x_mix, y_mix = jax.jit(lambda p, a, b: fmix_lib.apply(p, a, b, max_soft=max_soft,
                                                        label='realised'))(params, x, y)
  m = np.asarray(got_mask)[None, ..., None]
  np.testing.assert_allclose(x_mix, m * x + (1 - m) * x[perm], atol=1e-5)
  w = num / (height * width)
  np.testing.assert_allclose(y_mix, w * y + (1 - w) * y[perm], atol=1e-6)
  _, y_sampled = fmix_lib.apply(params, x, y, max_soft=max_soft, label='sampled')
  np.testing.assert_allclose(y_sampled, lam * y + (1 - lam) * y[perm], atol=1e-6)


def test_mask_is_top_num_superlevel_set_of_the_low_frequency_image():
  height, width = 32, 40
  params = mixing.get('fmix', granularity='example').sample(jax.random.key(0), (6, height, width, 1))
  m = np.asarray(fmix_lib.low_frequency_image(params['spectrum'], height, width))
  masks, share = jax.jit(lambda p: fmix_lib.mask(p, height, width, 0.0))(params)
  masks, share = np.asarray(masks), np.asarray(share)
  for b in range(6):
    num = int(round(float(share[b]) * height * width))
    assert masks[b].sum() == num and set(np.unique(masks[b])) <= {0.0, 1.0}
    if 0 < num < height * width:
      assert m[b][masks[b] == 1].min() > m[b][masks[b] == 0].max()
    lam = float(params['lam'][b]) * height * width
    assert num == (math.ceil(lam) if params['ceil'][b] else math.floor(lam))


def test_full_and_empty_masks_are_identity_and_partner():
  x, y = ref.random_batch(2, (5, 16, 24, 3))
  params = dict(mixing.get('fmix').sample(jax.random.key(1), x.shape))
  perm = np.asarray(params['perm'])
  params['lam'] = jnp.float32(1.0)
  x_mix, y_mix = fmix_lib.apply(params, x, y, max_soft=0.0, label='realised')
  np.testing.assert_array_equal(x_mix, x)
  np.testing.assert_array_equal(y_mix, y)
  params['lam'] = jnp.float32(0.0)
  x_mix, y_mix = fmix_lib.apply(params, x, y, max_soft=0.0, label='realised')
  np.testing.assert_array_equal(x_mix, x[perm])
  np.testing.assert_array_equal(y_mix, y[perm])


def test_spectrum_amplitude_and_coin_distribution():
  """Per-bin spectrum std == a(f) = max(f, 1/max(H, W))^-δ (4σ); fair ceil/floor coin."""
  height, width, n = 16, 21, 2000
  m = mixing.get('fmix', decay_power=2.0)
  params = jax.jit(jax.vmap(lambda k: m.sample(k, (2, height, width, 1))))(
      jax.random.split(jax.random.key(2), n))
  amp = _numpy_amplitude(height, width, 2.0)
  np.testing.assert_allclose(fmix_lib.amplitude(height, width, 2.0), amp, rtol=1e-6)
  ratio = np.asarray(params['spectrum']) / amp[None, ..., None]   # ~ N(0, 1) per bin
  # The variance of a mean of n squared normals has std sqrt(2 / n); 4.5σ over 374 bins.
  assert np.abs((ratio ** 2).mean(0) - 1).max() < 4.5 * np.sqrt(2 / n)
  assert abs(np.asarray(params['ceil']).mean() - 0.5) < 4 * np.sqrt(0.25 / n)
  lam = np.asarray(params['lam'])
  assert abs(lam.mean() - 0.5) < 4 * np.sqrt(1 / 12 / n)  # Beta(1, 1)


def test_soft_mask_mean_and_ramp():
  height, width = 32, 32
  m = mixing.get('fmix', max_soft=0.2)
  for seed in range(4):
    params = m.sample(jax.random.key(seed), (2, height, width, 1))
    mask, share = fmix_lib.mask(params, height, width, 0.2)
    mask, lam = np.asarray(mask), float(params['lam'])
    soft = int(height * width * min(0.2, lam, 1 - lam))
    assert ((mask > 0) & (mask < 1)).sum() >= 2 * soft - 2
    np.testing.assert_allclose(mask.mean(), float(share), atol=1e-6)


def test_granularity():
  shape = (5, 16, 16, 1)
  batch = mixing.get('fmix').sample(jax.random.key(0), shape)
  assert batch['lam'].shape == () and batch['spectrum'].shape == (16, 9, 2)
  example = mixing.get('fmix', granularity='example').sample(jax.random.key(0), shape)
  assert example['lam'].shape == (5,) and example['spectrum'].shape == (5, 16, 9, 2)


@pytest.mark.parametrize('field, value', [
    ('alpha', 0.0), ('decay_power', -1.0), ('max_soft', 0.6), ('max_soft', -0.1),
    ('label', 'drawn'), ('granularity', 'pixel'), ('pairing', 'shuffle')])
def test_bad_hparams_raise(field, value):
  with pytest.raises(ValueError, match=field):
    mixing.get('fmix', **{field: value})
