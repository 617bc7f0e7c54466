"""HMix (Park, Yun, Chun, NeurIPS 2022): a CutMix box pasted into a Mixup of the rest.

Follows the reference `naver-ai/hmix-gmix` ("bug fixed" `_mix_batch`), docs/DESIGN.md#hmix: the box
side is `sqrt(1 - lam) * sqrt(r)` of the image side (CutMix centre and clipping rules), box pixels
come from the partner, and outside the box the anchor has weight `m = lam / c`, with `c` the
*realised* out-of-box fraction. The anchor's pixel share `m * c` is then `lam`, which is also
its label weight: `mean(M) = lam` exactly (up to float rounding), r = 0 is exactly Mixup.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from storm_jax.mixing import base
from storm_jax.mixing.cutmix import box_bounds, box_fraction, box_mask, sample_centre
from storm_jax.mixing.mixup import per_sample

MIXUP, HMIX = 0, 1  # values of params['branch'].


def sample(key: jax.Array, shape: Sequence[int], *, alpha: float, r: float,
           r_gamma: float | None, mixup_alpha: float, switch_prob: float,
           pairing: str) -> dict[str, jax.Array]:
  """Draws HMix's random quantities (one set per batch, as the reference) for static `shape`.

  Args:
    key: a `jax.random.key`.
    shape: the static image-batch shape `(B, H, W, C)`.
    alpha: Beta concentration of lam.
    r: box-area ratio (used when `r_gamma` is None).
    r_gamma: if not None, `r ~ Beta(r_gamma, r_gamma)`.
    mixup_alpha: if > 0, a Mixup batch with `lam ~ Beta(mixup_alpha)` w.p. `1 - switch_prob`.
    switch_prob: probability of an HMix batch when `mixup_alpha > 0`.
    pairing: `'perm'`, `'flip'` or `'roll'` (docs/DESIGN.md#pairing).

  Returns:
    `{'lam': float32 [], 'r': float32 [], 'cy': int32 [], 'cx': int32 [], 'branch': int32 [],
    'perm': int32 [B]}`. On the Mixup branch (only when `mixup_alpha > 0`) `r` is 0, which
    makes `apply` exactly Mixup, and `lam ~ Beta(mixup_alpha)`.
  """
  batch_size, height, width, _ = shape
  lam_key, r_key, switch_key, mix_key, centre_key, perm_key = jax.random.split(key, 6)
  lam = base.beta(lam_key, alpha)
  r = base.beta(r_key, r_gamma) if r_gamma is not None else jnp.float32(r)
  branch = jnp.int32(HMIX)
  if mixup_alpha > 0:
    use_hmix = jax.random.bernoulli(switch_key, switch_prob)
    lam = jnp.where(use_hmix, lam, base.beta(mix_key, mixup_alpha))
    r = jnp.where(use_hmix, r, 0.0)
    branch = use_hmix.astype(jnp.int32)
  cy, cx = sample_centre(centre_key, height, width)
  return {'lam': lam, 'r': jnp.asarray(r, jnp.float32), 'cy': cy, 'cx': cx, 'branch': branch,
          'perm': base.partner(perm_key, batch_size, pairing)}


def apply(params: dict[str, jax.Array], x: jax.Array,
          y: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Pastes the partner's box and mixes the rest with the anchor weight `lam / c`.

  Args:
    params: `{'lam', 'r', 'cy', 'cx'}` each `[]` (one box for the batch, as `sample`) or `[B]`
      (one per sample), and `'perm': int [B]`; other entries are ignored.
    x: `[B, H, W, C]` images.
    y: `[B, N]` float32 soft labels.

  Returns:
    `(x_mix [B, H, W, C] float32, y_mix [B, N] float32)`.
  """
  batch_size, height, width, _ = x.shape
  lam = jnp.asarray(params['lam'], jnp.float32)
  r = jnp.asarray(params['r'], jnp.float32)
  perm = params['perm']
  # sqrt(1 - lam) * sqrt(r), not sqrt((1 - lam) r): the reference's order of operations.
  box = box_bounds(params['cy'], params['cx'], jnp.sqrt(1.0 - lam) * jnp.sqrt(r), height, width)
  outside = 1.0 - box_fraction(box, height, width)  # c: realised out-of-box fraction.
  # m = lam / c <= 1 in exact arithmetic (c >= 1 - (1 - lam) r >= lam); c = 0 only for a
  # full-image box (r = 1, lam = 0), where no pixel is outside and any m will do.
  m = jnp.where(outside > 0, lam / jnp.where(outside > 0, outside, 1.0), 0.0)
  m = jnp.clip(m, 0.0, 1.0)  # float32 box sizes may be one pixel off the exact floor.
  inside = jnp.broadcast_to(box_mask(box, height, width), (batch_size, height, width))
  x = x.astype(jnp.float32)
  x_partner = x[perm]
  x_mix = jnp.where(inside[..., None], x_partner,
                    base.lerp(per_sample(m, x.ndim), x, x_partner))
  # The anchor's realised pixel share; equals lam (reference: lam = mixup_lam * cutmix_lam).
  lam_label = m * outside
  y_mix = base.lerp(per_sample(lam_label, y.ndim), y, y[perm])
  return x_mix, y_mix


@base.register('hmix')
def make(*, alpha: float = 1.0, r: float = 0.5, r_gamma: float | None = None,
         pairing: str = 'flip', mixup_alpha: float = 0.0, switch_prob: float = 0.5) -> base.Mixer:
  """HMix; see `hmix`."""
  base.check_positive('alpha', alpha)
  base.check_probability('r', r)
  if r_gamma is not None:
    base.check_positive('r_gamma', r_gamma)
  base.check_choice('pairing', pairing, base.PAIRINGS)
  if isinstance(mixup_alpha, bool) or not isinstance(mixup_alpha, (int, float)) or not (
      math.isfinite(mixup_alpha) and mixup_alpha >= 0):
    raise ValueError(f'mixup_alpha={mixup_alpha!r} must be a finite number >= 0 '
                     '(0: pure HMix).')
  base.check_probability('switch_prob', switch_prob)
  hp = dict(alpha=float(alpha), r=float(r),
            r_gamma=None if r_gamma is None else float(r_gamma),
            mixup_alpha=float(mixup_alpha), switch_prob=float(switch_prob), pairing=pairing)
  return base.Mixer('hmix', hp, functools.partial(sample, **hp), apply)


def hmix(key: jax.Array, x: jax.Array, y: jax.Array, **hparams) -> tuple[jax.Array, jax.Array]:
  """HMix: Mixup outside a CutMix box whose area is a fraction `r` of CutMix's.

  Per batch: `lam ~ Beta(alpha, alpha)`, integer centre `(cy, cx)` uniform over the pixels, and
  the box `[cy - cut_h // 2, cy + cut_h // 2) x [cx - cut_w // 2, cx + cut_w // 2)` clipped to
  the image, `cut_h = floor(H sqrt(1 - lam) sqrt(r))` (and W for `cut_w`). Inside the box the
  pixels are the partner's; outside, `m x + (1 - m) x_partner` with `m = lam / c` and `c = 1 -
  box_area / (H W)`. Label `lam y + (1 - lam) y_partner` (computed as `m * c`, the realised
  share). r = 0 is Mixup; r = 1 is CutMix when the box is unclipped with area `(1 - lam) H W`.

  Args:
    key: a `jax.random.key`.
    x: `[B, H, W, C]` float images (any H, W, C; axis 1 = height).
    y: `[B, N]` float32 soft labels.
    **hparams: `alpha=1.0`; `r=0.5` (box-area ratio in [0, 1]; CIFAR 0.5, ImageNet 0.75);
      `r_gamma=None` (if set, `r ~ Beta(r_gamma, r_gamma)` per batch as the paper allows and
      `r` is ignored); `pairing='flip'` (reference); `mixup_alpha=0.0` and `switch_prob=0.5`
      (if `mixup_alpha > 0`, each batch is HMix with probability `switch_prob`, else Mixup with
      `lam ~ Beta(mixup_alpha)`: the reference with both timm alphas > 0); plus the shared
      `prob=1.0` and `label_smoothing=0.0`.

  Returns:
    `(x_mix [B, H, W, C] in x.dtype, y_mix [B, N] float32)`.

  Raises:
    ValueError: a bad hyper-parameter (the message names it).

  References:
    Park, Yun, Chun, "A Unified Analysis of Mixed Sample Data Augmentation: A Loss Function
    Perspective", NeurIPS 2022; code `naver-ai/hmix-gmix` (`hmix_bbox_and_lam`, `_mix_batch`).
    Follows the code, not the paper, for the out-of-box weight: `lam / c` with the realised
    (floored, clipped) box instead of `lam / (1 - (1 - lam) r)`, so the label is exactly lam.
  """
  return base.get('hmix', **hparams)(key, x, y)
