"""Tests of PuzzleMix: saliency pooling, the labelling energy, the solvers and the mixer."""

from __future__ import annotations

import importlib
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from storm_jax import mixing
from storm_jax.mixing import saliency as sal_lib

pm = importlib.import_module('storm_jax.mixing.puzzlemix')


# --------------------------------------------------------------------------------------
# NumPy references.
# --------------------------------------------------------------------------------------


def _np_energy(labels, unary, w_v, w_h):
  """E(t) of labels `[K, gh, gw]` for one instance (float64)."""
  n_labels = unary.shape[-1]
  un = np.take_along_axis(unary[None], labels[..., None], -1)[..., 0].sum((1, 2))
  t = labels / (n_labels - 1)
  pv = (w_v * np.square(t[:, 1:] - t[:, :-1])).sum((1, 2))
  ph = (w_h * np.square(t[:, :, 1:] - t[:, :, :-1])).sum((1, 2))
  return un + pv + ph


def _brute_force(unary, w_v, w_h):
  gh, gw, n_labels = unary.shape
  all_labels = np.array(list(itertools.product(range(n_labels), repeat=gh * gw)))
  e = _np_energy(all_labels.reshape(-1, gh, gw), *(np.float64(a) for a in (unary, w_v, w_h)))
  return e.min()


def _np_terms(sal, x01, perm, lam, bn, beta=1.2, gamma=0.5, eta=0.2, neigh=4, n_labels=3):
  """The reference's `mixup_graph` + `graphcut_multi` energy, NHWC, in float64."""
  b, h, w, _ = x01.shape
  block = w // bn
  neigh = min(neigh, block)
  beta_n = beta / bn / 16
  g = sal.reshape(b, bn, block, bn, block).mean((2, 4))
  unary1 = g / g.sum((1, 2), keepdims=True)
  unary2 = unary1[perm]
  p1 = x01.reshape(b, h // neigh, neigh, w // neigh, neigh, -1).mean((2, 4))
  p2 = p1[perm]
  k = block // neigh

  def penalty(a, c):
    px = np.abs(a[:, :-1] - c[:, 1:])[:, k - 1::k].mean(-1)
    py = np.abs(a[:, :, :-1] - c[:, :, 1:])[:, :, k - 1::k].mean(-1)
    return (px.reshape(b, bn - 1, bn, k).mean(-1), py.reshape(b, bn, k, bn - 1).mean(2))

  imgs = (p2, p1)  # reference index 0 = partner (input2), 1 = anchor (input1)
  pw_x = [[beta_n * gamma * penalty(imgs[i], imgs[j])[0] for j in (0, 1)] for i in (0, 1)]
  pw_y = [[beta_n * gamma * penalty(imgs[i], imgs[j])[1] for j in (0, 1)] for i in (0, 1)]
  unary1, unary2 = unary1.copy(), unary2.copy()
  unary2[:, :-1, :] += (pw_x[1][0] + pw_x[1][1]) / 2
  unary1[:, :-1, :] += (pw_x[0][1] + pw_x[0][0]) / 2
  unary2[:, 1:, :] += (pw_x[0][1] + pw_x[1][1]) / 2
  unary1[:, 1:, :] += (pw_x[1][0] + pw_x[0][0]) / 2
  unary2[:, :, :-1] += (pw_y[1][0] + pw_y[1][1]) / 2
  unary1[:, :, :-1] += (pw_y[0][1] + pw_y[0][0]) / 2
  unary2[:, :, 1:] += (pw_y[0][1] + pw_y[1][1]) / 2
  unary1[:, :, 1:] += (pw_y[1][0] + pw_y[0][0]) / 2
  w_v = (pw_x[1][0] + pw_x[0][1] - pw_x[1][1] - pw_x[0][0]) / 2 + beta_n
  w_h = (pw_y[1][0] + pw_y[0][1] - pw_y[1][1] - pw_y[0][0]) / 2 + beta_n
  eps = 1e-8
  prior = {2: [-np.log(lam + eps), -np.log(1 - lam + eps)],
           3: [-np.log(lam**2 + eps), -np.log(2 * lam * (1 - lam) + eps),
               -np.log((1 - lam)**2 + eps)]}[n_labels]
  prior = eta * np.array(prior) / bn**2
  # graphcut_multi(unary2, unary1): label i costs (1 - l_i) unary2 + l_i unary1 + prior_i.
  unary = np.stack([(1 - l) * unary2 + l * unary1 + prior[i]
                    for i, l in enumerate(np.linspace(0, 1, n_labels))], -1)
  return unary, w_v, w_h


def _np_transport_plan(mask, grad_pool, eps):
  """The reference `mask_transport` for one `[T, T]` grid, in NumPy."""
  t = mask.shape[-1]
  n = t * t
  r, c = np.divmod(np.arange(n), t)
  dist = (np.square(r[:, None] - r[None]) + np.square(c[:, None] - c[None])) / (t - 1)**2
  cost = eps * dist - grad_pool.reshape(n, 1) * (mask > 0).reshape(1, n)
  for _ in range(t):
    plan = np.eye(n)[cost.argmin(-1)]
    win = np.eye(n)[(plan * cost).argmin(0)].T * plan
    cost = cost + (1 - win) * plan
  return win


def _instance(rng, gh, gw, n_labels, batch=None):
  lead = () if batch is None else (batch,)
  unary = rng.normal(size=lead + (gh, gw, n_labels)).astype(np.float32)
  w_v = rng.uniform(0, 2, size=lead + (gh - 1, gw)).astype(np.float32)
  w_h = rng.uniform(0, 2, size=lead + (gh, gw - 1)).astype(np.float32)
  return unary, w_v, w_h


def _batch(rng, b, h, w, c=3):
  x01 = rng.uniform(size=(b, h, w, c)).astype(np.float32)
  sal = np.abs(rng.normal(size=(b, h, w))).astype(np.float32) + 1e-3
  perm = rng.permutation(b).astype(np.int32)
  return x01, sal, perm


# --------------------------------------------------------------------------------------
# Saliency helpers.
# --------------------------------------------------------------------------------------


def test_block_pool_and_normalisation():
  rng = np.random.default_rng(0)
  s = rng.uniform(size=(3, 8, 12)).astype(np.float32)
  s[1] = 0.0
  pooled = np.asarray(sal_lib.block_pool(jnp.asarray(s), (2, 3)))
  np.testing.assert_allclose(pooled, s.reshape(3, 2, 4, 3, 4).mean((2, 4)), rtol=1e-6)
  norm = np.asarray(jax.jit(sal_lib.block_saliency, static_argnums=1)(jnp.asarray(s), 4))
  assert norm.shape == (3, 4, 4)
  np.testing.assert_allclose(norm.sum((1, 2)), 1.0, rtol=1e-5)
  np.testing.assert_allclose(norm[1], 1.0 / 16)  # zero map -> uniform, not NaN
  ref = s[0].reshape(4, 2, 4, 3).mean((1, 3))
  np.testing.assert_allclose(norm[0], ref / ref.sum(), rtol=1e-5)
  with pytest.raises(ValueError, match='grid'):
    sal_lib.block_pool(jnp.asarray(s), 5)


# --------------------------------------------------------------------------------------
# The energy.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize('bn,n_labels,shape', [
    (2, 3, (4, 32, 32)), pytest.param(4, 3, (4, 32, 32), marks=pytest.mark.slow),
    pytest.param(8, 2, (3, 32, 32), marks=pytest.mark.slow), (16, 3, (2, 32, 32))])
def test_energy_terms_match_reference(bn, n_labels, shape):
  rng = np.random.default_rng(bn)
  x01, sal, perm = _batch(rng, *shape)
  lam = 0.3
  got = pm.energy_terms(jnp.asarray(sal), jnp.asarray(x01), jnp.asarray(perm), lam, bn,
                        n_labels=n_labels)
  want = _np_terms(np.float64(sal), np.float64(x01), perm, lam, bn, n_labels=n_labels)
  for g, w in zip(got, want):
    np.testing.assert_allclose(np.asarray(g), w, rtol=2e-5, atol=1e-7)
  assert np.all(np.asarray(got[1]) > 0) and np.all(np.asarray(got[2]) > 0)


def test_folded_energy_is_the_edge_energy_up_to_a_constant():
  """Two labels: E(t) - Σ_edges (D_{u(t_p) v(t_q)} + β_n [t_p != t_q]) - saliency is constant."""
  rng = np.random.default_rng(1)
  bn, beta, gamma = 2, 1.2, 0.5
  x01, sal, perm = _batch(rng, 2, 8, 8)
  unary, w_v, w_h = (np.float64(a) for a in pm.energy_terms(
      jnp.asarray(sal), jnp.asarray(x01), jnp.asarray(perm), 0.5, bn, n_labels=2, eta=0.0,
      neigh_size=2))
  beta_n = beta / (16 * bn)
  s = sal.reshape(2, bn, 4, bn, 4).mean((2, 4))
  s = s / s.sum((1, 2), keepdims=True)
  pooled = x01.reshape(2, 4, 2, 4, 2, 3).mean((2, 4))
  for b in range(2):
    src = (pooled[b], pooled[perm[b]])  # label 0 shows the anchor, 1 the partner
    diffs = []
    for lab in itertools.product(range(2), repeat=bn * bn):
      t = np.array(lab).reshape(bn, bn)
      e = _np_energy(t[None], unary[b], w_v[b], w_h[b])[0]
      direct = np.where(t == 0, s[perm[b]], s[b]).sum()
      for (i, j), (di, dj) in itertools.product(itertools.product(range(bn), repeat=2),
                                                ((1, 0), (0, 1))):
        if i + di >= bn or j + dj >= bn:
          continue
        u, v = src[t[i, j]], src[t[i + di, j + dj]]
        if di:  # last pooled row of block i vs first of block i + 1 (2 pooled rows a block)
          step = np.abs(u[2 * i + 1, 2 * j:2 * j + 2] - v[2 * i + 2, 2 * j:2 * j + 2]).mean()
        else:
          step = np.abs(u[2 * i:2 * i + 2, 2 * j + 1] - v[2 * i:2 * i + 2, 2 * j + 2]).mean()
        direct += beta_n * gamma * step + beta_n * (t[i, j] != t[i + di, j + dj])
      diffs.append(e - direct)
    np.testing.assert_allclose(diffs, diffs[0], atol=1e-6)


# --------------------------------------------------------------------------------------
# Solvers.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize('gh,gw,n_labels', [(2, 2, 3), (3, 3, 3), (3, 3, 2)])
def test_exact_solver_is_the_brute_force_minimum(gh, gw, n_labels):
  rng = np.random.default_rng(gh * 10 + n_labels)
  unary, w_v, w_h = _instance(rng, gh, gw, n_labels, batch=8)
  labels = np.asarray(jax.jit(jax.vmap(pm.solve_exact))(unary, w_v, w_h))
  assert labels.min() >= 0 and labels.max() < n_labels
  for i in range(8):
    best = _brute_force(unary[i], w_v[i], w_h[i])
    got = _np_energy(labels[i][None], *(np.float64(a[i]) for a in (unary, w_v, w_h)))[0]
    np.testing.assert_allclose(got, best, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_exact_solver_is_the_brute_force_minimum_four_labels():
  rng = np.random.default_rng(4)
  unary, w_v, w_h = _instance(rng, 2, 3, 4, batch=6)
  labels = np.asarray(jax.jit(jax.vmap(pm.solve_exact))(unary, w_v, w_h))
  for i in range(6):
    got = _np_energy(labels[i][None], *(np.float64(a[i]) for a in (unary, w_v, w_h)))[0]
    np.testing.assert_allclose(got, _brute_force(unary[i], w_v[i], w_h[i]), atol=1e-6)


@pytest.mark.slow
def test_solvers_on_puzzlemix_energies():
  """Real energies (bn = 3 and 4): exact = brute force (bn 3); exact <= chains <= start."""
  rng = np.random.default_rng(3)
  x01, sal, perm = _batch(rng, 6, 12, 12)
  unary, w_v, w_h = pm.energy_terms(jnp.asarray(sal), jnp.asarray(x01), jnp.asarray(perm),
                                    0.4, 3, neigh_size=2)
  exact = np.asarray(jax.jit(jax.vmap(pm.solve_exact))(unary, w_v, w_h))
  chains = np.asarray(jax.jit(pm.solve_chains)(unary, w_v, w_h))
  icm = np.asarray(jax.jit(pm.solve_icm)(unary, w_v, w_h))
  start = np.asarray(jnp.argmin(unary, -1))
  unary, w_v, w_h = (np.float64(a) for a in (unary, w_v, w_h))
  for i in range(6):
    e = {k: _np_energy(v[i][None], unary[i], w_v[i], w_h[i])[0]
         for k, v in (('exact', exact), ('chains', chains), ('icm', icm), ('start', start))}
    np.testing.assert_allclose(e['exact'], _brute_force(unary[i], w_v[i], w_h[i]), atol=1e-6)
    assert e['exact'] <= e['chains'] + 1e-6 <= e['start'] + 2e-6
    assert e['exact'] <= e['icm'] + 1e-6 <= e['start'] + 2e-6


def test_gco_energy_is_not_below_exact():
  pytest.importorskip('gco')
  rng = np.random.default_rng(5)
  for bn in (2, 4, 8):
    x01, sal, perm = _batch(rng, 8, 32, 32)
    terms = pm.energy_terms(jnp.asarray(sal), jnp.asarray(x01), jnp.asarray(perm), 0.6, bn)
    exact = np.asarray(jax.vmap(pm.solve_exact)(*terms))
    ref = np.asarray(jax.jit(pm.solve_gco)(*terms))  # through jax.pure_callback
    unary, w_v, w_h = (np.float64(a) for a in terms)
    for i in range(8):
      e_exact = _np_energy(exact[i][None], unary[i], w_v[i], w_h[i])[0]
      e_gco = _np_energy(ref[i][None], unary[i], w_v[i], w_h[i])[0]
      assert e_exact <= e_gco + 1e-6


# --------------------------------------------------------------------------------------
# Transport.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize('t', [2, 4, 8, 16])
def test_transport_plan_matches_reference(t):
  rng = np.random.default_rng(t)
  plan_fn = jax.jit(jax.vmap(lambda m, s: pm.transport_plan(m > 0, s, 0.8)))
  masks = rng.integers(0, 3, size=(16, t, t)) / 2
  grads = rng.uniform(size=(16, t, t)).astype(np.float32)
  grads /= grads.sum((1, 2), keepdims=True)
  got = np.asarray(plan_fn(jnp.asarray(masks), jnp.asarray(grads)))
  for i in range(16):
    want = _np_transport_plan(masks[i], np.float64(grads[i]), 0.8)
    np.testing.assert_array_equal(got[i], want)
  assert np.all(got.sum(0 + 1) <= 1) and np.all(got.sum(2) <= 1)  # partial permutations


def test_transport_is_identity_when_all_visible():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(16, 16, 3)).astype(np.float32))
  plan = pm.transport_plan(jnp.ones((4, 4), bool), jnp.asarray(rng.uniform(0.1, 1, (4, 4))),
                           0.8)
  np.testing.assert_array_equal(np.asarray(plan), np.eye(16))
  np.testing.assert_array_equal(np.asarray(pm.transport(x, plan, 4, 4)), np.asarray(x))


# --------------------------------------------------------------------------------------
# The mixer.
# --------------------------------------------------------------------------------------


def _provenance_batch(b, h, w):
  """Image b is the constant one-hot e_b over b channels and its label is e_b."""
  x = jnp.broadcast_to(jnp.eye(b, dtype=jnp.float32)[:, None, None, :], (b, h, w, b))
  return x, jnp.eye(b, dtype=jnp.float32)


@pytest.mark.parametrize('solver,transport,t_size,shape', [
    pytest.param('exact', True, 4, (6, 16, 16), marks=pytest.mark.slow),
    ('chains', True, -1, (5, 16, 24)), ('chains', False, 4, (4, 16, 16))])
def test_mixer_invariants(solver, transport, t_size, shape):
  b, h, w = shape
  mixer = mixing.get('puzzlemix', solver=solver, transport=transport, t_size=t_size,
                     block_nums=(2, 4), neigh_size=2)
  x, y = _provenance_batch(b, h, w)
  rng = np.random.default_rng(b)
  sal = jnp.asarray(rng.uniform(0.01, 1, (b, h, w)).astype(np.float32))
  run = jax.jit(lambda k, x, y, s, lam, g: mixer.apply(
      {**mixer.sample(k, x.shape, saliency=s), 'lam': lam, 'grid': g}, x, y))
  for seed, lam, grid in ((0, 0.3, 0), (1, 0.7, 1), (2, 0.0, 1), (3, 1.0, 0)):
    key = jax.random.key(seed)
    perm = np.asarray(mixer.sample(key, x.shape, saliency=sal)['perm'])
    x_mix, y_mix = (np.asarray(a) for a in run(key, x, y, sal, jnp.float32(lam), grid))
    assert np.all(np.isfinite(x_mix)) and np.all(np.isfinite(y_mix))
    np.testing.assert_allclose(y_mix.sum(1), 1.0, rtol=1e-6)
    for i in range(b):
      if perm[i] == i:
        continue
      share = x_mix[i, ..., i].mean()  # the anchor's realised pixel share
      np.testing.assert_allclose(y_mix[i, i], share, atol=1e-6)
      np.testing.assert_allclose(y_mix[i, perm[i]], x_mix[i, ..., perm[i]].mean(), atol=1e-6)
      # Mask values in {0, 1/2, 1}; every pixel comes from the two sources (no zero block:
      # the saliency is positive).
      assert set(np.unique(x_mix[i, ..., i]).round(6)) <= {0.0, 0.5, 1.0}
      np.testing.assert_allclose(x_mix[i, ..., i] + x_mix[i, ..., perm[i]], 1.0, atol=1e-6)
      if not transport:
        assert x_mix[i].sum() == pytest.approx(h * w)
  assert run._cache_size() == 1  # one trace for all draws


@pytest.mark.slow
def test_transport_moves_blocks_within_each_image():
  """Each output block of the anchor source is one of its input blocks or zero."""
  b, h, w = 4, 16, 16
  rng = np.random.default_rng(7)
  x = jnp.asarray(rng.normal(size=(b, h, w, 3)).astype(np.float32))
  sal = jnp.asarray(rng.uniform(0.01, 1, (b, h, w)).astype(np.float32))
  params = {'perm': jnp.asarray([1, 2, 3, 0], jnp.int32), 'lam': jnp.float32(0.5),
            'grid': jnp.int32(0), 'saliency': sal}
  unary, w_v, w_h = pm.energy_terms(sal, x, params['perm'], 0.5, 4, neigh_size=2)
  mask = 1.0 - np.asarray(pm.solve_chains(unary, w_v, w_h)) / 2
  s_a = pm.normalize_per_image(pm.block_pool(sal, 4))
  for i in range(b):
    plan = pm.transport_plan(jnp.asarray(mask[i] > 0), s_a[i], 0.8)
    moved = np.asarray(pm.transport(x[i], plan, 4, 4))
    tiles_in = np.asarray(x[i]).reshape(4, 4, 4, 4, 3).transpose(0, 2, 1, 3, 4).reshape(16, -1)
    tiles_out = moved.reshape(4, 4, 4, 4, 3).transpose(0, 2, 1, 3, 4).reshape(16, -1)
    for j, tile in enumerate(tiles_out):
      if mask[i].reshape(16)[j] > 0:  # visible positions all receive a block here
        assert any(np.array_equal(tile, t) for t in tiles_in)
      else:
        assert np.array_equal(tile, 0 * tile) or any(np.array_equal(tile, t) for t in tiles_in)


def test_zero_saliency_and_constant_images_are_finite():
  mixer = mixing.get('puzzlemix', solver='chains', block_nums=(4,))
  x = jnp.zeros((4, 16, 16, 3))
  y = jnp.eye(4)
  x_mix, y_mix = jax.jit(mixer)(jax.random.key(0), x, y, saliency=jnp.zeros((4, 16, 16)))
  assert np.all(np.isfinite(np.asarray(x_mix))) and np.all(np.isfinite(np.asarray(y_mix)))


@pytest.mark.slow
def test_adversarial_option():
  rng = np.random.default_rng(0)
  mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
  x01 = rng.uniform(size=(4, 8, 8, 3)).astype(np.float32)
  x = jnp.asarray((x01 - np.array(mean)) / np.array(std), jnp.float32)
  y = jnp.eye(4)
  kernel = jnp.asarray(rng.normal(size=(8 * 8 * 3, 4)).astype(np.float32))
  logits_fn = lambda v: v.reshape(v.shape[0], -1) @ kernel
  s, adv, noise = pm.adversarial_saliency(logits_fn, x, y, jax.random.key(1), adv_p=1.0,
                                          adv_eps=10.0, mean=mean, std=std)
  assert s.shape == (4, 8, 8) and bool(adv.all())
  assert 0 < float(jnp.abs(noise).max()) <= 10 / 255 + 1e-7
  _, adv0, noise0 = pm.adversarial_saliency(logits_fn, x, y, jax.random.key(1), adv_p=0.0)
  assert not bool(adv0.any()) and float(jnp.abs(noise0).max()) == 0.0
  mixer = mixing.get('puzzlemix', solver='chains', block_nums=(2,), adv_p=1.0, mean=mean,
                     std=std, transport=False, neigh_size=2)
  key = jax.random.key(2)
  run = jax.jit(lambda n: mixer(key, x, y, saliency=s, adv=adv, noise=n))
  x_adv, _ = run(noise)
  x_clean, _ = run(jnp.zeros_like(noise))
  diff = np.asarray(x_adv - x_clean) * np.asarray(std)  # back in [0, 1] pixel units
  assert 0 < np.abs(diff).max() <= 10 / 255 + 1e-5


@pytest.mark.parametrize('kwargs,match', [
    (dict(solver='graphcut'), 'solver'), (dict(block_nums=(1, 2)), 'block_nums'),
    (dict(n_labels=1), 'n_labels'), (dict(t_size=0), 't_size'), (dict(gamma=1.5), 'gamma'),
    (dict(std=(0.0,)), 'std')])
def test_bad_hparams(kwargs, match):
  with pytest.raises(ValueError, match=match):
    mixing.get('puzzlemix', **kwargs)


def test_bad_shapes():
  mixer = mixing.get('puzzlemix', block_nums=(2, 3))
  with pytest.raises(ValueError, match='block_nums'):
    mixer.apply(mixer.sample(jax.random.key(0), (2, 16, 16, 3),
                             saliency=jnp.ones((2, 16, 16))), jnp.ones((2, 16, 16, 3)),
                jnp.eye(2))
  with pytest.raises(ValueError, match='saliency'):
    mixer.sample(jax.random.key(0), (2, 16, 16, 3), saliency=jnp.ones((2, 8, 8)))
