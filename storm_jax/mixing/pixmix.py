"""PixMix (Hendrycks et al., CVPR 2022): mix an image with mixing pictures and its augmentations.

Per example (docs/DESIGN.md#pixmix), in [0, 1] units (`u = x / 255`):

  mixed = augment(x) or x                       (a fair coin)
  repeat r ~ U{0, ..., k} times:
    partner = augment(x) or the mixing picture  (a fair coin; a fresh op each time)
    mixed = clip(add(mixed, partner) or multiply(mixed, partner), 0, 1)   (a fair coin)

  add(u, v)      = ((2u - 1) a + (2v - 1) b + 1) / 2
  multiply(u, v) = (2u)^a (2 max(v, 1e-37))^b / 2
  (a, b) = (Beta(beta, 1), Beta(1, beta)) or (1 + Beta(1, beta), -Beta(1, beta))  (a fair coin)

`augment` is one op of AugMix's list at `severity`, the `--all-ops` list by default (the
PixMix recipe), always applied to the original image. Labels are unchanged; the objective is
plain cross-entropy. The mixing pictures come from a second input stream
(`data.mixing_iterator`), one per example, and are passed as
`sample(key, shape, mixing_pictures=[B, H, W, C])` (kept in the params, like R-Mix's saliency).

Value range: `x` and the mixing pictures are pixel values in [0, 255] (float32, un-normalised:
`Mixer.needs_pixels`); the output is float32 in [0, 255], not integer-valued (the reference
normalises the float mix directly).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from storm_jax.mixing import base
from storm_jax.mixing.augmix import ALL_OPS, OPS, op_step, sample_ops


# --------------------------------------------------------------------------------------
# The mixing operations shared with IPMix, in [0, 1] units.
# --------------------------------------------------------------------------------------


def sample_ab(key: jax.Array, beta: float, shape: Sequence[int]) -> tuple[jax.Array, jax.Array]:
  """The references' `get_ab(beta)`: `(a, b)` float32 arrays of `shape`.

  With a fair coin, `a ~ Beta(beta, 1), b ~ Beta(1, beta)`, else `a = 1 + Beta(1, beta),
  b = -Beta(1, beta)`. `Beta(beta, 1) = U^(1/beta)` and `Beta(1, beta) = 1 - U^(1/beta)`
  (inverse CDFs), so each coefficient is one uniform draw.
  """
  coin_key, a_key, b_key = jax.random.split(key, 3)
  coin = jax.random.bernoulli(coin_key, 0.5, tuple(shape))
  ua = jax.random.uniform(a_key, tuple(shape), jnp.float32)
  ub = jax.random.uniform(b_key, tuple(shape), jnp.float32)
  up, down = ua ** (1.0 / beta), 1.0 - ub ** (1.0 / beta)  # Beta(beta, 1), Beta(1, beta)
  a = jnp.where(coin, up, 2.0 - up)  # else 1 + (1 - U^(1/beta)) = 1 + Beta(1, beta)
  b = jnp.where(coin, down, -down)
  return a, b


def add(u: jax.Array, v: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
  """`((2u - 1) a + (2v - 1) b + 1) / 2` in [0, 1] units (not clipped)."""
  return ((2.0 * u - 1.0) * a + (2.0 * v - 1.0) * b + 1.0) / 2.0


def multiply(u: jax.Array, v: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
  """`(2u)^a (2 max(v, 1e-37))^b / 2` in [0, 1] units (not clipped)."""
  return (2.0 * u) ** a * (2.0 * jnp.maximum(v, 1e-37)) ** b / 2.0


def check_mixing_pictures(pictures: jax.Array, shape: Sequence[int]) -> None:
  if tuple(pictures.shape) != tuple(shape):
    raise ValueError(f'mixing_pictures.shape={tuple(pictures.shape)} must equal the image '
                     f'batch shape [B, H, W, C] = {tuple(shape)}.')


# --------------------------------------------------------------------------------------
# PixMix.
# --------------------------------------------------------------------------------------


def sample(key: jax.Array, shape: Sequence[int], *, mixing_pictures: jax.Array, k: int = 4,
           beta: float = 3.0, severity: float = 3.0,
           all_ops: bool = True) -> dict[str, jax.Array]:
  """Draws every random choice of PixMix for a batch of static `shape = (B, H, W, C)`.

  Returns:
    Step 0 is the starting image, steps 1..k the rounds:
    `{'use_aug': bool [B, k+1] (step 0: start from augment(x); s >= 1: the partner is
      augment(x), else the mixing picture), 'op', 'level', 'sign': [B, k+1] (the augment op of
      each step, `augmix.OP_NAMES` index), 'rounds': int32 [B] in [0, k],
      'multiply': bool [B, k+1], 'a', 'b': float32 [B, k+1] (entries of step 0 unused),
      'mixing_pictures': float32 [B, H, W, C]}`.
  """
  batch_size = shape[0]
  check_mixing_pictures(mixing_pictures, shape)
  steps = (batch_size, k + 1)
  aug_key, ops_key, r_key, mul_key, ab_key = jax.random.split(key, 5)
  names = ALL_OPS if all_ops else OPS  # AugMix's lists: `--all-ops` (the recipe) or not
  a, b = sample_ab(ab_key, beta, steps)
  return {
      'use_aug': jax.random.bernoulli(aug_key, 0.5, steps),
      **sample_ops(ops_key, steps, names, severity),
      'rounds': jax.random.randint(r_key, (batch_size,), 0, k + 1, dtype=jnp.int32),
      'multiply': jax.random.bernoulli(mul_key, 0.5, steps),
      'a': a,
      'b': b,
      'mixing_pictures': jax.lax.stop_gradient(mixing_pictures.astype(jnp.float32)),
  }


def apply(params: dict[str, jax.Array], x: jax.Array, y: jax.Array, *,
          all_ops: bool = True) -> tuple[jax.Array, jax.Array]:
  """PixMix with the drawn params; labels unchanged.

  Args:
    params: from `sample`.
    x: [B, H, W, C] float pixel values in [0, 255].
    y: [B, N] float32 soft labels.
    all_ops: the enhance ops may be drawn (static; must match `sample`).

  Returns:
    `(x_mix [B, H, W, C] float32 in [0, 255], y)`.
  """
  x = x.astype(jnp.float32)
  orig = jnp.clip(jnp.round(x), 0.0, 255.0)  # the uint8 image the ops see
  steps = params['use_aug'].shape[1]
  op = functools.partial(op_step, all_ops=all_ops)
  per_step = jax.vmap(op, in_axes=(None, 0, 0, 0))
  augs = jax.vmap(per_step)(orig, params['op'], params['level'], params['sign']) / 255.0
  pictures = params['mixing_pictures'] / 255.0
  use_aug = params['use_aug'][..., None, None, None]
  mixed = jnp.where(use_aug[:, 0], augs[:, 0], orig / 255.0)
  for s in range(1, steps):
    partner = jnp.where(use_aug[:, s], augs[:, s], pictures)
    a = params['a'][:, s, None, None, None]
    b = params['b'][:, s, None, None, None]
    out = jnp.where(params['multiply'][:, s, None, None, None],
                    multiply(mixed, partner, a, b), add(mixed, partner, a, b))
    out = jnp.clip(out, 0.0, 1.0)
    mixed = jnp.where((s <= params['rounds'])[:, None, None, None], out, mixed)
  return mixed * 255.0, y


def check_severity(severity) -> None:
  if isinstance(severity, bool) or not isinstance(severity, (int, float)) or not (
      math.isfinite(severity) and 0.1 < severity <= 10):
    raise ValueError(f'severity={severity!r} must be a number in (0.1, 10].')


def check_flag(name: str, value) -> None:
  if not isinstance(value, bool):
    raise ValueError(f'{name}={value!r} must be True or False.')


@base.register('pixmix')
def make(*, k: int = 4, beta: float = 3.0, severity: float = 3.0,
         all_ops: bool = True) -> base.Mixer:
  """PixMix; `sample` needs `mixing_pictures=[B, H, W, C]`; pixel-space input (see module).

  Args:
    k: at most k mixing rounds (r ~ U{0..k}); CIFAR reference 4.
    beta: mixing-coefficient concentration; CIFAR reference 3.
    severity: augmentation op levels ~ U(0.1, severity); CIFAR reference 3.
    all_ops: draw augment ops from AugMix's `--all-ops` list (the PixMix recipe).
  """
  base.check_int('k', k, minimum=0)
  base.check_positive('beta', beta)
  check_severity(severity)
  check_flag('all_ops', all_ops)
  hp = dict(k=k, beta=float(beta), severity=float(severity), all_ops=all_ops)
  return base.Mixer('pixmix', hp, functools.partial(sample, **hp),
                    functools.partial(apply, all_ops=all_ops), needs_pixels=True,
                    needs_mixing_pictures=True)


def pixmix(key: jax.Array, x: jax.Array, y: jax.Array, mixing_pictures: jax.Array,
           **hparams) -> tuple[jax.Array, jax.Array]:
  """PixMix: mixes each image with its augmentations and a mixing picture; labels unchanged.

  Args:
    key: PRNG key.
    x: `[B, H, W, C]` float32 pixel values in [0, 255] (un-normalised).
    y: `[B, N]` soft labels.
    mixing_pictures: `[B, H, W, C]` pixel values in [0, 255], one picture per example (e.g.
      a batch of `data.mixing_iterator('fractals', ...)`).
    **hparams: `k=4, beta=3.0, severity=3.0, all_ops=True`, plus the shared `prob` and
      `label_smoothing`.

  Returns:
    `(x_mix [B, H, W, C] float32 in [0, 255], y)`; train with cross-entropy.

  Follows the reference (andyzoujm/pixmix `cifar.py`, `pixmix_utils.py`): one mixing picture
  per example for all rounds, a fresh augmentation of the original image for each augmented
  partner, clip to [0, 1] after every round.

  References:
    Hendrycks, Zou, Mazeika, Tang, Li, Song, Steinhardt, "PixMix: Dreamlike Pictures
    Comprehensively Improve Safety Measures", CVPR 2022.
  """
  return base.get('pixmix', **hparams)(key, x, y, mixing_pictures=mixing_pictures)
