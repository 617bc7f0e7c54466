"""CutMix (Yun et al., 2019): paste a box of the partner; label = realised pixel share.

The box follows the reference `rand_bbox` (CutMix-PyTorch == timm == torchvision v2) to the
pixel (docs/DESIGN.md#cutmix): integer centre uniform over the pixels, side
`floor(size * sqrt(1 - lam))`, half-extent `cut // 2` on both sides of the centre (so an unclipped
box is `2 * (cut // 2)` wide), clipped to the image. The label weight of the anchor is corrected to
the realised share `1 - box_area / (H W)` (`correct_lam=True`, as both references).

Public box helpers, shared with HMix, the Mixup/CutMix switch and multi-mix. All of them
broadcast over any leading shape `[...]` (a scalar for per-batch boxes, `[B]` per example):

  cy, cx = sample_centre(key, height, width, shape)          # int32 [...], uniform pixels
  box = box_bounds(cy, cx, side, height, width)              # (y1, y2, x1, x2) int32 [...]
  inside = box_mask(box, height, width)                      # bool [..., H, W]
  frac = box_fraction(box, height, width)                    # float32 [...] = area / (H W)

`side` is the box side as a fraction of the image side: `sqrt(1 - lam)` for CutMix,
`sqrt(1 - lam) * sqrt(r)` for HMix, `sqrt(lam_k)` for multi-mix's partner share `lam_k`.
Import them from the module path (`from storm_jax.mixing.cutmix import box_bounds`):
the package attribute `storm_jax.mixing.cutmix` is the plain `cutmix` function.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from storm_jax.mixing import base
from storm_jax.mixing.mixup import per_sample

Box = tuple[jax.Array, jax.Array, jax.Array, jax.Array]


def sample_centre(key: jax.Array, height: int, width: int,
                  shape: Sequence[int] = ()) -> tuple[jax.Array, jax.Array]:
  """Integer box centres, uniform over the pixels (reference `np.random.randint(H)`).

  Args:
    key: a `jax.random.key`.
    height: image height H (axis 1).
    width: image width W (axis 2).
    shape: leading shape of the draw (`()` per batch, `(B,)` per example).

  Returns:
    `(cy, cx)`: int32 `[*shape]` with `0 <= cy < H`, `0 <= cx < W`.
  """
  y_key, x_key = jax.random.split(key)
  cy = jax.random.randint(y_key, tuple(shape), 0, height, dtype=jnp.int32)
  cx = jax.random.randint(x_key, tuple(shape), 0, width, dtype=jnp.int32)
  return cy, cx


def box_bounds(cy: jax.Array, cx: jax.Array, side: jax.Array, height: int, width: int) -> Box:
  """The reference CutMix box around an integer centre, clipped to the image.

  `cut_h = floor(H * side)`, `y1 = clip(cy - cut_h // 2, 0, H)`, `y2 = clip(cy + cut_h // 2,
  0, H)`, and the same along the width. The size is computed in float32, which can differ by
  one pixel from the float64 reference when `H * side` lies within float error of an integer.

  Args:
    cy: int `[...]` centre rows.
    cx: int `[...]` centre columns.
    side: float `[...]` box side as a fraction of the image side (clipped into [0, 1]).
    height: image height H.
    width: image width W.

  Returns:
    `(y1, y2, x1, x2)`, int32 `[...]` each: the box is rows `[y1, y2)` x columns `[x1, x2)`
    (empty when `y1 == y2` or `x1 == x2`).
  """
  side = jnp.clip(jnp.asarray(side, jnp.float32), 0.0, 1.0)
  half_h = jnp.floor(height * side).astype(jnp.int32) // 2
  half_w = jnp.floor(width * side).astype(jnp.int32) // 2
  cy = jnp.asarray(cy, jnp.int32)
  cx = jnp.asarray(cx, jnp.int32)
  return (jnp.clip(cy - half_h, 0, height), jnp.clip(cy + half_h, 0, height),
          jnp.clip(cx - half_w, 0, width), jnp.clip(cx + half_w, 0, width))


def box_mask(box: Box, height: int, width: int) -> jax.Array:
  """Boolean mask of a box: `True` on rows `[y1, y2)` x columns `[x1, x2)`.

  Built from `arange` comparisons, so traced bounds keep shapes static under `jit`.

  Args:
    box: `(y1, y2, x1, x2)`, int `[...]` each (as returned by `box_bounds`).
    height: image height H.
    width: image width W.

  Returns:
    bool `[..., H, W]`.
  """
  y1, y2, x1, x2 = (jnp.asarray(b)[..., None, None] for b in box)
  rows = jnp.arange(height)[:, None]
  cols = jnp.arange(width)[None, :]
  return (rows >= y1) & (rows < y2) & (cols >= x1) & (cols < x2)


def box_fraction(box: Box, height: int, width: int) -> jax.Array:
  """Box area as a fraction of the image: float32 `[...]`, `area / (H W)` correctly rounded."""
  y1, y2, x1, x2 = box
  area = (y2 - y1) * (x2 - x1)
  return area.astype(jnp.float32) / jnp.float32(height * width)


def sample(key: jax.Array, shape: Sequence[int], *, alpha: float, pairing: str,
           granularity: str) -> dict[str, jax.Array]:
  """Draws CutMix's random quantities for a batch of static `shape = (B, H, W, C)`.

  Args:
    key: a `jax.random.key`.
    shape: the static image-batch shape `(B, H, W, C)`.
    alpha: Beta concentration (CutMix's beta).
    pairing: `'perm'`, `'flip'` or `'roll'` (docs/DESIGN.md#pairing).
    granularity: `'batch'` (one lam and box) or `'example'` (one per sample).

  Returns:
    `{'lam': float32 [], 'cy': int32 [], 'cx': int32 [], 'perm': int32 [B]}` per batch; `lam`,
    `cy`, `cx` are `[B]` with `granularity='example'` (one box per sample, timm 'elem').
  """
  batch_size, height, width, _ = shape
  lam_key, centre_key, perm_key = jax.random.split(key, 3)
  draw_shape = () if granularity == 'batch' else (batch_size,)
  cy, cx = sample_centre(centre_key, height, width, draw_shape)
  return {'lam': base.beta(lam_key, alpha, draw_shape), 'cy': cy, 'cx': cx,
          'perm': base.partner(perm_key, batch_size, pairing)}


def apply(params: dict[str, jax.Array], x: jax.Array, y: jax.Array, *,
          correct_lam: bool = True) -> tuple[jax.Array, jax.Array]:
  """Pastes each sample's box from its partner.

  Args:
    params: `{'lam', 'cy', 'cx'}` each `[]` or `[B]`, and `'perm': int [B]`.
    x: `[B, H, W, C]` images.
    y: `[B, N]` float32 soft labels.
    correct_lam: label weight of the anchor = `1 - box_area / (H W)` (its realised pixel
      share) if True, else the drawn `lam` (timm `correct_lam=False`).

  Returns:
    `(x_mix [B, H, W, C] float32, y_mix [B, N] float32)`.
  """
  batch_size, height, width, _ = x.shape
  lam, perm = jnp.asarray(params['lam'], jnp.float32), params['perm']
  box = box_bounds(params['cy'], params['cx'], jnp.sqrt(1.0 - lam), height, width)
  inside = jnp.broadcast_to(box_mask(box, height, width), (batch_size, height, width))
  x = x.astype(jnp.float32)
  x_mix = jnp.where(inside[..., None], x[perm], x)
  lam_label = 1.0 - box_fraction(box, height, width) if correct_lam else lam
  y_mix = base.lerp(per_sample(lam_label, y.ndim), y, y[perm])
  return x_mix, y_mix


@base.register('cutmix')
def make(*, alpha: float = 1.0, pairing: str = 'perm', granularity: str = 'batch',
         correct_lam: bool = True) -> base.Mixer:
  """CutMix with `lam ~ Beta(alpha, alpha)`; see `cutmix`."""
  base.check_positive('alpha', alpha)
  base.check_choice('pairing', pairing, base.PAIRINGS)
  base.check_choice('granularity', granularity, base.GRANULARITIES)
  base.check_choice('correct_lam', correct_lam, (True, False))
  hp = dict(alpha=float(alpha), pairing=pairing, granularity=granularity)
  return base.Mixer('cutmix', {**hp, 'correct_lam': correct_lam},
                    functools.partial(sample, **hp),
                    functools.partial(apply, correct_lam=bool(correct_lam)))


def cutmix(key: jax.Array, x: jax.Array, y: jax.Array, **hparams) -> tuple[jax.Array, jax.Array]:
  """CutMix: replaces a random box of each image by the same box of its partner.

  `lam ~ Beta(alpha, alpha)`; integer centre `cy ~ U{0..H-1}`, `cx ~ U{0..W-1}`; the box is
  `[cy - cut_h // 2, cy + cut_h // 2) x [cx - cut_w // 2, cx + cut_w // 2)` clipped to the
  image, with `cut_h = floor(H sqrt(1 - lam))`, `cut_w = floor(W sqrt(1 - lam))`. Box pixels
  come from `x[perm[b]]`, the rest from `x[b]`. The label is `lam' y[b] + (1 - lam') y[perm[b]]`
  with `lam' = 1 - box_area / (H W)`, the anchor's realised pixel share. Clipping at the border
  makes `lam' >= lam` (E[lam'] ~ 0.70 for alpha=1 on 32x32): reference behaviour, kept.

  Args:
    key: a `jax.random.key`.
    x: `[B, H, W, C]` float images (any H, W, C; axis 1 = height, axis 2 = width).
    y: `[B, N]` float32 soft (e.g. one-hot) labels.
    **hparams: `alpha=1.0` (CutMix's beta), `pairing='perm'` (`'perm'`, `'flip'`, `'roll'`),
      `granularity='batch'` (one lam and box per batch as the references, or `'example'`: one
      per sample, timm 'elem'), `correct_lam=True` (label = realised share; False: label =
      drawn lam), plus the shared `prob=1.0` (probability of mixing a batch; CutMix-PyTorch
      uses 0.5 on CIFAR) and `label_smoothing=0.0`.

  Returns:
    `(x_mix [B, H, W, C] in x.dtype, y_mix [B, N] float32)`.

  Raises:
    ValueError: a bad hyper-parameter (the message names it).

  References:
    Yun, Han, Oh, Chun, Choe, Yoo, "CutMix: Regularization Strategy to Train Strong Classifiers
    with Localizable Features", ICCV 2019; box as `rand_bbox` in clovaai/CutMix-PyTorch.
  """
  return base.get('cutmix', **hparams)(key, x, y)
