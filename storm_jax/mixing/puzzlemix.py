"""PuzzleMix (Kim, Choo, Song, ICML 2020): saliency-optimal block masks plus transport.

Per batch: `λ ~ Beta(α, α)`, a pairing `π` and a block count `bn` drawn from `block_nums`
(`2^U{1..4}` in the reference). Per example, on the `bn × bn` block grid, the mask labels
`t ∈ {0, .., L-1}` (anchor weight `m_t = 1 - t / (L-1)`, `L = n_labels`) minimise
(docs/DESIGN.md#puzzlemix):

  E(t) = Σ_p [m_t U_A(p) + (1 - m_t) U_P(p) + prior_t]  +  Σ_{p~q} w_pq ((t_p - t_q) / (L-1))²

* `U_A = S_π + ...`, `U_P = S + ...`: the cost of showing the anchor is the partner's
  saliency it hides and vice versa (`S` = saliency block-pooled and divided by its sum);
  the image-smoothness data of every edge (`D_uv`, the mean absolute colour step across the
  block boundary with `u` on the upper/left and `v` on the lower/right side, scaled by
  `β γ / (16 bn)`) are folded into these unaries, half to each end, as the reference does;
* `w_pq = (D_ap + D_pa - D_aa - D_pp) / 2 + β / (16 bn) > 0` (4-connected);
* `prior_t = η / bn² · -log(Binom(L-1-t; L-1, λ) + 1e-8)` pulls the anchor share to λ.

The pairwise term is convex in `t_p - t_q` and the prior convex in `t`, so the problem is
solved exactly by one s-t minimum cut of `(L-1) bn²` nodes (Ishikawa's construction,
`solve_exact`, push-relabel in `lax.while_loop`). `solve_chains` is the fast approximation
(exact moves on whole rows and columns), `solve_icm` a weaker one (single-block moves);
`solver='gco'` calls the reference's α-β swap (the optional `gco-wrapper` package) through
`jax.pure_callback`.

Then each image's blocks are transported (`transport=True`): block `i` moves to where the
mask shows that image, greedily by `C_ij = t_eps d²(i, j) / (T-1)² - S_i [visible_j]`
(reference `mask_transport`). `x̃ = M T_a(x) + (1 - M) T_p(x_π)` and the anchor's label
weight is the realised share `mean(M)`.

`x` is the normalised model input; the smoothness data and the adversarial noise are in
`[0, 1]` pixel units, recovered with the `mean` / `std` hyper-parameters (the dataset's
normalisation; the default (0, 1) means `x` is already in [0, 1]).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from storm_jax.mixing import base
from storm_jax.mixing.losses import soft_cross_entropy
from storm_jax.mixing.saliency import block_pool, normalize_per_image

SOLVERS = ('exact', 'chains', 'icm', 'gco')


# --------------------------------------------------------------------------------------
# The labelling energy.
# --------------------------------------------------------------------------------------


def _edge_steps(pooled_u: jax.Array, pooled_v: jax.Array, k: int, k_along: int,
                axis: int) -> jax.Array:
  """Mean |colour step| across each block boundary along `axis` (1 = rows, 2 = columns).

  `pooled_*: [B, H', W', C]` images average-pooled by the neighbourhood size, `k` pooled
  pixels per block across the boundaries and `k_along` along them. Boundary `r` compares the
  last pooled line of block `r` in `u` with the first pooled line of block `r + 1` in `v`;
  the result is averaged over channels and over the pooled pixels along the boundary:
  `[B, bn-1, bn]` (rows) or `[B, bn, bn-1]` (columns).
  """
  n = pooled_u.shape[axis]
  last = jax.lax.slice_in_dim(pooled_u, k - 1, n - 1, stride=k, axis=axis)
  first = jax.lax.slice_in_dim(pooled_v, k, n, stride=k, axis=axis)
  step = jnp.mean(jnp.abs(last - first), axis=-1)  # [B, ., .]
  b, h, w = step.shape
  if axis == 1:
    return step.reshape(b, h, w // k_along, k_along).mean(axis=3)
  return step.reshape(b, h // k_along, k_along, w).mean(axis=2)


def energy_terms(saliency: jax.Array, x01: jax.Array, perm: jax.Array, lam: jax.Array,
                 bn: int, *, beta: float = 1.2, gamma: float = 0.5, eta: float = 0.2,
                 neigh_size: int = 4, n_labels: int = 3
                 ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The PuzzleMix labelling energy of every example on the `bn × bn` block grid.

  Args:
    saliency: `[B, H, W]` non-negative saliency of the batch.
    x01: `[B, H, W, C]` images in [0, 1] pixel units (smoothness data).
    perm: int32 `[B]` partners `π`.
    lam: scalar λ, the prior's target anchor share.
    bn: static number of blocks per side; H and W divisible by it.
    beta, gamma, eta, neigh_size, n_labels: the reference's hyper-parameters.

  Returns:
    `(unary [B, bn, bn, L], w_v [B, bn-1, bn], w_h [B, bn, bn-1])`: label `t` of block `p`
    costs `unary[p, t]`; the rows-edge `(r, c)-(r+1, c)` costs `w_v[r, c] ((t - t') / (L-1))²`
    and the columns-edge `(r, c)-(r, c+1)` costs `w_h[r, c] (...)²`.
  """
  b, h, w, _ = x01.shape
  bh, bw = h // bn, w // bn
  nh, nw = min(neigh_size, bh), min(neigh_size, bw)
  s_a = normalize_per_image(block_pool(jax.lax.stop_gradient(saliency), bn))
  s_p = s_a[perm]
  x01 = jax.lax.stop_gradient(x01.astype(jnp.float32))
  pooled_a = x01.reshape(b, h // nh, nh, w // nw, nw, -1).mean(axis=(2, 4))
  pooled_p = pooled_a[perm]
  beta_n = beta / (bn * 16)
  src = {'a': pooled_a, 'p': pooled_p}

  kh, kw = bh // nh, bw // nw

  def steps(axis, k, k_along):
    return {u + v: beta_n * gamma * _edge_steps(src[u], src[v], k, k_along, axis)
            for u in 'ap' for v in 'ap'}

  dv, dh = steps(1, kh, kw), steps(2, kw, kh)
  # Fold the data terms into the unaries, half to each end of every edge.
  u_a, u_p = s_p, s_a
  u_a = u_a.at[:, :-1, :].add((dv['aa'] + dv['ap']) / 2).at[:, 1:, :].add(
      (dv['aa'] + dv['pa']) / 2)
  u_p = u_p.at[:, :-1, :].add((dv['pp'] + dv['pa']) / 2).at[:, 1:, :].add(
      (dv['pp'] + dv['ap']) / 2)
  u_a = u_a.at[:, :, :-1].add((dh['aa'] + dh['ap']) / 2).at[:, :, 1:].add(
      (dh['aa'] + dh['pa']) / 2)
  u_p = u_p.at[:, :, :-1].add((dh['pp'] + dh['pa']) / 2).at[:, :, 1:].add(
      (dh['pp'] + dh['ap']) / 2)
  w_v = (dv['ap'] + dv['pa'] - dv['aa'] - dv['pp']) / 2 + beta_n
  w_h = (dh['ap'] + dh['pa'] - dh['aa'] - dh['pp']) / 2 + beta_n

  t = np.arange(n_labels)
  m = jnp.asarray(1.0 - t / (n_labels - 1), jnp.float32)  # anchor weight of label t
  lam = jnp.asarray(lam, jnp.float32)
  binom = np.array([math.comb(n_labels - 1, i) for i in t], np.float32)
  pmf = binom * lam**(n_labels - 1 - t) * (1.0 - lam)**t
  prior = eta / bn**2 * -jnp.log(pmf + 1e-8)
  unary = m * u_a[..., None] + (1.0 - m) * u_p[..., None] + prior
  return unary, w_v, w_h


def energy(labels: jax.Array, unary: jax.Array, w_v: jax.Array, w_h: jax.Array) -> jax.Array:
  """`E(t)` of integer labels `[..., bn, bn]` (leading axes broadcast with the terms)."""
  n_labels = unary.shape[-1]
  un = jnp.take_along_axis(unary, labels[..., None], axis=-1)[..., 0]
  t = labels.astype(unary.dtype) / (n_labels - 1)
  pv = w_v * jnp.square(t[..., 1:, :] - t[..., :-1, :])
  ph = w_h * jnp.square(t[..., :, 1:] - t[..., :, :-1])
  return un.sum((-2, -1)) + pv.sum((-2, -1)) + ph.sum((-2, -1))


# --------------------------------------------------------------------------------------
# Exact solver: Ishikawa's graph, push-relabel on the (bn, bn, L-1) node lattice.
# --------------------------------------------------------------------------------------

# Node (i, j, k) is the binary variable [t_ij > k], k = 0..L-2; the source side is 1. The
# capacities are quantised to integers summing to < 2^29, so pushes are exact and the
# loop terminates (the quantisation error is ~1e-9 of the energy, far below float32's).
_CAP_TOTAL = float(2**29)
_INF = 2**30


def _directions(n_layers: int) -> list[tuple[int, int, int]]:
  """Edge offsets (di, dj, dk) of the lattice; the reverse of `d` is `-d`."""
  dirs = [(0, 0, 1), (0, 0, -1)]
  for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
    for dk in range(-(n_layers - 1), n_layers):
      dirs.append((di, dj, dk))
  return dirs


def _shift(a: jax.Array, off: tuple[int, int, int], fill=0) -> jax.Array:
  """`out[v] = a[v - off]` (values moved by `+off`), `fill` where `v - off` is outside."""
  pads, slices = [], []
  for o, n in zip(off, a.shape):
    pads.append((max(o, 0), max(-o, 0)))
    slices.append(slice(max(-o, 0), max(-o, 0) + n))
  return jnp.pad(a, pads, constant_values=fill)[tuple(slices)]


def _graph(unary: jax.Array, w_v: jax.Array, w_h: jax.Array):
  """Ishikawa capacities of one instance: (excess, to_sink, caps [D, bn, bn, L-1])."""
  gh, gw, n_labels = unary.shape
  n_layers = n_labels - 1
  dirs = _directions(n_layers)
  # Unary as linear terms in the layer variables: E(t) = E(0) + Σ_{k<t} δ_k.
  delta = unary[..., 1:] - unary[..., :-1]
  from_source = jnp.maximum(-delta, 0.0)  # paid when the node is 0 (sink side)
  to_sink = jnp.maximum(delta, 0.0)  # paid when the node is 1 (source side)
  c = 1.0 / n_layers**2
  # Edge weight towards each spatial neighbour, [gh, gw] (0 where there is none).
  wn = {(1, 0): jnp.pad(w_v, ((0, 1), (0, 0))), (-1, 0): jnp.pad(w_v, ((1, 0), (0, 0))),
        (0, 1): jnp.pad(w_h, ((0, 0), (0, 1))), (0, -1): jnp.pad(w_h, ((0, 0), (1, 0)))}
  layer = jnp.arange(n_layers)
  zeros = jnp.zeros((gh, gw, n_layers), unary.dtype)
  caps, infinite = [], []
  for di, dj, dk in dirs:
    if (di, dj) == (0, 0):
      # [t > k+1] = 1 forces [t > k] = 1: an infinite edge from layer k+1 down to k.
      caps.append(zeros)
      infinite.append(jnp.broadcast_to((dk == -1) & (layer >= 1), zeros.shape))
      continue
    infinite.append(jnp.zeros(zeros.shape, bool))
    # (p, k) -> (q, k + dk) costs c h(-dk): h(0) = 1, h(m >= 1) = 2, 0 otherwise; the
    # sum over layer pairs is c (t_p - t_q)² exactly (Ishikawa for a convex quadratic).
    mult = 1.0 if dk == 0 else (2.0 if dk < 0 else 0.0)
    valid = ((layer + dk >= 0) & (layer + dk < n_layers)).astype(unary.dtype)
    caps.append(wn[(di, dj)][..., None] * (c * mult) * valid)
  caps = jnp.stack(caps)
  total = jnp.sum(from_source) + jnp.sum(to_sink) + jnp.sum(caps)
  scale = _CAP_TOTAL / jnp.maximum(total, 1e-30)
  q = lambda v: jnp.round(v * scale).astype(jnp.int32)
  return q(from_source), q(to_sink), jnp.where(jnp.stack(infinite), _INF, q(caps)), dirs


def _min_cut(excess, to_sink, caps, dirs, outer_steps: int):
  """Maximum preflow by synchronous push-relabel with global relabelling; the cut side.

  Returns bool `[gh, gw, L-1]`: True where the node is on the source side (cannot reach the
  sink in the final residual graph).
  """
  shape = excess.shape
  n_nodes = int(np.prod(shape)) + 2  # heights >= n_nodes cannot reach the sink
  rev = [dirs.index((-a, -b, -c)) for a, b, c in dirs]

  def nbr(a, d, fill):  # value of `a` at the neighbour in direction d
    return _shift(a, tuple(-o for o in dirs[d]), fill)

  def distances(caps, to_sink):
    dist0 = jnp.where(to_sink > 0, 1, n_nodes).astype(jnp.int32)

    def relax(state):
      dist, _ = state
      new = dist
      for d in range(len(dirs)):
        new = jnp.minimum(new, jnp.where(caps[d] > 0, nbr(dist, d, n_nodes) + 1, n_nodes))
      new = jnp.minimum(new, n_nodes)
      return new, jnp.any(new != dist)

    # Carries derived from the inputs (not constants): inside `shard_map` they then vary over
    # the mesh axis as the loop body's outputs do.
    dist, _ = jax.lax.while_loop(lambda s: s[1], relax, (dist0, jnp.any(dist0 >= 0)))
    return dist

  def push_relabel(_, state):
    excess, height, to_sink, caps = state
    active = (excess > 0) & (height < n_nodes)
    send = jnp.where(active & (to_sink > 0) & (height == 1), jnp.minimum(excess, to_sink), 0)
    rest = excess - send
    to_sink = to_sink - send
    amounts = []
    for d in range(len(dirs)):
      ok = active & (caps[d] > 0) & (nbr(height, d, -1) == height - 1)
      amt = jnp.where(ok, jnp.minimum(rest, caps[d]), 0)
      rest = rest - amt
      amounts.append(amt)
    new_caps = list(caps)
    excess = rest
    for d, amt in enumerate(amounts):
      moved = _shift(amt, dirs[d])  # arrives at the neighbour
      new_caps[d] = new_caps[d] - amt
      new_caps[rev[d]] = new_caps[rev[d]] + moved
      excess = excess + moved
    caps = jnp.stack(new_caps)
    # Relabel every node still holding excess (all its admissible edges are saturated).
    low = jnp.where(to_sink > 0, 1, n_nodes)
    for d in range(len(dirs)):
      low = jnp.minimum(low, jnp.where(caps[d] > 0, nbr(height, d, n_nodes) + 1, n_nodes))
    relabel = (excess > 0) & (height < n_nodes) & (low > height)
    height = jnp.where(relabel, jnp.minimum(low, n_nodes), height)
    return excess, height, to_sink, caps

  def outer(state):
    excess, _, to_sink, caps = state
    height = distances(caps, to_sink)  # global relabel: exact distances to the sink
    return jax.lax.fori_loop(0, outer_steps, push_relabel, (excess, height, to_sink, caps))

  def not_done(state):
    excess, height, _, _ = state
    return jnp.any((excess > 0) & (height < n_nodes))

  # Zero heights make every node with excess active: the first round relabels globally.
  height = (excess * 0).astype(jnp.int32)  # (derived from an input: see `distances`)
  _, _, to_sink, caps = jax.lax.while_loop(not_done, outer, (excess, height, to_sink, caps))
  return distances(caps, to_sink) >= n_nodes


def solve_exact(unary: jax.Array, w_v: jax.Array, w_h: jax.Array, *,
                outer_steps: int = 4) -> jax.Array:
  """Global minimiser of `energy` for one instance: int32 labels `[bn, bn]`.

  `unary: [bn, bn, L]`, `w_v: [bn-1, bn]`, `w_h: [bn, bn-1]`, all weights >= 0. vmap it
  for a batch (the loop then runs until every instance has converged). `outer_steps`
  push-relabel iterations run between two global relabellings (4 measured fastest: 15x
  faster than 64 at bn = 16 on CPU).
  """
  excess, to_sink, caps, dirs = _graph(unary.astype(jnp.float32), w_v.astype(jnp.float32),
                                       w_h.astype(jnp.float32))
  source_side = _min_cut(excess, to_sink, caps, dirs, outer_steps)
  return jnp.sum(source_side, axis=-1, dtype=jnp.int32)


# --------------------------------------------------------------------------------------
# Approximate solver: checkerboard coordinate descent (ICM).
# --------------------------------------------------------------------------------------


def solve_icm(unary: jax.Array, w_v: jax.Array, w_h: jax.Array, *, sweeps: int = 4
              ) -> jax.Array:
  """Approximate minimiser of `energy`: int32 labels `[..., bn, bn]` (any leading axes).

  Starts from each block's best label alone and runs `sweeps` sweeps of coordinate descent;
  a sweep updates the two colours of the checkerboard in turn (blocks of one colour have no
  edge between them, so each half-sweep is an exact joint move and the energy never rises).
  """
  n_labels = unary.shape[-1]
  t_grid = jnp.arange(n_labels, dtype=unary.dtype) / (n_labels - 1)
  gh, gw = unary.shape[-3:-1]
  ii, jj = np.meshgrid(np.arange(gh), np.arange(gw), indexing='ij')
  colours = [jnp.asarray((ii + jj) % 2 == c) for c in (0, 1)]
  lead = unary.shape[:-3]
  zero_r = jnp.zeros(lead + (1, gw), unary.dtype)
  zero_c = jnp.zeros(lead + (gh, 1), unary.dtype)

  def local_cost(labels):
    t = labels.astype(unary.dtype) / (n_labels - 1)
    cost = unary
    # Neighbour above / below / left / right, with the edge weight (0 outside the grid).
    for tn, wn in (
        (jnp.concatenate([zero_r, t[..., :-1, :]], -2), jnp.concatenate([zero_r, w_v], -2)),
        (jnp.concatenate([t[..., 1:, :], zero_r], -2), jnp.concatenate([w_v, zero_r], -2)),
        (jnp.concatenate([zero_c, t[..., :, :-1]], -1), jnp.concatenate([zero_c, w_h], -1)),
        (jnp.concatenate([t[..., :, 1:], zero_c], -1), jnp.concatenate([w_h, zero_c], -1))):
      cost = cost + wn[..., None] * jnp.square(t_grid - tn[..., None])
    return cost

  def sweep(_, labels):
    for colour in colours:
      best = jnp.argmin(local_cost(labels), axis=-1).astype(jnp.int32)
      labels = jnp.where(colour, best, labels)
    return labels

  labels = jnp.argmin(unary, axis=-1).astype(jnp.int32)
  return jax.lax.fori_loop(0, sweeps, sweep, labels)


def _best_rows(labels, unary, w_v, w_h):
  """Each row's exact best labelling given the rows above and below (Viterbi along it)."""
  n_labels = unary.shape[-1]
  t_grid = jnp.arange(n_labels, dtype=unary.dtype) / (n_labels - 1)
  t = labels.astype(unary.dtype) / (n_labels - 1)
  zero = jnp.zeros_like(t[..., :1, :])
  local = unary
  for tn, wn in ((jnp.concatenate([zero, t[..., :-1, :]], -2), jnp.concatenate([zero, w_v], -2)),
                 (jnp.concatenate([t[..., 1:, :], zero], -2), jnp.concatenate([w_v, zero], -2))):
    local = local + wn[..., None] * jnp.square(t_grid - tn[..., None])
  v = jnp.square(t_grid[:, None] - t_grid[None, :])  # [previous label, label]
  local = jnp.moveaxis(local, -2, 0)  # [gw, ..., gh, L]: scan along the row
  w_h = jnp.moveaxis(w_h, -1, 0)  # [gw-1, ..., gh]

  def forward(msg, xs):
    loc, w = xs
    cand = msg[..., :, None] + w[..., None, None] * v
    return loc + jnp.min(cand, axis=-2), jnp.argmin(cand, axis=-2).astype(jnp.int32)

  msg, back = jax.lax.scan(forward, local[0], (local[1:], w_h))
  last = jnp.argmin(msg, axis=-1).astype(jnp.int32)

  def backward(nxt, ptr):
    prev = jnp.take_along_axis(ptr, nxt[..., None], axis=-1)[..., 0]
    return prev, prev

  _, prevs = jax.lax.scan(backward, last, back, reverse=True)
  return jnp.moveaxis(jnp.concatenate([prevs, last[None]], 0), 0, -1)


def solve_chains(unary: jax.Array, w_v: jax.Array, w_h: jax.Array, *, sweeps: int = 2
                 ) -> jax.Array:
  """Approximate minimiser of `energy` by exact moves on whole rows and columns.

  Block coordinate descent: starting from each block's best label alone, a sweep replaces
  the even rows, the odd rows, the even columns and the odd columns in turn by their exact
  best labelling given the rest (dynamic programming along the chain; lines of one parity
  share no edge, so each move is exact and the energy never rises). Much stronger moves than
  single-block ICM at a similar cost. Any leading axes.
  """
  gh, gw = unary.shape[-3:-1]
  rows = jnp.asarray(np.arange(gh) % 2)[:, None]
  cols = jnp.asarray(np.arange(gw) % 2)[None, :]
  swap = lambda a: jnp.swapaxes(a, -2, -1)
  unary_t = jnp.swapaxes(unary, -3, -2)

  def sweep(_, labels):
    for parity in (0, 1):
      labels = jnp.where(rows == parity, _best_rows(labels, unary, w_v, w_h), labels)
    for parity in (0, 1):
      best = swap(_best_rows(swap(labels), unary_t, swap(w_h), swap(w_v)))
      labels = jnp.where(cols == parity, best, labels)
    return labels

  labels = jnp.argmin(unary, axis=-1).astype(jnp.int32)
  return jax.lax.fori_loop(0, sweeps, sweep, labels)


# --------------------------------------------------------------------------------------
# The reference's solver (gco-wrapper, α-β swap) on the host, for parity.
# --------------------------------------------------------------------------------------


def _gco_host(unary, w_v, w_h):
  """Host side of `solve_gco`: the reference's quantisation and call, without its overflow.

  The reference passes `U = int32(1000 bn² E)`, `w = int32(1000 bn² w)` and a float32
  `V = ((t - t') / (L-1))²`, which sends pyGCO down its float path (unaries ×1e5, weights
  ×1000, V ×100, then cast to C int): the unary product wraps in int32 for a block holding
  more than ~21/bn² of the energy. The same energy divided by 1000 is given here on the
  integer path (unaries ×100, weights as is, V = int(100 V)), which cannot wrap.
  """
  import gco  # pylint: disable=import-outside-toplevel  # optional dependency

  unary, w_v, w_h = (np.asarray(a, np.float64) for a in (unary, w_v, w_h))
  lead = unary.shape[:-3]
  gh, gw, n_labels = unary.shape[-3:]
  large = 1000 * gh * gw
  t = np.arange(n_labels)
  v_int = (100 * np.square(t[:, None] - t[None, :]) / (n_labels - 1)**2).astype(np.int32)
  out = np.empty(lead + (gh, gw), np.int32)
  for idx in np.ndindex(*lead):
    u_int = (large * unary[idx]).astype(np.int32).astype(np.int64) * 100
    if np.abs(u_int).max() >= 2**31:
      raise ValueError('solver="gco": unary too large for int32 even on the integer path.')
    labels = gco.cut_grid_graph(u_int.astype(np.int32), v_int,
                                (large * w_v[idx]).astype(np.int32),
                                (large * w_h[idx]).astype(np.int32), algorithm='swap')
    out[idx] = np.asarray(labels).reshape(gh, gw)
  return out


def solve_gco(unary: jax.Array, w_v: jax.Array, w_h: jax.Array) -> jax.Array:
  """The reference's α-β swap (`gco-wrapper`) through `jax.pure_callback`; int32 labels.

  Needs the optional `gco-wrapper` package; runs on the host, one instance at a time.
  """
  out = jax.ShapeDtypeStruct(unary.shape[:-1], jnp.int32)
  return jax.pure_callback(_gco_host, out, unary, w_v, w_h, vmap_method='expand_dims')


# --------------------------------------------------------------------------------------
# Transport (reference `mask_transport`).
# --------------------------------------------------------------------------------------


def transport_plan(visible: jax.Array, sal: jax.Array, t_eps: float) -> jax.Array:
  """The reference's greedy transport plan of one grid `[T, T]`: `[T², T²]` 0/1.

  `plan[i, j] = 1` moves block `i` (row-major) to position `j`. `T` rounds: every block
  picks its cheapest destination (first on ties); each destination keeps the picker with
  the least cost, where the minimum also sees the zeros of the blocks that did not pick it
  (so a destination whose pickers all cost >= 0 keeps none); losers pay +1 on their pick.
  """
  th, tw = visible.shape
  n = th * tw
  r, c = np.divmod(np.arange(n), tw)
  dist = (np.square(r[:, None] - r[None, :]) + np.square(c[:, None] - c[None, :]))
  dist = dist / max(max(th, tw) - 1, 1)**2
  cost = (t_eps * jnp.asarray(dist, jnp.float32) -
          sal.reshape(n, 1) * visible.reshape(1, n).astype(jnp.float32))

  rows = jnp.arange(n)
  seg_min = functools.partial(jax.ops.segment_min, num_segments=n)

  def step(_, state):
    cost, _, _ = state
    pick = jnp.argmin(cost, axis=1)
    val = cost[rows, pick]
    # The reference's column argmin of `plan * cost`, in O(n): the pickers' costs, and the
    # zeros of the non-pickers when there are any (first index wins ties).
    colmin = seg_min(val, pick)
    has_zero = jax.ops.segment_sum(jnp.ones_like(pick), pick, num_segments=n) < n
    colmin = jnp.where(has_zero, jnp.minimum(colmin, 0.0), colmin)
    first_picker = seg_min(jnp.where(val == colmin[pick], rows, n), pick)
    # The first non-picker of column j is row 0, except for j = pick[0]: the rows after the
    # leading run of rows that all picked it.
    lead = jnp.sum(jnp.cumprod(pick == pick[0]))
    first_zero = jnp.where(rows == pick[0], lead, 0)
    lost = has_zero & (colmin == 0) & (first_zero < first_picker)
    winner = jnp.where(lost, n, first_picker)
    wins = winner[pick] == rows
    return cost.at[rows, pick].add(jnp.where(wins, 0.0, 1.0)), pick, wins

  # Carries derived from `cost` (not constants), so they vary over a `shard_map` axis as the
  # loop body's outputs do.
  zeros = (cost[:, 0] * 0).astype(jnp.int32)
  init = (cost, zeros, zeros > 0)
  _, pick, wins = jax.lax.fori_loop(0, max(th, tw), step, init)
  return jax.nn.one_hot(pick, n, dtype=jnp.float32) * wins[:, None]


def _to_tiles(x: jax.Array, th: int, tw: int) -> jax.Array:
  h, w, ch = x.shape
  return x.reshape(th, h // th, tw, w // tw, ch).transpose(0, 2, 1, 3, 4).reshape(
      th * tw, h // th, w // tw, ch)


def _from_tiles(tiles: jax.Array, th: int, tw: int) -> jax.Array:
  _, ph, pw, ch = tiles.shape
  return tiles.reshape(th, tw, ph, pw, ch).transpose(0, 2, 1, 3, 4).reshape(th * ph, tw * pw, ch)


def transport(x: jax.Array, plan: jax.Array, th: int, tw: int) -> jax.Array:
  """Moves the `th × tw` tiles of one image `[H, W, C]` by `plan`; unplanned tiles are 0."""
  tiles = _to_tiles(x, th, tw)
  moved = jnp.einsum('ij,i...->j...', plan.astype(x.dtype), tiles,
                     precision=jax.lax.Precision.HIGHEST)
  return _from_tiles(moved, th, tw)


# --------------------------------------------------------------------------------------
# The method.
# --------------------------------------------------------------------------------------


def _check_shape(shape, block_nums, neigh_size, t_size, transport_on):
  _, h, w, _ = shape
  for bn in block_nums:
    if h % bn or w % bn:
      raise ValueError(f'block_nums={tuple(block_nums)!r}: image height H={h} and width W={w} '
                       f'must both be divisible by every block count (not by {bn}).')
    bh, bw = h // bn, w // bn
    if bh % min(neigh_size, bh) or bw % min(neigh_size, bw):
      raise ValueError(f'neigh_size={neigh_size}: the blocks ({bh}x{bw} pixels at bn={bn}) '
                       'must be divisible by min(neigh_size, block side).')
    if transport_on and t_size > 0 and (bh % min(t_size, bh) or bw % min(t_size, bw)):
      raise ValueError(f't_size={t_size}: the blocks ({bh}x{bw} pixels at bn={bn}) must be '
                       'divisible by min(t_size, block side).')


def _mix_grid(params, x, y, *, bn, solver, sweeps, exact_chunk, beta, gamma, eta, neigh_size,
              n_labels, transport_on, t_eps, t_size, mean, std):
  """One static block count: `(x_mix, anchor share [B])`."""
  _, h, w, _ = x.shape
  perm, lam = params['perm'], params['lam']
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  x01 = x * std + mean
  unary, w_v, w_h = energy_terms(params['saliency'], x01, perm, lam, bn, beta=beta,
                                 gamma=gamma, eta=eta, neigh_size=neigh_size,
                                 n_labels=n_labels)
  if solver == 'exact' and exact_chunk:
    # One chunk of instances at a time: each loop stops when its own chunk has converged
    # (4x faster than one batched loop on CPU, where an iteration costs its batch size).
    labels = jax.lax.map(lambda a: solve_exact(*a), (unary, w_v, w_h), batch_size=exact_chunk)
  elif solver == 'exact':
    labels = jax.vmap(solve_exact)(unary, w_v, w_h)
  elif solver == 'chains':
    labels = solve_chains(unary, w_v, w_h, sweeps=sweeps)
  elif solver == 'icm':
    labels = solve_icm(unary, w_v, w_h, sweeps=sweeps)
  else:
    labels = solve_gco(unary, w_v, w_h)
  mask = 1.0 - labels.astype(jnp.float32) / (n_labels - 1)  # anchor weight per block

  x_a, x_p = x, x[perm]
  if 'noise' in params:  # adversarial option: in [0, 1] pixel units, clipped.
    adv = params['adv']
    noise = params['noise']
    x_a = jnp.where(adv[0], (jnp.clip(x01 + noise, 0.0, 1.0) - mean) / std, x_a)
    x_p = jnp.where(adv[1], (jnp.clip(x01[perm] + noise[perm], 0.0, 1.0) - mean) / std, x_p)

  if transport_on:
    bh, bw = h // bn, w // bn
    fh, fw = (1, 1) if t_size <= 0 else (bh // min(t_size, bh), bw // min(t_size, bw))
    th, tw = bn * fh, bn * fw
    tmask = jnp.repeat(jnp.repeat(mask, fh, axis=1), fw, axis=2)
    s_a = normalize_per_image(block_pool(params['saliency'], (th, tw)))
    plan = jax.vmap(functools.partial(transport_plan, t_eps=t_eps))
    move = jax.vmap(functools.partial(transport, th=th, tw=tw))
    x_a = move(x_a, plan(tmask > 0, s_a))
    x_p = move(x_p, plan(tmask < 1, s_a[perm]))
  up = jnp.repeat(jnp.repeat(mask, h // bn, axis=1), w // bn, axis=2)[..., None]
  x_mix = up * x_a + (1.0 - up) * x_p
  return x_mix, jnp.mean(mask, axis=(1, 2))


def sample(key: jax.Array, shape: Sequence[int], *, saliency: jax.Array, alpha: float = 1.0,
           block_nums: Sequence[int] = (2, 4, 8, 16), pairing: str = 'perm',
           adv: jax.Array | None = None, noise: jax.Array | None = None
           ) -> dict[str, jax.Array]:
  """Draws λ, the pairing and the block count; keeps the saliency (and adversarial noise).

  Args:
    key: PRNG key.
    shape: `(B, H, W, C)`.
    saliency: `[B, H, W]` input-gradient saliency of the batch.
    alpha: Beta concentration of λ.
    block_nums: the block counts per side to draw from (uniformly, one per batch).
    pairing: partner selection, see `base.partner`.
    adv, noise: from `adversarial_saliency` (the adversarial option), else None.

  Returns:
    `{'perm', 'lam', 'grid' (index into block_nums), 'saliency'}` (+ `'adv', 'noise'`).
  """
  b, h, w, _ = shape
  if tuple(saliency.shape) != (b, h, w):
    raise ValueError(f'saliency.shape={tuple(saliency.shape)} must be [B, H, W] = {(b, h, w)}.')
  perm_key, lam_key, grid_key = jax.random.split(key, 3)
  params = {
      'perm': base.partner(perm_key, b, pairing),
      'lam': base.beta(lam_key, alpha),
      'grid': jax.random.randint(grid_key, (), 0, len(block_nums), dtype=jnp.int32),
      'saliency': jax.lax.stop_gradient(saliency.astype(jnp.float32)),
  }
  if noise is not None:
    if adv is None or tuple(noise.shape) != tuple(shape):
      raise ValueError(f'noise.shape={tuple(noise.shape)} must be {tuple(shape)}, with adv.')
    params['adv'] = jnp.asarray(adv, bool)
    params['noise'] = jax.lax.stop_gradient(noise.astype(jnp.float32))
  return params


def apply(params: dict[str, jax.Array], x: jax.Array, y: jax.Array, *,
          block_nums: Sequence[int] = (2, 4, 8, 16), **hp) -> tuple[jax.Array, jax.Array]:
  """Mixes a batch with the drawn params; deterministic. `hp`: see `make`."""
  _check_shape(x.shape, block_nums, hp['neigh_size'], hp['t_size'], hp['transport_on'])
  x = x.astype(jnp.float32)
  branches = [functools.partial(_mix_grid, bn=bn, **hp) for bn in block_nums]
  if len(branches) == 1:
    x_mix, share = branches[0](params, x, y)
  else:
    x_mix, share = jax.lax.switch(params['grid'], branches, params, x, y)
  return x_mix, base.lerp(share[:, None], y, y[params['perm']])


def adversarial_start(key: jax.Array, x: jax.Array, *, adv_p: float, adv_eps: float = 10.0,
                      mean=(0.0,), std=(1.0,)):
  """The random part of the adversarial option (reference `adv_p > 0`), before the saliency pass.

  Two coins `adv ~ Bernoulli(adv_p)` (anchor, partner), a random start `δ0 ~ U(±ε/255)` in
  [0, 1] pixel units (then `clip(x + δ0, 0, 1) - x`) and `u ~ U(0, 1)`, one per batch.

  Returns:
    `(x_in, start, adv, u)`: the saliency pass's input (`x + δ0` normalised when a coin is up,
    else `x`), `δ0` (0 when no coin is up), `adv` bool [2] and `u`; give the pass's input
    gradient to `adversarial_noise`.
  """
  coin_key, start_key, u_key = jax.random.split(key, 3)
  adv = jax.random.bernoulli(coin_key, adv_p, (2,))
  on = jnp.any(adv)
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  eps = adv_eps / 255.0
  x01 = x.astype(jnp.float32) * std + mean
  start = jax.random.uniform(start_key, x.shape, jnp.float32, -eps, eps)
  start = jnp.where(on, jnp.clip(x01 + start, 0.0, 1.0) - x01, 0.0)
  x_in = (x01 + start - mean) / std
  return x_in, start, adv, jax.random.uniform(u_key, ())


def adversarial_noise(start: jax.Array, grads: jax.Array, adv: jax.Array, u: jax.Array, *,
                      adv_eps: float = 10.0) -> jax.Array:
  """The FGSM step on the saliency gradient: `δ = u · clip(δ0 + (ε+2)/255 · sign(g), ±ε/255)`.

  `g` = the saliency pass's input gradient (its sign is the same w.r.t. the normalised input
  and w.r.t. [0, 1] pixels); 0 where neither coin is up. Pass `adv` and `δ` to `sample`.
  """
  eps = adv_eps / 255.0
  step = jnp.clip(start + (adv_eps + 2) / 255.0 * jnp.sign(grads), -eps, eps)
  return jnp.where(jnp.any(adv), u * step, 0.0)


def adversarial_saliency(logits_fn: Callable, x: jax.Array, y: jax.Array, key: jax.Array, *,
                         adv_p: float, adv_eps: float = 10.0, mean=(0.0,), std=(1.0,),
                         has_aux: bool = False):
  """The saliency pass of the adversarial option (reference `adv_p > 0`), one fwd/bwd.

  Two coins `adv ~ Bernoulli(adv_p)` (anchor, partner). If either is up, the pass runs on
  `x + δ0`, `δ0 ~ U(±ε/255)` in [0, 1] pixel units (clipped image); then
  `δ = u · clip(δ0 + (ε+2)/255 · sign(∂L/∂x), ±ε/255)`, `u ~ U(0, 1)` one per batch
  (`adversarial_start`, `adversarial_noise`).
  Returns `(saliency [B, H, W], adv bool [2], noise [B, H, W, C])` (+ aux with `has_aux`);
  pass `adv` and `noise` to `sample`. `noise` is 0 when neither coin is up.
  """
  x_in, start, adv, u = adversarial_start(key, x, adv_p=adv_p, adv_eps=adv_eps, mean=mean,
                                          std=std)

  def loss_fn(inputs):
    out = logits_fn(inputs)
    logits, aux = out if has_aux else (out, None)
    labels = y if y.ndim == 2 else jax.nn.one_hot(y, logits.shape[-1], dtype=jnp.float32)
    return jnp.mean(soft_cross_entropy(logits, labels)), aux

  grads, aux = jax.grad(loss_fn, has_aux=True)(x_in)
  grads = jax.lax.stop_gradient(grads)
  saliency = jnp.sqrt(jnp.mean(jnp.square(grads), axis=-1))
  out = (saliency, adv, adversarial_noise(start, grads, adv, u, adv_eps=adv_eps))
  return (*out, aux) if has_aux else out


def _check_number(name, value, low, high=float('inf')):
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
      low <= value < high):
    raise ValueError(f'{name}={value!r} must be a number in [{low}, {high}).')


@base.register('puzzlemix')
def make(*, alpha: float = 1.0, beta: float = 1.2, gamma: float = 0.5, eta: float = 0.2,
         neigh_size: int = 4, n_labels: int = 3, block_nums: Sequence[int] = (2, 4, 8, 16),
         transport: bool = True, t_eps: float = 0.8, t_size: int = 4,
         solver: str = 'exact', sweeps: int = 2, exact_chunk: int | None = None,
         adv_p: float = 0.0, adv_eps: float = 10.0, clean_lam: float = 0.0, mean: Sequence[float] = (0.0,),
         std: Sequence[float] = (1.0,), pairing: str = 'perm') -> base.Mixer:
  """PuzzleMix mixer; `sample` needs `saliency=[B, H, W]` (docs/DESIGN.md#puzzlemix).

  Args:
    alpha: Beta concentration of λ.
    beta: smoothness weight (normalised to `beta / (16 bn)`).
    gamma: weight of the image-smoothness data within it.
    eta: weight of the label prior.
    neigh_size: pooling size of the smoothness data (`min(neigh_size, block side)`).
    n_labels: mask levels L (mask values `1 - t / (L-1)`), >= 2.
    block_nums: block counts per side, one drawn per batch.
    transport: move each image's salient blocks to where the mask shows them.
    t_eps: distance weight of the transport cost.
    t_size: transport tile side in pixels (-1: the block grid; tiles never larger than a block).
    solver: 'exact' (global minimum by one min cut, on device), 'chains' (approximate:
      exact moves on rows and columns, on device), 'icm' (approximate: single-block moves),
      or 'gco' (the reference's α-β swap on the host; needs the optional `gco-wrapper`).
      'exact' by default: never above the reference's energy (which misses the optimum on up
      to 69 % of bn = 16 instances); 'chains' is 100x+ cheaper on CPU, within ~0.3 %.
    sweeps: coordinate-descent sweeps of 'chains' and 'icm'.
    exact_chunk: 0 solves the whole batch in one vmapped loop, k > 0 solves k instances at
      a time with `lax.map`; None: 1 on the CPU backend (there an iteration costs its batch
      size and the batch waits for its slowest instance: 4-10x faster), else 0.
    adv_p, adv_eps: adversarial option: the trainer computes the saliency with
      `adversarial_saliency` and passes its `adv` and `noise` to `sample`.
    clean_lam: weight of the clean term of the reference (its saliency pass's loss is
      `2 clean_lam / N` CE, whose parameter gradient is kept); a trainer setting, carried here.
    mean, std: the normalisation of `x` (per channel), to recover [0, 1] pixels.
    pairing: 'perm' (reference) or 'flip' / 'roll'.
  """
  for name, value in (('alpha', alpha), ('beta', beta), ('t_eps', t_eps)):
    base.check_positive(name, value)
  _check_number('gamma', gamma, 0.0, 1.0)
  _check_number('eta', eta, 0.0)
  _check_number('adv_eps', adv_eps, 0.0)
  _check_number('clean_lam', clean_lam, 0.0)
  base.check_probability('adv_p', adv_p)
  base.check_int('neigh_size', neigh_size)
  base.check_int('n_labels', n_labels, minimum=2)
  base.check_int('sweeps', sweeps, minimum=0)
  if exact_chunk is None:
    exact_chunk = 1 if jax.default_backend() == 'cpu' else 0
  base.check_int('exact_chunk', exact_chunk, minimum=0)
  if isinstance(t_size, bool) or not isinstance(t_size, int) or not (t_size == -1 or
                                                                       t_size >= 1):
    raise ValueError(f't_size={t_size!r} must be -1 or an integer >= 1.')
  if isinstance(block_nums, int) or not isinstance(block_nums, Sequence) or not block_nums or any(
      isinstance(n, bool) or not isinstance(n, int) or n < 2 for n in block_nums):
    raise ValueError(f'block_nums={block_nums!r} must be a non-empty sequence of integers >= 2.')
  base.check_choice('solver', solver, SOLVERS)
  base.check_choice('transport', transport, (True, False))
  base.check_choice('pairing', pairing, base.PAIRINGS)
  mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
  if not std or any(s <= 0 for s in std) or not mean:
    raise ValueError(f'std={std!r} must be non-empty and > 0, mean={mean!r} non-empty.')
  block_nums = tuple(block_nums)
  hp = dict(solver=solver, sweeps=sweeps, exact_chunk=exact_chunk, beta=beta, gamma=gamma,
            eta=eta, neigh_size=neigh_size, n_labels=n_labels, transport_on=transport,
            t_eps=t_eps, t_size=t_size, mean=mean, std=std)
  return base.Mixer('puzzlemix', {},
                    functools.partial(sample, alpha=alpha, block_nums=block_nums,
                                      pairing=pairing),
                    functools.partial(apply, block_nums=block_nums, **hp),
                    needs_saliency=True)


def puzzlemix(key: jax.Array, x: jax.Array, y: jax.Array, saliency: jax.Array,
              **hparams) -> tuple[jax.Array, jax.Array]:
  """PuzzleMix (Kim, Choo, Song, ICML 2020) with the given hyper-parameters (see `make`).

  Args:
    key: PRNG key.
    x: `[B, H, W, C]` float images (normalised by `mean` / `std`).
    y: `[B, N]` soft labels.
    saliency: `[B, H, W]`, e.g. `input_gradient_saliency(logits_fn, x, y)`.

  Returns:
    `(x_mix, y_mix)`; the reference trains on `BCE(softmax(f(x_mix)), y_mix)`.

  References:
    Kim, Choo, Song, "Puzzle Mix: Exploiting Saliency and Local Statistics for Optimal
    Mixup", ICML 2020; github.com/snu-mllab/PuzzleMix.
  """
  return base.get('puzzlemix', **hparams)(key, x, y, saliency=saliency)
