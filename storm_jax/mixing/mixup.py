"""Mixup (Zhang et al., 2018): a convex combination of two images and of their labels.

`x_mix[b] = lam * x[b] + (1 - lam) * x[perm[b]]` and the same for the labels (docs/DESIGN.md#mixup),
with `lam ~ Beta(alpha, alpha)` drawn once per batch (the reference codes) or once per example.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from storm_jax.mixing import base


def per_sample(lam: jax.Array, ndim: int) -> jax.Array:
  """Reshapes a weight `[]` (per batch) or `[B]` (per example) to broadcast over `ndim` axes.

  Args:
    lam: `[]` or `[B]` float.
    ndim: rank of the array the weight multiplies (4 for images, 2 for labels).

  Returns:
    `lam` as float32 with `ndim - 1` trailing unit axes.
  """
  lam = jnp.asarray(lam, jnp.float32)
  return lam.reshape(lam.shape + (1,) * (ndim - 1))


def sample(key: jax.Array, shape: Sequence[int], *, alpha: float, pairing: str,
           granularity: str) -> dict[str, jax.Array]:
  """Draws Mixup's random quantities for a batch of static `shape = (B, H, W, C)`.

  Args:
    key: a `jax.random.key`.
    shape: the static image-batch shape `(B, H, W, C)`.
    alpha: Beta concentration.
    pairing: `'perm'`, `'flip'` or `'roll'` (docs/DESIGN.md#pairing).
    granularity: `'batch'` (one lam) or `'example'` (one per sample).

  Returns:
    `{'lam': float32 [] or [B], 'perm': int32 [B]}`.
  """
  batch_size = shape[0]
  lam_key, perm_key = jax.random.split(key)
  lam_shape = () if granularity == 'batch' else (batch_size,)
  return {'lam': base.beta(lam_key, alpha, lam_shape),
          'perm': base.partner(perm_key, batch_size, pairing)}


def apply(params: dict[str, jax.Array], x: jax.Array,
          y: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mixes images and labels with the weights and partners drawn by `sample`.

  Args:
    params: `{'lam': [] or [B], 'perm': int [B]}`.
    x: `[B, H, W, C]` images.
    y: `[B, N]` float32 soft labels.

  Returns:
    `(x_mix [B, H, W, C] float32, y_mix [B, N] float32)`.
  """
  lam, perm = params['lam'], params['perm']
  x = x.astype(jnp.float32)
  x_mix = base.lerp(per_sample(lam, x.ndim), x, x[perm])
  y_mix = base.lerp(per_sample(lam, y.ndim), y, y[perm])
  return x_mix, y_mix


@base.register('mixup')
def make(*, alpha: float = 1.0, pairing: str = 'perm', granularity: str = 'batch') -> base.Mixer:
  """Mixup with `lam ~ Beta(alpha, alpha)`; see `mixup`."""
  base.check_positive('alpha', alpha)
  base.check_choice('pairing', pairing, base.PAIRINGS)
  base.check_choice('granularity', granularity, base.GRANULARITIES)
  hp = dict(alpha=float(alpha), pairing=pairing, granularity=granularity)
  return base.Mixer('mixup', hp, functools.partial(sample, **hp), apply)


def mixup(key: jax.Array, x: jax.Array, y: jax.Array, **hparams) -> tuple[jax.Array, jax.Array]:
  """Mixup: mixes every sample with a partner, pixels and labels with the same weight.

  `x_mix[b] = lam * x[b] + (1 - lam) * x[perm[b]]`, `y_mix[b] = lam * y[b] + (1 - lam) *
  y[perm[b]]`; the anchor's pixel share equals its label weight `lam` exactly.

  Args:
    key: a `jax.random.key`.
    x: `[B, H, W, C]` float images (any H, W, C).
    y: `[B, N]` float32 soft (e.g. one-hot) labels.
    **hparams: `alpha=1.0` (Beta concentration; < 1 still mixes), `pairing='perm'` (`'perm'`,
      `'flip'`, `'roll'`, docs/DESIGN.md#pairing), `granularity='batch'` (one `lam` per batch as the
      references, or `'example'`: one per sample), plus the shared `prob=1.0` (probability of
      mixing the batch) and `label_smoothing=0.0`.

  Returns:
    `(x_mix [B, H, W, C] in x.dtype, y_mix [B, N] float32)`.

  Raises:
    ValueError: a bad hyper-parameter (the message names it).

  References:
    Zhang, Cisse, Dauphin, Lopez-Paz, "mixup: Beyond Empirical Risk Minimization", ICLR 2018.
  """
  return base.get('mixup', **hparams)(key, x, y)
