"""Tests for storm_jax.mixing.resizemix (docs/DESIGN.md#resizemix)."""

from __future__ import annotations

import importlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import _numpy_refs_a as ref
from storm_jax import mixing

resizemix_lib = importlib.import_module('storm_jax.mixing.resizemix')  # `mixing.resizemix`: fn.


def _numpy_resizemix(x, y, tau, cy, cx, perm):
  """OpenMixup `resizemix` with rows from H: nearest resize (PyTorch rule, exact integers)."""
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  _, height, width, _ = x.shape
  y1, y2, x1, x2 = ref.rand_bbox(height, width, tau, cy, cx)
  h, w = y2 - y1, x2 - x1
  out = x.copy()
  if h > 0 and w > 0:
    rows = [min(i * height // h, height - 1) for i in range(h)]
    cols = [min(j * width // w, width - 1) for j in range(w)]
    out[:, y1:y2, x1:x2] = x[perm][:, rows][:, :, cols]
  lam = 1 - h * w / (height * width)
  return out, lam * y + (1 - lam) * y[perm]


@pytest.mark.parametrize('shape,tau,cy,cx', [
    ((5, 32, 32, 3), 0.5, 16, 16),
    ((5, 32, 48, 2), 0.71, 3, 45),    # clipped: the partner is squeezed.
    ((3, 24, 40, 1), 0.1, 12, 0),     # non-square: rows from H, columns from W.
    ((3, 24, 40, 1), 0.8, 23, 20),
])
def test_matches_numpy_reference(shape, tau, cy, cx):
  x, y = ref.random_batch(3, shape)
  perm = np.random.default_rng(0).permutation(shape[0]).astype(np.int32)
  params = {'tau': np.float32(tau), 'cy': np.int32(cy), 'cx': np.int32(cx), 'perm': perm}
  fn = jax.jit(lambda p, a, b: resizemix_lib.apply(p, a, b, interpolation='nearest'))
  x_mix, y_mix = fn(params, x, y)
  x_ref, y_ref = _numpy_resizemix(x, y, float(np.float32(tau)), cy, cx, perm)
  np.testing.assert_array_equal(x_mix, x_ref.astype(np.float32))
  np.testing.assert_allclose(y_mix, y_ref, atol=1e-6)


def test_self_pair_pastes_a_shrunk_copy():
  """Not an identity: the image's own half-size copy lands in the box (every 2nd pixel)."""
  x, y = ref.random_batch(4, (2, 16, 16, 1))
  params = {'tau': jnp.float32(0.5), 'cy': jnp.int32(8), 'cx': jnp.int32(8),
            'perm': jnp.arange(2, dtype=jnp.int32)}
  x_mix, y_mix = resizemix_lib.apply(params, x, y, interpolation='nearest')
  np.testing.assert_array_equal(np.asarray(x_mix)[:, 4:12, 4:12], x[:, ::2, ::2])
  np.testing.assert_array_equal(y_mix, y)


def test_bilinear_pastes_a_smooth_resize():
  """Bilinear: a linear ramp stays a linear ramp (interior), constants stay constant."""
  height, width = 16, 24
  ramp = np.broadcast_to(np.arange(width, dtype=np.float32)[None, :, None], (height, width, 1))
  x = np.stack([ramp, np.full_like(ramp, 3.0)])
  y = np.eye(2, dtype=np.float32)
  params = {'tau': jnp.float32(0.5), 'cy': jnp.int32(8), 'cx': jnp.int32(12),
            'perm': jnp.array([1, 0], jnp.int32)}
  x_mix, y_mix = jax.jit(lambda p, a, b: resizemix_lib.apply(p, a, b,
                                                             interpolation='bilinear'))(
      params, x, y)
  x_mix = np.asarray(x_mix)[..., 0]
  np.testing.assert_allclose(x_mix[0, 4:12, 6:18], 3.0, atol=1e-5)   # the constant partner
  inner = x_mix[1, 6, 7:17]    # the ramp shrunk by 2: slope 2 away from the box edges
  np.testing.assert_allclose(np.diff(inner), 2.0, atol=1e-4)
  np.testing.assert_allclose(y_mix[:, 0], [1 - 96 / 384, 96 / 384], atol=1e-6)


def test_tau_distribution():
  n = 4000
  for alpha, low, high in ((None, 0.1, 0.8), (0.5, 0.2, 0.6)):
    m = mixing.get('resizemix', scope=(low, high), alpha=alpha)
    tau = np.asarray(jax.jit(jax.vmap(lambda k: m.sample(k, (2, 32, 32, 1))['tau']))(
        jax.random.split(jax.random.key(5), n)))
    assert tau.min() >= low and tau.max() <= high
    if alpha is None:  # uniform: mean and a bin count within 4 sigma
      assert abs(tau.mean() - (low + high) / 2) < 4 * (high - low) / math.sqrt(12 * n)
      frac = np.mean(tau < low + (high - low) / 4)
      assert abs(frac - 0.25) < 4 * math.sqrt(0.25 * 0.75 / n)
    else:  # Beta(0.5, 0.5) inside the scope, redrawn uniformly when outside it
      cdf = lambda t: 2 / math.pi * math.asin(math.sqrt(t))  # Beta(1/2, 1/2)
      p_in, p_low_quarter = cdf(0.6) - cdf(0.2), cdf(0.3) - cdf(0.2)
      want = p_low_quarter + (1 - p_in) * 0.25
      frac = np.mean(tau < 0.3)
      assert abs(frac - want) < 4 * math.sqrt(want * (1 - want) / n)


def test_label_is_realised_share():
  x, y = ref.identity_batch(6, 32, 48)
  m = mixing.get('resizemix')
  for seed in range(3):
    params = m.sample(jax.random.key(seed), x.shape)
    x_mix, y_mix = jax.jit(m.apply)(params, x, y)
    np.testing.assert_allclose(ref.pixel_shares(x_mix), y_mix, atol=1e-6)


@pytest.mark.parametrize('field, value', [
    ('scope', (0.0, 0.5)), ('scope', (0.6, 0.5)), ('scope', (0.1, 1.2)), ('scope', 0.5),
    ('alpha', -1.0), ('interpolation', 'bicubic'), ('pairing', 'shuffle')])
def test_bad_hparams_raise(field, value):
  with pytest.raises(ValueError, match=field):
    mixing.get('resizemix', **{field: value})
