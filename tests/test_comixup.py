"""Tests of Co-Mixup: the objective, the on-device solver, the reference solver, the mixer.

The solver compiles slowly on CPU (a while loop over sweeps around a loop over outputs), so
the tests share a few jitted solvers and use small partitions.
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

cm = importlib.import_module('storm_jax.mixing.comixup')

BETA, GAMMA, THRES = 0.32, 1.0, 0.83


def _instance(rng, n, g, eta=0.05):
  """A random partition problem as the mixer builds it: cost, A, init."""
  pooled = rng.random((n, g, g)).astype(np.float32) ** 3
  prior = rng.dirichlet(np.full(n, 2.0)).astype(np.float32)
  cost = np.asarray(cm.unary_cost(jnp.asarray(pooled), jnp.asarray(prior), eta / g ** 2))
  init = rng.integers(0, n, (n, g, g)).astype(np.int32)
  return cost, np.eye(n, dtype=np.float32), init


def _scaled(g, beta=BETA, gamma=GAMMA, thres=THRES):
  k = g * g
  return dict(beta=beta / k, gamma=gamma / k, thres=thres * k)


@functools.lru_cache(maxsize=None)
def _icm(**kw):
  return jax.jit(functools.partial(cm.solve_icm, return_trace=True, **kw))


def _np_objective(cost, z, beta, gamma):
  """E(z) with explicit loops: unary, β/2 Σ_edges ‖z_k − z_k'‖², γ Σ_i Σ_{j≠j'} c_ji c_j'i."""
  n_out, g, _, n_in = z.shape
  e = 0.0
  for j in range(n_out):
    for r in range(g):
      for c in range(g):
        e += float(np.dot(cost[:, r, c], z[j, r, c]))
        if r + 1 < g:
          e += beta / 2 * float(np.sum((z[j, r, c] - z[j, r + 1, c]) ** 2))
        if c + 1 < g:
          e += beta / 2 * float(np.sum((z[j, r, c] - z[j, r, c + 1]) ** 2))
  counts = z.sum((1, 2))
  for i in range(n_in):
    for j in range(n_out):
      for j2 in range(n_out):
        if j != j2:
          e += gamma * counts[j, i] * counts[j2, i]
  return e


def _identity_batch(b, h, w):
  x = jnp.broadcast_to(jnp.eye(b, dtype=jnp.float32)[:, None, None, :], (b, h, w, b))
  return x, jnp.eye(b, dtype=jnp.float32)


# --------------------------------------------------------------------------------------
# Problem and objective.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize('soft', [False, True])
def test_objective_matches_numpy(soft):
  rng = np.random.default_rng(0)
  n, g = 5, 4
  cost, _, init = _instance(rng, n, g)
  z = np.eye(n, dtype=np.float32)[init]
  if soft:  # some blocks are ½–½ pairs
    half = rng.random((n, g, g)) < 0.3
    other = np.eye(n, dtype=np.float32)[rng.integers(0, n, (n, g, g))]
    z = np.where(half[..., None], 0.5 * (z + other), z)
  got = jax.jit(cm.objective, static_argnums=(2, 3))(cost, z, 0.02, 0.0625)
  np.testing.assert_allclose(got, _np_objective(cost, z, 0.02, 0.0625), rtol=1e-5)
  if not soft:  # one-hot: β/2 ‖·‖² is β per differing neighbour pair
    diff = (init[:, 1:] != init[:, :-1]).sum() + (init[:, :, 1:] != init[:, :, :-1]).sum()
    no_smooth = _np_objective(cost, z, 0.0, 0.0625)
    np.testing.assert_allclose(got, no_smooth + 0.02 * diff, rtol=1e-5)


def test_unary_cost_and_compatibility():
  rng = np.random.default_rng(1)
  pooled = rng.random((4, 2, 2)).astype(np.float32)
  prior = rng.dirichlet(np.ones(4)).astype(np.float32)
  cost = cm.unary_cost(jnp.asarray(pooled), jnp.asarray(prior), 0.1)
  want = -pooled / pooled.sum((1, 2), keepdims=True) - 0.1 * np.log(prior + 1e-8)[:, None, None]
  np.testing.assert_allclose(cost, want, rtol=1e-6)
  chex.assert_tree_all_finite(cm.unary_cost(jnp.zeros((3, 2, 2)), jnp.ones(3) / 3, 0.1))
  d = rng.random((4, 4)).astype(np.float32)
  np.testing.assert_allclose(cm.compatibility(jnp.asarray(d), 0.25),
                             0.75 * np.eye(4) + 0.25 * 4 * d / d.sum(), rtol=1e-6)
  np.testing.assert_allclose(cm.compatibility(jnp.zeros((3, 3)), 0.25), 0.75 * np.eye(3))


def test_peak_distance_matches_numpy():
  rng = np.random.default_rng(2)
  s = rng.random((5, 16, 20)).astype(np.float32)
  got = jax.jit(cm.peak_distance)(s)
  peaks = []
  for m in s:
    pooled = np.array([[m[r:r + 8, c:c + 8].mean() for c in range(13)] for r in range(9)])
    peaks.append(np.unravel_index(np.argmax(pooled), pooled.shape))
  peaks = np.array(peaks, np.float32)
  np.testing.assert_array_equal(got, np.abs(peaks[:, None] - peaks[None]).sum(-1))


def test_resolve_cost_matches_reference_loop():
  rng = np.random.default_rng(3)
  n, g = 6, 2
  z = np.eye(n, dtype=np.float32)[rng.integers(0, 3, (n, g, g))]
  z[4] = z[1]  # force coincidences
  z[5] = np.eye(n, dtype=np.float32)[np.zeros((g, g), int)]  # single input: never resolved
  z[0] = z[5]
  used = (z.sum((1, 2)) > 0).astype(np.float32)
  want = np.zeros((n, n), np.float32)
  for i1 in range(n):
    for i2 in range(i1 + 1, n):
      if np.abs(used[i1] - used[i2]).sum() == 0:
        nz = np.flatnonzero(used[i1])
        if len(nz) > 1:
          want[i1, nz[0]] = 1
          want[i2, nz[1]] = 1
  np.testing.assert_array_equal(cm._resolve_cost(jnp.asarray(z)), want)
  np.testing.assert_array_equal(cm._resolve_cost(z, np), want)


# --------------------------------------------------------------------------------------
# The on-device solver.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize('counts,pairs', [
    ([0, 0, 0, 5, 0, 11], [(3, 5)]),                      # two used: their pair only
    ([2, 0, 7, 1, 7, 0], [(0, 2), (0, 4), (2, 4)]),       # >= 3 used: pairs of the top 3
    ([0, 0, 16, 0, 0, 0], []),                            # one used: none
])
def test_half_label_slots(counts, pairs):
  vecs, valid = jax.jit(cm._half_slots)(jnp.asarray(counts, jnp.float32), jnp.array(True))
  got = {tuple(np.flatnonzero(v)) for v in np.asarray(vecs)[np.asarray(valid)]}
  assert got == set(pairs)
  assert np.all(np.asarray(vecs)[np.asarray(valid)].sum(-1) == 1.0)
  _, off = cm._half_slots(jnp.asarray(counts, jnp.float32), jnp.array(False))
  assert not np.asarray(off).any()


@pytest.mark.parametrize('n,g', [(5, 4), (7, 2), (3, 8)])
def test_icm_never_worse_than_init(n, g):
  """Default settings (thresholded penalty, half labels, resolve): E(final) <= E(init)."""
  solve = _icm(**_scaled(g))
  rng = np.random.default_rng(n * g)
  for _ in range(4):
    cost, a, init = _instance(rng, n, g)
    z, trace = solve(cost, a, init)
    trace = np.asarray(trace)
    final = trace[~np.isnan(trace)][-1]
    assert final <= trace[0]
    np.testing.assert_allclose(final, _np_objective(cost, np.asarray(z), BETA / g ** 2,
                                                    GAMMA / g ** 2), rtol=1e-5)
    zs = np.asarray(z)
    np.testing.assert_allclose(zs.sum(-1), 1.0)
    assert set(np.unique(zs)) <= {0.0, 0.5, 1.0}
    assert ((zs > 0).sum(-1) <= 2).all()


def test_icm_exact_coordinate_descent_is_monotone():
  """τ = 0, A = I, no half labels, no resolve: each sweep is exact block-coordinate descent on
  E, so the objective never increases from sweep to sweep."""
  n, g = 6, 4
  solve = _icm(**_scaled(g, thres=0.0), set_resolve=False, half_labels=False)
  rng = np.random.default_rng(4)
  for _ in range(5):
    cost, a, init = _instance(rng, n, g)
    _, trace = solve(cost, a, init)
    trace = np.asarray(trace)
    trace = trace[~np.isnan(trace)]
    assert len(trace) >= 2
    assert (np.diff(trace) <= 1e-6 * np.abs(trace[:-1])).all(), trace


def test_no_smoothness_no_diversity_is_unary_argmin():
  """γ = 0, β = 0: every block of every output takes argmin_i C[i, block]."""
  n, g = 5, 4
  rng = np.random.default_rng(5)
  cost = -np.stack([rng.permutation(n) for _ in range(g * g)], -1).reshape(n, g, g) / n
  init = rng.integers(0, n, (n, g, g))
  z = np.asarray(cm.solve_icm(jnp.asarray(cost, jnp.float32), jnp.eye(n), jnp.asarray(init),
                              beta=0.0, gamma=0.0, thres=THRES * g * g))
  want = np.eye(n)[np.argmin(cost, 0)]
  np.testing.assert_array_equal(z, np.broadcast_to(want, z.shape))


def test_icm_beats_random_labellings():
  n, g = 6, 4
  solve = _icm(**_scaled(g))
  rng = np.random.default_rng(6)
  cost, a, init = _instance(rng, n, g)
  z, _ = solve(cost, a, init)
  e = _np_objective(cost, np.asarray(z), BETA / 16, GAMMA / 16)
  rand = [_np_objective(cost, np.eye(n)[rng.integers(0, n, (n, g, g))], BETA / 16, GAMMA / 16)
          for _ in range(50)]
  assert e < min(rand)


def test_gco_reference_solver():
  """The reference algorithm (gco α-β swap) through the host callback; the on-device solver's
  objective is compared on the same instances with the reference's metric: the mean of
  (E_init − E_icm) / (E_init − E_gco) over instances (about 0.98 at n = 20, see
  experiments/bench_comixup.py; single instances range from 0.7 to 1.25)."""
  pytest.importorskip('gco')
  n, g, count = 6, 4, 8
  rng = np.random.default_rng(7)
  probs = [_instance(rng, n, g) for _ in range(count)]
  costs = np.stack([c for c, _, _ in probs])
  a = np.stack([a for _, a, _ in probs])
  inits = np.stack([i for _, _, i in probs])
  solve_host = jax.jit(jax.vmap(functools.partial(cm.solve_gco, **_scaled(g))))
  z_gco = np.asarray(solve_host(costs, a, inits))
  z_icm = np.asarray(jax.vmap(_icm(**_scaled(g)))(costs, a, inits)[0])
  kw = dict(beta=BETA / 16, gamma=GAMMA / 16)
  ratios = []
  for i in range(count):
    np.testing.assert_allclose(z_gco[i].sum(-1), 1.0)
    assert set(np.unique(z_gco[i])) <= {0.0, 0.5, 1.0}
    e_gco = _np_objective(costs[i], z_gco[i], **kw)
    e_icm = _np_objective(costs[i], z_icm[i], **kw)
    e_init = _np_objective(costs[i], np.eye(n)[inits[i]], **kw)
    assert e_gco < e_init
    ratios.append((e_init - e_icm) / (e_init - e_gco))
  assert np.mean(ratios) >= 0.85, ratios


# --------------------------------------------------------------------------------------
# The mixer.
# --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _mixer_apply(**hparams):
  return jax.jit(mixing.get('comixup', **hparams).apply)


@pytest.mark.parametrize('shape,part,block_num', [
    # Odd batch, partitions 3 + 3 + 1 (two solver shapes to compile), non-square blocks.
    pytest.param((7, 8, 12, 7), 3, 2, marks=pytest.mark.slow),
    ((6, 16, 16, 6), 6, 4),
], ids=['b7-part3', 'b6-part6'])
def test_labels_are_block_and_pixel_shares(shape, part, block_num):
  """TB1: with one provenance channel per input, label = pixel share; every pixel comes from
  one input or is a ½–½ blend of two; labels sum to 1; outputs stay in their partition."""
  b, h, w, _ = shape
  x, y = _identity_batch(b, h, w)
  sal = jax.random.uniform(jax.random.key(0), (b, h, w)) ** 3
  m = mixing.get('comixup', part=part, block_num=block_num)
  params = m.sample(jax.random.key(1), shape, saliency=sal)
  x_mix, y_mix = _mixer_apply(part=part, block_num=block_num)(params, x, y)
  np.testing.assert_allclose(y_mix.sum(-1), 1.0, atol=1e-6)
  np.testing.assert_allclose(x_mix.mean((1, 2)), y_mix, atol=1e-6)
  xs = np.asarray(x_mix)
  assert set(np.unique(xs)) <= {0.0, 0.5, 1.0}
  assert ((xs > 0).sum(-1) <= 2).all()
  # Block-constant at the grid resolution.
  blocks = xs.reshape(b, block_num, h // block_num, block_num, w // block_num, b)
  assert (blocks == blocks[:, :, :1, :, :1]).all()
  for start in range(0, b, part):
    inside = np.zeros(b, bool)
    inside[start:start + part] = True
    assert np.all(np.asarray(y_mix)[start:start + part][:, ~inside] == 0)


def test_gco_solver_in_the_mixer():
  """solver='gco' (host callback) under jit: valid labelling, labels = pixel shares."""
  pytest.importorskip('gco')
  b, h, w = 6, 8, 8
  x, y = _identity_batch(b, h, w)
  sal = jax.random.uniform(jax.random.key(7), (b, h, w)) ** 3
  m = mixing.get('comixup', solver='gco', part=3)
  x_mix, y_mix = jax.jit(m)(jax.random.key(8), x, y, saliency=sal)
  np.testing.assert_allclose(y_mix.sum(-1), 1.0, atol=1e-6)
  np.testing.assert_allclose(x_mix.mean((1, 2)), y_mix, atol=1e-6)
  assert set(np.unique(np.asarray(x_mix))) <= {0.0, 0.5, 1.0}


def test_partition_of_one_is_identity():
  """With partitions of size 1 every output is its own input."""
  shape = (5, 8, 8, 3)
  x = jax.random.normal(jax.random.key(2), shape)
  y = jax.nn.softmax(jax.random.normal(jax.random.key(3), (5, 4)))
  sal = jax.random.uniform(jax.random.key(4), shape[:3])
  m = mixing.get('comixup', part=1)
  params = m.sample(jax.random.key(5), shape, saliency=sal)
  x_mix, y_mix = _mixer_apply(part=1)(params, x, y)
  np.testing.assert_allclose(x_mix, x, atol=1e-6)
  np.testing.assert_allclose(y_mix, y, atol=1e-6)


def test_sample_draws():
  b, part = 7, 3
  sal = jnp.ones((b, 16, 32))
  m = mixing.get('comixup', part=part, block_num=-1)
  p = jax.jit(functools.partial(m.sample, shape=(b, 16, 32, 3)))(jax.random.key(6), saliency=sal)
  prior = np.asarray(p['prior'])
  np.testing.assert_allclose([prior[:3].sum(), prior[3:6].sum(), prior[6:].sum()], 1.0,
                             atol=1e-5)
  init = np.asarray(p['init'])
  assert init.shape == (b, 16, 16)
  assert init[:6].max() < 3 and init[6:].max() == 0 and init.min() >= 0
  assert 0 <= int(p['grid']) < 4


@pytest.mark.slow
def test_jit_no_retrace_and_random_block_num():
  """Under jit with random grid sides (lax.switch over 2, 4, 8, 16): one trace, valid output."""
  shape = (6, 16, 16, 6)
  x, y = _identity_batch(6, 16, 16)
  m = mixing.get('comixup', block_num=-1, part=3, prob=0.5)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(key, x, y, s):
    return m(key, x, y, saliency=s)

  for i in range(3):
    sal = jax.random.uniform(jax.random.key(10 + i), shape[:3])
    x_mix, y_mix = step(jax.random.key(i), x, y, sal)
    chex.assert_shape((x_mix, y_mix), (shape, (6, 6)))
    np.testing.assert_allclose(x_mix.mean((1, 2)), y_mix, atol=1e-6)


@pytest.mark.slow
def test_prob_coin_skips_the_solver():
  """prob < 1: a failed coin returns the batch untouched, a won coin the full mix."""
  shape = (6, 16, 16, 6)
  x, y = _identity_batch(6, 16, 16)
  sal = jax.random.uniform(jax.random.key(9), shape[:3])
  m = mixing.get('comixup', part=6, prob=0.5)
  params = m.sample(jax.random.key(10), shape, saliency=sal)
  fn = jax.jit(m.apply)
  chex.assert_trees_all_equal(fn(dict(params, apply=jnp.array(False)), x, y), (x, y))
  on = fn(dict(params, apply=jnp.array(True)), x, y)
  always = {k: v for k, v in params.items() if k != 'apply'}
  chex.assert_trees_all_close(on, _mixer_apply(part=6, block_num=4)(always, x, y), atol=1e-6)


@pytest.mark.parametrize('hparams,field', [
    ({'block_num': 0}, 'block_num'),
    ({'part': 0}, 'part'),
    ({'alpha': 0.0}, 'alpha'),
    ({'beta': -1.0}, 'beta'),
    ({'thres_type': 'medium'}, 'thres_type'),
    ({'omega': 2.0}, 'omega'),
    ({'solver': 'exact'}, 'solver'),
    ({'niter': 0}, 'niter'),
])
def test_bad_hparams(hparams, field):
  with pytest.raises(ValueError, match=field):
    mixing.get('comixup', **hparams)


def test_bad_inputs():
  x, y = jnp.zeros((4, 10, 10, 3)), jnp.eye(4)
  with pytest.raises(ValueError, match='saliency'):
    mixing.get('comixup')(jax.random.key(0), x, y)
  with pytest.raises(ValueError, match='divisible'):
    mixing.get('comixup')(jax.random.key(0), x, y, saliency=jnp.zeros((4, 10, 10)))
  with pytest.raises(ValueError, match='saliency.shape'):
    mixing.get('comixup')(jax.random.key(0), jnp.zeros((4, 8, 8, 3)), y,
                          saliency=jnp.zeros((4, 8, 9)))
