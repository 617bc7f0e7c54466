"""Region Mixup (Saha & Garain, 2024): a fixed k x k grid, one donor and one λ per tile.

Region Mixup is StoRM (`storm.py`) with deterministic, equispaced boundaries
`floor(i * H / k)` and `floor(i * W / k)`, i = 1..k-1 (docs/DESIGN.md#region-mixup): `sample` draws
the k² λ's and donors and `apply` is StoRM's `apply`, so the two methods agree bit-exactly given the
same `lam`, `perms` and boundaries.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from storm_jax.mixing import base
from storm_jax.mixing.storm import apply as storm_apply
from storm_jax.mixing.storm import sample_perms

apply = storm_apply


def grid_points(size: int, k: int) -> jax.Array:
  """The fixed boundaries `floor(i * size / k)`, i = 1..k-1, as float32 `[k-1]`."""
  return jnp.asarray(np.arange(1, k, dtype=np.int64) * size // k, jnp.float32)


def sample(key: jax.Array, shape: Sequence[int], *, k: int, alpha: float, pairing: str,
           granularity: str) -> dict[str, jax.Array]:
  """Draws Region Mixup's λ's and donors for a batch of static `shape = (B, H, W, C)`.

  Returns:
    StoRM's params (see `storm`): `lam` float32 `[k*k]` ('batch') or `[B, k*k]` ('example'),
    `perms` int32 `[k*k, B]`, and the fixed grid `points_h`, `points_w` float32 `[k-1]`.
  """
  batch, height, width, _ = shape
  lam_key, perm_key = jax.random.split(key)
  lead = () if granularity == 'batch' else (batch,)
  return {
      'lam': base.beta(lam_key, alpha, lead + (k * k,)),
      'perms': sample_perms(perm_key, k * k, batch, pairing),
      'points_h': grid_points(height, k),
      'points_w': grid_points(width, k),
  }


@base.register('region_mixup')
def make(*, k: int = 2, alpha: float = 1.0, pairing: str = 'perm',
         granularity: str = 'batch') -> base.Mixer:
  """Region Mixup on a fixed k x k grid with `lam ~ Beta(alpha, alpha)`; see `region_mixup`."""
  base.check_int('k', k, minimum=1)
  base.check_positive('alpha', alpha)
  base.check_choice('pairing', pairing, base.PAIRINGS)
  base.check_choice('granularity', granularity, base.GRANULARITIES)
  hp = dict(k=k, alpha=float(alpha), pairing=pairing, granularity=granularity)
  return base.Mixer('region_mixup', hp, functools.partial(sample, **hp), apply,
                    clean_loss_weight=1.0)


def region_mixup(key: jax.Array, x: jax.Array, y: jax.Array,
                 **hparams) -> tuple[jax.Array, jax.Array]:
  """Region Mixup: each tile of a fixed k x k grid is mixed with its own donor and λ.

  Tile `t = i*k + j` (i: column band `[floor((i)W/k), floor((i+1)W/k))`, j: row band) of
  sample b is `lam[t] * x[b] + (1 - lam[t]) * x[perms[t, b]]`, and
  `y_mix[b] = sum_t area[t] * (lam[t] * y[b] + (1 - lam[t]) * y[perms[t, b]])`. Train with
  `CE(f(x), y) + CE(f(x_mix), y_mix)` (`Mixer.clean_loss_weight` is 1).

  Args:
    key: a `jax.random.key`.
    x: `[B, H, W, C]` float images (any H, W, C).
    y: `[B, N]` float32 soft (e.g. one-hot) labels.
    **hparams: `k=2` (the paper's setting; k=1 is exactly Mixup), `alpha=1.0` (Beta
      concentration of every tile's λ), `pairing='perm'` (one batch permutation per tile),
      `granularity='batch'` (one set of k² λ's per batch, or `'example'`: per sample), plus
      the shared `prob=1.0` and `label_smoothing=0.0`.

  Returns:
    `(x_mix [B, H, W, C] in x.dtype, y_mix [B, N] float32)`.

  Raises:
    ValueError: a bad hyper-parameter (the message names it).

  Deviations (no reference code exists; docs/DESIGN.md#region-mixup): the paper weights every tile's
  label by `1/k²`; we use the realised tile areas, identical when k divides H and W and
  keeping label weight == pixel share otherwise (the floor rule spreads the remainder).
  Whether λ is drawn per batch or per example is not stated; per batch is the default.

  References:
    Saha & Garain, "Region Mixup", ICLR 2024 Tiny Papers (arXiv 2409.15028).
  """
  return base.get('region_mixup', **hparams)(key, x, y)
