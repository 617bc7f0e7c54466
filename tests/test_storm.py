"""Tests for StoRM (storm_jax/mixing/storm.py), docs/DESIGN.md#storm and #property-tests.

A slicing NumPy implementation written from the paper's Eqs. 1-5 is the reference: it cuts
each image into the k x k rectangles `[ceil(p^h_{j-1}), ceil(p^h_j)) x [ceil(p^w_{i-1}),
ceil(p^w_i))` and mixes tile `t = i*k + j` with donor `perms[t, b]` and weight `lam[t]`.
"""

import importlib
import math

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from storm_jax import mixing

# `mixing.storm` is the plain function; the module is reached through importlib.
storm = importlib.import_module('storm_jax.mixing.storm')
region_lib = importlib.import_module('storm_jax.mixing.region_mixup')

JIT = pytest.mark.parametrize('jit', [False, True], ids=['eager', 'jit'])


def _maybe_jit(fn, jit):
  return jax.jit(fn) if jit else fn


def _edges(points, size):
  inner = [min(max(int(np.ceil(np.float32(p))), 0), size) for p in np.sort(points)]
  return [0] + inner + [size]


def _rows(points):
  points = np.asarray(points)
  return points[None] if points.ndim == 1 else points


def np_storm(params, x, y):
  """Eqs. 1-5 by slicing, in float64. Returns (x_mix, y_mix, area [B, T])."""
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  batch, height, width, _ = x.shape
  perms = np.asarray(params['perms'])
  num_tiles = perms.shape[0]
  k = math.isqrt(num_tiles)
  lam = np.broadcast_to(np.asarray(params['lam'], np.float64).reshape(-1, num_tiles),
                        (batch, num_tiles))
  ph = np.broadcast_to(_rows(params['points_h']), (batch, k - 1))
  pw = np.broadcast_to(_rows(params['points_w']), (batch, k - 1))
  x_mix = np.full_like(x, np.nan)
  y_mix = np.zeros_like(y)
  area = np.zeros((batch, num_tiles))
  for b in range(batch):
    eh, ew = _edges(ph[b], height), _edges(pw[b], width)
    for i in range(k):  # column band (width axis)
      for j in range(k):  # row band (height axis)
        t = i * k + j
        rows, cols = slice(eh[j], eh[j + 1]), slice(ew[i], ew[i + 1])
        d, lm = perms[t, b], lam[b, t]
        x_mix[b, rows, cols] = lm * x[b, rows, cols] + (1 - lm) * x[d, rows, cols]
        area[b, t] = (eh[j + 1] - eh[j]) * (ew[i + 1] - ew[i]) / (height * width)
        y_mix[b] += area[b, t] * (lm * y[b] + (1 - lm) * y[d])
  assert not np.isnan(x_mix).any(), 'tiles must cover the image'
  return x_mix, y_mix, area


def _data(shape, num_classes=10, seed=0):
  kx, ky = jax.random.split(jax.random.key(seed))
  x = jax.random.normal(kx, shape)
  y = jax.nn.one_hot(jax.random.randint(ky, (shape[0],), 0, num_classes), num_classes)
  return x, y


def _identity_batch(b, h, w):
  """x[b, h, w] = one_hot(b): channel d of a mixed pixel is the weight of source d there."""
  x = jnp.broadcast_to(jnp.eye(b, dtype=jnp.float32)[:, None, None, :], (b, h, w, b))
  return x, jnp.eye(b, dtype=jnp.float32)


def _np_params(seed, shape, k, granularity='batch', points='uniform', beta=1.0):
  """Params with StoRM's layout from NumPy (apply is deterministic given params; sampling is
  tested on its own below, and avoiding jax.random.beta keeps compilation short)."""
  rng = np.random.default_rng(seed)
  b, h, w, _ = shape
  lead = () if granularity == 'batch' else (b,)
  lam = rng.beta(beta, beta, lead + (k * k,)).astype(np.float32)
  perms = np.stack([rng.permutation(b) for _ in range(k * k)]).astype(np.int32)

  def pts(size):
    if points == 'uniform':
      return np.sort(rng.uniform(0, size, lead + (k - 1,)), -1).astype(np.float32)
    draws = [np.sort(rng.choice(np.arange(1, size), k - 1, replace=False))
             for _ in range(max(1, len(lead) and b))]
    return np.asarray(draws, np.float32).reshape(lead + (k - 1,))

  return {'lam': jnp.asarray(lam), 'perms': jnp.asarray(perms),
          'points_h': jnp.asarray(pts(h)), 'points_w': jnp.asarray(pts(w))}


SHAPES = [(7, 32, 48, 3), (1, 8, 12, 5)]  # odd B, B=1, non-square, C != 3
CONFIGS = [
    dict(k=1),
    dict(k=2),
    dict(k=3, beta=0.5, granularity='example'),
    dict(k=4, points='distinct'),
    dict(k=4, granularity='example', points='distinct', pairing='roll'),
]


# --------------------------------------------------------------------------------------
# Against the NumPy reference; label weight == pixel share.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize('shape,jit', [
    pytest.param(SHAPES[0], False, id='7x32x48x3-eager', marks=pytest.mark.slow),
    pytest.param(SHAPES[0], True, id='7x32x48x3-jit'),
    pytest.param(SHAPES[1], True, id='1x8x12x5-jit', marks=pytest.mark.slow)])
@pytest.mark.parametrize('hp', CONFIGS, ids=lambda h: '-'.join(f'{k}={v}' for k, v in h.items()))
def test_matches_numpy_reference(hp, shape, jit):
  mixer = mixing.get('storm', **hp)
  x, y = _data(shape)
  hp = {n: v for n, v in hp.items() if n != 'pairing'}
  for seed in range(2):
    params = _np_params(seed, shape, **hp)
    x_mix, y_mix = _maybe_jit(mixer.apply, jit)(params, x, y)
    assert x_mix.shape == x.shape and x_mix.dtype == x.dtype
    assert y_mix.shape == y.shape and y_mix.dtype == jnp.float32
    rx, ry, area = np_storm(params, x, y)
    np.testing.assert_allclose(x_mix, rx, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(y_mix, ry, atol=1e-6)
    np.testing.assert_allclose(
        np.broadcast_to(storm.tile_areas(params, shape[1], shape[2]), area.shape), area,
        atol=1e-7)


@JIT
@pytest.mark.parametrize('hp', CONFIGS, ids=lambda h: '-'.join(f'{k}={v}' for k, v in h.items()))
def test_label_weight_equals_pixel_share(hp, jit):
  """T2/T3: every source's label weight (anchor and each donor) == its pixel share."""
  x, y = _identity_batch(8, 12, 20)
  mixer = mixing.get('storm', **hp)
  apply = _maybe_jit(mixer.apply, jit)
  hp = {n: v for n, v in hp.items() if n != 'pairing'}
  for seed in range(3):
    x_mix, y_mix = apply(_np_params(seed, x.shape, **hp), x, y)
    share = np.asarray(x_mix, np.float64).mean((1, 2))  # [b, source]
    np.testing.assert_allclose(np.asarray(x_mix).sum(-1), 1.0, atol=1e-6)  # T5: convex
    assert (np.asarray(y_mix) >= 0).all()
    np.testing.assert_allclose(np.asarray(y_mix).sum(-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(y_mix, share, atol=1e-6)
    # The anchor's weight is fractional (docs/DESIGN.md#pitfalls: integer area ratios), not 0 or 1.
    assert np.any((np.diag(share) > 1e-3) & (np.diag(share) < 1 - 1e-3))


def test_end_to_end_label_weight_equals_pixel_share_tiny_beta():
  """The same through `Mixer.__call__` (sample + apply, jit), per example, beta=1e-3 (T1)."""
  x, y = _identity_batch(8, 12, 20)
  mixer = mixing.get('storm', k=3, beta=1e-3, granularity='example')
  call = jax.jit(mixer.__call__)
  for seed in range(3):
    x_mix, y_mix = call(jax.random.key(seed), x, y)
    assert np.isfinite(np.asarray(x_mix)).all() and np.isfinite(np.asarray(y_mix)).all()
    np.testing.assert_allclose(np.asarray(y_mix).sum(-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(y_mix, np.asarray(x_mix, np.float64).mean((1, 2)), atol=1e-6)


def test_donor_and_anchor_weights_from_params():
  """Anchor weight = sum_t area_t lam_t (+ fixed points); donor d = sum_{t: perm_t(b)=d}."""
  b, h, w, k = 6, 9, 14, 3
  x, y = _identity_batch(b, h, w)
  params = _np_params(3, x.shape, k, granularity='example')
  _, y_mix = storm.apply(params, x, y)
  area = np.broadcast_to(np.asarray(storm.tile_areas(params, h, w)), (b, k * k))
  lam, perms = np.asarray(params['lam']), np.asarray(params['perms'])
  expected = np.zeros((b, b))
  for s in range(b):
    for t in range(k * k):
      expected[s, s] += area[s, t] * lam[s, t]
      expected[s, perms[t, s]] += area[s, t] * (1 - lam[s, t])
  np.testing.assert_allclose(y_mix, expected, atol=1e-6)


# --------------------------------------------------------------------------------------
# Geometry: orientation, partition, empty tiles.
# --------------------------------------------------------------------------------------


@JIT
def test_tile_orientation_width_is_i_height_is_j(jit):
  """Eq. 3 ordering t = i*k + j with i the WIDTH band (catches H/W swaps on 32x48)."""
  b, h, w = 4, 32, 48
  x, y = _data((b, h, w, 2))
  perms = jnp.stack([jnp.roll(jnp.arange(b), s) for s in range(4)]).astype(jnp.int32)
  params = {'lam': jnp.array([0.1, 0.2, 0.3, 0.4]), 'perms': perms,
            'points_h': jnp.array([10.0]), 'points_w': jnp.array([30.5])}
  x_mix, _ = _maybe_jit(storm.apply, jit)(params, x, y)
  x = np.asarray(x)

  def tile(t, rows, cols):
    lam, d = float(params['lam'][t]), np.asarray(perms[t])
    return lam * x[:, rows, cols] + (1 - lam) * x[d][:, rows, cols]

  top, bottom, left, right = slice(0, 10), slice(10, h), slice(0, 31), slice(31, w)
  np.testing.assert_allclose(x_mix[:, top, left], tile(0, top, left), atol=1e-6)  # i=0, j=0
  np.testing.assert_allclose(x_mix[:, bottom, left], tile(1, bottom, left), atol=1e-6)  # j=1
  np.testing.assert_allclose(x_mix[:, top, right], tile(2, top, right), atol=1e-6)  # i=1
  np.testing.assert_allclose(x_mix[:, bottom, right], tile(3, bottom, right), atol=1e-6)
  np.testing.assert_array_equal(storm.tile_areas(params, h, w)[0] * h * w,
                                [10 * 31, 22 * 31, 10 * 17, 22 * 17])


def _tile_masks(params, shape):
  """[k*k, B, H, W] bool: pixel (h, w) of output b lies in tile t, read off `storm.apply`.

  lam = 0 takes every pixel from its tile's donor; in call t, tile t's donor is image 1 (all
  ones) and every other tile's is image 0 (all zeros).
  """
  b, h, w = shape
  x = jnp.zeros((b, h, w, 1), jnp.float32).at[1].set(1.0)
  y = jnp.zeros((b, 2), jnp.float32)
  apply = jax.jit(storm.apply)
  perms = jnp.zeros_like(params['perms'])
  lam = jnp.zeros_like(params['lam'])
  return np.stack([np.asarray(apply(dict(params, lam=lam, perms=perms.at[t].set(1)), x, y)[0])
                   [..., 0] == 1 for t in range(perms.shape[0])])


@pytest.mark.parametrize('granularity', ['batch', 'example'])
def test_tiles_partition_the_image(granularity):
  """Each tile is the rectangle of its bands; masks are disjoint and cover the image."""
  b, h, w, k = 5, 11, 17, 4
  for seed in range(5):
    params = _np_params(seed, (b, h, w, 1), k, granularity)
    all_masks = _tile_masks(params, (b, h, w))
    area = np.asarray(storm.tile_areas(params, h, w))
    assert area.shape == ((1 if granularity == 'batch' else b), k * k)
    ph, pw = _rows(params['points_h']), _rows(params['points_w'])
    for s in range(area.shape[0]):
      masks = all_masks[:, s]
      np.testing.assert_array_equal(masks.sum(0), 1)  # disjoint and covering
      eh, ew = _edges(ph[s], h), _edges(pw[s], w)
      for i in range(k):
        for j in range(k):
          expect = np.zeros((h, w), bool)
          expect[eh[j]:eh[j + 1], ew[i]:ew[i + 1]] = True
          np.testing.assert_array_equal(masks[i * k + j], expect)
      counts = np.rint(area[s] * h * w).astype(int)
      np.testing.assert_array_equal(counts, masks.sum((1, 2)))
      assert counts.sum() == h * w


@JIT
@pytest.mark.parametrize('points_w,empty_bands', [
    ([5.2, 5.7, 9.0], [1]),  # two points in (5, 6]: band 1 is empty
    ([3.0, 3.0, 7.5], [1]),  # exactly colliding points
    ([2.5, 7.0, 11.5], [3]),  # p_{k-1} in (W-1, W): the last column is empty
    ([11.2, 11.6, 11.9], [1, 2, 3]),  # everything in (W-1, W)
    ([0.0, 4.0, 8.0], [0]),  # p = 0: the first column is empty
])
def test_empty_tiles(points_w, empty_bands, jit):
  b, h, w, k = 6, 8, 12, 4
  x, y = _identity_batch(b, h, w)
  params = _np_params(0, x.shape, k)
  params['points_w'] = jnp.array(points_w, jnp.float32)
  x_mix, y_mix = _maybe_jit(storm.apply, jit)(params, x, y)
  area = np.asarray(storm.tile_areas(params, h, w))[0].reshape(k, k)  # [i, j]
  for i in range(k):
    assert (area[i] == 0).all() == (i in empty_bands), (i, area)
  np.testing.assert_allclose(area.sum(), 1.0, atol=1e-6)
  np.testing.assert_allclose(np.asarray(y_mix).sum(-1), 1.0, atol=1e-6)
  np.testing.assert_allclose(y_mix, np.asarray(x_mix, np.float64).mean((1, 2)), atol=1e-6)
  rx, ry, _ = np_storm(params, x, y)
  np.testing.assert_allclose(x_mix, rx, atol=1e-6)
  np.testing.assert_allclose(y_mix, ry, atol=1e-6)


def _draw_areas(key, draws, h, w, k, points='uniform'):
  """Tile areas of `draws` independent partitions (sample_points: no Beta to compile)."""
  kh, kw = jax.random.split(key)
  params = {'perms': jnp.zeros((k * k, 1), jnp.int32),
            'points_h': storm.sample_points(kh, h, k - 1, points, (draws,)),
            'points_w': storm.sample_points(kw, w, k - 1, points, (draws,))}
  return storm.tile_areas(params, h, w)


def test_areas_sum_to_one_over_many_draws():
  h, w = 13, 29
  for k, points in [(2, 'uniform'), (5, 'uniform'), (5, 'distinct')]:
    areas = jax.jit(_draw_areas, static_argnums=(1, 2, 3, 4, 5))(
        jax.random.key(k), 500, h, w, k, points)
    assert areas.shape == (500, k * k)
    counts = np.rint(np.asarray(areas, np.float64) * h * w)
    np.testing.assert_array_equal(counts.sum(-1), h * w)
    np.testing.assert_allclose(np.asarray(areas).sum(-1), 1.0, atol=1e-6)
    assert (np.asarray(areas) >= 0).all()


# --------------------------------------------------------------------------------------
# Distributions (T11).
# --------------------------------------------------------------------------------------


def _ks_uniform(samples, size):
  u = np.sort(np.asarray(samples, np.float64).ravel()) / size
  n = u.size
  cdf = np.arange(1, n + 1) / n
  return max(np.max(cdf - u), np.max(u - (cdf - 1 / n))), n


def test_partition_points_are_iid_uniform():
  """KS test of the pooled points against U(0, size); order statistics; axis independence.

  At n = 12000 per axis the 1e-3 KS critical value is 1.95/sqrt(n) ~ 0.018; points snapped
  to integers (D ~ 1/size >= 0.031) or drawn in [0, size-1) (D ~ 0.031) fail it.
  """
  h, w, k, draws, b = 24, 32, 4, 4000, 6
  mixer = mixing.get('storm', k=k)
  params = jax.jit(jax.vmap(lambda key: mixer.sample(key, (b, h, w, 1))))(
      jax.random.split(jax.random.key(1), draws))
  ph, pw = np.asarray(params['points_h']), np.asarray(params['points_w'])
  perms = np.asarray(params['perms'])  # k^2 independent uniform permutations per draw
  assert perms.shape == (draws, k * k, b) and perms.dtype == np.int32
  np.testing.assert_array_equal(np.sort(perms, -1), np.broadcast_to(np.arange(b), perms.shape))
  assert all(len({p.tobytes() for p in draw}) > 1 for draw in perms[:100])
  # P(perm[t, 0] = d) = 1/b for every tile and donor: a chi-square over the b*k^2 cells.
  counts = np.stack([np.bincount(perms[:, t, 0], minlength=b) for t in range(k * k)])
  chi2 = ((counts - draws / b) ** 2 / (draws / b)).sum()
  dof = k * k * (b - 1)
  assert chi2 < dof + 6 * math.sqrt(2 * dof), chi2
  assert ph.shape == pw.shape == (draws, k - 1)
  assert (np.diff(ph, axis=-1) >= 0).all() and (np.diff(pw, axis=-1) >= 0).all()
  assert (ph >= 0).all() and (ph < h).all() and (pw >= 0).all() and (pw < w).all()
  for p, size in [(ph, h), (pw, w)]:
    d, n = _ks_uniform(p, size)
    assert d < 1.95 / math.sqrt(n), d
    # Sorted i.i.d. uniforms: E[p_(m)] = m * size / k (std of each mean <= 0.1 px: 5 sigma).
    np.testing.assert_allclose(p.mean(0), np.arange(1, k) * size / k, atol=0.5)
  # Height and width points are independent: correlation ~ N(0, 1/sqrt(draws)).
  assert abs(np.corrcoef(ph[:, 0], pw[:, 0])[0, 1]) < 0.07


def test_distinct_points_uniform_over_integers():
  """'distinct': k-1 different integers in {1..W-1}, each value equally likely (chi-square)."""
  w, k, draws = 12, 4, 6000
  pw = np.asarray(jax.jit(storm.sample_points, static_argnums=(1, 2, 3, 4))(
      jax.random.key(2), w, k - 1, 'distinct', (draws,)))
  assert pw.shape == (draws, k - 1)
  assert (pw == np.round(pw)).all() and (pw >= 1).all() and (pw <= w - 1).all()
  assert (np.diff(pw, axis=-1) > 0).all()  # strictly increasing: no empty band
  counts = np.bincount(pw.astype(int).ravel(), minlength=w)[1:]
  expected = draws * (k - 1) / (w - 1)
  chi2 = ((counts - expected) ** 2 / expected).sum()
  dof = w - 2
  assert chi2 < dof + 6 * math.sqrt(2 * dof), chi2  # p < 1e-5 by a normal approximation
  # Every pair p_1 < p_2 < W - 1 (room is left for p_3) occurs: (w-2 choose 2) of them.
  pairs = {tuple(p) for p in pw[:, :2].astype(int)}
  assert len(pairs) == (w - 2) * (w - 3) // 2
  params = {'perms': jnp.zeros((k * k, 1), jnp.int32), 'points_h': jnp.asarray(pw),
            'points_w': jnp.asarray(pw)}
  assert (np.asarray(storm.tile_areas(params, w, w)) > 0).all()


def test_expected_tile_area_follows_ceil_rule():
  """k=2: E[width of column 0] = E[ceil(U * W)] = (W + 1) / 2 (floor would give (W - 1) / 2)."""
  h, w, draws = 8, 10, 20000
  area = jax.jit(_draw_areas, static_argnums=(1, 2, 3, 4))(jax.random.key(3), draws, h, w, 2)
  mean_area = np.asarray(area).mean(0)  # [T]
  ew, eh = (w + 1) / 2 / w, (h + 1) / 2 / h
  np.testing.assert_allclose(mean_area, [ew * eh, ew * (1 - eh), (1 - ew) * eh,
                                         (1 - ew) * (1 - eh)], atol=0.006)


@pytest.mark.parametrize('beta', [0.4])
def test_expected_anchor_share_is_one_half(beta):
  """E[anchor pixel share] = E[lam] = 1/2 (roll pairing: no self-pairs), from mixed images."""
  b, h, w, draws = 4, 6, 10, 1500
  x, y = _identity_batch(b, h, w)
  mixer = mixing.get('storm', k=3, beta=beta, pairing='roll')

  def draw(key):
    params = mixer.sample(key, x.shape)
    return params['lam'], mixer.apply(params, x, y)

  lam, (x_mix, y_mix) = jax.jit(jax.vmap(draw))(jax.random.split(jax.random.key(4), draws))
  share = np.asarray(x_mix, np.float64).mean((2, 3))[:, np.arange(b), np.arange(b)]  # [draws, b]
  # One draw per batch: the b shares of one draw are equal under 'batch' granularity.
  np.testing.assert_allclose(share, share[:, :1].repeat(b, 1), atol=1e-6)
  assert abs(share.mean() - 0.5) < 0.02, share.mean()  # std of the mean < 0.006
  np.testing.assert_allclose(np.asarray(y_mix)[:, np.arange(b), np.arange(b)], share,
                             atol=1e-6)
  lam = np.asarray(lam)
  assert lam.shape == (draws, 9)
  assert abs(lam.mean() - 0.5) < 0.015  # std of the mean ~0.0032
  # Beta(beta, beta) variance 1 / (4 (2 beta + 1)).
  assert abs(lam.var() - 1 / (4 * (2 * beta + 1))) < 0.01


def _jit_sample(mixer, key, shape):
  return jax.jit(mixer.sample, static_argnums=1)(key, shape)


def test_per_batch_vs_per_example_sharing():
  b, h, w, k = 8, 16, 24, 3
  shape = (b, h, w, 1)
  batch = jax.eval_shape(lambda key: mixing.get('storm', k=k).sample(key, shape),
                         jax.random.key(0))
  assert batch['perms'].shape == (k * k, b)
  assert batch['lam'].shape == (k * k,)
  assert batch['points_h'].shape == batch['points_w'].shape == (k - 1,)
  assert jax.eval_shape(lambda p: storm.tile_areas(p, h, w), batch).shape == (1, k * k)
  mixer = mixing.get('storm', k=k, granularity='example')
  example = _jit_sample(mixer, jax.random.key(0), shape)
  assert example['lam'].shape == (b, k * k)
  assert example['points_h'].shape == example['points_w'].shape == (b, k - 1)
  masks = _tile_masks(example, (b, h, w))
  assert len({masks[:, s].tobytes() for s in range(b)}) == b  # each its own partition
  assert len({tuple(l) for l in np.asarray(example['lam'])}) == b
  # Output b of a per-example mix == output b of a per-batch mix with example b's draws.
  x, y = _data(shape)
  x_mix, y_mix = jax.jit(mixer.apply)(example, x, y)
  apply = jax.jit(storm.apply)
  for s in range(b):
    row = {'lam': example['lam'][s], 'perms': example['perms'],
           'points_h': example['points_h'][s], 'points_w': example['points_w'][s]}
    xs, ys = apply(row, x, y)
    np.testing.assert_allclose(x_mix[s], xs[s], atol=1e-6)
    np.testing.assert_allclose(y_mix[s], ys[s], atol=1e-6)


# --------------------------------------------------------------------------------------
# Reductions (T8) and the identity (T4).
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize('jit', [pytest.param(False, marks=pytest.mark.slow), True],
                         ids=['eager', 'jit'])
@pytest.mark.parametrize('granularity', ['batch', 'example'])
def test_k1_is_mixup_bit_exactly(granularity, jit):
  mixup = mixing.get('mixup')
  # 30 x 44: XLA's reciprocal rewrite of `/ 1320` would make the one tile's area 0.99999994.
  for shape in [(7, 32, 48, 3), (3, 30, 44, 2)]:
    x, y = _data(shape)
    mixer = mixing.get('storm', k=1, granularity=granularity)
    params = _np_params(7, shape, 1, granularity)
    assert params['points_h'].shape[-1] == 0 and params['lam'].shape[-1] == 1
    mixup_params = {'lam': params['lam'][..., 0], 'perm': params['perms'][0]}
    x_mix, y_mix = _maybe_jit(mixer.apply, jit)(params, x, y)
    rx, ry = _maybe_jit(mixup.apply, jit)(mixup_params, x, y)
    np.testing.assert_array_equal(x_mix, rx)
    np.testing.assert_array_equal(y_mix, ry)
    # And the NumPy reference of mixup.
    lam = np.asarray(params['lam']).reshape(-1, 1, 1, 1)
    perm = np.asarray(params['perms'][0])
    np.testing.assert_allclose(x_mix, lam * np.asarray(x) + (1 - lam) * np.asarray(x)[perm],
                               atol=1e-6)


@pytest.mark.parametrize('jit', [True], ids=['jit'])
def test_tied_lambdas_and_donors_is_mixup(jit):
  """All lam_t = lam and all perms_t = perm => Mixup, whatever the partition."""
  shape = SHAPES[0]
  x, y = _data(shape)
  params = _np_params(0, shape, 3)
  params['lam'] = jnp.full((9,), 0.3)
  params['perms'] = jnp.broadcast_to(params['perms'][4], (9, shape[0]))
  x_mix, y_mix = _maybe_jit(storm.apply, jit)(params, x, y)
  rx, ry = mixing.get('mixup').apply({'lam': jnp.float32(0.3), 'perm': params['perms'][0]}, x, y)
  np.testing.assert_allclose(x_mix, rx, atol=1e-6)
  np.testing.assert_allclose(y_mix, ry, atol=1e-6)


@pytest.mark.parametrize('k,jit', [(2, False), (2, True), (3, True), (5, True)])
def test_equispaced_points_are_region_mixup_bit_exactly(k, jit):
  shape = SHAPES[0]  # k = 5 divides neither 32 nor 48: the floor rule matters
  x, y = _data(shape)
  storm_mixer, region = mixing.get('storm', k=k), mixing.get('region_mixup', k=k)
  params = _np_params(k, shape, k)
  params['points_h'] = jnp.asarray(np.arange(1, k) * shape[1] // k, jnp.float32)
  params['points_w'] = jnp.asarray(np.arange(1, k) * shape[2] // k, jnp.float32)
  region_params = {'lam': params['lam'], 'perms': params['perms'],
                   'points_h': region_lib.grid_points(shape[1], k),
                   'points_w': region_lib.grid_points(shape[2], k)}
  np.testing.assert_array_equal(params['points_h'], region_params['points_h'])
  np.testing.assert_array_equal(params['points_w'], region_params['points_w'])
  sx, sy = _maybe_jit(storm_mixer.apply, jit)(params, x, y)
  rx, ry = _maybe_jit(region.apply, jit)(region_params, x, y)
  np.testing.assert_array_equal(sx, rx)
  np.testing.assert_array_equal(sy, ry)


@JIT
@pytest.mark.parametrize('hp', CONFIGS, ids=lambda h: '-'.join(f'{k}={v}' for k, v in h.items()))
def test_identity_perms_is_noop(hp, jit):
  shape = (7, 12, 20, 3)
  x, y = _data(shape)
  mixer = mixing.get('storm', **hp)
  params = _np_params(1, shape, **{n: v for n, v in hp.items() if n != 'pairing'})
  params['perms'] = jnp.broadcast_to(jnp.arange(7, dtype=jnp.int32), params['perms'].shape)
  x_mix, y_mix = _maybe_jit(mixer.apply, jit)(params, x, y)
  np.testing.assert_array_equal(x_mix, x)
  np.testing.assert_allclose(y_mix, y, atol=1e-6)


# --------------------------------------------------------------------------------------
# Edge cases (T1), determinism (T12), loss (T14), validation.
# --------------------------------------------------------------------------------------


def test_batch_of_one_is_identity():
  x, y = _data(SHAPES[1])
  x_mix, y_mix = jax.jit(storm.apply)(_np_params(0, x.shape, 3), x, y)
  np.testing.assert_array_equal(x_mix, x)
  np.testing.assert_allclose(y_mix, y, atol=1e-6)


@pytest.mark.parametrize('lam_value,jit', [(0.0, False), (0.0, True), (1.0, True), (1e-8, True),
                                           (1 - 1e-7, True)])
def test_extreme_lambdas(lam_value, jit):
  shape = SHAPES[0]
  x, y = _data(shape)
  params = _np_params(2, shape, 2)
  params['lam'] = jnp.full((4,), lam_value, jnp.float32)
  x_mix, y_mix = _maybe_jit(storm.apply, jit)(params, x, y)
  assert np.isfinite(np.asarray(x_mix)).all() and np.isfinite(np.asarray(y_mix)).all()
  rx, ry, _ = np_storm(params, x, y)
  np.testing.assert_allclose(x_mix, rx, atol=1e-6)
  np.testing.assert_allclose(y_mix, ry, atol=1e-6)


def test_other_dtypes_and_channels():
  x, y = _data((4, 10, 6, 1))
  mixer = mixing.get('storm', k=2)
  x_mix, y_mix = mixer.apply(_np_params(0, x.shape, 2), x.astype(jnp.bfloat16), y)
  assert x_mix.dtype == jnp.bfloat16 and x_mix.shape == (4, 10, 6, 1)
  assert y_mix.dtype == jnp.float32


def test_determinism_and_no_retrace():
  """T12: same key => same output, other key => other draws; one trace for every key."""
  x, y = _data((8, 16, 20, 3))
  mixer = mixing.get('storm', k=3)
  traces = []

  @jax.jit
  def run(key, x, y):
    traces.append(1)
    params = mixer.sample(key, x.shape)
    return params, mixer.apply(params, x, y)

  pa, a = run(jax.random.key(11), x, y)
  _, b = run(jax.random.key(11), x, y)
  pc, c = run(jax.random.key(12), x, y)
  assert len(traces) == 1
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])
  assert not np.array_equal(a[0], c[0])
  for name in ('lam', 'perms', 'points_h', 'points_w'):
    assert not np.array_equal(pa[name], pc[name]), name


def test_loss_is_clean_plus_mixed_cross_entropy():
  """T14: Mixer.clean_loss_weight == 1 and mixed_objective = CE(f(x), y) + CE(f(x~), y~)."""
  b, h, w, c, n = 6, 8, 8, 3, 5
  x, y = _data((b, h, w, c), num_classes=n)
  weights = jax.random.normal(jax.random.key(9), (h * w * c, n)) * 0.1
  f = lambda im: im.reshape(im.shape[0], -1) @ weights
  for name in ('storm', 'region_mixup'):
    mixer = mixing.get(name)
    assert mixer.clean_loss_weight == 1.0
    x_mix, y_mix = jax.jit(mixer.apply)(_np_params(1, x.shape, 2), x, y)
    loss = mixing.mixed_objective(f(x_mix), y_mix, f(x), y,
                                  clean_weight=mixer.clean_loss_weight)

    def ce(logits, labels):
      logits = np.asarray(logits, np.float64)
      logp = logits - logits.max(-1, keepdims=True)
      logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
      return float(np.mean(-(np.asarray(labels) * logp).sum(-1)))

    np.testing.assert_allclose(loss, ce(f(x), y) + ce(f(x_mix), y_mix), rtol=1e-5)
    assert ce(f(x), y) > 0.1 and ce(f(x_mix), y_mix) > 0.1  # both terms matter


@pytest.mark.parametrize('hp,field', [
    (dict(k=0), 'k'), (dict(k=2.0), 'k'), (dict(k=True), 'k'), (dict(beta=0.0), 'beta'),
    (dict(beta=-1.0), 'beta'), (dict(beta=float('nan')), 'beta'), (dict(beta='1'), 'beta'),
    (dict(pairing='random'), 'pairing'), (dict(granularity='pixel'), 'granularity'),
    (dict(points='sorted'), 'points'), (dict(alpha=1.0), 'alpha'), (dict(prob=2.0), 'prob'),
])
def test_bad_hparams_raise(hp, field):
  with pytest.raises(ValueError, match=field):
    mixing.get('storm', **hp)


def test_distinct_points_need_k_pixels():
  mixer = mixing.get('storm', k=5, points='distinct')
  sample = lambda shape: jax.eval_shape(lambda key: mixer.sample(key, shape), jax.random.key(0))
  sample((2, 5, 5, 1))  # k == H == W is fine
  for shape in [(2, 4, 8, 1), (2, 8, 4, 1)]:
    with pytest.raises(ValueError, match='distinct'):
      sample(shape)


def test_bad_params_raise():
  x, y = _data((4, 8, 8, 1))
  params = _np_params(0, x.shape, 2)
  with pytest.raises(ValueError, match='perms'):
    storm.apply({**params, 'perms': params['perms'][:3]}, x, y)
  with pytest.raises(ValueError, match='points_w'):
    storm.apply({**params, 'points_w': jnp.zeros((2,))}, x, y)


# --------------------------------------------------------------------------------------
# Memory does not grow with k.
# --------------------------------------------------------------------------------------


def _largest_intermediate(fn, *args):
  """Size (elements) of the largest value in the jaxpr, sub-jaxprs included."""
  def walk(jaxpr):
    sizes = [0]
    for eqn in jaxpr.eqns:
      sizes += [math.prod(v.aval.shape) for v in eqn.outvars if hasattr(v.aval, 'shape')]
      for sub in jax.extend.core.jaxprs_in_params(eqn.params):
        sizes.append(walk(sub))
    return max(sizes)

  return walk(jax.make_jaxpr(fn)(*args).jaxpr)


@pytest.mark.parametrize('granularity', ['batch', 'example'])
def test_memory_independent_of_k(granularity):
  """No intermediate scales with k^2 * B*H*W*C: no k^2 permuted copies of the batch.

  Checked twice: on the jaxpr (every value is at most one batch) and on the compiled
  program (XLA's temp buffers do not grow from k=2 to k=4).
  """
  shape = (16, 32, 32, 3)
  x, y = _data(shape, num_classes=4)
  size = math.prod(shape)
  temp = {}
  for k in (2, 4):
    params = _np_params(0, shape, k, granularity)
    assert _largest_intermediate(storm.apply, params, x, y) <= size
    compiled = jax.jit(storm.apply).lower(params, x, y).compile()
    stats = compiled.memory_analysis()
    temp[k] = stats.temp_size_in_bytes
    assert stats.output_size_in_bytes < 1.01 * size * 4 + 4096
  assert temp[4] <= temp[2] + 64 * 1024, temp  # not 4x (k^2: 16 vs 4 tiles)
  assert temp[4] < size * 4, temp  # below one image batch
