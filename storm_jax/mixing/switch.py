"""Stochastic Mixup & CutMix (timm `Mixup` with `switch_prob`; the DeiT / RSB recipe).

Each batch (`granularity='batch'`, timm 'batch' mode) or each sample (`'example'`, timm 'elem'
mode) is either a Mixup with `lam ~ Beta(mixup_alpha)` or a CutMix with `lam ~ Beta(cutmix_alpha)`
and the corrected label `lam' = 1 - box_area / (H W)` (docs/DESIGN.md#switch). `params['branch']`
records which one ran (0 = Mixup, 1 = CutMix).
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

MIXUP, CUTMIX = 0, 1  # values of params['branch'].


def _beta_or_one(key: jax.Array, alpha: float, shape: Sequence[int]) -> jax.Array:
  # A disabled branch (alpha == 0, as in timm) is never selected; its lam is a placeholder.
  return base.beta(key, alpha, shape) if alpha > 0 else jnp.ones(shape, jnp.float32)


def sample(key: jax.Array, shape: Sequence[int], *, mixup_alpha: float, cutmix_alpha: float,
           switch_prob: float, pairing: str, granularity: str) -> dict[str, jax.Array]:
  """Draws the branch, lam, box centre and partners for a batch of static `shape`.

  Args:
    key: a `jax.random.key`.
    shape: the static image-batch shape `(B, H, W, C)`.
    mixup_alpha: Beta concentration of the Mixup branch (0: branch disabled).
    cutmix_alpha: Beta concentration of the CutMix branch (0: branch disabled).
    switch_prob: probability of the CutMix branch.
    pairing: `'perm'`, `'flip'` or `'roll'` (docs/DESIGN.md#pairing).
    granularity: `'batch'` (timm 'batch') or `'example'` (timm 'elem').

  Returns:
    `{'branch': int32, 'lam': float32, 'cy': int32, 'cx': int32}`, each `[]` per batch or `[B]`
    per example, and `'perm': int32 [B]`.
  """
  batch_size, height, width, _ = shape
  switch_key, mix_key, cut_key, centre_key, perm_key = jax.random.split(key, 5)
  draw_shape = () if granularity == 'batch' else (batch_size,)
  use_cutmix = jax.random.bernoulli(switch_key, switch_prob, draw_shape)
  lam = jnp.where(use_cutmix, _beta_or_one(cut_key, cutmix_alpha, draw_shape),
                  _beta_or_one(mix_key, mixup_alpha, draw_shape))
  cy, cx = sample_centre(centre_key, height, width, draw_shape)
  return {'branch': use_cutmix.astype(jnp.int32), 'lam': lam, 'cy': cy, 'cx': cx,
          'perm': base.partner(perm_key, batch_size, pairing)}


def apply(params: dict[str, jax.Array], x: jax.Array,
          y: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mixup or CutMix, per batch or per sample as `params['branch']` says.

  Args:
    params: `{'branch', 'lam', 'cy', 'cx'}` each `[]` or `[B]`, and `'perm': int [B]`.
    x: `[B, H, W, C]` images.
    y: `[B, N]` float32 soft labels.

  Returns:
    `(x_mix [B, H, W, C] float32, y_mix [B, N] float32)`.
  """
  batch_size, height, width, _ = x.shape
  lam, perm = jnp.asarray(params['lam'], jnp.float32), params['perm']
  use_cutmix = jnp.asarray(params['branch']) == CUTMIX
  x = x.astype(jnp.float32)
  x_partner = x[perm]
  # Both branches are cheap elementwise ops; computing both and selecting keeps one code path
  # for per-batch and per-example draws (and for vmap, where a cond would become a select).
  x_mixup = base.lerp(per_sample(lam, x.ndim), x, x_partner)
  box = box_bounds(params['cy'], params['cx'], jnp.sqrt(1.0 - lam), height, width)
  inside = jnp.broadcast_to(box_mask(box, height, width), (batch_size, height, width))
  x_cutmix = jnp.where(inside[..., None], x_partner, x)
  x_mix = jnp.where(use_cutmix.reshape(use_cutmix.shape + (1, 1, 1)), x_cutmix, x_mixup)
  lam_label = jnp.where(use_cutmix, 1.0 - box_fraction(box, height, width), lam)
  y_mix = base.lerp(per_sample(lam_label, y.ndim), y, y[perm])
  return x_mix, y_mix


def _check_alpha(name: str, value) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
      math.isfinite(value) and value >= 0):
    raise ValueError(f'{name}={value!r} must be a finite number >= 0 (0 disables the branch).')


@base.register('mixup_cutmix')
def make(*, mixup_alpha: float = 1.0, cutmix_alpha: float = 1.0, switch_prob: float = 0.5,
         pairing: str = 'flip', granularity: str = 'batch') -> base.Mixer:
  """Stochastic Mixup & CutMix; see `mixup_cutmix`."""
  _check_alpha('mixup_alpha', mixup_alpha)
  _check_alpha('cutmix_alpha', cutmix_alpha)
  if mixup_alpha == 0 and cutmix_alpha == 0:
    raise ValueError('mixup_alpha=0 and cutmix_alpha=0: at least one must be > 0.')
  base.check_probability('switch_prob', switch_prob)
  base.check_choice('pairing', pairing, base.PAIRINGS)
  base.check_choice('granularity', granularity, base.GRANULARITIES)
  hp = dict(mixup_alpha=float(mixup_alpha), cutmix_alpha=float(cutmix_alpha),
            switch_prob=float(switch_prob), pairing=pairing, granularity=granularity)
  # timm: with one alpha at 0 only the other branch runs, whatever switch_prob says.
  effective_switch = 0.0 if cutmix_alpha == 0 else 1.0 if mixup_alpha == 0 else float(switch_prob)
  return base.Mixer('mixup_cutmix', hp,
                    functools.partial(sample, **{**hp, 'switch_prob': effective_switch}), apply)


def mixup_cutmix(key: jax.Array, x: jax.Array, y: jax.Array,
                 **hparams) -> tuple[jax.Array, jax.Array]:
  """Stochastic Mixup & CutMix: CutMix with probability `switch_prob`, otherwise Mixup.

  timm semantics (docs/DESIGN.md#switch): `use_cutmix ~ Bernoulli(switch_prob)`;
  `lam ~ Beta(cutmix_alpha, cutmix_alpha)` on the CutMix branch and `Beta(mixup_alpha, mixup_alpha)`
  on the Mixup branch; CutMix uses the reference box and the corrected label
  `lam' = 1 - box_area / (H W)` (timm `correct_lam=True`), Mixup the label `lam`. An alpha of 0
  disables its branch (timm).

  Args:
    key: a `jax.random.key`.
    x: `[B, H, W, C]` float images.
    y: `[B, N]` float32 soft labels.
    **hparams: `mixup_alpha=1.0`, `cutmix_alpha=1.0`, `switch_prob=0.5`, `pairing='flip'` (timm
      pairs b with B-1-b), `granularity='batch'` (timm 'batch': one branch, lam and box per batch;
      `'example'`: timm 'elem', all drawn per sample), plus the shared `prob=1.0` and
      `label_smoothing=0.0` (timm smooths the one-hots before mixing, as here).

  Returns:
    `(x_mix [B, H, W, C] in x.dtype, y_mix [B, N] float32)`.

  Raises:
    ValueError: a bad hyper-parameter (the message names it).

  References:
    timm `timm/data/mixup.py` (`Mixup`, `switch_prob`); Touvron et al., "Training data-efficient
    image transformers & distillation through attention" (DeiT), ICML 2021. Deviation: the
    shared `prob` is one draw per batch also with `granularity='example'` (timm 'elem' draws
    it per sample).
  """
  return base.get('mixup_cutmix', **hparams)(key, x, y)
