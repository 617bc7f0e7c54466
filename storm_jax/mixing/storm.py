"""StoRM, Stochastic Region Mixup: a random k x k partition, one donor and one λ per tile.

The image is cut into k x k axis-aligned tiles by k-1 random points along the width and
k-1 along the height (docs/DESIGN.md#storm). Tile `t` of sample `b` becomes
`lam[t] * x[b] + (1 - lam[t]) * x[perms[t, b]]` and the label is the same mix weighted by
the tile's realised integer area. Region Mixup (`region_mixup.py`) is this op with fixed
equispaced boundaries and shares `apply`.

Layout of `params` (what `sample` draws; override any of it to test or visualise):
  lam:      float32 `[T]` (granularity 'batch') or `[B, T]` ('example'), T = k², λ_t ~ Beta.
  perms:    int32 `[T, B]`; donor of tile t of sample b is `perms[t, b]`.
  points_h: float32 `[k-1]` or `[B, k-1]`, sorted partition points in [0, H].
  points_w: float32 `[k-1]` or `[B, k-1]`, sorted partition points in [0, W].
Tiles follow Eq. 3: `t = i * k + j` with i the column band (width axis, `points_w`) and j the
row band (height axis, `points_h`). Pixel column `w` is in band `i` iff
`ceil(p_i) <= w < ceil(p_{i+1})` (Eq. 1 on integer pixels; `p_0 = 0`, `p_k = W`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from storm_jax.mixing import base

POINTS = ('uniform', 'distinct')


# --------------------------------------------------------------------------------------
# Sampling.
# --------------------------------------------------------------------------------------


def sample_points(key: jax.Array, size: int, num: int, points: str = 'uniform',
                  lead: Sequence[int] = ()) -> jax.Array:
  """Sorted partition points along an axis of `size` pixels.

  Args:
    key: a `jax.random.key`.
    size: the axis length (H or W).
    num: how many points (k - 1).
    points: `'uniform'`: i.i.d. `U(0, size)` as Algorithm 1 (collisions and empty tiles are
      possible); `'distinct'`: `num` distinct integers from `{1, ..., size - 1}`, without
      replacement (every band is at least one pixel wide).
    lead: leading batch shape, `()` for one shared set, `(B,)` for one set per example.

  Returns:
    `float32 [*lead, num]`, sorted ascending along the last axis.

  Raises:
    ValueError: `points='distinct'` and `size < num + 1`.
  """
  lead = tuple(lead)
  if points == 'uniform':
    p = jax.random.uniform(key, lead + (num,), jnp.float32, minval=0.0, maxval=float(size))
    return jnp.sort(p, axis=-1)
  base.check_choice('points', points, POINTS)
  if size < num + 1:
    raise ValueError(f"points='distinct' needs k <= H and k <= W; got k={num + 1} for an axis "
                     f'of {size} pixels.')

  def one(k):
    p = jax.random.choice(k, size - 1, (num,), replace=False) + 1
    return jnp.sort(p).astype(jnp.float32)

  if not lead:
    return one(key)
  keys = jax.random.split(key, math.prod(lead))
  return jax.vmap(one)(keys).reshape(lead + (num,))


def sample_perms(key: jax.Array, num_tiles: int, batch_size: int, pairing: str) -> jax.Array:
  """`num_tiles` independent partner permutations, `int32 [num_tiles, batch_size]`."""
  keys = jax.random.split(key, num_tiles)
  return jax.vmap(lambda k: base.partner(k, batch_size, pairing))(keys)


def sample(key: jax.Array, shape: Sequence[int], *, k: int, beta: float, pairing: str,
           granularity: str, points: str) -> dict[str, jax.Array]:
  """Draws StoRM's random quantities for a batch of static `shape = (B, H, W, C)`.

  `granularity='batch'` (Algorithm 1) shares the partition points and the k² λ's across
  the batch; `'example'` draws both per example. Donors are k² batch permutations either way.

  Returns:
    `{'lam', 'perms', 'points_h', 'points_w'}`, see the module docstring.
  """
  batch, height, width, _ = shape
  lam_key, h_key, w_key, perm_key = jax.random.split(key, 4)
  lead = () if granularity == 'batch' else (batch,)
  return {
      'lam': base.beta(lam_key, beta, lead + (k * k,)),
      'perms': sample_perms(perm_key, k * k, batch, pairing),
      'points_h': sample_points(h_key, height, k - 1, points, lead),
      'points_w': sample_points(w_key, width, k - 1, points, lead),
  }


# --------------------------------------------------------------------------------------
# Applying.
# --------------------------------------------------------------------------------------


def band_ids(points: jax.Array, size: int) -> jax.Array:
  """Band index of every pixel along an axis: `#{m : pos >= ceil(points[m])}`.

  Args:
    points: `[k-1]` or `[B, k-1]` partition points (any order; values are clipped to
      [0, size]).
    size: the axis length.

  Returns:
    `int32 [1 or B, size]` in `[0, k)`. Colliding boundaries give empty bands.
  """
  points = jnp.asarray(points, jnp.float32)
  if points.ndim == 1:
    points = points[None]
  edges = jnp.clip(jnp.ceil(points), 0, size).astype(jnp.int32)
  pos = jnp.arange(size, dtype=jnp.int32)
  return jnp.sum(pos[None, :, None] >= edges[:, None, :], axis=-1, dtype=jnp.int32)


def _num_bands(params) -> int:
  num_tiles = params['perms'].shape[0]
  k = math.isqrt(num_tiles)
  if k * k != num_tiles:
    raise ValueError(f"params['perms'].shape={params['perms'].shape} must be [k*k, B].")
  for name in ('points_h', 'points_w'):
    if params[name].shape[-1] != k - 1:
      raise ValueError(f"params[{name!r}].shape={params[name].shape} must end in k-1={k - 1}.")
  return k


def tile_areas(params: dict[str, jax.Array], height: int, width: int) -> jax.Array:
  """Realised integer tile areas as fractions of the image, `float32 [1 or B, k*k]`.

  `area[t] = (#columns in band i) * (#rows in band j) / (H * W)`: pixel counts of the
  realised masks (Eq. 5), never the continuous `p_i - p_{i-1}`; empty tiles get 0.
  """
  k = _num_bands(params)
  bands = jnp.arange(k, dtype=jnp.int32)
  rows = band_ids(params['points_h'], height)
  cols = band_ids(params['points_w'], width)
  row_count = jnp.sum(rows[:, :, None] == bands, axis=1, dtype=jnp.int32)  # [.., k] (j)
  col_count = jnp.sum(cols[:, :, None] == bands, axis=1, dtype=jnp.int32)  # [.., k] (i)
  count = col_count[:, :, None] * row_count[:, None, :]  # [.., i, j]: exact integers
  count = count.reshape(count.shape[0], k * k)
  # XLA rewrites `a / broadcast(c)` as `a * (1 / c)`, which is not correctly rounded (a full
  # tile of 30x44 pixels would get area 0.99999994, and k=1 would differ from Mixup); a
  # full-shaped denominator behind a barrier keeps a true, correctly rounded division.
  denominator = jnp.full(count.shape, height * width, jnp.float32)
  return count.astype(jnp.float32) / jax.lax.optimization_barrier(denominator)


def _per_tile(table: jax.Array, tiles: jax.Array) -> jax.Array:
  """`table[b, tiles[b, h]]` with broadcasting of leading `1` axes: `[n, H]`."""
  n = max(table.shape[0], tiles.shape[0])
  table = jnp.broadcast_to(table, (n,) + table.shape[1:])
  tiles = jnp.broadcast_to(tiles, (n,) + tiles.shape[1:])
  return jnp.take_along_axis(table, tiles, axis=1)


def apply(params: dict[str, jax.Array], x: jax.Array,
          y: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mixes `x: [B, H, W, C]` and `y: [B, N]` with `params` from `sample` (float32 out).

  Implementation (docs/DESIGN.md#storm-implementation): no permuted copy of the batch is ever built.
  Inside a row band, tile `(i, j)` of output row `(b, h)` is a contiguous segment of source row
  `(perms[i*k + j, b], h)`. For each of the k column bands we therefore gather whole rows
  of `x` viewed as `[B*H, W, C]` (contiguous, vectorised loads) and keep each pixel from the
  band it lies in. XLA fuses the k row gathers, the per-pixel band select and the
  interpolation into one loop over the output, so memory does not grow with k (the only
  buffers are the output and `[B, H]`-sized tables; tested). The price is k candidate
  loads per output value instead of one; a per-pixel source-index gather
  (docs/DESIGN.md#storm-implementation: one load) computes the same numbers but measured 1.3-2x
  slower on CPU for k = 2..4, because XLA:CPU does not vectorise a gather of C-element pixels.

  Args:
    params: `{'lam', 'perms', 'points_h', 'points_w'}` as drawn by `sample` (the module
      docstring gives the shapes; per-batch and per-example entries may be mixed).
    x: `[B, H, W, C]` images.
    y: `[B, N]` float32 soft labels.

  Returns:
    `(x_mix [B, H, W, C] float32, y_mix [B, N] float32)`.

  Raises:
    ValueError: `params` shapes inconsistent with each other or with `x`.
  """
  k = _num_bands(params)
  num_tiles = k * k
  x = x.astype(jnp.float32)
  batch, height, width, channels = x.shape
  perms = params['perms']
  if perms.shape[1] != batch:
    raise ValueError(f"params['perms'].shape={perms.shape} must be [k*k, B={batch}].")
  lam = jnp.asarray(params['lam'], jnp.float32).reshape((-1, num_tiles))  # [1 or B, T]
  rows = band_ids(params['points_h'], height)  # [1 or B, H]: row band j of each row
  cols = band_ids(params['points_w'], width)  # [1 or B, W]: column band i of each column

  x_rows = x.reshape(batch * height, width, channels)
  row_pos = jnp.arange(height, dtype=jnp.int32)
  donor_of = perms.T  # [B, T]
  lam_map = donor = None
  for i in range(k):
    tiles = i * k + rows  # [1 or B, H]: tile of each row within column band i
    src_row = _per_tile(donor_of, tiles) * height + row_pos  # [B, H] rows of x_rows
    band_donor = x_rows[src_row]  # [B, H, W, C]; fused into the consumer, never stored
    band_lam = _per_tile(lam, tiles)[:, :, None, None]  # [1 or B, H, 1, 1]
    if i == 0:
      donor, lam_map = band_donor, band_lam
    else:
      in_band = (cols == i)[:, None, :, None]  # [1 or B, 1, W, 1]
      donor = jnp.where(in_band, band_donor, donor)
      lam_map = jnp.where(in_band, band_lam, lam_map)
  x_mix = base.lerp(lam_map, x, donor)

  area = tile_areas(params, height, width)  # [1 or B, T]
  # A static sum over tiles fuses into one loop over [B, N]; gathering y[perms] as one
  # [T, B, N] array and reducing it was 17x slower on CPU (1.1 ms for k=4, B=128, N=100).
  y_mix = None
  for t in range(num_tiles):
    term = area[:, t, None] * base.lerp(lam[:, t, None], y, y[perms[t]])
    y_mix = term if y_mix is None else y_mix + term
  return x_mix, y_mix


# --------------------------------------------------------------------------------------
# Registry and plain function.
# --------------------------------------------------------------------------------------


@base.register('storm')
def make(*, k: int = 2, beta: float = 1.0, pairing: str = 'perm', granularity: str = 'batch',
         points: str = 'uniform') -> base.Mixer:
  """StoRM on a random k x k partition with `lam ~ Beta(beta, beta)` per tile; see `storm`."""
  base.check_int('k', k, minimum=1)
  base.check_positive('beta', beta)
  base.check_choice('pairing', pairing, base.PAIRINGS)
  base.check_choice('granularity', granularity, base.GRANULARITIES)
  base.check_choice('points', points, POINTS)
  hp = dict(k=k, beta=float(beta), pairing=pairing, granularity=granularity, points=points)
  return base.Mixer('storm', hp, functools.partial(sample, **hp), apply, clean_loss_weight=1.0)


def storm(key: jax.Array, x: jax.Array, y: jax.Array, **hparams) -> tuple[jax.Array, jax.Array]:
  """StoRM: mixes each of k x k random tiles with its own donor and its own λ.

  With partition points `0 = p_0 < p_1 <= ... <= p_{k-1} < p_k = W` (and the same for H),
  tile `t = i*k + j` (i: column band, j: row band; Eq. 3) of sample b is
  `lam[t] * x[b] + (1 - lam[t]) * x[perms[t, b]]` (Eq. 4), and
  `y_mix[b] = sum_t area[t] * (lam[t] * y[b] + (1 - lam[t]) * y[perms[t, b]])` (Eq. 5), where
  `area[t]` is the tile's integer pixel count / (H W). Every source's label weight therefore
  equals its pixel share exactly. Train with `CE(f(x), y) + CE(f(x_mix), y_mix)`
  (Algorithm 1, line 10): `Mixer.clean_loss_weight` is 1, see `mixing.mixed_objective`.

  Args:
    key: a `jax.random.key`.
    x: `[B, H, W, C]` float images (any H, W, C).
    y: `[B, N]` float32 soft (e.g. one-hot) labels.
    **hparams: `k=2` (grid order, k² tiles; k=1 is exactly Mixup), `beta=1.0` (the Beta
      concentration of every tile's λ), `pairing='perm'` (each tile's k² donors come from
      its own batch permutation; `'flip'`/`'roll'` give every tile the same partner),
      `granularity='batch'` (Algorithm 1: one partition and one set of k² λ's per batch;
      `'example'`: per sample, as §3.2's prose), `points='uniform'` (k-1 i.i.d. `U(0, W)`
      points per axis as Algorithm 1, so tiles may be empty; `'distinct'`: k-1 distinct
      integer boundaries from {1..W-1}, needs k <= H, W), plus the shared `prob=1.0` and
      `label_smoothing=0.0`.

  Returns:
    `(x_mix [B, H, W, C] in x.dtype, y_mix [B, N] float32)`.

  Raises:
    ValueError: a bad hyper-parameter (the message names it), or `points='distinct'` with
      `k > min(H, W)`.

  Deviations from the paper's text (docs/DESIGN.md#storm-partition): boundaries are drawn per batch
  by default (Algorithm 1; §3.2 says per image: `granularity='example'`); the paper's strict
  inequalities `p_1 < ... < p_{k-1}` are not enforced for continuous points, so colliding
  points leave empty tiles, which get zero label weight; integer boundaries are
  `ceil(p)` (Eq. 1 applied to integer pixel coordinates). The paper leaves k and β to an
  appendix we do not have; the defaults k=2, β=1 are our choice.

  References:
    "StoRM: Stochastic Region Mixup" (anonymous ICLR submission, under review); Saha &
    Garain, "Region Mixup", ICLR 2024 Tiny Papers.
  """
  return base.get('storm', **hparams)(key, x, y)
