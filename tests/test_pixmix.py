"""PixMix and IPMix: mixing operations and whole ops vs NumPy versions, labels, jit."""

from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from storm_jax import mixing
from storm_jax.data import fractals

augmix_lib = importlib.import_module('storm_jax.mixing.augmix')  # the ops PixMix / IPMix use
pixmix_lib = importlib.import_module('storm_jax.mixing.pixmix')
ipmix_lib = importlib.import_module('storm_jax.mixing.ipmix')

B, H, W, C, N = 3, 16, 24, 3, 5
SHAPE = (B, H, W, C)
# Ops whose PIL results the tests reproduce exactly (LUTs and flips).
EXACT_OPS = ('autocontrast', 'equalize', 'posterize', 'solarize', 'mirror', 'invert')


def _op_step(img, op, level, sign):
  """One op of the shared list (`augmix.OP_NAMES`), enhance ops included."""
  return augmix_lib.op_step(img, op, level, sign, all_ops=True)


def _images(seed=0, shape=SHAPE):
  return np.random.default_rng(seed).integers(0, 256, shape).astype(np.float32)


def _pictures(shape=SHAPE):
  b, h, w, _ = shape
  return fractals.generate(b, (h, w), seed=5).astype(np.float32)


def _labels():
  return jax.nn.one_hot(jnp.arange(B) % N, N)


# ----------------------------------------------------------------------------- NumPy versions


def np_add(u, v, a, b):
  return ((2 * u - 1) * a + (2 * v - 1) * b + 1) / 2


def np_multiply(u, v, a, b):
  return (2 * u) ** a * (2 * np.maximum(v, 1e-37)) ** b / 2


def np_op(img, name, level, sign):
  """The references' PIL ops (`augmentations.py`) on a uint8 image, for the EXACT_OPS."""
  from PIL import Image, ImageOps  # pylint: disable=g-import-not-at-top
  level = float(level)
  pil = Image.fromarray(img.astype(np.uint8))
  if name == 'autocontrast':
    out = ImageOps.autocontrast(pil)
  elif name == 'equalize':
    out = ImageOps.equalize(pil)
  elif name == 'posterize':
    out = ImageOps.posterize(pil, 4 - int(level * 4 / 10))
  elif name == 'solarize':
    out = ImageOps.solarize(pil, 256 - int(level * 256 / 10))
  elif name == 'mirror':
    out = ImageOps.mirror(pil)
  elif name == 'invert':
    out = ImageOps.invert(pil)
  else:
    raise ValueError(name)
  del sign
  return np.asarray(out, np.float64)


def np_pixmix(x, pictures, p):
  """PixMix of `cifar.py` (one image at a time) with the injected draws `p`."""
  out = []
  for i in range(len(x)):
    orig = x[i]
    aug = lambda s: np_op(orig, augmix_lib.OP_NAMES[p['op'][i, s]], p['level'][i, s],
                          p['sign'][i, s]) / 255.0
    mixed = aug(0) if p['use_aug'][i, 0] else orig / 255.0
    for s in range(1, p['rounds'][i] + 1):
      partner = aug(s) if p['use_aug'][i, s] else pictures[i] / 255.0
      op = np_multiply if p['multiply'][i, s] else np_add
      mixed = np.clip(op(mixed, partner, p['a'][i, s], p['b'][i, s]), 0, 1)
    out.append(mixed * 255.0)
  return np.stack(out)


def np_patch_mix(img, picture, mix_op, top, left, height, width, a, b, q, noise):
  """`IPMix_utils.patch_mixing` on a crop [top:top+height, left:left+width], clipped."""
  out = img.copy()
  sl = np.s_[top:top + height, left:left + width]
  u, v = img[sl] / 255.0, picture[sl] / 255.0
  if mix_op == 0:
    patch = np.clip(np_add(u, v, a, b), 0, 1) * 255
  elif mix_op == 1:
    patch = np.clip(np_multiply(u, v, a, b), 0, 1) * 255
  elif mix_op == 2:
    patch = np.where(noise[sl][..., :1] < q, img[sl], picture[sl])
  else:
    patch = np.where(noise[sl] < q, img[sl], picture[sl])
  out[sl] = np.floor(patch + 1e-4)
  return out


def np_ipmix_views(x, pictures, p):
  """`cifar.py ipmix(...)` for every example and view with the injected draws `p`."""
  b, v, k, t = p['op'].shape
  views = np.zeros((v, b) + x.shape[1:])
  for i in range(b):
    for j in range(v):
      mix = 0.0
      for c in range(k):
        img = x[i].astype(np.float64)
        for s in range(p['steps'][i, j, c]):
          q = {key: p[key][i, j, c, s] for key in ipmix_lib._STEP_KEYS}
          if p['patch'][i, j, c]:
            img = np_patch_mix(img, pictures[i], q['mix_op'], q['top'], q['left'], q['height'],
                               q['width'], q['a'], q['b'], q['q'], q['noise'])
          else:
            img = np_op(img, augmix_lib.OP_NAMES[q['op']], q['level'], q['sign'])
        mix = mix + p['weights'][i, j, c] * img
      m = p['m'][i, j]
      views[j, i] = (1 - m) * x[i] + m * mix
  return views


def _restrict_ops(params, key, names=EXACT_OPS):
  """Params with every augmentation op drawn from `names` (ops the NumPy side reproduces)."""
  params = dict(params)
  which = jax.random.randint(key, params['op'].shape, 0, len(names))
  params['op'] = augmix_lib.op_indices(names)[which]
  return params


# ----------------------------------------------------------------------------- ops


@pytest.mark.parametrize('name', EXACT_OPS)
def test_pointwise_and_flip_ops_match_pil(name):
  pytest.importorskip('PIL')
  x = _images(1, (6, H, W, C))
  x[0] = 77.0  # a constant image: autocontrast / equalize leave it alone
  x[1, ..., 0] = np.where(x[1, ..., 0] > 128, 200.0, 90.0)  # a channel of two levels
  levels = np.linspace(0.1, 2.99, 6).astype(np.float32)
  op = jnp.full((6,), augmix_lib.OP_NAMES.index(name), jnp.int32)
  got = jax.jit(jax.vmap(_op_step))(x, op, levels, jnp.ones(6))
  for i in range(6):
    want = np_op(x[i], name, levels[i], 1.0)
    if name == 'autocontrast':
      # PIL computes v * scale + offset in float64, which lands one level low on a few exact
      # integers of (v - lo) 255 / (hi - lo); the op may too (float32), never more.
      diff = np.abs(np.asarray(got[i]) - want)
      assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (i, diff.max())
      continue
    np.testing.assert_array_equal(np.asarray(got[i]), want, err_msg=f'{name} image {i}')


def test_integer_translation_is_an_exact_shift_with_black_fill():
  x = _images(2, (1, H, W, C))[0]
  # level 3 -> int(3 * (W / 3) / 10) = 2 columns; sign -1: content moves right by 2.
  got = np.asarray(_op_step(x, jnp.int32(7), jnp.float32(3.0), jnp.float32(-1.0)))
  np.testing.assert_array_equal(got[:, 2:], x[:, :-2])
  np.testing.assert_array_equal(got[:, :2], 0.0)
  got = np.asarray(_op_step(x, jnp.int32(8), jnp.float32(3.0), jnp.float32(1.0)))
  shift = int(3.0 * (H / 3) / 10)  # rows: content moves up
  np.testing.assert_array_equal(got[:H - shift], x[shift:])
  np.testing.assert_array_equal(got[H - shift:], 0.0)


@pytest.mark.parametrize('name', ['rotate', 'shear_x', 'shear_y', 'color', 'contrast',
                                  'brightness', 'sharpness'])
def test_geometric_and_enhance_ops_are_close_to_pil(name):
  pil_image = pytest.importorskip('PIL.Image')
  from PIL import ImageEnhance  # pylint: disable=g-import-not-at-top
  x = fractals.generate(1, (H, W), seed=3)[0]  # a smooth picture, not noise
  level, sign = np.float32(2.5), 1.0
  got = np.asarray(_op_step(x.astype(np.float32), jnp.int32(augmix_lib.OP_NAMES.index(name)),
                           level, jnp.float32(sign)))
  pil = pil_image.fromarray(x)
  f = float(level) * 1.8 / 10 + 0.1
  shear = float(level) * 0.3 / 10
  ref = {
      'rotate': lambda: pil.rotate(int(float(level) * 30 / 10), resample=pil_image.BILINEAR),
      'shear_x': lambda: pil.transform((W, H), pil_image.AFFINE, (1, shear, 0, 0, 1, 0),
                                       resample=pil_image.BILINEAR),
      'shear_y': lambda: pil.transform((W, H), pil_image.AFFINE, (1, 0, 0, shear, 1, 0),
                                       resample=pil_image.BILINEAR),
      'color': lambda: ImageEnhance.Color(pil).enhance(f),
      'contrast': lambda: ImageEnhance.Contrast(pil).enhance(f),
      'brightness': lambda: ImageEnhance.Brightness(pil).enhance(f),
      'sharpness': lambda: ImageEnhance.Sharpness(pil).enhance(f),
  }[name]()
  diff = np.abs(got - np.asarray(ref, np.float64))
  assert (diff <= 1).mean() >= 0.97, (name, diff.max(), (diff > 1).mean())
  assert np.array_equal(got, np.floor(got)) and got.min() >= 0 and got.max() <= 255


def test_op_lists():
  assert augmix_lib.OPS == ('autocontrast', 'equalize', 'posterize', 'rotate',
                                   'solarize', 'shear_x', 'shear_y', 'translate_x',
                                   'translate_y')
  assert set(augmix_lib.IPMIX_OPS) == (set(augmix_lib.OPS) - {'autocontrast'}
                                        | {'mirror', 'invert'})
  assert len(augmix_lib.ALL_OPS) == 13
  with pytest.raises(ValueError, match='nosuch'):
    augmix_lib.op_indices(['nosuch'])


# ----------------------------------------------------------------------------- mixing ops


def test_add_and_multiply_match_numpy():
  rng = np.random.default_rng(0)
  u, v = rng.uniform(0, 1, (2, 50)).astype(np.float32)
  v[:5] = 0.0  # multiply's 1e-37 guard
  a, b = pixmix_lib.sample_ab(jax.random.key(0), 3.0, (50,))
  a, b = np.asarray(a), np.asarray(b)
  np.testing.assert_allclose(pixmix_lib.add(u, v, a, b), np_add(u, v, a, b), rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(pixmix_lib.multiply(u, v, a, b), np_multiply(u, v, a, b),
                             rtol=1e-4, atol=1e-6)


def test_mixing_coefficients_distribution():
  a, b = pixmix_lib.sample_ab(jax.random.key(1), 3.0, (40000,))
  a, b = np.asarray(a), np.asarray(b)
  first = a < 1  # Beta(3, 1) branch (a in (0, 1)); else a = 1 + Beta(1, 3) in (1, 2)
  assert abs(first.mean() - 0.5) < 0.02
  assert abs(a[first].mean() - 0.75) < 0.01 and abs(b[first].mean() - 0.25) < 0.01
  assert (b[first] >= 0).all() and (b[~first] <= 0).all()
  assert abs(a[~first].mean() - 1.25) < 0.01 and abs(b[~first].mean() + 0.25) < 0.01


@pytest.mark.parametrize('mix_op', range(4))
def test_patch_mixing_matches_numpy_and_leaves_the_outside_alone(mix_op):
  x, pic = _images(3, (1, H, W, C))[0], _pictures()[0]
  noise = np.random.default_rng(4).uniform(0, 1, (H, W, C)).astype(np.float32)
  for top, left, height, width in ((0, 0, 8, 8), (5, 9, 3, 11), (H - 2, W - 4, 2, 4)):
    kw = dict(top=top, left=left, height=height, width=width, a=np.float32(1.4),
              b=np.float32(-0.3), q=np.float32(0.4))
    got = np.asarray(ipmix_lib.patch_mix(x, pic, mix_op=jnp.int32(mix_op), noise=noise, **kw))
    want = np_patch_mix(x.astype(np.float64), pic, mix_op, noise=noise, **kw)
    assert (got != want).mean() < 0.002 and np.abs(got - want).max() <= 1
    outside = np.ones((H, W), bool)
    outside[top:top + height, left:left + width] = False
    np.testing.assert_array_equal(got[outside], x[outside])
    if mix_op == 2:  # random_pixels: all channels of a pixel come from the same source
      sl = np.s_[top:top + height, left:left + width]
      from_img = got[sl] == x[sl]
      from_pic = got[sl] == pic[sl]
      assert (from_img | from_pic).all()


# ----------------------------------------------------------------------------- PixMix


@pytest.fixture(scope='module')
def pixmix_fns():
  m = mixing.get('pixmix')
  return m, jax.jit(lambda k, p: m.sample(k, SHAPE, mixing_pictures=p)), jax.jit(m.apply)


def test_pixmix_matches_numpy(pixmix_fns):
  pytest.importorskip('PIL')
  m, sample, apply = pixmix_fns
  x, pics = _images(5), _pictures()
  for seed in range(3):
    params = _restrict_ops(sample(jax.random.key(seed), pics), jax.random.key(100 + seed))
    got, y = apply(params, x, _labels())
    want = np_pixmix(x, pics, jax.tree.map(np.asarray, params))
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-3)
    np.testing.assert_array_equal(y, _labels())


def test_pixmix_draws(pixmix_fns):
  m, sample, _ = pixmix_fns
  big = (4000, 2, 2, 1)
  p = mixing.get('pixmix').sample(jax.random.key(3), big,
                                  mixing_pictures=jnp.zeros(big))
  rounds = np.bincount(np.asarray(p['rounds']), minlength=5) / 4000
  np.testing.assert_allclose(rounds, 0.2, atol=0.03)  # r ~ U{0..4}
  assert abs(np.asarray(p['use_aug']).mean() - 0.5) < 0.02
  assert abs(np.asarray(p['multiply']).mean() - 0.5) < 0.02
  ops = np.bincount(np.asarray(p['op']).ravel(), minlength=15)
  assert (ops[:13] > 0).all() and (ops[13:] == 0).all()  # the --all-ops list
  levels = np.asarray(p['level'])
  assert levels.min() >= 0.1 and levels.max() < 3.0


def test_pixmix_no_round_and_no_augment_is_identity(pixmix_fns):
  m, sample, apply = pixmix_fns
  x = _images(6)
  params = dict(sample(jax.random.key(0), _pictures()))
  params['rounds'] = jnp.zeros((B,), jnp.int32)
  params['use_aug'] = jnp.zeros_like(params['use_aug'])
  got, _ = apply(params, x, _labels())
  np.testing.assert_allclose(np.asarray(got), x, atol=1e-4)
  params['rounds'] = jnp.full((B,), 4, jnp.int32)  # four rounds do change every image
  got, _ = apply(params, x, _labels())
  assert all(np.abs(np.asarray(got[i]) - x[i]).mean() > 1 for i in range(B))


def test_pixmix_mixer_labels_output_range_and_no_retrace():
  traces = []
  m = mixing.get('pixmix', label_smoothing=0.1)

  @jax.jit
  def run(key, x, y, pics):
    traces.append(1)
    return m(key, x, y, mixing_pictures=pics)

  x, y, pics = _images(7), _labels(), _pictures()
  out1, y1 = run(jax.random.key(0), x, y, pics)
  out2, y2 = run(jax.random.key(1), x + 1.0, y, pics[::-1])
  assert len(traces) == 1
  np.testing.assert_allclose(y1, mixing.smooth_labels(y, 0.1), rtol=1e-6)
  np.testing.assert_array_equal(y1, y2)
  for out in (out1, out2):
    assert out.shape == SHAPE and out.dtype == jnp.float32
    assert float(out.min()) >= 0 and float(out.max()) <= 255.0 + 1e-3
  assert not np.array_equal(out1, out2)


def test_missing_or_mismatched_mixing_pictures_raise():
  for name in ('pixmix', 'ipmix'):
    m = mixing.get(name)
    with pytest.raises(ValueError, match='mixing_pictures'):
      m.sample(jax.random.key(0), SHAPE)
    with pytest.raises(ValueError, match=r'mixing_pictures.shape'):
      m.sample(jax.random.key(0), SHAPE, mixing_pictures=jnp.zeros((B, H, H, C)))


@pytest.mark.parametrize('name,hparams,field', [
    ('pixmix', dict(k=-1), 'k'), ('pixmix', dict(beta=0.0), 'beta'),
    ('pixmix', dict(severity=20.0), 'severity'), ('pixmix', dict(all_ops=1), 'all_ops'),
    ('ipmix', dict(width=0), 'width'), ('ipmix', dict(max_steps=0), 'max_steps'),
    ('ipmix', dict(patch_sizes=(1, 4)), 'patch_sizes'), ('ipmix', dict(patch_sizes=8),
                                                         'patch_sizes'),
    ('ipmix', dict(jsd='yes'), 'jsd'), ('ipmix', dict(jsd_weight=-1.0), 'jsd_weight'),
    ('ipmix', dict(alpha=0.0), 'alpha')])
def test_bad_hyper_parameters_raise_naming_the_field(name, hparams, field):
  with pytest.raises(ValueError, match=field):
    mixing.get(name, **hparams)


def test_ipmix_patch_larger_than_the_image_is_rejected():
  m = mixing.get('ipmix')  # default sides up to 32 > H = 16
  with pytest.raises(ValueError, match='patch_sizes'):
    m.sample(jax.random.key(0), SHAPE, mixing_pictures=jnp.zeros(SHAPE))


def test_mixer_flags():
  p, i, i1 = mixing.get('pixmix'), mixing.get('ipmix'), mixing.get('ipmix', jsd=False)
  assert p.needs_pixels and p.needs_mixing_pictures and p.multiplicity == 1
  assert p.consistency_weight == 0
  assert i.needs_pixels and i.needs_mixing_pictures and i.multiplicity == 3
  assert i.consistency_weight == 12.0
  assert i1.multiplicity == 1 and i1.consistency_weight == 0


# ----------------------------------------------------------------------------- IPMix

PATCHES = (4, 8, 16)  # fit 16 x 24 images


@pytest.fixture(scope='module')
def ipmix_fns():
  m = mixing.get('ipmix', patch_sizes=PATCHES)
  return m, jax.jit(lambda k, p: m.sample(k, SHAPE, mixing_pictures=p)), jax.jit(m.apply)


@pytest.mark.slow
def test_ipmix_matches_numpy(ipmix_fns):
  pytest.importorskip('PIL')
  m, sample, apply = ipmix_fns
  x, pics = _images(8), _pictures()
  for seed in range(2):
    params = _restrict_ops(sample(jax.random.key(seed), pics), jax.random.key(50 + seed))
    got, y = apply(params, x, _labels())
    views = np_ipmix_views(x, pics, jax.tree.map(np.asarray, params))
    want = np.concatenate([x[None], views]).reshape((-1,) + SHAPE[1:])
    diff = np.abs(np.asarray(got) - want)
    # Patch values are truncated to integers: a float32 vs float64 difference at an integer
    # boundary moves one chain pixel by one level (weighted by m w_i <= 1 in the mix).
    assert diff.max() <= 1.0 + 1e-3 and (diff > 1e-3).mean() < 0.005, (diff.max(),)
    np.testing.assert_array_equal(got[:B], x)  # view 0 is the clean image
    np.testing.assert_array_equal(y, jnp.tile(_labels(), (3, 1)))


@pytest.mark.slow
def test_ipmix_draws_and_invariants(ipmix_fns):
  m, sample, apply = ipmix_fns
  x, pics = _images(9), _pictures()
  p = jax.tree.map(np.asarray, sample(jax.random.key(4), pics))
  np.testing.assert_allclose(p['weights'].sum(-1), 1.0, rtol=1e-5)
  assert set(np.unique(p['height'][p['height'] == p['width']])) <= set(range(2, 17))
  assert (p['top'] >= 0).all() and (p['top'] + p['height'] <= H).all()
  assert (p['left'] >= 0).all() and (p['left'] + p['width'] <= W).all()
  assert p['height'].min() >= 2 and p['width'].min() >= 2
  assert set(np.unique(p['op'])) <= set(augmix_lib.op_indices(augmix_lib.IPMIX_OPS).tolist())
  assert p['steps'].min() >= 0 and p['steps'].max() <= 3
  # m = 0: every view is the clean image; no step in any chain: the same.
  for override in ({'m': jnp.zeros_like(p['m'])}, {'steps': jnp.zeros_like(p['steps'])}):
    got, _ = apply({**p, **override}, x, _labels())
    np.testing.assert_allclose(np.asarray(got), np.tile(x, (3, 1, 1, 1)), atol=1e-3)
  got, _ = apply(p, x, _labels())
  assert not np.allclose(got[B:2 * B], got[2 * B:])  # the two views differ


@pytest.mark.slow
def test_ipmix_without_jsd_and_no_retrace():
  traces = []
  m = mixing.get('ipmix', patch_sizes=PATCHES, jsd=False)

  @jax.jit
  def run(key, x, y, pics):
    traces.append(1)
    return m(key, x, y, mixing_pictures=pics)

  x, y, pics = _images(10), _labels(), _pictures()
  out1, y1 = run(jax.random.key(0), x, y, pics)
  out2, _ = run(jax.random.key(1), x, y, pics)
  assert len(traces) == 1 and out1.shape == SHAPE
  np.testing.assert_array_equal(y1, y)
  assert not np.array_equal(out1, out2)
  assert float(out1.min()) >= 0 and float(out1.max()) <= 255.0 + 1e-3


def test_preview_grid_shows_the_mixing_pictures(tmp_path):
  pytest.importorskip('matplotlib')
  from storm_jax.utils import preview  # pylint: disable=g-import-not-at-top
  x = (_images(11) / 255.0 - 0.5) / 0.25
  for pics, name in ((None, 'plain.png'), (_pictures(), 'with_pictures.png')):
    preview.mixed_batch_grid(str(tmp_path / name), x, np.asarray(_labels()), mean=(0.5,) * 3,
                             std=(0.25,) * 3, mixing_pictures=pics)
  from PIL import Image  # pylint: disable=g-import-not-at-top
  plain = Image.open(tmp_path / 'plain.png').size
  with_pictures = Image.open(tmp_path / 'with_pictures.png').size
  assert with_pictures[0] * with_pictures[1] > plain[0] * plain[1]  # 3 more panels
