"""Cutout (DeVries & Taylor, 2017): zero out square holes; labels unchanged.

The reference (`util/cutout.py`, docs/DESIGN.md#cutout), per image and hole: a centre uniform
over all pixels, `cy ~ U{0..H-1}`, `cx ~ U{0..W-1}`, the box `[cy - L // 2, cy + L // 2) x
[cx - L // 2, cx + L // 2)` clipped to the image (an odd L loses a pixel; holes near the border
are partly outside), every channel set to 0. The reference applies it after mean/std
normalisation, so 0 is the dataset mean; here it runs in the mixing stage, on the normalised
batch, which is the same order. There is no partner: `y` passes through (label smoothing
still applies).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from storm_jax.mixing import base
from storm_jax.mixing.cutmix import box_mask, sample_centre


def sample(key: jax.Array, shape: Sequence[int], *, n_holes: int) -> dict[str, jax.Array]:
  """Draws the hole centres for a batch of static `shape = (B, H, W, C)`.

  Args:
    key: a `jax.random.key`.
    shape: the static image-batch shape `(B, H, W, C)`.
    n_holes: holes per image.

  Returns:
    `{'cy': int32 [B, n_holes], 'cx': int32 [B, n_holes]}`, uniform over the pixels.
  """
  batch_size, height, width, _ = shape
  cy, cx = sample_centre(key, height, width, (batch_size, n_holes))
  return {'cy': cy, 'cx': cx}


def apply(params: dict[str, jax.Array], x: jax.Array, y: jax.Array, *, length: int,
          fill: float) -> tuple[jax.Array, jax.Array]:
  """Sets every pixel inside a hole to `fill`; `y` unchanged.

  Args:
    params: `{'cy', 'cx'}`: int `[B, n_holes]` hole centres.
    x: `[B, H, W, C]` images.
    y: `[B, N]` float32 soft labels.
    length: hole side L (unclipped holes are `2 * (L // 2)` wide).
    fill: the value written into the holes (0 = the mean of normalised data).

  Returns:
    `(x_out [B, H, W, C] float32, y)`.
  """
  _, height, width, _ = x.shape
  half = length // 2
  cy, cx = jnp.asarray(params['cy'], jnp.int32), jnp.asarray(params['cx'], jnp.int32)
  box = (jnp.clip(cy - half, 0, height), jnp.clip(cy + half, 0, height),
         jnp.clip(cx - half, 0, width), jnp.clip(cx + half, 0, width))
  holes = box_mask(box, height, width).any(axis=1)  # [B, H, W]
  x = x.astype(jnp.float32)
  return jnp.where(holes[..., None], jnp.float32(fill), x), y


@base.register('cutout')
def make(*, length: int = 16, n_holes: int = 1, fill: float = 0.0) -> base.Mixer:
  """Cutout with `n_holes` holes of side `length`; see `cutout`."""
  base.check_int('length', length, minimum=0)
  base.check_int('n_holes', n_holes, minimum=1)
  if isinstance(fill, bool) or not isinstance(fill, (int, float)) or not math.isfinite(fill):
    raise ValueError(f'fill={fill!r} must be a finite number.')
  return base.Mixer('cutout', dict(length=length, n_holes=n_holes, fill=float(fill)),
                    functools.partial(sample, n_holes=n_holes),
                    functools.partial(apply, length=length, fill=float(fill)))


def cutout(key: jax.Array, x: jax.Array, y: jax.Array, **hparams) -> tuple[jax.Array, jax.Array]:
  """Cutout: sets `n_holes` square holes of each image to `fill`; labels unchanged.

  Per image and hole, a centre `cy ~ U{0..H-1}`, `cx ~ U{0..W-1}` and the hole
  `[cy - L // 2, cy + L // 2) x [cx - L // 2, cx + L // 2)` clipped to the image (holes may
  overlap and may lie partly outside). Every channel inside is set to `fill`.

  Args:
    key: a `jax.random.key`.
    x: `[B, H, W, C]` float images, mean/std-normalised (so `fill=0` is the dataset mean).
    y: `[B, N]` float32 soft labels, returned unchanged (after label smoothing).
    **hparams: `length=16` (the reference's CIFAR-10 value; 8 for CIFAR-100, 20 for SVHN),
      `n_holes=1`, `fill=0.0`, plus the shared `prob=1.0` and `label_smoothing=0.0`.

  Returns:
    `(x_out [B, H, W, C] in x.dtype, y [B, N] float32)`.

  Raises:
    ValueError: a bad hyper-parameter (the message names it).

  References:
    DeVries, Taylor, "Improved Regularization of Convolutional Neural Networks with Cutout",
    arXiv:1708.04552, 2017; uoguelph-mlrg/Cutout.
  """
  return base.get('cutout', **hparams)(key, x, y)
