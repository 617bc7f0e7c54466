"""Tests for storm_jax.mixing.augmix and the JSD objective (docs/DESIGN.md#augmix).

Every operation is checked against PIL itself (the reference `augmentations.py` runs PIL on
uint8 images), with the magnitudes computed here as the reference computes them.
"""

from __future__ import annotations

import functools
import importlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from storm_jax import mixing

augmix_lib = importlib.import_module('storm_jax.mixing.augmix')
Image = pytest.importorskip('PIL.Image')
ImageEnhance = pytest.importorskip('PIL.ImageEnhance')
ImageOps = pytest.importorskip('PIL.ImageOps')

OPS = augmix_lib.ALL_OPS


def _pil_op(img: np.ndarray, name: str, level: float, sign: float) -> np.ndarray:
  """The reference op on a uint8 image with the level and sign given (not drawn)."""
  pil = Image.fromarray(img.squeeze(-1) if img.shape[-1] == 1 else img)
  width, height = pil.size
  int_param = lambda maxval: int(level * maxval / 10)
  float_param = lambda maxval: float(level) * maxval / 10.0
  affine = lambda data: pil.transform(pil.size, Image.AFFINE, data, resample=Image.BILINEAR)
  enhance = lambda cls: cls(pil).enhance(float_param(1.8) + 0.1)
  out = {
      'autocontrast': lambda: ImageOps.autocontrast(pil),
      'equalize': lambda: ImageOps.equalize(pil),
      'posterize': lambda: ImageOps.posterize(pil, 4 - int_param(4)),
      'solarize': lambda: ImageOps.solarize(pil, 256 - int_param(256)),
      'rotate': lambda: pil.rotate(sign * int_param(30), resample=Image.BILINEAR),
      'shear_x': lambda: affine((1, sign * float_param(0.3), 0, 0, 1, 0)),
      'shear_y': lambda: affine((1, 0, 0, sign * float_param(0.3), 1, 0)),
      'translate_x': lambda: affine((1, 0, sign * int_param(width / 3), 0, 1, 0)),
      'translate_y': lambda: affine((1, 0, 0, 0, 1, sign * int_param(height / 3))),
      'color': lambda: enhance(ImageEnhance.Color),
      'contrast': lambda: enhance(ImageEnhance.Contrast),
      'brightness': lambda: enhance(ImageEnhance.Brightness),
      'sharpness': lambda: enhance(ImageEnhance.Sharpness),
  }[name]()
  return np.asarray(out, np.int64).reshape(img.shape)


def _image(rng, shape, kind):
  if kind == 'full':
    return rng.integers(0, 256, shape).astype(np.uint8)
  if kind == 'narrow':  # a low-contrast image: autocontrast / equalize do real work
    return rng.integers(90, 140, shape).astype(np.uint8)
  # smooth gradients + noise, closer to a photo for the geometric ops.
  h, w, c = shape
  ramp = np.add.outer(np.arange(h) * 5, np.arange(w) * 3)[..., None] + np.arange(c) * 40
  return ((ramp + rng.integers(0, 30, shape)) % 256).astype(np.uint8)


@functools.cache
def _jit_step(all_ops: bool):
  return jax.jit(functools.partial(augmix_lib.op_step, all_ops=all_ops))


def _jax_op(img, op, level, sign, all_ops=True):
  out = _jit_step(all_ops)(jnp.asarray(img, jnp.float32), jnp.int32(op), jnp.float32(level),
                           jnp.float32(sign))
  return np.asarray(out).astype(np.int64)


def _exact_autocontrast(img):
  """Exact-rational autocontrast, and where PIL's float64 arithmetic may land one level lower."""
  out, exact_point = np.empty(img.shape, np.int64), np.zeros(img.shape, bool)
  for c in range(img.shape[-1]):
    v = img[..., c].astype(np.int64)
    lo, hi = v.min(), v.max()
    if hi <= lo:
      out[..., c] = v
      continue
    out[..., c] = np.clip((v - lo) * 255 // (hi - lo), 0, 255)
    exact_point[..., c] = ((v - lo) * 255) % (hi - lo) == 0
  return out, exact_point


@pytest.mark.parametrize('shape', [(32, 32, 3), (24, 40, 3), (16, 16, 1)], ids=str)
@pytest.mark.parametrize('name', OPS)
def test_op_matches_pil(name, shape):
  rng = np.random.default_rng(100 * OPS.index(name) + shape[1])
  op = OPS.index(name)
  for trial, kind in enumerate(['full', 'narrow', 'ramp', 'ramp']):
    img = _image(rng, shape, kind)
    level = rng.uniform(2.5 if trial == 0 else 0.1, 3.0) if trial < 3 else rng.uniform(3.0, 10.0)
    sign = (-1.0, 1.0)[trial % 2]
    got = _jax_op(img, op, level, sign)
    want = _pil_op(img, name, level, sign)
    diff = np.abs(got - want)
    if name in ('equalize', 'posterize', 'solarize', 'translate_x', 'translate_y', 'brightness'):
      np.testing.assert_array_equal(got, want, err_msg=f'{name} {kind} level={level}')
    elif name == 'autocontrast':
      exact, exact_point = _exact_autocontrast(img)
      np.testing.assert_array_equal(got, exact)
      # PIL differs only at exact-integer points, by one level down (float64 rounding).
      assert np.all((got == want) | (exact_point & (want == got - 1)))
    else:  # float32 vs PIL's float64 before truncation: a level apart on a few pixels.
      assert diff.max() <= 1, (name, kind, level, diff.max())
      assert np.mean(diff == 0) >= 0.99, (name, kind, level, np.mean(diff == 0))
    if name not in ('autocontrast', 'equalize') and kind == 'full' and not (
        name == 'color' and shape[-1] == 1):  # colour balance of a grey image: a no-op
      assert not np.array_equal(got, img), f'{name} did nothing'


def test_identity_step_and_masked_steps_are_exact():
  rng = np.random.default_rng(0)
  img = _image(rng, (20, 28, 3), 'full')
  np.testing.assert_array_equal(_jax_op(img, augmix_lib.IDENTITY, 2.0, 1.0), img)
  np.testing.assert_array_equal(_jax_op(img, augmix_lib.IDENTITY, 2.0, 1.0, all_ops=False), img)
  # Steps at or beyond a chain's depth are not applied.
  chain = jax.jit(functools.partial(augmix_lib.chain, all_ops=False))
  x = jnp.asarray(img, jnp.float32)
  ops = jnp.array([OPS.index('solarize'), OPS.index('rotate'), OPS.index('posterize')])
  levels, signs = jnp.full(3, 2.5), jnp.ones(3)
  np.testing.assert_array_equal(chain(x, ops, levels, signs, 1),
                                _jax_op(img, ops[0], 2.5, 1.0, all_ops=False))
  two = _jax_op(_jax_op(img, ops[0], 2.5, 1.0).astype(np.uint8), ops[1], 2.5, 1.0)
  np.testing.assert_array_equal(chain(x, ops, levels, signs, 2), two)


def _params(rng, batch, views, width, steps, n_ops=len(augmix_lib.OPS), m=None):
  lead = (batch, views)
  return {
      'weights': jnp.asarray(rng.dirichlet(np.ones(width), lead), jnp.float32),
      'm': jnp.asarray(rng.uniform(size=lead) if m is None else np.full(lead, m), jnp.float32),
      'depth': jnp.asarray(rng.integers(1, steps + 1, lead + (width,)), jnp.int32),
      'ops': jnp.asarray(rng.integers(0, n_ops, lead + (width, steps)), jnp.int32),
      'levels': jnp.asarray(rng.uniform(0.1, 3.0, lead + (width, steps)), jnp.float32),
      'signs': jnp.asarray(rng.choice([-1.0, 1.0], lead + (width, steps)), jnp.float32),
  }


def test_augmix_matches_pil_chains():
  """The full op vs the reference formula with PIL chains, on injected draws."""
  rng = np.random.default_rng(1)
  b, views, width, steps = 3, 2, 3, 3
  x = np.stack([_image(rng, (32, 32, 3), k) for k in ('full', 'narrow', 'ramp')])
  params = _params(rng, b, views, width, steps)
  p = jax.tree.map(np.asarray, params)
  got = np.asarray(jax.jit(functools.partial(augmix_lib.augment, all_ops=False))(
      params, jnp.asarray(x, jnp.float32)))
  assert got.shape == (views, b, 32, 32, 3)
  for i in range(b):
    for v in range(views):
      mix = np.zeros((32, 32, 3))
      for k in range(width):
        img = x[i]
        for s in range(p['depth'][i, v, k]):
          img = _pil_op(img, OPS[p['ops'][i, v, k, s]], p['levels'][i, v, k, s],
                        p['signs'][i, v, k, s]).astype(np.uint8)
        mix += p['weights'][i, v, k] * img
      want = (1 - p['m'][i, v]) * x[i] + p['m'][i, v] * mix
      diff = np.abs(got[v, i] - want)
      # A chain pixel one level off (autocontrast / warps) moves the mix by <= m * w_k.
      assert diff.max() <= 1.0 + 1e-3, diff.max()
      assert np.mean(diff < 1e-3) >= 0.95


def test_reductions():
  rng = np.random.default_rng(2)
  x = jnp.asarray(np.stack([_image(rng, (16, 24, 3), 'ramp') for _ in range(4)]), jnp.float32)
  y = jax.nn.one_hot(jnp.arange(4), 5)
  # m = 0: every view is the clean image, bit for bit.
  params = _params(rng, 4, 2, 3, 3, m=0.0)
  out, y_out = augmix_lib.apply(params, x, y, all_ops=False, jsd=True)
  np.testing.assert_array_equal(out, jnp.tile(x, (3, 1, 1, 1)))
  np.testing.assert_array_equal(y_out, jnp.tile(y, (3, 1)))
  # width = depth = 1 with a fixed op: (1 - m) x + m op(x).
  params = _params(rng, 4, 1, 1, 1)
  params['ops'] = jnp.full_like(params['ops'], OPS.index('solarize'))
  out, y_out = augmix_lib.apply(params, x, y, all_ops=False, jsd=False)
  m = np.asarray(params['m'])[:, 0, None, None, None]
  x_np = np.asarray(x)
  level = np.asarray(params['levels'])[:, 0, 0, 0]
  op_x = np.stack([_pil_op(x_np[i].astype(np.uint8), 'solarize', level[i], 1.0)
                   for i in range(4)])
  np.testing.assert_allclose(out, (1 - m) * x_np + m * op_x, atol=1e-4)
  np.testing.assert_array_equal(y_out, y)


@pytest.mark.slow  # compiles the whole op (~20-30 s on a loaded CPU)
def test_mixer_layout_and_flags():
  m = mixing.get('augmix')
  assert (m.multiplicity, m.needs_pixels, m.consistency_weight) == (3, True, 12.0)
  single = mixing.get('augmix', jsd=False)
  assert (single.multiplicity, single.consistency_weight) == (1, 0.0)
  assert mixing.get('augmix', jsd_weight=6.0).consistency_weight == 6.0
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.integers(0, 256, (5, 16, 16, 3)), jnp.float32)
  y = jax.nn.one_hot(jnp.arange(5) % 3, 3)
  x_out, y_out = jax.jit(m)(jax.random.key(0), x, y)
  chex.assert_shape(x_out, (15, 16, 16, 3))
  np.testing.assert_array_equal(x_out[:5], x)            # view 0 is the clean batch
  np.testing.assert_array_equal(y_out, jnp.tile(y, (3, 1)))  # labels unchanged
  assert not np.array_equal(x_out[5:10], x_out[10:])      # the two views differ
  assert float(x_out.min()) >= 0.0 and float(x_out.max()) <= 255.0
  x1, y1 = jax.jit(single)(jax.random.key(0), x, y)
  chex.assert_shape(x1, (5, 16, 16, 3))
  np.testing.assert_array_equal(y1, y)


@pytest.mark.slow  # compiles the whole op (~20-30 s on a loaded CPU)
def test_distributions():
  n = 4096
  params = jax.jit(lambda k: mixing.get('augmix', severity=3.0).sample(k, (n, 8, 8, 3)))(
      jax.random.key(4))
  w = np.asarray(params['weights']).reshape(-1, 3)
  np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
  np.testing.assert_allclose(w.mean(0), 1 / 3, atol=0.01)
  np.testing.assert_allclose(w.var(0), 1 / 18, atol=0.005)   # Dirichlet(1,1,1) marginal var
  m = np.asarray(params['m']).ravel()
  assert abs(m.mean() - 0.5) < 0.01 and abs(m.var() - 1 / 12) < 0.005   # Beta(1, 1)
  depth = np.asarray(params['depth']).ravel()
  np.testing.assert_allclose(np.bincount(depth, minlength=4)[1:] / depth.size, 1 / 3, atol=0.01)
  ops = np.asarray(params['ops']).ravel()
  assert ops.max() == len(augmix_lib.OPS) - 1    # the corruption-overlapping ops stay out
  np.testing.assert_allclose(np.bincount(ops) / ops.size, 1 / 9, atol=0.01)
  levels = np.asarray(params['levels']).ravel()
  assert levels.min() >= 0.1 and levels.max() < 3.0 and abs(levels.mean() - 1.55) < 0.02
  signs = np.asarray(params['signs']).ravel()
  assert set(np.unique(signs)) == {-1.0, 1.0} and abs(signs.mean()) < 0.02
  assert params['ops'].shape == (n, 2, 3, 3)
  # all_ops adds the four enhance ops; a fixed depth fixes the steps.
  p = mixing.get('augmix', all_ops=True, depth=2, jsd=False, alpha=0.5).sample(
      jax.random.key(5), (n, 8, 8, 3))
  assert p['ops'].shape == (n, 1, 3, 2) and np.all(np.asarray(p['depth']) == 2)
  np.testing.assert_allclose(np.bincount(np.asarray(p['ops']).ravel()) / p['ops'].size, 1 / 13,
                             atol=0.01)
  assert abs(float(jnp.var(p['m'])) - 1 / 12) > 0.02  # Beta(0.5, 0.5): var 1/8


@pytest.mark.slow  # compiles the whole op (~20-30 s on a loaded CPU)
def test_jit_vmap_determinism_no_retrace(key_reuse_checked):
  chex.clear_trace_counter()
  mixer = mixing.get('augmix')
  rng = np.random.default_rng(6)
  x = jnp.asarray(rng.integers(0, 256, (2, 8, 12, 3)), jnp.float32)
  y = jax.nn.one_hot(jnp.arange(2), 4)

  def mix(key):
    return mixer.apply(mixer.sample(key, x.shape), x, y)

  step = jax.jit(chex.assert_max_traces(mix, n=1))
  keys = lambda: jax.random.split(jax.random.key(7), 3)
  outs = [step(k) for k in keys()]
  chex.assert_trees_all_equal(outs[0], step(keys()[0]))
  vx, _ = jax.jit(jax.vmap(mix))(keys())
  for i, (ox, _) in enumerate(outs):
    np.testing.assert_allclose(vx[i], ox, atol=1e-4)
  assert not np.array_equal(outs[0][0], outs[1][0])


@pytest.mark.parametrize('field, value', [
    ('width', 0), ('depth', 0), ('depth', -2), ('severity', 0.0), ('severity', 11),
    ('alpha', -1.0), ('all_ops', 1), ('jsd', 'yes'), ('jsd_weight', -1.0)])
def test_bad_hparams_rejected(field, value):
  with pytest.raises(ValueError, match=field):
    mixing.get('augmix', **{field: value})


def test_all_ops_needs_rgb_or_gray():
  with pytest.raises(ValueError, match='all_ops'):
    augmix_lib.apply({}, jnp.zeros((2, 8, 8, 4)), jnp.eye(2), all_ops=True, jsd=True)


# ------------------------------------------------------------------------------------------
# JSD consistency objective.
# ------------------------------------------------------------------------------------------


def _np_jsd(logits):
  """The reference's three `F.kl_div(log M, p_i, reduction='batchmean')`, averaged."""
  z = np.asarray(logits, np.float64)
  p = np.exp(z - z.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  log_m = np.log(np.clip(p.mean(0), 1e-7, 1.0))
  kls = []
  for pi in p:
    with np.errstate(divide='ignore', invalid='ignore'):
      plogp = np.where(pi > 0, pi * np.log(pi), 0.0)
    kls.append(np.sum(plogp - pi * log_m) / pi.shape[0])
  return sum(kls) / len(kls)


def test_jsd_matches_numpy_and_is_zero_for_equal_views():
  rng = np.random.default_rng(8)
  logits = rng.normal(size=(3, 6, 10)).astype(np.float32) * 3
  np.testing.assert_allclose(mixing.jsd_consistency(logits), _np_jsd(logits), rtol=1e-5)
  # One-hot-like (saturated) views: p_c = 0 terms are 0 log 0 = 0, the clip keeps M finite.
  peaked = np.stack([np.eye(10)[:6] * 200, np.eye(10)[1:7] * 200, -np.eye(10)[:6] * 200])
  assert np.isfinite(float(mixing.jsd_consistency(peaked)))
  np.testing.assert_allclose(mixing.jsd_consistency(peaked), _np_jsd(peaked), rtol=1e-4)
  same = np.broadcast_to(logits[0], logits.shape)
  assert abs(float(mixing.jsd_consistency(same))) < 1e-6
  assert float(mixing.jsd_consistency(logits)) > 0.0


def test_consistency_objective_is_clean_ce_plus_weighted_jsd():
  rng = np.random.default_rng(9)
  b, n = 4, 5
  logits = rng.normal(size=(3 * b, n)).astype(np.float32)
  y = np.eye(n, dtype=np.float32)[rng.integers(0, n, b)]
  views = logits.reshape(3, b, n)
  z = views[0].astype(np.float64)
  ce = np.mean(-np.sum(y * (z - np.log(np.exp(z).sum(-1, keepdims=True))), -1))
  want = ce + 12.0 * _np_jsd(views)
  got = mixing.consistency_objective(jnp.asarray(logits), jnp.tile(y, (3, 1)), views=3,
                                     weight=12.0)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  got_b = mixing.consistency_objective(jnp.asarray(logits), jnp.asarray(y), views=3, weight=12.0)
  np.testing.assert_allclose(got_b, want, rtol=1e-5)
  # The classification term sees only the clean view: changing the other views' labels or
  # logits in a JS-neutral way does not change it.
  np.testing.assert_allclose(
      mixing.consistency_objective(jnp.asarray(logits), jnp.asarray(y), views=3, weight=0.0),
      ce, rtol=1e-5)
  grads = jax.grad(lambda z: mixing.consistency_objective(z, jnp.asarray(y), views=3,
                                                          weight=12.0))(jnp.asarray(logits))
  assert np.all(np.abs(np.asarray(grads[b:])).sum(-1) > 0)  # the JS term reaches every view
  # Per-device blocks: [clean_g; aug1_g; aug2_g] for each group g == the k-major layout.
  blocks = views.reshape(3, 2, b // 2, n).transpose(1, 0, 2, 3).reshape(-1, n)
  y_blocks = np.tile(y.reshape(2, 1, b // 2, n), (1, 3, 1, 1)).reshape(-1, n)
  np.testing.assert_allclose(
      mixing.consistency_objective(jnp.asarray(blocks), jnp.asarray(y_blocks), views=3,
                                   weight=12.0, groups=2), want, rtol=1e-5)
  np.testing.assert_allclose(
      mixing.consistency_objective(jnp.asarray(blocks), jnp.asarray(y), views=3, weight=12.0,
                                   groups=2), want, rtol=1e-5)
  with pytest.raises(ValueError, match='views'):
    mixing.consistency_objective(jnp.zeros((7, 3)), jnp.zeros((7, 3)), views=3, weight=1.0)
