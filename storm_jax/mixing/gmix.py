"""GMix (Gaussian Mixup; Park, Yun, Chun, NeurIPS 2022): a Gaussian blob of one image.

Follows the reference `naver-ai/hmix-gmix` (`gmix_gaussian_kernel`, `_mix_batch`),
docs/DESIGN.md#gmix, generalised to H != W: with `s = min(lam, 1 - lam)` and a pixel centre
`(cy, cx)`, `G[h, w] = exp(-pi ((h - cy)^2 + (w - cx)^2) / (s H W))` (blob mass ~ s H W). The
smaller side gets the blob: the anchor's weight is `M = G` when `lam < 0.5` and `M = 1 - G`
otherwise, and its label weight is the realised `mean(M)`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from storm_jax.mixing import base
from storm_jax.mixing.cutmix import sample_centre
from storm_jax.mixing.mixup import per_sample

# Smallest blob parameter: lam in {0, 1} would divide 0 by 0 at the centre pixel. The limit
# s -> 0 is a one-pixel blob, which this reproduces (exp underflows to 0 off the centre).
MIN_BLOB = 1e-6


def gaussian_blob(lam: jax.Array, cy: jax.Array, cx: jax.Array, height: int,
                  width: int) -> jax.Array:
  """The Gaussian blob `G` of parameter `s = max(min(lam, 1 - lam), 1e-6)` (reference scale).

  Args:
    lam: float `[...]` mixing weights drawn from Beta.
    cy: int `[...]` blob centre rows.
    cx: int `[...]` blob centre columns.
    height: image height H.
    width: image width W.

  Returns:
    float32 `[..., H, W]`: `exp(-pi ((h - cy)^2 + (w - cx)^2) / (s H W))`, 1 at the centre.
  """
  lam = jnp.asarray(lam, jnp.float32)
  blob = jnp.maximum(jnp.minimum(lam, 1.0 - lam), MIN_BLOB)[..., None, None]
  dy = jnp.arange(height)[:, None] - jnp.asarray(cy, jnp.int32)[..., None, None]
  dx = jnp.arange(width)[None, :] - jnp.asarray(cx, jnp.int32)[..., None, None]
  d2 = (dy * dy + dx * dx).astype(jnp.float32)
  return jnp.exp(-math.pi * d2 / (blob * (height * width)))


def sample(key: jax.Array, shape: Sequence[int], *, alpha: float,
           pairing: str) -> dict[str, jax.Array]:
  """Draws GMix's random quantities (one set per batch, as the reference) for static `shape`.

  Args:
    key: a `jax.random.key`.
    shape: the static image-batch shape `(B, H, W, C)`.
    alpha: Beta concentration of lam.
    pairing: `'perm'`, `'flip'` or `'roll'` (docs/DESIGN.md#pairing).

  Returns:
    `{'lam': float32 [], 'cy': int32 [], 'cx': int32 [], 'perm': int32 [B]}`.
  """
  batch_size, height, width, _ = shape
  lam_key, centre_key, perm_key = jax.random.split(key, 3)
  cy, cx = sample_centre(centre_key, height, width)
  return {'lam': base.beta(lam_key, alpha), 'cy': cy, 'cx': cx,
          'perm': base.partner(perm_key, batch_size, pairing)}


def apply(params: dict[str, jax.Array], x: jax.Array,
          y: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mixes with the per-pixel Gaussian weight; the label is the realised share `mean(M)`.

  Args:
    params: `{'lam', 'cy', 'cx'}` each `[]` (one blob for the batch, as `sample`) or `[B]`
      (one per sample), and `'perm': int [B]`.
    x: `[B, H, W, C]` images.
    y: `[B, N]` float32 soft labels.

  Returns:
    `(x_mix [B, H, W, C] float32, y_mix [B, N] float32)`.
  """
  batch_size, height, width, _ = x.shape
  perm = params['perm']
  anchor_blob = jnp.asarray(params['lam'], jnp.float32) < 0.5
  blob = gaussian_blob(params['lam'], params['cy'], params['cx'], height, width)
  weight = jnp.where(anchor_blob[..., None, None], blob, 1.0 - blob)
  weight = jnp.broadcast_to(weight, (batch_size, height, width))
  x = x.astype(jnp.float32)
  x_mix = base.lerp(weight[..., None], x, x[perm])
  # The anchor's realised pixel share mean(M), from the blob's mass as the reference: a sum of
  # small values keeps float32 error ~1e-8 where summing 1 - G would lose ~1e-6.
  mass = jnp.broadcast_to(jnp.mean(blob, axis=(-2, -1)), anchor_blob.shape)
  lam_label = jnp.where(anchor_blob, mass, 1.0 - mass)
  y_mix = base.lerp(per_sample(lam_label, y.ndim), y, y[perm])
  return x_mix, y_mix


@base.register('gmix')
def make(*, alpha: float = 1.0, pairing: str = 'flip') -> base.Mixer:
  """GMix; see `gmix`."""
  base.check_positive('alpha', alpha)
  base.check_choice('pairing', pairing, base.PAIRINGS)
  hp = dict(alpha=float(alpha), pairing=pairing)
  return base.Mixer('gmix', hp, functools.partial(sample, **hp), apply)


def gmix(key: jax.Array, x: jax.Array, y: jax.Array, **hparams) -> tuple[jax.Array, jax.Array]:
  """GMix: mixes with a per-pixel weight shaped as a Gaussian blob around a random pixel.

  Per batch: `lam ~ Beta(alpha, alpha)`, centre `cy ~ U{0..H-1}`, `cx ~ U{0..W-1}`,
  `s = max(min(lam, 1 - lam), 1e-6)`, `G = exp(-pi d^2 / (s H W))` with `d^2` the squared pixel
  distance to the centre; `M = G` if `lam < 0.5` else `1 - G`; `x_mix = M x + (1 - M) x_partner`;
  label `mean(M) y + (1 - mean(M)) y_partner`.

  Args:
    key: a `jax.random.key`.
    x: `[B, H, W, C]` float images (any H, W; axis 1 = height).
    y: `[B, N]` float32 soft labels.
    **hparams: `alpha=1.0` (0.5 on CIFAR-100 in the paper), `pairing='flip'` (reference), plus
      the shared `prob=1.0` and `label_smoothing=0.0`.

  Returns:
    `(x_mix [B, H, W, C] in x.dtype, y_mix [B, N] float32)`.

  Raises:
    ValueError: a bad hyper-parameter (the message names it).

  References:
    Park, Yun, Chun, "A Unified Analysis of Mixed Sample Data Augmentation: A Loss Function
    Perspective", NeurIPS 2022; code `naver-ai/hmix-gmix` (`gmix_gaussian_kernel`). Follows the
    code, not the paper: kernel scale `s N^2` instead of `2 (1 - lam) N^2` (the paper's factor 2
    gives E[M] = 2 lam - 1), the blob on the smaller side instead of always the partner, and
    the label `mean(M)` instead of `lam`. Generalises the code's square grid to H x W with the
    scale `s H W` (identical for H == W). The blob parameter is clipped to >= 1e-6.
  """
  return base.get('gmix', **hparams)(key, x, y)
