"""Tests of R-Mix and its input-gradient saliency (docs/DESIGN.md#rmix).

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

# `mixing.rmix` / `mixing.mixup` are the plain functions; the modules are imported by path.
rmix_lib = importlib.import_module('storm_jax.mixing.rmix')
mixup_lib = importlib.import_module('storm_jax.mixing.mixup')

A10 = np.linspace(0.0, 0.99, 10).astype(np.float32)
NUM_SEEDS = 8

# (shape, grid_sizes): B = 1, odd B, non-square 32x48 and 8x16, C != 3, 2 or 3 grid sizes.
CONFIGS = pytest.mark.parametrize('shape,grid_sizes', [
    ((1, 8, 16, 2), (1, 4, 8)),
    ((7, 8, 12, 1), (2, 4)),
    ((8, 32, 48, 3), (2, 4)),
], ids=['b1-p148', 'b7', 'b8-32x48'])


def _identity_batch(b, h, w):
  """Image b is the constant one-hot e_b over b channels and its label is e_b."""
  x = jnp.broadcast_to(jnp.eye(b, dtype=jnp.float32)[:, None, None, :], (b, h, w, b))
  return x, jnp.eye(b, dtype=jnp.float32)


def _np_params(shape, grid_sizes, seed, num=None, num_thresholds=10):
  """R-Mix params drawn with NumPy; a leading [num] axis when num is given."""
  rng = np.random.default_rng(seed)
  b, h, w, _ = shape
  lead = () if num is None else (num,)
  perm = np.argsort(rng.random(lead + (b,)), axis=-1).astype(np.int32)
  thresholds = np.linspace(0.0, 0.99, num_thresholds).astype(np.float32)
  return {
      'perm': jnp.asarray(perm),
      'lam': jnp.asarray(rng.beta(1.0, 1.0, lead).astype(np.float32)),
      'grid': jnp.asarray(rng.integers(0, len(grid_sizes), lead).astype(np.int32)),
      'q': jnp.asarray(thresholds[rng.integers(0, num_thresholds, lead + (b,))]),
      'saliency': jnp.asarray(rng.random(lead + (b, h, w)).astype(np.float32) ** 3),
  }


def _np_mask(saliency, q, p):
  """Reference steps 2-3: pool to p x p, normalise, linear quantile, >=, upsample."""
  s = np.asarray(saliency, np.float64)
  b, h, w = s.shape
  kh, kw = h // p, w // p
  pooled = s.reshape(b, p, kh, p, kw).mean(axis=(2, 4)).reshape(b, p * p)
  pooled = pooled / (pooled.sum(1, keepdims=True) + 1e-12)
  thr = np.array([np.quantile(pooled[i], float(q[i]), method='linear') for i in range(b)])
  top = (pooled >= thr[:, None]).reshape(b, p, p)
  return np.repeat(np.repeat(top, kh, axis=1), kw, axis=2)


def _np_rmix(x, y, params, grid_sizes):
  """Reference steps 5-7 (mix_topleast_choose_top), float64."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  perm, lam = np.asarray(params['perm']), float(params['lam'])
  m = _np_mask(params['saliency'], np.asarray(params['q']), grid_sizes[int(params['grid'])])
  m_p = m[perm]
  e = (m == m_p)[..., None].astype(np.float64)
  n = 1.0 - e
  mf, mpf = m[..., None].astype(np.float64), m_p[..., None].astype(np.float64)
  x_mix = e * (lam * x + (1 - lam) * x[perm]) + n * (mf * x + mpf * x[perm])
  w_e, w_1, w_2 = e.mean((1, 2, 3)), (n * mf).mean((1, 2, 3)), (n * mpf).mean((1, 2, 3))
  y_mix = (w_e[:, None] * (lam * y + (1 - lam) * y[perm]) + w_1[:, None] * y
           + w_2[:, None] * y[perm])
  return x_mix, y_mix, (w_e, w_1, w_2)


def _apply_many(m, params, x, y):
  return jax.jit(jax.vmap(m.apply, in_axes=(0, None, None)))(params, x, y)


def _take(params, i):
  return jax.tree.map(lambda a: a[i], params)


@CONFIGS
def test_matches_numpy_reference(shape, grid_sizes):
  """T15 and T2: the op equals the reference formulas on the same params; labels sum to 1."""
  m = mixing.get('rmix', grid_sizes=grid_sizes)
  x = jax.random.normal(jax.random.key(100), shape)
  y = jax.nn.softmax(jax.random.normal(jax.random.key(101), (shape[0], 6)))
  params = _np_params(shape, grid_sizes, seed=0, num=NUM_SEEDS)
  x_mix, y_mix = _apply_many(m, params, x, y)
  np.testing.assert_allclose(y_mix.sum(-1), 1.0, atol=1e-6)
  for s in range(NUM_SEEDS):
    ref_x, ref_y, (w_e, w_1, w_2) = _np_rmix(x, y, _take(params, s), grid_sizes)
    np.testing.assert_allclose(x_mix[s], ref_x, atol=1e-5)
    np.testing.assert_allclose(y_mix[s], ref_y, atol=1e-6)
    np.testing.assert_allclose(w_e + w_1 + w_2, 1.0, atol=1e-12)


@CONFIGS
def test_label_weight_equals_pixel_share(shape, grid_sizes):
  """T3, T6: anchor label weight w_e λ + w_1 == its pixel share; n-region pixels one source."""
  b, h, w, _ = shape
  m = mixing.get('rmix', grid_sizes=grid_sizes)
  x, y = _identity_batch(b, h, w)
  params = _np_params(shape, grid_sizes, seed=1, num=NUM_SEEDS)
  x_mix, y_mix = _apply_many(m, params, x, y)
  np.testing.assert_allclose(x_mix.sum(-1), 1.0, atol=1e-6)
  np.testing.assert_allclose(x_mix.mean((2, 3)), y_mix, atol=1e-6)
  masks = jax.vmap(rmix_lib.saliency_mask, in_axes=(0, 0, 0, None))(
      params['saliency'], params['q'], params['grid'], grid_sizes)
  for s in range(NUM_SEEDS):
    perm, lam = np.asarray(params['perm'][s]), float(params['lam'][s])
    mk = np.asarray(masks[s])
    e, n = mk == mk[perm], mk != mk[perm]
    w_e, w_1, w_2 = e.mean((1, 2)), (n & mk).mean((1, 2)), (n & mk[perm]).mean((1, 2))
    np.testing.assert_allclose(w_e + w_1 + w_2, 1.0)
    for i in range(b):
      if perm[i] == i:
        np.testing.assert_allclose(y_mix[s, i, i], 1.0, atol=1e-6)
        continue
      np.testing.assert_allclose(y_mix[s, i, i], w_e[i] * lam + w_1[i], atol=1e-6)
      np.testing.assert_allclose(y_mix[s, i, perm[i]], w_e[i] * (1 - lam) + w_2[i], atol=1e-6)
      # Disagreeing patches copy exactly one source.
      assert set(np.unique(np.asarray(x_mix[s, i])[n[i]])) <= {0.0, 1.0}
    # Masks are binary and constant on each patch of the chosen grid.
    p = grid_sizes[int(params['grid'][s])]
    blocks = mk.reshape(b, p, h // p, p, w // p)
    assert (blocks == blocks[:, :, :1, :, :1]).all()


def test_eager_equals_jit():
  shape, grid_sizes = (7, 8, 12, 2), (2, 4)
  m = mixing.get('rmix')
  x = jax.random.normal(jax.random.key(0), shape)
  y = jax.nn.one_hot(jnp.arange(7) % 4, 4)
  for grid in (0, 1):
    params = dict(_np_params(shape, grid_sizes, seed=2))
    params['grid'] = jnp.int32(grid)
    eager = m.apply(params, x, y)
    chex.assert_trees_all_close(eager, jax.jit(m.apply)(params, x, y), atol=1e-6)
    ref_x, ref_y, _ = _np_rmix(x, y, params, grid_sizes)
    np.testing.assert_allclose(eager[0], ref_x, atol=1e-5)
    np.testing.assert_allclose(eager[1], ref_y, atol=1e-6)


@pytest.mark.parametrize('saliency', ['random', 'zeros', 'constant'])
def test_q_zero_is_mixup(saliency):
  """T8: q = 0 for every image makes every patch "top" (e = 1): exactly Mixup with λ, π.

  All-zero saliency (0/0 without the eps guard) and ties must behave the same way.
  """
  shape = (8, 32, 48, 3)
  m = mixing.get('rmix')
  x = jax.random.normal(jax.random.key(3), shape)
  y = jax.nn.one_hot(jnp.arange(8) % 5, 5)
  params = _np_params(shape, (2, 4), seed=3, num=4)
  params['q'] = jnp.zeros_like(params['q'])
  params['grid'] = jnp.array([0, 1, 0, 1], jnp.int32)
  if saliency == 'zeros':
    params['saliency'] = jnp.zeros_like(params['saliency'])
  elif saliency == 'constant':
    params['saliency'] = jnp.full_like(params['saliency'], 0.25)
  x_mix, y_mix = _apply_many(m, params, x, y)
  ref_x, ref_y = jax.vmap(mixup_lib.apply, in_axes=(0, None, None))(
      {'lam': params['lam'], 'perm': params['perm']}, x, y)
  chex.assert_tree_all_finite((x_mix, y_mix))
  # Equal up to float rounding (XLA may fuse the two programs differently).
  np.testing.assert_allclose(x_mix, ref_x, atol=1e-6)
  np.testing.assert_allclose(y_mix, ref_y, atol=1e-6)


@pytest.mark.parametrize('p,expected', [
    (2, [4, 3, 3, 3, 2, 2, 2, 1, 1, 1]),
    (4, [16, 14, 12, 11, 9, 7, 6, 4, 2, 1]),
])
def test_top_patch_counts(p, expected):
  """docs/DESIGN.md#rmix-mask: number of top patches for each q in linspace(0, .99, 10)."""
  h, w = 8, 12
  b = len(A10)
  rng = np.random.default_rng(0)
  # Distinct pooled saliencies: a random order of 1..p² per image, constant on each patch.
  ranks = np.stack([rng.permutation(p * p) + 1.0 for _ in range(b)]).reshape(b, p, p)
  saliency = np.repeat(np.repeat(ranks, h // p, axis=1), w // p, axis=2).astype(np.float32)
  grid = (2, 4).index(p)
  for fn in (rmix_lib.saliency_mask, jax.jit(rmix_lib.saliency_mask, static_argnums=3)):
    mask = np.asarray(fn(jnp.asarray(saliency), jnp.asarray(A10), jnp.int32(grid), (2, 4)))
    counts = mask.reshape(b, p, h // p, p, w // p)[:, :, 0, :, 0].sum((1, 2))
    np.testing.assert_array_equal(counts, expected)
    # The top patches are the most salient ones.
    for i in range(b):
      top = ranks[i][mask[i, ::h // p, ::w // p]]
      assert top.min() > ranks[i][~mask[i, ::h // p, ::w // p]].max(initial=0)


def test_symmetry():
  """Swapping (x, m) with (x_π, m_π) and λ with 1 - λ swaps the label weights."""
  shape = (2, 8, 12, 3)
  m = mixing.get('rmix')
  x = jax.random.normal(jax.random.key(4), shape)
  y = jnp.eye(2)
  params = dict(_np_params(shape, (2, 4), seed=4))
  params['perm'] = jnp.array([1, 0], jnp.int32)
  params['q'] = jnp.asarray(A10[[3, 6]])
  params['lam'] = jnp.float32(0.3)
  swapped = dict(params, lam=jnp.float32(0.7))
  fn = jax.jit(m.apply)
  (x_a, y_a), (x_b, y_b) = fn(params, x, y), fn(swapped, x, y)
  np.testing.assert_allclose(x_a[0], x_b[1], atol=1e-6)
  np.testing.assert_allclose(x_a[1], x_b[0], atol=1e-6)
  np.testing.assert_allclose(y_a[0], y_b[1], atol=1e-6)
  assert not np.allclose(y_a[0], y_a[1])  # the two rows do differ


def test_gradient_isolation():
  """T13: no gradient flows into the saliency, through the mask or through the saliency pass."""
  shape = (6, 8, 12, 3)
  m = mixing.get('rmix')
  x = jax.random.normal(jax.random.key(5), shape)
  y = jax.nn.one_hot(jnp.arange(6) % 3, 3)
  params = _np_params(shape, (2, 4), seed=5)
  weights = jax.random.normal(jax.random.key(6), shape)

  def out(s, inputs):
    x_mix, y_mix = m.apply(dict(params, saliency=s), inputs, y)
    return jnp.sum(x_mix * weights) + jnp.sum(y_mix * jnp.arange(3.0))

  g_s, g_x = jax.jit(jax.grad(out, argnums=(0, 1)))(params['saliency'], x)
  np.testing.assert_array_equal(g_s, 0.0)
  assert float(jnp.abs(g_x).sum()) > 0  # the images themselves are differentiable

  # The saliency helper is under stop_gradient: with a non-linear model its input gradient
  # depends on x, yet no second-order term may reach the training gradient.
  kernel = jax.random.normal(jax.random.key(7), (8 * 12 * 3, 3))
  logits_fn = lambda v: jnp.tanh(v.reshape(v.shape[0], -1)) @ kernel
  g = jax.grad(lambda v: rmix_lib.input_gradient_saliency(logits_fn, v, y).sum())(x)
  np.testing.assert_array_equal(g, 0.0)


def test_input_gradient_saliency_linear_model():
  """s = sqrt(mean_c g²) with g the input gradient of the mean CE, by hand for a linear model."""
  b, h, w, c, n = 3, 4, 6, 3, 5
  x = np.asarray(jax.random.normal(jax.random.key(8), (b, h, w, c)), np.float64)
  kernel = np.asarray(jax.random.normal(jax.random.key(9), (h * w * c, n)), np.float64)
  bias = np.arange(n, dtype=np.float64) / 10
  labels = np.array([0, 3, 4])
  z = x.reshape(b, -1) @ kernel + bias
  prob = np.exp(z - z.max(1, keepdims=True))
  prob /= prob.sum(1, keepdims=True)
  grad = ((prob - np.eye(n)[labels]) @ kernel.T / b).reshape(b, h, w, c)  # d mean CE / dx
  expected = np.sqrt((grad ** 2).mean(-1))

  k32, b32 = jnp.asarray(kernel, jnp.float32), jnp.asarray(bias, jnp.float32)
  logits_fn = lambda v: v.reshape(v.shape[0], -1) @ k32 + b32
  x32 = jnp.asarray(x, jnp.float32)
  s = rmix_lib.input_gradient_saliency(logits_fn, x32, jax.nn.one_hot(labels, n))
  chex.assert_shape(s, (b, h, w))
  np.testing.assert_allclose(s, expected, rtol=1e-4, atol=1e-7)
  s_int = jax.jit(lambda v: rmix_lib.input_gradient_saliency(logits_fn, v, labels))(x32)
  np.testing.assert_allclose(s_int, expected, rtol=1e-4, atol=1e-7)
  s_aux, aux = rmix_lib.input_gradient_saliency(lambda v: (logits_fn(v), {'n': 1}), x32,
                                                jnp.asarray(labels), has_aux=True)
  np.testing.assert_allclose(s_aux, expected, rtol=1e-4, atol=1e-7)
  assert aux == {'n': 1}
  assert mixing.input_gradient_saliency is rmix_lib.input_gradient_saliency


@pytest.mark.parametrize('lam', [0.0, 1e-8, 1 - 1e-8, 1.0])
def test_lambda_extremes(lam):
  """T1: λ at the extremes gives finite outputs and exact pixel-share labels."""
  shape = (7, 8, 12, 7)
  m = mixing.get('rmix')
  x, y = _identity_batch(7, 8, 12)
  params = dict(_np_params(shape, (2, 4), seed=6))
  params['lam'] = jnp.float32(lam)
  x_mix, y_mix = m.apply(params, x, y)
  chex.assert_tree_all_finite((x_mix, y_mix))
  np.testing.assert_allclose(x_mix.mean((1, 2)), y_mix, atol=1e-6)
  if lam == 1.0:  # with q = 0 everywhere this is the identity
    out = m.apply(dict(params, q=jnp.zeros(7)), x, y)
    np.testing.assert_array_equal(out[0], x)
    np.testing.assert_array_equal(out[1], y)


def test_sampler_distribution():
  """T11: q uniform over linspace(0, .99, K) per example; grid uniform per batch; λ per batch."""
  b, n = 8, 2000
  shape = (b, 8, 8, 1)
  m = mixing.get('rmix', grid_sizes=(2, 4), num_thresholds=10)
  saliency = jax.random.uniform(jax.random.key(0), shape[:3])
  params = jax.jit(jax.vmap(lambda k: m.sample(k, shape, saliency=saliency)))(
      jax.random.split(jax.random.key(1), n))
  chex.assert_shape(params['q'], (n, b))
  chex.assert_shape(params['grid'], (n,))
  chex.assert_shape(params['lam'], (n,))
  q = np.asarray(params['q'])
  index = np.abs(q[..., None] - A10).argmin(-1)
  np.testing.assert_array_equal(q, A10[index])  # only values of the top-k space
  freq = np.bincount(index.ravel(), minlength=10) / q.size
  np.testing.assert_allclose(freq, 0.1, atol=0.012)  # se 0.0024 over 16000 draws
  assert (np.ptp(q, axis=1) > 0).mean() > 0.99  # per example, not per batch
  grid = np.asarray(params['grid'])
  assert set(np.unique(grid)) == {0, 1}
  np.testing.assert_allclose(grid.mean(), 0.5, atol=0.05)  # se 0.011
  lam = np.asarray(params['lam'])
  assert ((lam >= 0) & (lam <= 1)).all()
  np.testing.assert_allclose(lam.mean(), 0.5, atol=0.03)  # se 0.0065
  perm = np.asarray(params['perm'])
  assert (np.sort(perm, -1) == np.arange(b)).all()
  np.testing.assert_array_equal(params['saliency'][0], saliency)


def test_determinism_and_plain_function():
  """T12: same key -> same output, other key -> other output; the plain fn forwards hparams."""
  b, h, w = 8, 8, 12
  x, y = _identity_batch(b, h, w)
  s = jax.random.uniform(jax.random.key(1), (b, h, w))
  run = jax.jit(lambda key: mixing.rmix(key, x, y, s, alpha=0.5, pairing='flip'))
  a = run(jax.random.key(2))
  chex.assert_trees_all_equal(a, run(jax.random.key(2)))
  assert not np.array_equal(a[0], run(jax.random.key(3))[0])
  np.testing.assert_allclose(a[0].mean((1, 2)), a[1], atol=1e-6)
  flip = np.eye(b)[::-1]
  assert (np.asarray(a[1])[(np.eye(b) + flip) == 0] == 0).all()  # partners are B-1-b


def test_mixer_attributes():
  m = mixing.get('rmix', clean_weight=1.0)
  assert m.needs_saliency and m.clean_loss_weight == 1.0 and m.multiplicity == 1
  assert mixing.get('rmix').clean_loss_weight == 0.0


@pytest.mark.parametrize('field,value', [
    ('alpha', 0.0), ('alpha', -1.0), ('alpha', 'one'), ('grid_sizes', ()),
    ('grid_sizes', 2), ('grid_sizes', (2, 0)), ('grid_sizes', (2.0, 4)),
    ('num_thresholds', 0), ('num_thresholds', 2.5), ('pairing', 'random'),
    ('clean_weight', -1.0), ('clean_weight', float('inf')), ('clean_weight', True),
    ('k', 2)])
def test_bad_hparams_raise(field, value):
  with pytest.raises(ValueError, match=field):
    mixing.get('rmix', **{field: value})


def test_bad_shapes_raise():
  """H or W not divisible by a grid size, wrong or missing saliency: ValueError up front."""
  m = mixing.get('rmix', grid_sizes=(2, 4))
  key = jax.random.key(0)
  with pytest.raises(ValueError, match=r'grid_sizes.*H=10'):
    m.sample(key, (2, 10, 12, 3), saliency=jnp.ones((2, 10, 12)))
  with pytest.raises(ValueError, match=r'grid_sizes.*W=6'):
    m.sample(key, (2, 8, 6, 3), saliency=jnp.ones((2, 8, 6)))
  with pytest.raises(ValueError, match='saliency.shape'):
    m.sample(key, (2, 8, 12, 3), saliency=jnp.ones((2, 12, 8)))
  with pytest.raises(ValueError, match='saliency'):
    m.sample(key, (2, 8, 12, 3))
  params = _np_params((2, 8, 12, 3), (2, 4), seed=0)
  with pytest.raises(ValueError, match='grid_sizes'):
    m.apply(dict(params, saliency=jnp.ones((2, 10, 12))), jnp.ones((2, 10, 12, 3)), jnp.eye(2))
