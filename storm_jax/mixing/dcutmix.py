"""DCutMix and DMixup: K-image mixing with Dirichlet weights (docs/DESIGN.md#dcutmix).

Per example `φ_b ~ Dir(α·1_K)`; K-1 independent batch permutations `π_1..π_{K-1}` pick the
extra images (`params['perms']`, int32[K-1, B]); image 0 is the anchor.

DMixup: `x̃ = φ_1 x + Σ_{k>=2} φ_k x[π_{k-1}]`, same weights for the labels.

DCutMix: stick-breaking `v_1 = φ_1`, `v_k = φ_k / Π_{j<k}(1 - v_j)`. Box k keeps a `1 - v_k`
share of box k-1 (box 0 = the whole image): integer side `round(side_{k-1} · sqrt(1 - v_k))`
(round half to even, as `np.round`) at a uniform integer offset inside box k-1 (offset 0
when the box does not shrink on both axes). Box k shows `x[π_k]`, so the ring between box k
and box k+1 shows image k and the anchor keeps everything outside box 1. Labels are the
realised integer pixel shares: `(area_{k} - area_{k+1}) / (H W)`.

The offsets are stored as uniforms `u ∈ [0, 1)` (`params['offsets']`, [K-1, B, 2] for
(row, column)) and turned into integers `floor(u · (n + 1))`, `n` = the free room, in
`apply`; so `apply` builds valid boxes for any `phi` it is given.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from storm_jax.mixing import base

# Guard of the stick-breaking division (the reference adds 1e-10 to the denominator): a
# vanishing remaining stick gives v = 0, i.e. the box does not shrink and later images
# get no area.
_STICK_EPS = 1e-10


def _dirichlet(key: jax.Array, alpha: float, batch_size: int, k: int) -> jax.Array:
  if k == 1:
    return jnp.ones((batch_size, 1), jnp.float32)
  # jax samples the Dirichlet through log-gamma draws: finite even for tiny α (many
  # components are then exactly 0 and one is 1).
  phi = jax.random.dirichlet(key, jnp.full((k,), alpha, jnp.float32), (batch_size,))
  return jnp.clip(phi, 0.0, 1.0)


def _perms(key: jax.Array, batch_size: int, k: int) -> jax.Array:
  if k == 1:
    return jnp.zeros((0, batch_size), jnp.int32)
  keys = jax.random.split(key, k - 1)
  return jax.vmap(lambda kk: base.partner(kk, batch_size, 'perm'))(keys)


def sample_dmixup(key: jax.Array, shape: Sequence[int], *, K: int = 3,
                  alpha: float = 1.0) -> dict[str, jax.Array]:
  """Draws `{'phi': float32[B, K], 'perms': int32[K-1, B]}` for DMixup."""
  b = shape[0]
  phi_key, perm_key = jax.random.split(key)
  return {'phi': _dirichlet(phi_key, alpha, b, K), 'perms': _perms(perm_key, b, K)}


def sample_dcutmix(key: jax.Array, shape: Sequence[int], *, K: int = 3,
                   alpha: float = 1.0) -> dict[str, jax.Array]:
  """Draws `{'phi': [B, K], 'perms': int32[K-1, B], 'offsets': float32[K-1, B, 2]}`."""
  b = shape[0]
  key, offset_key = jax.random.split(key)
  params = sample_dmixup(key, shape, K=K, alpha=alpha)
  params['offsets'] = jax.random.uniform(offset_key, (K - 1, b, 2), jnp.float32)
  return params


def nested_boxes(phi: jax.Array, offsets: jax.Array, height: int,
                 width: int) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """The DCutMix nested integer boxes (docs/DESIGN.md#dcutmix).

  Args:
    phi: `[B, K]` float Dirichlet weights (rows on the simplex).
    offsets: `[K-1, B, 2]` float uniforms in [0, 1) for the (row, column) offsets.
    height: H.
    width: W.

  Returns:
    `(top, left, box_h, box_w)`, each int32 `[K-1, B]`: box k covers rows
    `[top, top + box_h)` and columns `[left, left + box_w)`; box k lies inside box k-1.
  """
  batch_size, k_total = phi.shape
  phi = phi.astype(jnp.float32)
  top = jnp.zeros((batch_size,), jnp.int32)
  left = jnp.zeros((batch_size,), jnp.int32)
  h = jnp.full((batch_size,), height, jnp.int32)
  w = jnp.full((batch_size,), width, jnp.int32)
  remaining = jnp.ones((batch_size,), jnp.float32)  # Π_{j<k} (1 - v_j)
  out = []
  for k in range(k_total - 1):
    v = phi[:, k] / jnp.maximum(remaining, _STICK_EPS)
    keep = jnp.clip(1.0 - v, 0.0, 1.0)  # v > 1 from float error -> empty box.
    remaining = remaining * keep
    scale = jnp.sqrt(keep)
    box_h = jnp.round(h.astype(jnp.float32) * scale).astype(jnp.int32)
    box_w = jnp.round(w.astype(jnp.float32) * scale).astype(jnp.int32)
    box_h, box_w = jnp.minimum(box_h, h), jnp.minimum(box_w, w)
    shrinks = (box_h < h) & (box_w < w)
    room_h, room_w = h - box_h, w - box_w
    oy = jnp.floor(offsets[k, :, 0] * (room_h + 1).astype(jnp.float32)).astype(jnp.int32)
    ox = jnp.floor(offsets[k, :, 1] * (room_w + 1).astype(jnp.float32)).astype(jnp.int32)
    oy = jnp.where(shrinks, jnp.clip(oy, 0, room_h), 0)
    ox = jnp.where(shrinks, jnp.clip(ox, 0, room_w), 0)
    top, left, h, w = top + oy, left + ox, box_h, box_w
    out.append((top, left, h, w))
  if not out:
    empty = jnp.zeros((0, batch_size), jnp.int32)
    return empty, empty, empty, empty
  return tuple(jnp.stack(a) for a in zip(*out))  # type: ignore[return-value]


def apply_dcutmix(params: dict[str, jax.Array], x: jax.Array,
                  y: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Pastes the nested boxes of `params` (docs/DESIGN.md#dcutmix); deterministic.

  Args:
    params: `{'phi': [B, K], 'perms': int32[K-1, B], 'offsets': [K-1, B, 2]}`.
    x: `[B, H, W, C]` float images.
    y: `[B, N]` float32 soft labels.

  Returns:
    `x_mix: [B, H, W, C]` float32 and `y_mix: [B, N]` float32, the realised integer pixel
    shares: `(area_k - area_{k+1}) / (H W)` for image k (area_0 = H W, area_K = 0).
  """
  _, height, width, _ = x.shape
  perms = params['perms']
  top, left, box_h, box_w = nested_boxes(params['phi'], params['offsets'], height, width)
  rows = jnp.arange(height)[None, :, None]
  cols = jnp.arange(width)[None, None, :]
  x = x.astype(jnp.float32)
  x_mix = x
  # Accumulate integer pixel counts times labels, divide once: exact shares.
  y_acc = jnp.zeros_like(y)
  prev_area = jnp.full(box_h.shape[1:], height * width, jnp.int32)
  prev_labels = y
  for k in range(perms.shape[0]):
    t, l = top[k][:, None, None], left[k][:, None, None]
    inside = ((rows >= t) & (rows < t + box_h[k][:, None, None])
              & (cols >= l) & (cols < l + box_w[k][:, None, None]))
    x_mix = jnp.where(inside[..., None], x[perms[k]], x_mix)
    area = box_h[k] * box_w[k]
    y_acc = y_acc + (prev_area - area).astype(jnp.float32)[:, None] * prev_labels
    prev_area, prev_labels = area, y[perms[k]]
  y_acc = y_acc + prev_area.astype(jnp.float32)[:, None] * prev_labels
  return x_mix, y_acc / (height * width)


def apply_dmixup(params: dict[str, jax.Array], x: jax.Array,
                 y: jax.Array) -> tuple[jax.Array, jax.Array]:
  """`x̃ = φ_1 x + Σ_{k>=2} φ_k x[π_{k-1}]` and the same for labels (docs/DESIGN.md#dmixup).

  Written as `x + Σ_{k>=2} φ_k (x[π_{k-1}] - x)`, which keeps a self-paired sample exactly
  unchanged.

  Args:
    params: `{'phi': [B, K], 'perms': int32[K-1, B]}`.
    x: `[B, H, W, C]` float images.
    y: `[B, N]` float32 soft labels.

  Returns:
    `x_mix: [B, H, W, C]` float32 and `y_mix: [B, N]` float32.
  """
  phi, perms = params['phi'].astype(jnp.float32), params['perms']
  x = x.astype(jnp.float32)
  x_mix, y_mix = x, y
  for k in range(perms.shape[0]):
    w = phi[:, k + 1]
    x_mix = x_mix + w[:, None, None, None] * (x[perms[k]] - x)
    y_mix = y_mix + w[:, None] * (y[perms[k]] - y)
  return x_mix, y_mix


def _check(K, alpha):
  base.check_int('K', K)
  base.check_positive('alpha', alpha)


@base.register('dcutmix')
def make_dcutmix(*, K: int = 3, alpha: float = 1.0) -> base.Mixer:
  """DCutMix mixer: K images, nested boxes, Dirichlet stick-breaking (docs/DESIGN.md#dcutmix)."""
  _check(K, alpha)
  return base.Mixer('dcutmix', {}, functools.partial(sample_dcutmix, K=K, alpha=alpha),
                    apply_dcutmix)


@base.register('dmixup')
def make_dmixup(*, K: int = 3, alpha: float = 1.0) -> base.Mixer:
  """DMixup mixer (docs/DESIGN.md#dmixup): K-image convex combination with Dirichlet weights."""
  _check(K, alpha)
  return base.Mixer('dmixup', {}, functools.partial(sample_dmixup, K=K, alpha=alpha),
                    apply_dmixup)


def dcutmix(key: jax.Array, x: jax.Array, y: jax.Array,
            **hparams) -> tuple[jax.Array, jax.Array]:
  """DCutMix: K images pasted as nested boxes with Dirichlet areas.

  Args:
    key: PRNG key.
    x: `[B, H, W, C]` float images.
    y: `[B, N]` soft labels.
    **hparams: `K=3` (number of images, anchor included), `alpha=1.0` (Dirichlet
      concentration `Dir(α·1_K)`), plus the shared `prob` (the reference's `--beta`) and
      `label_smoothing`.

  Returns:
    `(x_mix [B, H, W, C], y_mix [B, N])`; labels are the realised integer pixel shares.

  Follows the reference code (clovaai/DCutMix `joint_dirichlet`) instead of the paper's
  Algorithm 1: φ per example, one fresh permutation per pasted image, integer boxes with
  round-half-to-even sides and a uniform integer offset inside the previous box, labels from
  realised areas (the Algorithm's K=2 label bug and `/W×H` precedence slip are not copied).
  K=1 is the identity (the reference draws an empty box). Boxes on non-square images use the
  H and W of docs/DESIGN.md#conventions (the reference calls the height axis "W").

  References:
    Jeong et al., "Observations on K-image expansion of image-mixing augmentation",
    IEEE Access 2023; github.com/clovaai/DCutMix.
  """
  return base.get('dcutmix', **hparams)(key, x, y)


def dmixup(key: jax.Array, x: jax.Array, y: jax.Array,
           **hparams) -> tuple[jax.Array, jax.Array]:
  """DMixup: `x̃ = φ_1 x + Σ_{k>=2} φ_k x[π_{k-1}]` with `φ ~ Dir(α·1_K)` per example.

  Args:
    key: PRNG key.
    x: `[B, H, W, C]` float images.
    y: `[B, N]` soft labels.
    **hparams: `K=3`, `alpha=1.0`, plus the shared `prob` and `label_smoothing`.

  Returns:
    `(x_mix [B, H, W, C], y_mix [B, N])`, labels mixed with the same φ.

  K=2 is Mixup with a per-example λ = φ_1 ~ Beta(α, α); K=1 is the identity (the reference
  crashes there). One fresh permutation per extra image, as the reference.

  References:
    Jeong et al., "Observations on K-image expansion of image-mixing augmentation",
    IEEE Access 2023; github.com/clovaai/DCutMix.
  """
  return base.get('dmixup', **hparams)(key, x, y)
