"""Tests of multi-mix (docs/DESIGN.md#multimix).

Compiling the Beta sampler is slow on CPU, so most tests apply the op to parameters drawn
with NumPy (fixed seeds); the sampler itself is tested by a few compiled calls.
"""

from __future__ import annotations

import importlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from storm_jax import mixing

# `mixing.multimix` etc. are the plain functions; the modules are imported by path.
mm = importlib.import_module('storm_jax.mixing.multimix')
mixup_lib = importlib.import_module('storm_jax.mixing.mixup')
cutmix_lib = importlib.import_module('storm_jax.mixing.cutmix')

NUM_SEEDS = 8

# (shape, K): B = 1, odd B, non-square 32x48 and C != 3.
CONFIGS = pytest.mark.parametrize('shape,K', [
    ((1, 8, 12, 2), 3),
    ((7, 8, 12, 1), 5),
    ((8, 32, 48, 3), 4),
], ids=['b1-K3', 'b7-K5', 'b8-32x48-K4'])
BASES = pytest.mark.parametrize('base', ['mixup', 'cutmix'])


def _identity_batch(b, h, w):
  """Image b is the constant one-hot e_b over b channels and its label is e_b."""
  x = jnp.broadcast_to(jnp.eye(b, dtype=jnp.float32)[:, None, None, :], (b, h, w, b))
  return x, jnp.eye(b, dtype=jnp.float32)


def _np_params(shape, K, base, seed, num=None):
  """multi-mix params drawn with NumPy; a leading [num] axis when num is given."""
  rng = np.random.default_rng(seed)
  b, h, w, _ = shape
  lead = () if num is None else (num,)
  partner = np.sort(rng.beta(1.0, 1.0, lead + (K,)), axis=-1).astype(np.float32)
  params = {'lam': jnp.asarray(1.0 - partner),
            'perm': jnp.asarray(np.argsort(rng.random(lead + (b,)), -1).astype(np.int32))}
  if base == 'cutmix':
    params['cy'] = jnp.asarray(rng.integers(0, h, lead).astype(np.int32))
    params['cx'] = jnp.asarray(rng.integers(0, w, lead).astype(np.int32))
  return params


def _np_multimix(x, y, params, base):
  """docs/DESIGN.md#multimix, paper convention: partner weight λ_k = 1 - lam_k, k-major rows."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  b, h, w, _ = x.shape
  perm = np.asarray(params['perm'])
  xs, ys = [], []
  for lam in np.asarray(params['lam']):
    partner = np.float32(1.0) - np.float32(lam)  # the paper's λ_k
    if base == 'mixup':
      xs.append((1 - partner) * x + partner * x[perm])
      ys.append((1 - partner) * y + partner * y[perm])
      continue
    # CutMix-style box of side sqrt(λ_k) around the shared integer centre (float32 like the op).
    side = np.sqrt(np.float32(1.0) - np.float32(lam))
    cut_h = int(np.floor(np.float32(h) * side))
    cut_w = int(np.floor(np.float32(w) * side))
    cy, cx = int(params['cy']), int(params['cx'])
    y1, y2 = np.clip(cy - cut_h // 2, 0, h), np.clip(cy + cut_h // 2, 0, h)
    x1, x2 = np.clip(cx - cut_w // 2, 0, w), np.clip(cx + cut_w // 2, 0, w)
    out = x.copy()
    out[:, y1:y2, x1:x2] = x[perm][:, y1:y2, x1:x2]
    share = (y2 - y1) * (x2 - x1) / (h * w)
    xs.append(out)
    ys.append((1 - share) * y + share * y[perm])
  return np.concatenate(xs), np.concatenate(ys)


def _apply_many(m, params, x, y):
  return jax.jit(jax.vmap(m.apply, in_axes=(0, None, None)))(params, x, y)


@BASES
@CONFIGS
def test_matches_numpy_reference(base, shape, K):
  """T15, T1, T2: K*B rows, k-major, equal to the paper's formulas; labels sum to 1."""
  m = mixing.get('multimix', base=base, K=K)
  assert m.multiplicity == K
  x = jax.random.normal(jax.random.key(100), shape)
  y = jax.nn.softmax(jax.random.normal(jax.random.key(101), (shape[0], 6)))
  params = _np_params(shape, K, base, seed=0, num=NUM_SEEDS)
  x_mix, y_mix = _apply_many(m, params, x, y)
  chex.assert_shape(x_mix, (NUM_SEEDS, K * shape[0]) + shape[1:])
  chex.assert_shape(y_mix, (NUM_SEEDS, K * shape[0], 6))
  np.testing.assert_allclose(y_mix.sum(-1), 1.0, atol=1e-6)
  for s in range(NUM_SEEDS):
    ref_x, ref_y = _np_multimix(x, y, jax.tree.map(lambda a, s=s: a[s], params), base)
    np.testing.assert_allclose(x_mix[s], ref_x, atol=1e-5)
    np.testing.assert_allclose(y_mix[s], ref_y, atol=1e-6)


@BASES
def test_eager_equals_jit(base):
  m = mixing.get('multimix', base=base, K=3)
  x = jax.random.normal(jax.random.key(0), (7, 8, 12, 2))
  y = jax.nn.one_hot(jnp.arange(7) % 4, 4)
  params = _np_params(x.shape, 3, base, seed=1)
  eager = m.apply(params, x, y)
  chex.assert_trees_all_close(eager, jax.jit(m.apply)(params, x, y), atol=1e-6)
  ref_x, ref_y = _np_multimix(x, y, params, base)
  np.testing.assert_allclose(eager[0], ref_x, atol=1e-5)
  np.testing.assert_allclose(eager[1], ref_y, atol=1e-6)


@BASES
@pytest.mark.parametrize('shape', [(1, 8, 12, 2), (7, 8, 12, 1), (8, 32, 48, 3)],
                         ids=['b1', 'b7', 'b8-32x48'])
def test_k1_is_base_method(base, shape):
  """T8: multi-mix with K=1 is Mixup / CutMix with the same λ, pairing (and centre)."""
  m = mixing.get('multimix', base=base, K=1)
  base_apply = mixing.get(base).apply
  x = jax.random.normal(jax.random.key(2), shape)
  y = jax.nn.one_hot(jnp.arange(shape[0]) % 5, 5)
  params = _np_params(shape, 1, base, seed=2, num=NUM_SEEDS)

  def both(p):
    return m.apply(p, x, y), base_apply(dict(p, lam=p['lam'][0]), x, y)

  (x_mix, y_mix), (ref_x, ref_y) = jax.jit(jax.vmap(both))(params)
  np.testing.assert_allclose(x_mix, ref_x, atol=1e-6)
  np.testing.assert_allclose(y_mix, ref_y, atol=1e-6)


@pytest.mark.parametrize('shape', [(7, 8, 12, 1), (8, 32, 48, 3)], ids=['b7', 'b8-32x48'])
def test_cutmix_nested_boxes_and_pixel_share(shape):
  """T3, T6, T9: box_k ⊆ box_{k+1}; partner share λ'_1 <= ... <= λ'_K; labels == shares."""
  b, h, w, _ = shape
  K = 5
  m = mixing.get('multimix', base='cutmix', K=K)
  x, y = _identity_batch(b, h, w)
  params = _np_params(x.shape, K, 'cutmix', seed=3, num=NUM_SEEDS)
  x_mix, y_mix = _apply_many(m, params, x, y)
  assert set(np.unique(np.asarray(x_mix))) <= {0.0, 1.0}  # one source per pixel
  np.testing.assert_allclose(x_mix.mean((2, 3)), y_mix, atol=1e-6)
  x_k = np.asarray(x_mix).reshape(NUM_SEEDS, K, b, h, w, b)
  y_k = np.asarray(y_mix).reshape(NUM_SEEDS, K, b, b)
  grew = False
  for s in range(NUM_SEEDS):
    perm = np.asarray(params['perm'][s])
    for i in range(b):
      if perm[i] == i:
        continue
      region = x_k[s, :, i, :, :, perm[i]] == 1.0  # [K, H, W] partner pixels
      assert (region[:-1] <= region[1:]).all()  # nested
      share = y_k[s, :, i, perm[i]]
      assert (np.diff(share) >= 0).all()  # λ'_1 <= ... <= λ'_K
      np.testing.assert_allclose(share, region.mean((1, 2)), atol=1e-6)
      grew |= share[-1] > share[0]
  assert grew  # the shares really vary with k


@pytest.mark.parametrize('shape', [(7, 8, 12, 1), (8, 32, 48, 3)], ids=['b7', 'b8-32x48'])
def test_mixup_ordering_along_the_segment(shape):
  """‖x̃_k − x‖ increases with k; x̃_k lies on the segment [x, x_π] with weight λ_k."""
  K = 5
  m = mixing.get('multimix', base='mixup', K=K)
  x = jax.random.normal(jax.random.key(4), shape)
  y = jax.nn.one_hot(jnp.arange(shape[0]) % 3, 3)
  params = _np_params(shape, K, 'mixup', seed=4, num=NUM_SEEDS)
  x_mix, _ = _apply_many(m, params, x, y)
  b = shape[0]
  x_k = np.asarray(x_mix, np.float64).reshape((NUM_SEEDS, K) + shape)
  dist = np.linalg.norm((x_k - np.asarray(x)).reshape(NUM_SEEDS, K, b, -1), axis=-1)
  for s in range(NUM_SEEDS):
    perm = np.asarray(params['perm'][s])
    moved = perm != np.arange(b)
    assert (np.diff(dist[s][:, moved], axis=0) > 0).all()
    full = np.linalg.norm((np.asarray(x)[perm] - np.asarray(x)).reshape(b, -1), axis=-1)
    partner = 1.0 - np.asarray(params['lam'][s], np.float64)
    np.testing.assert_allclose(dist[s], partner[:, None] * full[None], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('base', ['mixup', 'cutmix'])
def test_lambda_extremes(base):
  """T1: λ at the extremes gives finite outputs and exact pixel-share labels."""
  K = 5
  m = mixing.get('multimix', base=base, K=K)
  x, y = _identity_batch(6, 8, 12)
  params = dict(_np_params(x.shape, K, base, seed=5))
  params['lam'] = jnp.array([1.0, 1 - 1e-8, 0.5, 1e-8, 0.0], jnp.float32)
  x_mix, y_mix = jax.jit(m.apply)(params, x, y)
  chex.assert_tree_all_finite((x_mix, y_mix))
  np.testing.assert_allclose(x_mix.mean((1, 2)), y_mix, atol=1e-6)
  np.testing.assert_array_equal(x_mix[:6], x)  # λ = 1: the anchor itself
  np.testing.assert_array_equal(y_mix[:6], y)


def test_sampler_distribution():
  """T11: K sorted λ's shared by the batch (order statistics of Beta(1, 1)); one centre."""
  b, K, n, h, w = 6, 5, 2000, 8, 12
  m = mixing.get('multimix', base='cutmix', K=K)
  params = jax.jit(jax.vmap(lambda k: m.sample(k, (b, h, w, 1))))(
      jax.random.split(jax.random.key(0), n))
  chex.assert_shape(params['lam'], (n, K))
  chex.assert_shape(params['cy'], (n,))
  chex.assert_shape(params['perm'], (n, b))
  lam = np.asarray(params['lam'])
  assert ((lam >= 0) & (lam <= 1)).all()
  assert (np.diff(lam, axis=-1) <= 0).all()  # anchor weights decrease: λ_k increases
  # The k-th smallest of K uniforms has mean k / (K + 1); std <= 0.17, se <= 0.004.
  np.testing.assert_allclose((1 - lam).mean(0), np.arange(1, K + 1) / (K + 1), atol=0.02)
  cy, cx = np.asarray(params['cy']), np.asarray(params['cx'])
  assert cy.min() == 0 and cy.max() == h - 1 and cx.min() == 0 and cx.max() == w - 1
  np.testing.assert_allclose(cy.mean(), (h - 1) / 2, atol=0.3)  # se 0.05
  np.testing.assert_allclose(cx.mean(), (w - 1) / 2, atol=0.4)  # se 0.08
  assert (np.sort(np.asarray(params['perm']), -1) == np.arange(b)).all()


def test_determinism_and_plain_function():
  """T12: same key -> same output, other key -> other output; the plain fn forwards hparams."""
  x, y = _identity_batch(8, 8, 12)
  run = jax.jit(lambda key: mixing.multimix(key, x, y, base='cutmix', K=3))
  a = run(jax.random.key(1))
  chex.assert_trees_all_equal(a, run(jax.random.key(1)))
  assert not np.array_equal(a[0], run(jax.random.key(2))[0])
  chex.assert_shape(a[0], (24, 8, 12, 8))
  assert set(np.unique(np.asarray(a[0]))) <= {0.0, 1.0}  # CutMix boxes, not Mixup blends
  np.testing.assert_allclose(a[0].mean((1, 2)), a[1], atol=1e-6)


def test_tiny_alpha_is_finite():
  m = mixing.get('multimix', base='mixup', K=5, alpha=1e-3)
  x, y = _identity_batch(6, 8, 12)
  params = jax.jit(jax.vmap(lambda k: m.sample(k, x.shape)))(
      jax.random.split(jax.random.key(0), NUM_SEEDS))
  lam = np.asarray(params['lam'])
  assert np.isfinite(lam).all() and (np.minimum(lam, 1 - lam) < 1e-3).mean() > 0.9
  for base in ('mixup', 'cutmix'):
    p = dict(params)
    if base == 'cutmix':
      p['cy'] = jnp.full((NUM_SEEDS,), 4, jnp.int32)
      p['cx'] = jnp.full((NUM_SEEDS,), 6, jnp.int32)
    x_mix, y_mix = _apply_many(mixing.get('multimix', base=base, K=5), p, x, y)
    chex.assert_tree_all_finite((x_mix, y_mix))
    np.testing.assert_allclose(x_mix.mean((2, 3)), y_mix, atol=1e-6)


@pytest.mark.parametrize('field,value', [
    ('base', 'puzzlemix'), ('K', 0), ('K', 5.0), ('alpha', 0.0), ('alpha', -2.0),
    ('alpha', float('inf')), ('pairing', 'random'), ('granularity', 'example')])
def test_bad_hparams_raise(field, value):
  with pytest.raises(ValueError, match=field):
    mixing.get('multimix', **{field: value})
