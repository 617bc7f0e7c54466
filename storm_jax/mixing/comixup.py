"""Co-Mixup (Kim et al., ICLR 2021): batch mixing by submodular-supermodular labelling.

The batch is split into partitions of `part` consecutive images. Within a partition of n
images, each of the n *outputs* assigns every block of a `g × g` grid (`g = block_num`) to one
input (or, from the second sweep on, to a ½–½ pair of inputs). The labelling `z`
(`[n_out, g, g, n_in]`, rows one-hot or two halves) minimises (docs/DESIGN.md#comixup)

  E(z) = Σ_j Σ_k C[:, k]·z_j[k]                        saliency + prior (modular)
       + β/2 Σ_j Σ_{k~k'} ‖z_j[k] − z_j[k']‖²           4-neighbour smoothness (Potts)
       + γ Σ_i Σ_{j≠j'} c_{ji} c_{j'i}                  diversity (supermodular)

with `c_{ji} = Σ_k z_j[k, i]` the number of blocks of output j taken from input i and
`C[i, k] = −Ŝ_i[k] − η log(α_i + 1e-8)`: `Ŝ_i` the saliency of input i pooled to the grid and
normalised to sum 1, `α ~ Dir(alpha · 1_n)` one prior per partition. β, γ, η are divided by
the number of blocks `g²`, the threshold τ multiplied by it (as the reference).

The reference solver (`match.py`) sweeps over the outputs: with the other outputs fixed, the
diversity term of output j is modular in `z_j`, and is replaced by the thresholded penalty
`2γ [(A p)_i > τ] (A p)_i` on input i (`p` the other outputs' counts, `A = (1−ω) I + ω n
A_dist / ΣA_dist` the compatibility from the distances of the saliency peaks); the resulting
Potts problem is solved by gco's α-β swap. From the second sweep, half labels are added
(the pair of inputs when output j uses two, the three pairs of its three most used inputs
when it uses more); after sweep `niter − 2`, outputs with identical input sets get a cost
that separates them (`set_resolve`); the sweeps stop early when E changes by < 1e-6
(relative).

Solvers (`solver=`):
  * `'icm'` (default, on device): the same sweeps, each per-output Potts problem solved by
    checkerboard iterated conditional modes (every block of one colour moves to its best
    label given its neighbours; the two colours alternate), started both from the output's
    current labelling and from the unary argmin, the lower energy kept. It minimises the
    reported objective's smoothness term exactly (‖·‖² between soft labels), so without
    thresholding (τ = 0, A = I) every update is a coordinate descent step on E.
  * `'gco'` (host, parity): the reference algorithm with gco-wrapper's α-β swap behind
    `jax.pure_callback` (CPU, needs `pip install gco-wrapper`; not a requirement of the ops).

Outputs: `x̃_j = Σ_i up(z_j[·, i]) ⊙ x_i` (nearest up-sampling of the block grid) and labels
the block shares `ỹ_j = mean_k z_j[k] @ y`, i.e. the realised pixel shares (every block
covers `H/g × W/g` pixels). Outputs do not correspond to a fixed anchor image.

Needs the model's input-gradient saliency: `sample(key, shape, saliency=[B, H, W])`. The
reference computes it in train mode with the clean loss `2·clean_lam/N·CE` whose parameter
gradient is kept (`clean_lam` is recorded in `hparams` for the trainer).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from storm_jax.mixing import base

BLOCK_NUMS = (2, 4, 8, 16)        # block_num=-1 draws one of these per batch (reference).
SOLVERS = ('icm', 'gco')
THRES_TYPES = ('hard', 'soft')
PEAK_POOL = 8                      # Compatibility: saliency peak after an 8×8 stride-1 mean.
HALF_BONUS = 5e-4                  # Reference: a half label's unary is the parents' mean − 5e-4.
_EPS = 1e-12


# --------------------------------------------------------------------------------------
# The problem: costs, compatibility, objective.
# --------------------------------------------------------------------------------------


def block_pool(saliency: jax.Array, g: int) -> jax.Array:
  """Mean of `[..., H, W]` over a `g × g` grid of `H/g × W/g` blocks: `[..., g, g]`."""
  *lead, h, w = saliency.shape
  return saliency.reshape(*lead, g, h // g, g, w // g).mean(axis=(-3, -1))


def peak_distance(saliency: jax.Array) -> jax.Array:
  """`A_dist [B, B]`: L1 distance between the images' saliency peaks (reference main.py).

  The peak is the argmax (first on ties) of the saliency after an 8×8 stride-1 mean filter
  (valid positions only).
  """
  b, h, w = saliency.shape
  k = min(PEAK_POOL, h, w)
  z = jax.lax.reduce_window(saliency, 0.0, jax.lax.add, (1, k, k), (1, 1, 1), 'VALID')
  idx = jnp.argmax(z.reshape(b, -1), axis=1)
  peak = jnp.stack([idx // z.shape[2], idx % z.shape[2]], axis=1).astype(jnp.float32)
  return jnp.abs(peak[:, None, :] - peak[None, :, :]).sum(-1)


def compatibility(a_dist: jax.Array, omega: float) -> jax.Array:
  """`A = (1 − ω) I + ω n A_dist / ΣA_dist` for one partition (`[n, n]`).

  When every peak coincides (ΣA_dist = 0, always for n = 1) the reference divides 0 by 0;
  here the distance part is then zero and A = (1 − ω) I.
  """
  n = a_dist.shape[-1]
  total = a_dist.sum()
  scaled = jnp.where(total > 0, a_dist * n / jnp.where(total > 0, total, 1.0), 0.0)
  return (1.0 - omega) * jnp.eye(n, dtype=jnp.float32) + omega * scaled


def unary_cost(pooled: jax.Array, prior: jax.Array, eta: float) -> jax.Array:
  """`C = −Ŝ − η log(α + 1e-8)` (`[n, g, g]`); `Ŝ` the pooled saliency normalised to sum 1.

  `eta` is the block-scaled coefficient (`η / g²`).
  """
  total = pooled.reshape(pooled.shape[0], -1).sum(1)[:, None, None]
  s_norm = pooled / jnp.maximum(total, _EPS)
  return -s_norm - eta * jnp.log(prior + 1e-8)[:, None, None]


def objective(cost: jax.Array, z: jax.Array, beta: float, gamma: float) -> jax.Array:
  """Co-Mixup's objective `E(z)` of one partition (reference `obj_fn`), float32 scalar.

  Args:
    cost: `[n_in, g, g]` unary cost `C` (prior included).
    z: `[n_out, g, g, n_in]` labelling (one-hot rows, or two halves).
    beta: smoothness coefficient as the solver sees it (`β / g²`).
    gamma: diversity coefficient (`γ / g²`).
  """
  unary = jnp.sum(jnp.moveaxis(cost, 0, -1)[None] * z)
  smooth = (jnp.sum(jnp.square(z[:, 1:] - z[:, :-1])) +
            jnp.sum(jnp.square(z[:, :, 1:] - z[:, :, :-1])))
  counts = z.sum(axis=(1, 2))                               # c_{ji}: [n_out, n_in]
  diversity = jnp.sum(jnp.square(counts.sum(0))) - jnp.sum(jnp.square(counts))
  return unary + beta / 2 * smooth + gamma * diversity


# --------------------------------------------------------------------------------------
# The on-device solver.
# --------------------------------------------------------------------------------------


def _label_vectors(n: int) -> np.ndarray:
  """Soft vectors of the labels one output may use: the n inputs, then 3 half-label slots."""
  return np.concatenate([np.eye(n, dtype=np.float32), np.zeros((3, n), np.float32)])


def _half_slots(counts: jax.Array, enabled: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Half labels of one output from its current input counts (reference graphcut_wrapper).

  Two inputs used: their pair. Three or more: the pairs of the three most used (top-k,
  lower index first on ties). Otherwise (or when not `enabled`) none.

  Returns:
    `(vecs [3, n], valid [3] bool)`.
  """
  n = counts.shape[0]
  used = counts > 0
  n_used = used.sum()
  k = min(3, n)
  _, top = jax.lax.top_k(counts, k)  # by count: with two used inputs, top[:2] are they
  if k < 3:
    top = jnp.concatenate([top, jnp.zeros(3 - k, top.dtype)])
  eye = jnp.eye(n, dtype=jnp.float32)
  pairs = 0.5 * jnp.stack([eye[top[0]] + eye[top[1]], eye[top[0]] + eye[top[2]],
                           eye[top[1]] + eye[top[2]]])
  valid = jnp.where(n_used >= 3, jnp.array([True, True, True]),
                    jnp.where(n_used == 2, jnp.array([True, False, False]),
                              jnp.array([False, False, False])))
  valid = valid & enabled & (k >= 2)
  if k < 3:  # Fewer than 3 inputs: only the first pair exists.
    valid = valid & jnp.array([True, False, False])
  return jnp.where(valid[:, None], pairs, 0.0), valid


def _neighbour_sum(v: jax.Array) -> jax.Array:
  """Sum of the 4-neighbours' vectors on a `[g, g, d]` grid (zero outside)."""
  p = jnp.pad(v, ((1, 1), (1, 1), (0, 0)))
  return p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:]


def _potts_energy(unary: jax.Array, vecs: jax.Array, lab: jax.Array, beta: float) -> jax.Array:
  v = vecs[lab]
  smooth = (jnp.sum(jnp.square(v[1:] - v[:-1])) + jnp.sum(jnp.square(v[:, 1:] - v[:, :-1])))
  return jnp.sum(jnp.take_along_axis(unary, lab[..., None], -1)) + beta / 2 * smooth


def _icm(unary: jax.Array, vecs: jax.Array, lab: jax.Array, beta: float,
         iters: int) -> jax.Array:
  """Checkerboard ICM on `Σ_k unary[k, l_k] + β/2 Σ_{k~k'} ‖v_{l_k} − v_{l_k'}‖²`.

  Blocks of one colour are not neighbours, so moving all of them to their best label given
  the other colour is an exact coordinate step: the energy never increases.
  """
  g = lab.shape[0]
  ii, jj = np.meshgrid(np.arange(g), np.arange(g), indexing='ij')
  colour = jnp.asarray((ii + jj) % 2 == 0)
  deg = jnp.asarray(_neighbour_sum(np.ones((g, g, 1), np.float32)))  # [g, g, 1]
  sq = jnp.sum(jnp.square(vecs), -1)                                   # [L]

  def local(lab):
    # Σ_q ‖v_l − v_q‖² = deg ‖v_l‖² − 2 v_l·Σ_q v_q + const.
    s = _neighbour_sum(vecs[lab])
    return unary + beta / 2 * (deg * sq - 2 * s @ vecs.T)

  def sweep(_, lab):
    lab = jnp.where(colour, jnp.argmin(local(lab), -1), lab)
    return jnp.where(~colour, jnp.argmin(local(lab), -1), lab)

  return jax.lax.fori_loop(0, iters, sweep, lab)


def _resolve_cost(z, xp=jnp):
  """Reference `resolve_label`: outputs with identical input sets (of size >= 2) get a cost.

  For each coinciding pair (j1 < j2): cost 1 on j1's first input and on j2's second.
  `xp` is `jnp`, or `np` on the host (no JAX call inside a host callback).
  """
  used = z.sum(axis=(1, 2)) > 0                                     # [n_out, n_in]
  same = xp.all(used[:, None] == used[None, :], -1)
  same = same & (used.sum(-1) >= 2)[:, None]
  later = xp.triu(same, 1).any(1)     # j coincides with some j2 > j
  earlier = xp.tril(same, -1).any(1)  # j coincides with some j1 < j
  order = xp.cumsum(used, -1)
  first = used & (order == 1)
  second = used & (order == 2)
  return (first & later[:, None] | second & earlier[:, None]).astype(xp.float32)


def solve_icm(cost: jax.Array, a: jax.Array, init: jax.Array, *, beta: float, gamma: float,
              thres: float, thres_type: str = 'hard', set_resolve: bool = True, niter: int = 4,
              icm_iters: int = 4, half_labels: bool = True, return_trace: bool = False):
  """On-device approximate Co-Mixup solver for one partition (see the module docstring).

  Args:
    cost: `[n, g, g]` unary cost `C` (prior included).
    a: `[n, n]` compatibility matrix A.
    init: `[n, g, g]` int initial labels (reference: uniform random inputs).
    beta, gamma, thres: block-scaled coefficients (`β/g²`, `γ/g²`, `τ g²`).
    thres_type: `'hard'` penalty `[Ap > τ] Ap`, or `'soft'` `[Ap > τ](Ap − τ)`.
    set_resolve: separate identical outputs after sweep `niter − 2`.
    niter: number of sweeps over the outputs.
    icm_iters: checkerboard ICM rounds per output update.
    half_labels: add the reference's half labels from the second sweep (False: one-hot
      labels only; with τ = 0, A = I and no resolve every update is then an exact coordinate
      descent step on the objective).
    return_trace: also return the objective after initialisation and each sweep (`[niter +
      1]`, NaN after an early stop).

  Returns:
    `z [n, g, g, n]` float32 labelling (or `(z, trace)`).
  """
  n, g, _ = cost.shape
  vecs_in = jnp.asarray(_label_vectors(n))[:n]
  cost_t = jnp.moveaxis(cost, 0, -1)                                   # [g, g, n]
  z0 = jax.nn.one_hot(init, n, dtype=jnp.float32)

  def update(j, carry):
    z, sweep_idx, add_cost = carry
    zj = z[j]
    counts = zj.sum((0, 1))
    others = z.sum((0, 1, 2)) - counts
    ap = a @ others
    over = ap > thres
    penalty = 2 * gamma * jnp.where(over, ap if thres_type == 'hard' else ap - thres, 0.0)
    halves, valid = _half_slots(counts, (sweep_idx > 0) & half_labels)
    vecs = jnp.concatenate([vecs_in, halves])                          # [n + 3, n]
    base_cost = cost_t + penalty + gamma * add_cost[j]                 # [g, g, n]
    unary = base_cost @ vecs.T - HALF_BONUS * jnp.concatenate(
        [jnp.zeros(n), jnp.ones(3)])
    unary = jnp.where(jnp.concatenate([jnp.ones(n, bool), valid]), unary, jnp.inf)
    # Start 1: the current labelling, projected on the available labels (exact unless a
    # half label it uses is no longer available). Start 2: the unary argmin.
    proj = jnp.sum(jnp.square(vecs), -1) - 2 * zj @ vecs.T
    proj = jnp.where(jnp.concatenate([jnp.ones(n, bool), valid]), proj, jnp.inf)
    starts = jnp.stack([jnp.argmin(proj, -1), jnp.argmin(unary, -1)])
    labs = jax.vmap(lambda s: _icm(unary, vecs, s, beta, icm_iters))(starts)
    energies = jax.vmap(lambda l: _potts_energy(unary, vecs, l, beta))(labs)
    lab = labs[jnp.argmin(energies)]
    return z.at[j].set(vecs[lab]), sweep_idx, add_cost

  def cond(state):
    it, _, _, _, done, _ = state
    return (it < niter) & ~done

  def body(state):
    it, z, add_cost, loss_prev, _, trace = state
    z, _, _ = jax.lax.fori_loop(0, n, update, (z, it, add_cost))
    if set_resolve:
      add_cost = jnp.where(it == niter - 2, _resolve_cost(z), add_cost)
    loss = objective(cost, z, beta, gamma)
    done = jnp.abs(loss_prev - loss) / jnp.abs(loss) < 1e-6
    return it + 1, z, add_cost, loss, done, trace.at[it + 1].set(loss)

  loss0 = objective(cost, z0, beta, gamma)
  trace = jnp.full((niter + 1,), jnp.nan, jnp.float32).at[0].set(loss0)
  # Initial carries derived from the inputs (not constants), so that inside `shard_map` they
  # vary over the mesh axis as the loop body's outputs do.
  state = (jnp.int32(0), z0, 0.0 * a, loss0, loss0 > jnp.inf, trace)
  _, z, _, _, _, trace = jax.lax.while_loop(cond, body, state)
  return (z, trace) if return_trace else z


# --------------------------------------------------------------------------------------
# The reference solver on the host (gco-wrapper), for parity.
# --------------------------------------------------------------------------------------


def _gco_potts(unary: np.ndarray, beta: float, halves: np.ndarray | None) -> np.ndarray:
  """Reference graphcut_multi: gco α-β swap on a g×g grid, Potts weight β; labels [g, g]."""
  import gco  # pylint: disable=import-outside-toplevel
  g, _, n_lab = unary.shape
  pairwise = 1.0 - np.eye(n_lab, dtype=np.float32)
  if halves is not None:  # Half label h with parents (a, b): 0.25 to a and b (reference).
    n = n_lab - len(halves)
    for h, parents in enumerate(halves):
      for p in parents:
        pairwise[n + h, p] = pairwise[p, n + h] = 0.25
  cost_v = beta * np.ones((g - 1, g), np.float32)
  cost_h = beta * np.ones((g, g - 1), np.float32)
  return gco.cut_grid_graph(np.ascontiguousarray(unary, np.float32), pairwise, cost_v, cost_h,
                            algorithm='swap').reshape(g, g)


def objective_numpy(cost: np.ndarray, z: np.ndarray, beta: float, gamma: float) -> float:
  """`objective` in NumPy, for host-side code (the gco solver) and benchmarks."""
  unary = np.sum(np.moveaxis(cost, 0, -1)[None] * z)
  smooth = np.sum((z[:, 1:] - z[:, :-1]) ** 2) + np.sum((z[:, :, 1:] - z[:, :, :-1]) ** 2)
  counts = z.sum((1, 2))
  return unary + beta / 2 * smooth + gamma * (np.sum(counts.sum(0) ** 2) - np.sum(counts ** 2))


def solve_gco_numpy(cost: np.ndarray, a: np.ndarray, init: np.ndarray, *, beta: float,
                    gamma: float, thres: float, thres_type: str = 'hard',
                    set_resolve: bool = True, niter: int = 4) -> np.ndarray:
  """The reference algorithm (`match.py` get_onehot_matrix) in NumPy with gco; one partition.

  Same arguments as `solve_icm` (NumPy arrays, block-scaled coefficients); returns `z [n, g,
  g, n]` float32. Requires `gco-wrapper`.
  """
  cost = np.asarray(cost, np.float32)
  a = np.asarray(a, np.float32)
  n, g, _ = cost.shape
  z = np.eye(n, dtype=np.float32)[np.asarray(init)]
  loss_prev = objective_numpy(cost, z, beta, gamma)
  total = z.sum((0, 1, 2))
  add_cost = None
  for it in range(niter):
    for j in range(n):
      counts = z[j].sum((0, 1))
      total = total - counts
      ap = a @ total
      over = (ap > thres).astype(np.float32)
      penalty = 2 * gamma * over * (ap if thres_type == 'hard' else ap - thres)
      cp = np.moveaxis(cost, 0, -1) + penalty
      if add_cost is not None:
        cp = cp + gamma * add_cost[j]
      used = np.flatnonzero(counts > 0)
      if it > 0 and len(used) == 2:
        halves = [tuple(used)]
      elif it > 0 and len(used) >= 3:
        top = np.sort(np.argsort(-counts, kind='stable')[:3])
        halves = [(top[0], top[1]), (top[0], top[2]), (top[1], top[2])]
      else:
        halves = None
      vecs = np.eye(n, dtype=np.float32)
      if halves is not None:
        half_vecs = np.zeros((len(halves), n), np.float32)
        for h, (p, q) in enumerate(halves):
          half_vecs[h, [p, q]] = 0.5
        cp = np.concatenate([cp, cp @ half_vecs.T - HALF_BONUS], -1)
        vecs = np.concatenate([vecs, half_vecs])
      z[j] = vecs[_gco_potts(cp, beta, halves)]
      total = total + z[j].sum((0, 1))
    if it == niter - 2 and set_resolve:
      add_cost = _resolve_cost(z, np)
    loss = objective_numpy(cost, z, beta, gamma)
    if abs(loss_prev - loss) / abs(loss) < 1e-6:
      break
    loss_prev = loss
  return z


def solve_gco(cost: jax.Array, a: jax.Array, init: jax.Array, **kw) -> jax.Array:
  """`solve_gco_numpy` as a host callback (`jax.pure_callback`; vmapped sequentially)."""
  n, g, _ = cost.shape

  def host(c, aa, i):
    return solve_gco_numpy(np.asarray(c), np.asarray(aa), np.asarray(i), **kw).astype(np.float32)

  out = jax.ShapeDtypeStruct((n, g, g, n), jnp.float32)
  return jax.pure_callback(host, out, cost, a, init, vmap_method='sequential')


# --------------------------------------------------------------------------------------
# Sample / apply.
# --------------------------------------------------------------------------------------


def _partitions(batch_size: int, part: int) -> list[tuple[int, int]]:
  """`(start, size)` of the consecutive partitions (the last one may be smaller)."""
  return [(s, min(part, batch_size - s)) for s in range(0, batch_size, part)]


def _check_grid(shape: Sequence[int], block_nums: Sequence[int]) -> None:
  _, h, w, _ = shape
  for g in block_nums:
    if h % g or w % g:
      raise ValueError(f'block_num: image height H={h} and width W={w} must both be divisible '
                       f'by the block grid side {g}.')


def sample(key: jax.Array, shape: Sequence[int], *, saliency: jax.Array,
           block_nums: Sequence[int] = (4,), part: int = 20,
           alpha: float = 2.0) -> dict[str, jax.Array]:
  """Draws the Co-Mixup random quantities for a batch of static `shape = (B, H, W, C)`.

  Returns:
    `{'saliency': float32[B, H, W], 'prior': float32[B]` (one `Dir(alpha)` draw per
    partition, concatenated), `'init': int32[B, G, G]` (initial input of every block,
    uniform within the partition, `G = max(block_nums)`; a grid of side g uses `[:g, :g]`),
    `'grid': int32[]` (index into `block_nums`)`}`.
  """
  b, h, w, _ = shape
  _check_grid(shape, block_nums)
  if tuple(saliency.shape) != (b, h, w):
    raise ValueError(f'saliency.shape={tuple(saliency.shape)} must be [B, H, W] = {(b, h, w)}.')
  prior_key, init_key, grid_key = jax.random.split(key, 3)
  g_max = max(block_nums)
  priors, inits = [], []
  for i, (_, size) in enumerate(_partitions(b, part)):
    pk, ik = jax.random.split(jax.random.fold_in(prior_key, i))
    priors.append(jax.random.dirichlet(pk, jnp.full((size,), alpha, jnp.float32)))
    inits.append(jax.random.randint(ik, (size, g_max, g_max), 0, size, jnp.int32))
  return {
      'saliency': jax.lax.stop_gradient(saliency.astype(jnp.float32)),
      'prior': jnp.concatenate(priors).astype(jnp.float32),
      'init': jnp.concatenate(inits),
      'grid': jax.random.randint(grid_key, (), 0, len(block_nums), dtype=jnp.int32),
  }


def labelling(params: dict[str, jax.Array], g: int, *, part: int = 20, beta: float = 0.32,
              gamma: float = 1.0, eta: float = 0.05, thres: float = 0.83,
              thres_type: str = 'hard', omega: float = 0.001, niter: int = 4,
              set_resolve: bool = True, solver: str = 'icm',
              icm_iters: int = 4) -> list[jax.Array]:
  """The solved labelling `z [n, g, g, n]` of every partition (grid side `g`, static)."""
  saliency = jax.lax.stop_gradient(params['saliency'])
  b = saliency.shape[0]
  k = g * g
  kw = dict(beta=beta / k, gamma=gamma / k, thres=thres * k, thres_type=thres_type,
            set_resolve=set_resolve, niter=niter)
  if solver == 'icm':
    solve = functools.partial(solve_icm, icm_iters=icm_iters, **kw)
  else:
    solve = functools.partial(solve_gco, **kw)
  pooled = block_pool(saliency, g)
  a_dist = peak_distance(saliency)
  out = []
  groups: dict[int, list[int]] = {}
  for start, size in _partitions(b, part):
    groups.setdefault(size, []).append(start)
  # Equal-size partitions are solved together (vmap); a smaller last one on its own.
  solved = {}
  for size, starts in groups.items():
    idx = np.asarray(starts)[:, None] + np.arange(size)                 # [P, size]
    cost = jax.vmap(unary_cost, in_axes=(0, 0, None))(pooled[idx], params['prior'][idx],
                                                     eta / k)
    a = jax.vmap(lambda d: compatibility(d, omega))(a_dist[idx[:, :, None], idx[:, None, :]])
    z = jax.vmap(solve)(cost, a, params['init'][idx][:, :, :g, :g])
    for s, zs in zip(starts, z):
      solved[s] = zs
  for start, _ in _partitions(b, part):
    out.append(solved[start])
  return out


def _mix(params, x, y, g, **kw):
  b, h, w, _ = x.shape
  x_out, y_out = [], []
  for (start, size), z in zip(_partitions(b, kw['part']), labelling(params, g, **kw)):
    xs, ys = x[start:start + size], y[start:start + size]
    up = jnp.repeat(jnp.repeat(z, h // g, axis=1), w // g, axis=2)      # [n, H, W, n]
    x_out.append(jnp.einsum('ohwi,ihwc->ohwc', up, xs))
    y_out.append(z.mean((1, 2)) @ ys)                                   # block shares
  return jnp.concatenate(x_out), jnp.concatenate(y_out)


def apply(params: dict[str, jax.Array], x: jax.Array, y: jax.Array, *,
          block_nums: Sequence[int] = (4,), **kw) -> tuple[jax.Array, jax.Array]:
  """Solves the labelling and mixes the batch; deterministic given `params`.

  Args:
    params: from `sample`.
    x: `[B, H, W, C]` float images.
    y: `[B, N]` soft labels.
    block_nums: the static grid sides `params['grid']` indexes.
    **kw: the solver's hyper-parameters (see `make`).

  Returns:
    `x_mix [B, H, W, C]` float32, `y_mix [B, N]` (block shares = pixel shares).
  """
  _check_grid(x.shape, block_nums)
  x = x.astype(jnp.float32)
  branches = [functools.partial(_mix, g=g, **kw) for g in block_nums]
  if 'apply' in params:  # prob < 1: the solver does not run on a clean batch.
    index = jnp.where(params['apply'], params['grid'] + 1, 0)
    return jax.lax.switch(index, [lambda p, x, y: (x, y)] + branches, params, x, y)
  if len(branches) == 1:
    return branches[0](params, x, y)
  return jax.lax.switch(params['grid'], branches, params, x, y)


@base.register('comixup')
def make(*, block_num: int = 4, part: int = 20, alpha: float = 2.0, beta: float = 0.32,
         gamma: float = 1.0, eta: float = 0.05, thres: float = 0.83, thres_type: str = 'hard',
         omega: float = 0.001, niter: int = 4, set_resolve: bool = True, solver: str = 'icm',
         icm_iters: int = 4, clean_lam: float = 1.0) -> base.Mixer:
  """Co-Mixup mixer; `sample` needs `saliency=[B, H, W]` (docs/DESIGN.md#comixup).

  Args (reference names `m_*` in parentheses; defaults = its CIFAR settings):
    block_num: grid side g (`m_block_num` 4); -1 draws one of (2, 4, 8, 16) per batch.
    part: partition size (`m_part` 20).
    alpha: Dirichlet concentration of the prior on input usage (`mixup_alpha` 2.0).
    beta: smoothness (`m_beta` 0.32). gamma: diversity (`m_gamma` 1.0).
    eta: prior weight (`m_eta` 0.05). thres: τ (`m_thres` 0.83), thres_type 'hard'|'soft'.
    omega: compatibility weight ω (`m_omega` 0.001).
    niter: sweeps over the outputs (`m_niter` 4). set_resolve: separate identical outputs.
    solver: 'icm' (on device) or 'gco' (reference, host callback, needs gco-wrapper).
    icm_iters: checkerboard ICM rounds per output update ('icm' only).
    clean_lam: weight of the clean loss `2·clean_lam/N·CE` of the saliency pass (trainer).
  """
  if block_num != -1:
    base.check_int('block_num', block_num)
  block_nums = BLOCK_NUMS if block_num == -1 else (block_num,)
  base.check_int('part', part)
  base.check_positive('alpha', alpha)
  for name, value in (('beta', beta), ('gamma', gamma), ('eta', eta), ('thres', thres),
                      ('clean_lam', clean_lam)):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        0.0 <= value < float('inf')):
      raise ValueError(f'{name}={value!r} must be a finite number >= 0.')
  base.check_probability('omega', omega)
  base.check_choice('thres_type', thres_type, THRES_TYPES)
  base.check_int('niter', niter)
  base.check_choice('set_resolve', set_resolve, (True, False))
  base.check_choice('solver', solver, SOLVERS)
  base.check_int('icm_iters', icm_iters)
  kw = dict(part=part, beta=beta, gamma=gamma, eta=eta, thres=thres, thres_type=thres_type,
            omega=omega, niter=niter, set_resolve=set_resolve, solver=solver,
            icm_iters=icm_iters)
  return base.Mixer('comixup', {},
                    functools.partial(sample, block_nums=block_nums, part=part, alpha=alpha),
                    functools.partial(apply, block_nums=block_nums, **kw),
                    needs_saliency=True)


def comixup(key: jax.Array, x: jax.Array, y: jax.Array, saliency: jax.Array,
            **hparams) -> tuple[jax.Array, jax.Array]:
  """Co-Mixup (Kim et al.): saliency-guided mixing of many inputs per output.

  Args:
    key: PRNG key.
    x: `[B, H, W, C]` float images; H and W divisible by the block grid side.
    y: `[B, N]` soft labels.
    saliency: `[B, H, W]` float, e.g. `input_gradient_saliency(logits_fn, x, y)`.
    **hparams: see `make`, plus the shared `prob` and `label_smoothing`.

  Returns:
    `(x_mix [B, H, W, C], y_mix [B, N])`.

  Follows the reference code (snu-mllab/Co-Mixup `mixup.py`, `match.py`) except: the
  default solver is the on-device 'icm' (the reference's gco solver is `solver='gco'`);
  the smoothness between a half label and any other label is `β/2 ‖·‖²` of their soft
  vectors, as in the reported objective (the reference's gco pairwise table uses 1 where
  this gives 0.75 or 0.25); non-square images use `H/g × W/g` blocks.

  References:
    Kim, Choo, Jeong, Song, "Co-Mixup: Saliency Guided Joint Mixup with Supermodular
    Diversity" (ICLR 2021); github.com/snu-mllab/Co-Mixup.
  """
  return base.get('comixup', **hparams)(key, x, y, saliency=saliency)
