"""Tests of GuidedMixup (Guided-SR / Guided-AP): saliency, greedy pairing, pixel-wise ratio."""

from __future__ import annotations

import importlib
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from storm_jax import mixing

gm = importlib.import_module('storm_jax.mixing.guided_mixup')


# --------------------------------------------------------------------------------------
# NumPy references, written from the reference code's description.
# --------------------------------------------------------------------------------------


def _np_blur(maps, size=7, sigma=3.0):
  """2-D (not separable) Gaussian blur, reflect padding, float64."""
  half = (size - 1) / 2
  t = np.linspace(-half, half, size)
  k1 = np.exp(-0.5 * (t / sigma) ** 2)
  k1 /= k1.sum()
  k2 = np.outer(k1, k1)
  r = size // 2
  p = np.pad(np.asarray(maps, np.float64), [(0, 0), (r, r), (r, r)], mode='reflect')
  h, w = maps.shape[-2:]
  out = np.zeros(maps.shape, np.float64)
  for i in range(size):
    for j in range(size):
      out += k2[i, j] * p[:, i:i + h, j:j + w]
  return out


def _np_spectral_residual(x):
  """spectral_residual.py: grey, fft2, log-amplitude minus its 3x3 mean, ifft2, |.|, blur."""
  x = np.asarray(x, np.float64)
  grey = x.mean(-1) if x.shape[-1] != 3 else x @ np.array([0.2989, 0.587, 0.114])
  f = np.fft.fft2(grey)
  mag = np.sqrt(f.real ** 2 + f.imag ** 2 + 1e-10)
  logm = np.log(mag)
  p = np.pad(logm, [(0, 0), (1, 1), (1, 1)], mode='edge')
  h, w = logm.shape[-2:]
  box = sum(p[:, i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9
  residual = np.exp(logm - box)
  s = np.abs(np.fft.ifft2(f * residual / mag))
  return _np_blur(s)


def _np_onecycle(dist):
  """pairing.pyx onecycle_cover, with explicit sets instead of -inf masking."""
  d = np.array(dist, np.float64)
  n = len(d)
  if n == 1:
    return np.zeros(1, int)
  off = d.copy()
  np.fill_diagonal(off, -np.inf)
  i0, j0 = np.unravel_index(np.argmax(off), off.shape)
  perm = np.full(n, -1)
  perm[i0] = j0
  sources = {i0}
  row = j0
  for _ in range(n - 2):
    allowed = [c for c in range(n) if c not in sources and c != row]
    col = allowed[int(np.argmax([d[row, c] for c in allowed]))]
    perm[row] = col
    sources.add(row)
    row = col
  perm[row] = i0
  return perm


def _cycle_length(perm):
  seen, i = set(), 0
  while i not in seen:
    seen.add(i)
    i = int(perm[i])
  return len(seen)


def _identity_batch(b, h, w):
  """Image b is the constant one-hot e_b over b channels and its label is e_b."""
  x = jnp.broadcast_to(jnp.eye(b, dtype=jnp.float32)[:, None, None, :], (b, h, w, b))
  return x, jnp.eye(b, dtype=jnp.float32)


# --------------------------------------------------------------------------------------
# Saliency.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize('shape', [(3, 16, 24, 3), (2, 32, 32, 1), (1, 8, 8, 3), (2, 8, 8, 4)])
def test_spectral_residual_matches_numpy(shape):
  x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
  got = jax.jit(gm.spectral_residual)(x)
  want = _np_spectral_residual(x)
  assert got.shape == shape[:3]
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_gaussian_blur_matches_numpy():
  maps = np.random.default_rng(1).random((4, 12, 20)).astype(np.float32)
  np.testing.assert_allclose(jax.jit(gm.gaussian_blur)(maps), _np_blur(maps), atol=1e-6)
  # torchvision's kernel: linspace(-3, 3, 7), exp(-t²/2σ²), normalised.
  k = gm.gaussian_kernel(7, 3.0)
  np.testing.assert_allclose(k.sum(), 1.0, atol=1e-6)
  np.testing.assert_allclose(k[0] / k[3], np.exp(-0.5), rtol=1e-6)


def test_spectral_residual_large_images_resized():
  """H > 128: computed at 128x128 and resized back; finite, non-negative, full size."""
  x = jax.random.normal(jax.random.key(0), (1, 160, 144, 3))
  s = jax.jit(gm.spectral_residual)(x)
  assert s.shape == (1, 160, 144)
  chex.assert_tree_all_finite(s)
  assert float(s.min()) >= 0


@pytest.mark.parametrize('value', [0.0, 2.5])
def test_constant_images_finite(value):
  """TB9: a constant image has a delta spectrum; zero saliency maps; no NaN anywhere."""
  x = jnp.full((4, 16, 16, 3), value)
  y = jax.nn.one_hot(jnp.arange(4), 4)
  for kind, kw in (('sr', {}), ('ap', {'saliency': jnp.zeros((4, 16, 16))})):
    out = jax.jit(mixing.get('guided_mixup', saliency=kind))(jax.random.key(0), x, y, **kw)
    chex.assert_tree_all_finite(out)
    np.testing.assert_allclose(out[1].sum(-1), 1.0, atol=1e-6)


# --------------------------------------------------------------------------------------
# Pairing.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize('b', [1, 2, 3, 5, 8, 13])
def test_greedy_cycle_matches_numpy(b):
  rng = np.random.default_rng(b)
  fn = jax.jit(gm.greedy_cycle)
  for trial in range(3):
    d = rng.random((b, b)).astype(np.float32)
    if trial == 2:  # ties: first index wins, as NumPy's argmax
      d = rng.integers(0, 3, (b, b)).astype(np.float32)
    perm = np.asarray(fn(jnp.asarray(d)))
    np.testing.assert_array_equal(perm, _np_onecycle(d))
    assert sorted(perm) == list(range(b))
    assert _cycle_length(perm) == b  # one B-cycle: no fixed points for B >= 2


@pytest.mark.parametrize('b', [3, 4, 5, 6])
def test_greedy_cycle_is_lexicographic_max_by_brute_force(b):
  """Brute force over every Hamiltonian path: the greedy cycle's edge distances, in visiting
  order from the most distant pair, are the lexicographic maximum (distinct distances)."""
  rng = np.random.default_rng(10 + b)
  d = rng.random((b, b))
  perm = np.asarray(gm.greedy_cycle(jnp.asarray(d, jnp.float32)))
  best = None
  for path in itertools.permutations(range(b)):
    key = tuple(d[path[i], path[i + 1]] for i in range(b - 1))
    if best is None or key > best[0]:
      best = (key, path)
  path = best[1]
  for i in range(b - 1):
    assert perm[path[i]] == path[i + 1]
  assert perm[path[-1]] == path[0]


def test_map_distances_match_numpy():
  maps = np.random.default_rng(2).random((6, 8, 12)).astype(np.float32)
  maps /= maps.sum((1, 2), keepdims=True)
  flat = maps.reshape(6, -1).astype(np.float64)
  want = np.linalg.norm(flat[:, None] - flat[None], axis=-1)
  np.testing.assert_allclose(jax.jit(gm.map_distances)(maps), want, rtol=2e-3, atol=1e-6)


def test_pair_within_parts():
  maps = jax.random.uniform(jax.random.key(3), (12, 8, 8))
  perm = np.asarray(jax.jit(gm.pair, static_argnums=1)(maps, 4))
  for c in range(3):
    chunk = perm[4 * c:4 * c + 4] - 4 * c
    np.testing.assert_array_equal(chunk, np.asarray(gm.pair(maps[4 * c:4 * c + 4])))
    assert _cycle_length(chunk) == 4


# --------------------------------------------------------------------------------------
# The mixer.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize('shape', [(7, 8, 12, 3), (4, 32, 48, 3), (1, 16, 16, 3)],
                         ids=['b7', 'b4-32x48', 'b1'])
@pytest.mark.parametrize('kind', ['sr', 'ap'])
def test_matches_numpy_formulas(shape, kind):
  """Maps, greedy pairing, M = s/(s + s_π), x̃ = M x + (1 - M) x_π, λ = mean(M)."""
  b, h, w, _ = shape
  rng = np.random.default_rng(4)
  x = rng.normal(size=shape).astype(np.float32)
  y = jax.nn.softmax(jnp.asarray(rng.normal(size=(b, 5)), jnp.float32))
  sal = rng.random((b, h, w)).astype(np.float32) ** 3
  m = mixing.get('guided_mixup', saliency=kind)
  params = m.sample(jax.random.key(0), shape, **({'saliency': jnp.asarray(sal)}
                                                  if kind == 'ap' else {}))
  x_mix, y_mix = jax.jit(m.apply)(params, jnp.asarray(x), y)
  raw = _np_spectral_residual(x) if kind == 'sr' else sal
  maps = _np_blur(raw)
  maps /= maps.sum((1, 2), keepdims=True)
  flat = maps.reshape(b, -1)
  perm = _np_onecycle(np.linalg.norm(flat[:, None] - flat[None], axis=-1))
  ratio = maps / (maps + maps[perm])
  np.testing.assert_allclose(x_mix, ratio[..., None] * x + (1 - ratio[..., None]) * x[perm],
                             atol=1e-4)
  lam = ratio.mean((1, 2))[:, None]
  np.testing.assert_allclose(y_mix, lam * np.asarray(y) + (1 - lam) * np.asarray(y)[perm],
                             atol=1e-5)
  np.testing.assert_allclose(y_mix.sum(-1), 1.0, atol=1e-6)


def test_label_equals_pixel_share():
  """TB1 with provenance channels: the share of image i's pixels in x̃_b is ỹ_b[i]."""
  b, h, w = 6, 16, 16
  x, y = _identity_batch(b, h, w)
  sal = jax.random.uniform(jax.random.key(5), (b, h, w)) ** 4
  for pairing in ('greedy', 'perm'):
    m = mixing.get('guided_mixup', saliency='ap', pairing=pairing)
    x_mix, y_mix = jax.jit(m)(jax.random.key(6), x, y, saliency=sal)
    np.testing.assert_allclose(x_mix.mean((1, 2)), y_mix, atol=1e-6)
    assert (np.asarray(y_mix).max(-1) < 1).all()  # every image is actually mixed


def test_perm_pairing_uses_sampled_permutation():
  """pairing='perm' (released CIFAR/Tiny code) uses params['perm'], greedy ignores it."""
  b, h, w = 6, 8, 8
  x, y = _identity_batch(b, h, w)
  sal = jax.random.uniform(jax.random.key(7), (b, h, w))
  m = mixing.get('guided_mixup', saliency='ap', pairing='perm')
  params = m.sample(jax.random.key(8), (b, h, w, b), saliency=sal)
  params['perm'] = jnp.array([3, 0, 1, 5, 2, 4], jnp.int32)
  _, y_mix = jax.jit(m.apply)(params, x, y)
  partner = np.argsort(-np.asarray(y_mix), axis=-1)[:, :2]
  for i in range(b):
    assert set(partner[i]) == {i, int(params['perm'][i])}
  greedy = mixing.get('guided_mixup', saliency='ap')
  a = jax.jit(greedy.apply)(params, x, y)
  bb = jax.jit(greedy.apply)(dict(params, perm=jnp.roll(params['perm'], 1)), x, y)
  chex.assert_trees_all_equal(a, bb)


def test_identical_maps_are_mixup_half():
  """TB3: identical maps give M = ½ everywhere, i.e. Mixup with λ = ½ on the greedy pairs."""
  b, h, w = 5, 8, 8
  x = jax.random.normal(jax.random.key(9), (b, h, w, 3))
  y = jax.nn.one_hot(jnp.arange(b), b)
  sal = jnp.broadcast_to(jax.random.uniform(jax.random.key(10), (h, w)), (b, h, w))
  m = mixing.get('guided_mixup', saliency='ap')
  params = m.sample(jax.random.key(0), x.shape, saliency=sal)
  x_mix, y_mix = jax.jit(m.apply)(params, x, y)
  perm = np.asarray(gm.pair(gm.guide_maps(params, x, saliency='ap', blur=(7, 3.0),
                                          sr_blur=(7, 3.0))))
  np.testing.assert_allclose(x_mix, 0.5 * (x + x[perm]), atol=1e-6)
  np.testing.assert_allclose(y_mix, 0.5 * (y + y[perm]), atol=1e-6)


def test_prob_coin_skips_or_applies():
  """prob < 1: a failed coin returns the batch untouched, a won coin the full mix."""
  shape = (4, 16, 16, 3)
  x = jax.random.normal(jax.random.key(12), shape)
  y = jax.nn.one_hot(jnp.arange(4) % 3, 3)
  m = mixing.get('guided_mixup', saliency='sr', prob=0.5)
  params = m.sample(jax.random.key(0), shape)
  fn = jax.jit(m.apply)
  off = fn(dict(params, apply=jnp.array(False)), x, y)
  on = fn(dict(params, apply=jnp.array(True)), x, y)
  chex.assert_trees_all_equal(off, (x, y))
  always = mixing.get('guided_mixup', saliency='sr')
  chex.assert_trees_all_close(on, jax.jit(always.apply)({'perm': params['perm']}, x, y),
                              atol=1e-6)


def test_jit_no_retrace_and_eager_equals_jit():
  shape = (4, 16, 16, 3)
  x = jax.random.normal(jax.random.key(11), shape)
  y = jax.nn.one_hot(jnp.arange(4) % 3, 3)
  m = mixing.get('guided_mixup', saliency='sr', prob=0.5)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(key, x, y):
    return m(key, x, y)

  for i in range(3):
    out = step(jax.random.key(i), x + i, y)
    chex.assert_shape(out, (shape, (4, 3)))
  eager = m(jax.random.key(0), x, y)
  chex.assert_trees_all_close(eager, step(jax.random.key(0), x, y), atol=1e-5)


@pytest.mark.parametrize('hparams,field', [
    ({'saliency': 'attention'}, 'saliency'),
    ({'pairing': 'random'}, 'pairing'),
    ({'blur': (6, 3.0)}, 'blur'),
    ({'sr_blur': (7, 0.0)}, 'sr_blur'),
    ({'part': -1}, 'part'),
    ({'clean_lam': -1.0}, 'clean_lam'),
])
def test_bad_hparams(hparams, field):
  with pytest.raises(ValueError, match=field):
    mixing.get('guided_mixup', **hparams)


def test_bad_inputs():
  x = jnp.zeros((4, 8, 8, 3))
  y = jnp.eye(4)
  with pytest.raises(ValueError, match='saliency'):
    mixing.get('guided_mixup', saliency='ap')(jax.random.key(0), x, y)
  with pytest.raises(ValueError, match='saliency.shape'):
    mixing.get('guided_mixup', saliency='ap')(jax.random.key(0), x, y,
                                               saliency=jnp.zeros((4, 8, 9)))
  with pytest.raises(ValueError, match='part'):
    mixing.get('guided_mixup', part=3)(jax.random.key(0), x, y)
