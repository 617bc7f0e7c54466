"""Tests of DCutMix and DMixup (docs/DESIGN.md#dcutmix).

Compiling the Dirichlet sampler is slow on CPU, so most tests apply the ops to parameters
drawn with NumPy (fixed seeds); the sampler itself is tested by a few compiled calls.
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

# `mixing.dcutmix` / `mixing.mixup` are the plain functions; the modules are imported by path.
dc = importlib.import_module('storm_jax.mixing.dcutmix')
mixup_lib = importlib.import_module('storm_jax.mixing.mixup')

NUM_SEEDS = 8

# (shape, K, alpha): B = 1, odd B, non-square 32x48 and C != 3, K from 2 to 5.
CONFIGS = pytest.mark.parametrize('shape,K,alpha', [
    ((1, 8, 12, 2), 2, 1.0),
    ((7, 8, 12, 1), 5, 0.2),
    ((8, 32, 48, 3), 3, 1.0),
], ids=['b1-K2', 'b7-K5', 'b8-32x48-K3'])


def _identity_batch(b, h, w):
  """Image b is the constant one-hot e_b over b channels and its label is e_b."""
  x = jnp.broadcast_to(jnp.eye(b, dtype=jnp.float32)[:, None, None, :], (b, h, w, b))
  return x, jnp.eye(b, dtype=jnp.float32)


def _np_params(batch, K, alpha, seed, num=None):
  """DCutMix / DMixup params drawn with NumPy; a leading [num] axis when num is given."""
  rng = np.random.default_rng(seed)
  lead = () if num is None else (num,)
  phi = rng.dirichlet(alpha * np.ones(K), size=lead + (batch,)).astype(np.float32)
  perms = np.argsort(rng.random(lead + (K - 1, batch)), axis=-1).astype(np.int32)
  offsets = rng.random(lead + (K - 1, batch, 2)).astype(np.float32)
  return {'phi': jnp.asarray(phi), 'perms': jnp.asarray(perms), 'offsets': jnp.asarray(offsets)}


# ----------------------------------------------------------------------------------------
# NumPy references written from docs/DESIGN.md#dcutmix / clovaai/DCutMix `joint_dirichlet` (float64
# as the reference, which adds 1e-10 to the stick denominator and does not clamp the running
# product), on fixed φ, permutations and offset uniforms.
# ----------------------------------------------------------------------------------------


def _np_dcutmix(x, y, phi, perms, offsets):
  x, y = np.asarray(x), np.asarray(y, np.float64)
  phi, perms, offsets = np.asarray(phi, np.float64), np.asarray(perms), np.asarray(offsets)
  b, h, w, _ = x.shape
  k_total = phi.shape[1]
  x_mix = x.copy()
  boxes = np.zeros((k_total - 1, b, 4), np.int64)
  y_mix = np.zeros_like(y)
  for i in range(b):
    top, left, bh_prev, bw_prev = 0, 0, h, w
    area_prev = h * w
    mul = 1.0
    for k in range(k_total - 1):
      v = phi[i, k] if k == 0 else phi[i, k] / (mul + 1e-10)
      mul *= (1.0 - v)
      s = np.sqrt(max(1.0 - v, 0.0))
      bh, bw = int(np.round(bh_prev * s)), int(np.round(bw_prev * s))
      if bh < bh_prev and bw < bw_prev:
        oy = min(int(np.floor(offsets[k, i, 0] * (bh_prev - bh + 1))), bh_prev - bh)
        ox = min(int(np.floor(offsets[k, i, 1] * (bw_prev - bw + 1))), bw_prev - bw)
      else:
        oy = ox = 0
      bh, bw = min(bh, bh_prev), min(bw, bw_prev)
      top, left = top + oy, left + ox
      x_mix[i, top:top + bh, left:left + bw] = x[perms[k, i], top:top + bh, left:left + bw]
      src = i if k == 0 else perms[k - 1, i]
      y_mix[i] += (area_prev - bh * bw) / (h * w) * y[src]
      boxes[k, i] = (top, left, bh, bw)
      area_prev, bh_prev, bw_prev = bh * bw, bh, bw
    src = i if k_total == 1 else perms[k_total - 2, i]
    y_mix[i] += area_prev / (h * w) * y[src]
  return x_mix, y_mix, boxes


def _np_dmixup(x, y, phi, perms):
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  phi, perms = np.asarray(phi, np.float64), np.asarray(perms)
  x_mix = phi[:, 0, None, None, None] * x
  y_mix = phi[:, 0, None] * y
  for k in range(perms.shape[0]):
    x_mix = x_mix + phi[:, k + 1, None, None, None] * x[perms[k]]
    y_mix = y_mix + phi[:, k + 1, None] * y[perms[k]]
  return x_mix, y_mix


def _apply_many(apply, params, x, y):
  return jax.jit(jax.vmap(apply, in_axes=(0, None, None)))(params, x, y)


def _boxes_many(params, height, width):
  fn = jax.vmap(functools.partial(dc.nested_boxes, height=height, width=width))
  return np.stack(jax.jit(fn)(params['phi'], params['offsets']), axis=-1)  # [n, K-1, B, 4]


@CONFIGS
def test_dcutmix_matches_numpy_reference(shape, K, alpha):
  """T15: boxes, pixels and labels equal the reference loop on the same φ, perms, offsets."""
  m = mixing.get('dcutmix', K=K, alpha=alpha)
  x = jax.random.normal(jax.random.key(100), shape)
  y = jax.nn.softmax(jax.random.normal(jax.random.key(101), (shape[0], 6)))
  params = _np_params(shape[0], K, alpha, seed=0, num=NUM_SEEDS)
  x_mix, y_mix = _apply_many(m.apply, params, x, y)
  boxes = _boxes_many(params, shape[1], shape[2])
  for s in range(NUM_SEEDS):
    ps = jax.tree.map(lambda a, s=s: a[s], params)
    ref_x, ref_y, ref_boxes = _np_dcutmix(x, y, ps['phi'], ps['perms'], ps['offsets'])
    np.testing.assert_array_equal(boxes[s], ref_boxes)
    np.testing.assert_array_equal(x_mix[s], ref_x)
    np.testing.assert_allclose(y_mix[s], ref_y, atol=1e-6)


@CONFIGS
def test_dcutmix_label_equals_pixel_share_and_nested(shape, K, alpha):
  """T3, T6, T9: one source per pixel, labels == integer pixel shares, nested boxes."""
  b, h, w, _ = shape
  m = mixing.get('dcutmix', K=K, alpha=alpha)
  x, y = _identity_batch(b, h, w)
  params = _np_params(b, K, alpha, seed=1, num=NUM_SEEDS)
  x_mix, y_mix = _apply_many(m.apply, params, x, y)
  assert set(np.unique(np.asarray(x_mix))) <= {0.0, 1.0}  # exactly one source per pixel
  np.testing.assert_allclose(x_mix.sum(-1), 1.0)
  np.testing.assert_allclose(y_mix.sum(-1), 1.0, atol=1e-6)
  np.testing.assert_allclose(x_mix.mean((2, 3)), y_mix, atol=1e-6)
  top, left, bh, bw = np.moveaxis(_boxes_many(params, h, w), -1, 0)  # [n, K-1, B] each
  bottom, right = top + bh, left + bw
  assert (bh >= 0).all() and (bw >= 0).all()
  assert (top >= 0).all() and (left >= 0).all() and (bottom <= h).all() and (right <= w).all()
  for k in range(1, K - 1):  # box k inside box k-1
    assert (top[:, k] >= top[:, k - 1]).all() and (left[:, k] >= left[:, k - 1]).all()
    assert (bottom[:, k] <= bottom[:, k - 1]).all() and (right[:, k] <= right[:, k - 1]).all()
  if K > 2:
    assert (bh[:, 1:] <= bh[:, :-1]).all() and (bw[:, 1:] <= bw[:, :-1]).all()


@pytest.mark.parametrize('name', ['dcutmix', 'dmixup'])
def test_eager_equals_jit_and_reference(name):
  m = mixing.get(name, K=3)
  x = jax.random.normal(jax.random.key(0), (7, 8, 12, 2))
  y = jax.nn.one_hot(jnp.arange(7) % 4, 4)
  params = _np_params(7, 3, 1.0, seed=2)
  eager = m.apply(params, x, y)
  chex.assert_trees_all_close(eager, jax.jit(m.apply)(params, x, y), atol=1e-6)
  if name == 'dcutmix':
    ref_x, ref_y, _ = _np_dcutmix(x, y, params['phi'], params['perms'], params['offsets'])
  else:
    ref_x, ref_y = _np_dmixup(x, y, params['phi'], params['perms'])
  np.testing.assert_allclose(eager[0], ref_x, atol=1e-5)
  np.testing.assert_allclose(eager[1], ref_y, atol=1e-6)


def test_dcutmix_hand_computed_areas():
  """φ = (.5, .3, .2) on 16x16: box sides 11 then 7; labels are fractional pixel shares."""
  b, h, w = 6, 16, 16
  x, y = _identity_batch(b, h, w)
  m = mixing.get('dcutmix', K=3)
  params = _np_params(b, 3, 1.0, seed=3)
  params['phi'] = jnp.tile(jnp.array([[0.5, 0.3, 0.2]]), (b, 1))
  x_mix, y_mix = jax.jit(m.apply)(params, x, y)
  # keep 0.5 of 16x16 -> round(16 * 0.7071) = 11; v_2 = 0.3 / 0.5 = 0.6 keeps 0.4 of 11x11 ->
  # round(11 * 0.6325) = 7.
  anchor, ring, inner = (256 - 121) / 256, (121 - 49) / 256, 49 / 256
  perms = np.asarray(params['perms'])
  for i in range(b):
    expected = np.zeros(b)
    expected[i] += anchor
    expected[perms[0, i]] += ring
    expected[perms[1, i]] += inner
    np.testing.assert_allclose(y_mix[i], expected, atol=1e-6)
  np.testing.assert_allclose(x_mix.mean((1, 2)), y_mix, atol=1e-6)


def test_dcutmix_offsets_uniform_and_reach_last_row():
  """Integer offsets are uniform over {0, .., room}, room included (last row reachable)."""
  n, h, w = 3000, 8, 8
  # φ_1 = 0.4375 keeps 0.5625 of the image: 6x6 box, room 2 -> offsets {0, 1, 2}.
  phi = jnp.tile(jnp.array([[0.4375, 0.5625]]), (n, 1))
  offsets = jax.random.uniform(jax.random.key(0), (1, n, 2))
  top, left, bh, bw = jax.jit(dc.nested_boxes, static_argnums=(2, 3))(phi, offsets, h, w)
  np.testing.assert_array_equal(bh, 6)
  np.testing.assert_array_equal(bw, 6)
  for off in (top[0], left[0]):
    freq = np.bincount(np.asarray(off), minlength=3) / n
    assert freq.shape == (3,)
    np.testing.assert_allclose(freq, 1 / 3, atol=0.04)  # se 0.009


@pytest.mark.parametrize('phi', [
    [1.0, 0.0, 0.0],         # everything to the anchor
    [0.0, 0.0, 1.0],         # everything to the innermost image
    [0.5, 0.5, 0.0],         # vanishing last stick
    [0.3, 0.7000001, 0.0],   # float error: v_2 > 1
    [0.0, 1.0, 0.0],
    [1e-30, 1e-30, 1.0],
])
def test_dcutmix_vanishing_sticks_are_guarded(phi):
  b, h, w = 4, 8, 12
  x, y = _identity_batch(b, h, w)
  m = mixing.get('dcutmix', K=3)
  params = _np_params(b, 3, 1.0, seed=4)
  params['phi'] = jnp.tile(jnp.array([phi], jnp.float32), (b, 1))
  x_mix, y_mix = m.apply(params, x, y)
  chex.assert_tree_all_finite((x_mix, y_mix))
  np.testing.assert_allclose(y_mix.sum(-1), 1.0, atol=1e-6)
  np.testing.assert_allclose(x_mix.mean((1, 2)), y_mix, atol=1e-6)
  if phi[0] == 1.0:
    np.testing.assert_array_equal(x_mix, x)
  if phi[2] == 1.0:  # the innermost image covers everything
    np.testing.assert_array_equal(x_mix, x[params['perms'][1]])
  ref_x, ref_y, _ = _np_dcutmix(x, y, params['phi'], params['perms'], params['offsets'])
  np.testing.assert_array_equal(x_mix, ref_x)
  np.testing.assert_allclose(y_mix, ref_y, atol=1e-6)


@pytest.mark.parametrize('name', ['dcutmix', 'dmixup'])
def test_k1_is_identity(name):
  m = mixing.get(name, K=1)
  x = jax.random.normal(jax.random.key(0), (7, 8, 12, 3))
  y = jax.nn.one_hot(jnp.arange(7) % 4, 4)
  params = m.sample(jax.random.key(1), x.shape)
  chex.assert_shape(params['perms'], (0, 7))
  for out in (m.apply(params, x, y), jax.jit(m.apply)(params, x, y)):
    np.testing.assert_array_equal(out[0], x)
    np.testing.assert_array_equal(out[1], y)


@pytest.mark.parametrize('shape', [(1, 8, 12, 2), (7, 8, 12, 1), (8, 32, 48, 3)],
                         ids=['b1', 'b7', 'b8-32x48'])
def test_dmixup_k2_is_mixup_with_per_example_lambda(shape):
  """T8: DMixup K=2 == Mixup with λ_b = φ_b1 and the same permutation."""
  m = mixing.get('dmixup', K=2, alpha=0.5)
  x = jax.random.normal(jax.random.key(7), shape)
  y = jax.nn.one_hot(jnp.arange(shape[0]) % 5, 5)
  params = _np_params(shape[0], 2, 0.5, seed=5, num=NUM_SEEDS)

  def both(p):
    ref = mixup_lib.apply({'lam': p['phi'][:, 0], 'perm': p['perms'][0]}, x, y)
    return m.apply(p, x, y), ref

  (x_mix, y_mix), (ref_x, ref_y) = jax.jit(jax.vmap(both))(params)
  np.testing.assert_allclose(x_mix, ref_x, atol=1e-6)
  np.testing.assert_allclose(y_mix, ref_y, atol=1e-6)
  if shape[0] > 1:
    assert not np.allclose(x_mix, x)  # it did mix


@pytest.mark.parametrize('K', [3, 5])
def test_dmixup_matches_numpy_reference(K):
  shape = (7, 8, 12, 2)
  m = mixing.get('dmixup', K=K)
  x = jax.random.normal(jax.random.key(3), shape)
  y = jax.nn.one_hot(jnp.arange(7) % 4, 4)
  params = _np_params(7, K, 1.0, seed=6, num=NUM_SEEDS)
  x_mix, y_mix = _apply_many(m.apply, params, x, y)
  np.testing.assert_allclose(y_mix.sum(-1), 1.0, atol=1e-6)
  for s in range(NUM_SEEDS):
    ref_x, ref_y = _np_dmixup(x, y, params['phi'][s], params['perms'][s])
    np.testing.assert_allclose(x_mix[s], ref_x, atol=1e-5)
    np.testing.assert_allclose(y_mix[s], ref_y, atol=1e-6)


def test_sampler_distribution():
  """φ on the simplex, mean 1/K, per example; independent permutations; E[anchor share]."""
  K, b, n, h = 3, 8, 1000, 64
  m = mixing.get('dcutmix', K=K, alpha=1.0)

  def one(key):
    params = m.sample(key, (b, h, h, 1))
    _, _, bh, bw = dc.nested_boxes(params['phi'], params['offsets'], h, h)
    return params, 1.0 - (bh[0] * bw[0]) / (h * h)

  params, share = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(0), n))
  phi = np.asarray(params['phi'])  # [n, B, K]
  np.testing.assert_allclose(phi.sum(-1), 1.0, atol=1e-6)
  assert (phi >= 0).all()
  # Dir(1, 1, 1): each component has mean 1/3 and std 0.236; 8000 draws -> se 0.0026.
  np.testing.assert_allclose(phi.reshape(-1, K).mean(0), 1 / K, atol=0.012)
  assert (np.abs(phi[:, 0] - phi[:, 1]).max(-1) > 1e-3).all()  # per example, not per batch
  perms = np.asarray(params['perms'])  # [n, K-1, B]
  assert (np.sort(perms, -1) == np.arange(b)).all()
  assert (perms[:, 0] != perms[:, 1]).any(-1).mean() > 0.9  # independent permutations
  offsets = np.asarray(params['offsets'])
  assert (offsets >= 0).all() and (offsets < 1).all()
  np.testing.assert_allclose(offsets.mean(), 0.5, atol=0.01)
  # E[realised anchor share] ~ E[φ_1] = 1/K on a 64x64 image (rounding bias small).
  np.testing.assert_allclose(np.asarray(share).mean(), 1 / 3, atol=0.012)


def test_tiny_alpha_is_finite_for_both():
  """Tiny α: (almost) all mass on one image, no NaN, labels are shares (docs/DESIGN.md#pitfalls)."""
  b = 40
  x, y = _identity_batch(b, 8, 12)
  params = jax.jit(lambda k: dc.sample_dcutmix(k, x.shape, K=5, alpha=1e-3))(jax.random.key(0))
  phi = np.asarray(params['phi'])
  assert np.isfinite(phi).all()
  np.testing.assert_allclose(phi.sum(-1), 1.0, atol=1e-6)
  assert (phi.max(-1) > 0.99).mean() > 0.9  # the draws are (nearly) one-hot
  for apply in (dc.apply_dcutmix, dc.apply_dmixup):
    x_mix, y_mix = jax.jit(apply)(params, x, y)
    chex.assert_tree_all_finite((x_mix, y_mix))
    np.testing.assert_allclose(y_mix.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(x_mix.mean((1, 2)), y_mix, atol=1e-5)


def test_determinism_and_plain_functions():
  """T12: same key -> same output, other key -> other output; plain fns forward hparams."""
  b = 8
  x, y = _identity_batch(b, 8, 12)

  @jax.jit
  def run(key):
    k1, k2 = jax.random.split(key)
    return mixing.dcutmix(k1, x, y, K=4), mixing.dmixup(k2, x, y, K=1)

  a = run(jax.random.key(1))
  chex.assert_trees_all_equal(a, run(jax.random.key(1)))
  assert not np.array_equal(a[0][0], run(jax.random.key(2))[0][0])
  np.testing.assert_allclose(a[0][0].mean((1, 2)), a[0][1], atol=1e-6)
  assert ((np.asarray(a[0][1]) > 0).sum(-1) > 3).any()  # K=4 reached the op: up to 4 sources
  chex.assert_trees_all_equal(a[1], (x, y))  # K=1 reached the op: identity


@pytest.mark.parametrize('name', ['dcutmix', 'dmixup'])
@pytest.mark.parametrize('field,value', [('K', 0), ('K', 2.0), ('K', True), ('alpha', 0.0),
                                         ('alpha', -1.0), ('alpha', float('nan')),
                                         ('alpha', 'one'), ('beta', 1.0)])
def test_bad_hparams_raise(name, field, value):
  with pytest.raises(ValueError, match=field):
    mixing.get(name, **{field: value})
