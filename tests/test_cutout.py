"""Tests for storm_jax.mixing.cutout (docs/DESIGN.md#cutout)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import _numpy_refs_a as ref
from storm_jax import mixing
from storm_jax.mixing.cutout import apply as cutout_apply

N_DRAWS = 8192


def _numpy_cutout(x, cy, cx, length, fill):
  """uoguelph-mlrg/Cutout `util/cutout.py`, one image and hole at a time (rows = H)."""
  x = np.array(x, np.float64)
  _, height, width, _ = x.shape
  for b in range(x.shape[0]):
    mask = np.ones((height, width))
    for y0, x0 in zip(cy[b], cx[b]):
      y1, y2 = np.clip(y0 - length // 2, 0, height), np.clip(y0 + length // 2, 0, height)
      x1, x2 = np.clip(x0 - length // 2, 0, width), np.clip(x0 + length // 2, 0, width)
      mask[y1:y2, x1:x2] = 0.0
    x[b] = np.where(mask[..., None] == 0, fill, x[b])
  return x


_CASES = [  # shape, length, n_holes, fill
    ((5, 32, 48, 3), 16, 1, 0.0),
    ((5, 32, 48, 3), 7, 3, -1.5),   # odd length: 6-pixel holes; overlapping holes.
    ((3, 9, 5, 2), 20, 2, 0.0),     # holes larger than the image.
]


@pytest.mark.parametrize('case', range(len(_CASES)))
def test_matches_numpy_reference(case):
  shape, length, n_holes, fill = _CASES[case]
  x, y = ref.random_batch(case, shape)
  rng = np.random.default_rng(case)
  cy = rng.integers(0, shape[1], (shape[0], n_holes)).astype(np.int32)
  cx = rng.integers(0, shape[2], (shape[0], n_holes)).astype(np.int32)
  cy[0, 0], cx[0, 0] = 0, shape[2] - 1  # a corner: clipped.
  fn = jax.jit(lambda p, x, y: cutout_apply(p, x, y, length=length, fill=fill))
  x_out, y_out = fn({'cy': cy, 'cx': cx}, x, y)
  np.testing.assert_array_equal(x_out, _numpy_cutout(x, cy, cx, length, fill).astype(np.float32))
  np.testing.assert_array_equal(y_out, y)


def test_unclipped_hole_is_even_sided_and_filled_exactly():
  x, y = ref.random_batch(1, (2, 32, 32, 3))
  params = {'cy': np.array([[16], [16]], np.int32), 'cx': np.array([[10], [20]], np.int32)}
  x_out, _ = cutout_apply(params, x, y, length=9, fill=0.0)
  holes = np.all(np.asarray(x_out) == 0.0, axis=-1)
  assert holes.sum(axis=(1, 2)).tolist() == [64, 64]  # 2 * (9 // 2) = 8: 8 x 8.
  rows, cols = np.nonzero(holes[0])
  assert (rows.min(), rows.max(), cols.min(), cols.max()) == (12, 19, 6, 13)
  np.testing.assert_array_equal(np.asarray(x_out)[~holes], x[~holes])  # the rest untouched.


def test_zero_length_is_identity_and_labels_pass_through():
  x, y = ref.random_batch(2, (4, 16, 24, 3))
  x_out, y_out = mixing.cutout(jax.random.key(0), x, y, length=0)
  np.testing.assert_array_equal(x_out, x)
  np.testing.assert_array_equal(y_out, y)
  x_out, y_out = mixing.cutout(jax.random.key(0), x, y, length=8, label_smoothing=0.1)
  np.testing.assert_allclose(y_out, y * 0.9 + 0.01, atol=1e-7)
  assert not np.array_equal(x_out, x)


def test_centres_uniform_independent_and_hole_area():
  """Centres uniform over all pixels (holes partly outside occur); one per sample and hole."""
  height, width, length = 32, 48, 16
  m = mixing.get('cutout', length=length, n_holes=2)
  params = jax.jit(lambda k: m.sample(k, (N_DRAWS // 2, height, width, 1)))(jax.random.key(3))
  cy, cx = np.asarray(params['cy']).ravel(), np.asarray(params['cx']).ravel()
  assert params['cy'].shape == (N_DRAWS // 2, 2)
  for values, size in ((cy, height), (cx, width)):
    freq = np.bincount(values, minlength=size) / len(values)
    assert freq.shape == (size,)
    sigma = np.sqrt((1 / size) * (1 - 1 / size) / len(values))
    assert np.abs(freq - 1 / size).max() < 4.5 * sigma  # max over <= 48 bins
  assert np.mean(np.asarray(params['cy'])[:, 0] == np.asarray(params['cy'])[:, 1]) < 0.1
  x = jnp.ones((64, height, width, 1))
  x_out, _ = jax.jit(m)(jax.random.key(4), x, jnp.ones((64, 2)))
  area = (np.asarray(x_out)[..., 0] == 0).sum(axis=(1, 2))
  assert area.max() <= 2 * (2 * (length // 2)) ** 2 and area.min() > 0
  assert len(set(area.tolist())) > 5  # clipped at the borders, overlapping: varies.


@pytest.mark.parametrize('field, value', [
    ('length', -1), ('length', 2.5), ('n_holes', 0), ('fill', float('nan')), ('fill', 'mean')])
def test_bad_hparams_raise(field, value):
  with pytest.raises(ValueError, match=field):
    mixing.get('cutout', **{field: value})
