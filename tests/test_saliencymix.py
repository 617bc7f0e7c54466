"""Tests for storm_jax.mixing.saliencymix and its OpenCV fine-grained saliency.

tests/fixtures/opencv_fine_grained_saliency.npz holds a few small deterministic uint8 images
(smooth waves plus a blob, 32x32x3, 24x40x3, 16x16x1, 7x9x3, and a constant 12x12x3), OpenCV's
own grey image of each (`cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)`) and its saliency map
`round(255 * cv2.saliency.StaticSaliencyFineGrained_create().computeSaliency(img)[1])` as
uint8, made with opencv-contrib-python-headless 5.0.0 (the version is stored in the file) by
tests/fixtures/make_opencv_fine_grained_saliency.py. With OpenCV installed, `test_against_opencv_directly` compares on fresh random images too.
"""

from __future__ import annotations

import fractions
import importlib
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import _numpy_refs_a as ref
from storm_jax import mixing
from storm_jax.mixing.cutmix import apply as cutmix_apply

saliencymix_lib = importlib.import_module('storm_jax.mixing.saliencymix')
FIXTURE = pathlib.Path(__file__).parent / 'fixtures' / 'opencv_fine_grained_saliency.npz'


def _fixture():
  data = np.load(FIXTURE)
  n = sum(k.startswith('image') for k in data.files)
  return [(data[f'image{i}'], data[f'grey{i}'], data[f'map{i}']) for i in range(n)]


def test_saliency_matches_opencv_fixture():
  """Bit-exact from OpenCV's grey image; end to end too on these images."""
  saliency = jax.jit(mixing.fine_grained_saliency)
  cases = _fixture()
  assert len(cases) >= 6
  for image, grey, want in cases:
    from_grey = np.asarray(saliency(jnp.asarray(grey)[None, ..., None]))[0]
    np.testing.assert_array_equal(from_grey, want)
    end_to_end = np.asarray(saliency(jnp.asarray(image)[None]))[0]
    np.testing.assert_array_equal(end_to_end, want)
    assert end_to_end.argmax() == want.argmax()
  assert cases[-1][2].max() == 0  # the constant image: zeros, no NaN.


def test_float32_quotient_never_rounds_below_k_over_255():
  """`_scale_255` relies on float32(k / 255) >= k / 255 for k = 0..255."""
  for k in range(256):
    q = np.float32(k) / np.float32(255)
    assert fractions.Fraction(float(q)) >= fractions.Fraction(k, 255)


def test_against_opencv_directly():
  cv2 = pytest.importorskip('cv2')
  if not hasattr(cv2, 'saliency'):
    pytest.skip('needs opencv-contrib (cv2.saliency)')
  rng = np.random.default_rng(0)
  sal = cv2.saliency.StaticSaliencyFineGrained_create()
  fn = jax.jit(mixing.fine_grained_saliency)
  for shape in ((32, 32, 3), (32, 48, 3)):
    images = np.stack([cv2.GaussianBlur(rng.integers(0, 256, shape, dtype=np.uint8), (5, 5), 0)
                       for _ in range(50)])
    want = np.stack([np.round(sal.computeSaliency(i)[1] * 255) for i in images]).astype(int)
    greys = np.stack([cv2.cvtColor(i, cv2.COLOR_BGR2GRAY) for i in images])[..., None]
    np.testing.assert_array_equal(np.asarray(fn(jnp.asarray(greys))), want)
    got = np.asarray(fn(jnp.asarray(images)))
    # Grey conversions differ by 1 on < 0.5 % of pixels between OpenCV versions.
    assert np.mean(got != want) < 0.02
    agree = np.mean(got.reshape(50, -1).argmax(1) == want.reshape(50, -1).argmax(1))
    assert agree >= 0.95


def _cutmix_box_about(height, width, lam, cy, cx):
  return ref.rand_bbox(height, width, np.sqrt(1 - lam), cy, cx)


def test_box_centred_on_the_partner_peak():
  """box='batch': one box around the first maximum of saliency[perm[0]]; 'example': each
  sample's own partner's peak; labels = realised share (the reference's saliency_bbox)."""
  b, height, width = 5, 32, 48
  x, y = ref.random_batch(0, (b, height, width, 3))
  rng = np.random.default_rng(1)
  saliency = rng.integers(0, 200, (b, height, width))
  peaks = [(3, 40), (31, 0), (16, 24), (0, 47), (20, 5)]
  for i, (r, c) in enumerate(peaks):
    saliency[i, r, c] = 255
    saliency[i, r, c + 1 if c + 1 < width else c - 1] = 255  # tie: the first one counts
    if c + 1 >= width:
      saliency[i, r, c - 1] = 0
  saliency = jnp.asarray(saliency, jnp.float32)
  for box in ('batch', 'example'):
    m = mixing.get('saliencymix', box=box)
    params = m.sample(jax.random.key(3), x.shape, saliency=saliency)
    perm = np.asarray(params['perm'])
    want = [peaks[perm[0]]] * b if box == 'batch' else [peaks[p] for p in perm]
    np.testing.assert_array_equal(np.broadcast_to(params['cy'], (b,)), [w[0] for w in want])
    np.testing.assert_array_equal(np.broadcast_to(params['cx'], (b,)), [w[1] for w in want])
    x_mix, y_mix = jax.jit(m.apply)(params, x, y)
    x_ref, y_ref = ref.cutmix(x, y, params['lam'], params['cy'], params['cx'], perm)
    np.testing.assert_array_equal(x_mix, x_ref.astype(np.float32))
    np.testing.assert_allclose(y_mix, y_ref, atol=1e-6)


def test_uniform_centre_is_per_batch_cutmix():
  """centre='uniform' (the released code's effective behaviour) == per-batch CutMix."""
  x, y = ref.random_batch(2, (6, 32, 32, 3))
  m = mixing.get('saliencymix', centre='uniform')
  assert not m.needs_saliency
  params = m.sample(jax.random.key(4), x.shape)
  assert params['cy'].shape == ()
  got = saliencymix_lib.apply(params, x, y)
  want = cutmix_apply(params, x, y)
  np.testing.assert_array_equal(got[0], want[0])
  np.testing.assert_array_equal(got[1], want[1])
  x_fn, _ = mixing.saliencymix(jax.random.key(4), x, y, centre='uniform')
  np.testing.assert_array_equal(x_fn, m(jax.random.key(4), x, y)[0])


def test_constant_images_and_plain_function():
  images = jnp.full((4, 16, 16, 3), 90, jnp.uint8)
  saliency = mixing.fine_grained_saliency(images)
  assert np.all(np.asarray(saliency) == 0)
  x, y = ref.random_batch(5, (4, 16, 16, 3))
  x_mix, y_mix = mixing.saliencymix(jax.random.key(0), x, y, saliency=saliency)
  assert np.isfinite(x_mix).all() and np.isfinite(y_mix).all()
  np.testing.assert_allclose(np.asarray(y_mix).sum(1), 1.0, atol=1e-6)


def test_errors_before_compiling():
  m = mixing.get('saliencymix')
  with pytest.raises(ValueError, match='saliency'):
    m.sample(jax.random.key(0), (4, 8, 8, 3))
  with pytest.raises(ValueError, match='saliency'):
    m.sample(jax.random.key(0), (4, 8, 8, 3), saliency=jnp.zeros((4, 8, 9)))
  with pytest.raises(ValueError, match='images.shape'):
    mixing.fine_grained_saliency(jnp.zeros((2, 8, 8, 4), jnp.uint8))


@pytest.mark.parametrize('field, value', [
    ('alpha', 0.0), ('centre', 'random'), ('box', 'image'), ('pairing', 'shuffle')])
def test_bad_hparams_raise(field, value):
  with pytest.raises(ValueError, match=field):
    mixing.get('saliencymix', **{field: value})


def test_floor_div_is_exact():
  rng = np.random.default_rng(0)
  den = rng.integers(1, 60000, (4, 50, 50)).astype(np.int32)
  num = rng.integers(-2**24 + 1, 2**24, den.shape).astype(np.int32)
  num[0, 0] = den[0, 0] * 7     # exact multiples: where a rounded reciprocal slips
  num[0, 1] = -den[0, 1] * 3
  num[1, 0] = den[1, 0] * 7 - 1
  got = jax.jit(lambda n: saliencymix_lib._floor_div(n, den))(num)
  np.testing.assert_array_equal(got, num // den)
