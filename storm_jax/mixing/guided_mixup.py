"""GuidedMixup (Kang & Kim, AAAI 2023): pixel-wise mixing ratios from two saliency maps.

Per batch (docs/DESIGN.md#guided-mixup):
  1. a saliency map `s_b` per image: the spectral residual of the image (Guided-SR, no model)
     or the model's input-gradient saliency (Guided-AP, passed in like R-Mix's);
  2. a Gaussian blur (7×7, σ = 3, reflect padding), then each map normalised to sum 1;
  3. the pairing `π`: by default the paper's greedy cycle, which pairs each image with a
     partner whose salient regions overlap least (largest L2 distance between the maps);
     `pairing='perm'` is the uniform random permutation the released CIFAR/Tiny-ImageNet code
     falls back to (its `'greedy_c'` condition is never recognised);
  4. `M_b = s_b / (s_b + s_π(b))` per pixel, `x̃_b = M_b ⊙ x_b + (1 − M_b) ⊙ x_π(b)`, label
     `ỹ_b = λ_b y_b + (1 − λ_b) y_π(b)` with `λ_b = mean(M_b)` (the exact pixel share).

Where both maps are zero, `M = ½` (the reference divides 0 by 0); an all-zero map is
replaced by the uniform map before normalising.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from storm_jax.mixing import base

SALIENCIES = ('sr', 'ap')
PAIRINGS = ('greedy', 'perm')
GREY = (0.2989, 0.587, 0.114)     # torchvision rgb_to_grayscale weights.
SR_MAX_SIZE = 128                 # Reference: SR computed at 128×128 when H > 128.
_SR_EPS = 1e-10                   # Inside the magnitude's square root (reference).


# --------------------------------------------------------------------------------------
# Saliency.
# --------------------------------------------------------------------------------------


def gaussian_kernel(size: int, sigma: float) -> np.ndarray:
  """The 1-D kernel torchvision's `gaussian_blur` uses (odd `size`), float32."""
  half = (size - 1) * 0.5
  t = np.linspace(-half, half, size)
  k = np.exp(-0.5 * (t / sigma) ** 2)
  return (k / k.sum()).astype(np.float32)


def gaussian_blur(maps: jax.Array, size: int = 7, sigma: float = 3.0) -> jax.Array:
  """Separable Gaussian blur of `[..., H, W]` maps with reflect padding (torchvision).

  Reflect padding needs `size // 2 < H` and `< W`.
  """
  k = jnp.asarray(gaussian_kernel(size, sigma))
  r = size // 2
  pad = [(0, 0)] * (maps.ndim - 2)
  x = jnp.pad(maps, pad + [(r, r), (0, 0)], mode='reflect')
  h = maps.shape[-2]
  x = sum(k[i] * x[..., i:i + h, :] for i in range(size))
  x = jnp.pad(x, pad + [(0, 0), (r, r)], mode='reflect')
  w = maps.shape[-1]
  return sum(k[i] * x[..., :, i:i + w] for i in range(size))


def _box3_replicate(v: jax.Array) -> jax.Array:
  """3×3 mean filter with replicate (edge) padding over the last two axes."""
  p = jnp.pad(v, [(0, 0)] * (v.ndim - 2) + [(1, 1), (1, 1)], mode='edge')
  h, w = v.shape[-2:]
  return sum(p[..., i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9.0


def spectral_residual(x: jax.Array, *, blur: tuple[int, float] | None = (7, 3.0)) -> jax.Array:
  """Spectral-residual saliency (Hou & Zhang 2007) as GuidedMixup's Guided-SR computes it.

  Grey image (torchvision weights for C = 3, the channel mean otherwise), `F = fft2(grey)`,
  `A = sqrt(|F|² + 1e-10)`, residual `R = exp(log A − box3×3(log A))` (replicate padding, on
  the unshifted spectrum), `s = |ifft2(F R / A)|`, then a Gaussian blur. Images taller than 128 are
  resized to 128×128 (bilinear) for the transform and the map resized back.

  Args:
    x: `[B, H, W, C]` float images (the reference uses the normalised model input, C = 3).
    blur: `(kernel size, σ)` of the final blur, or None.

  Returns:
    `[B, H, W]` float32 saliency (non-negative).
  """
  b, h, w, c = x.shape
  x = x.astype(jnp.float32)
  if c == 3:
    grey = jnp.einsum('bhwc,c->bhw', x, jnp.asarray(GREY, jnp.float32))
  else:
    grey = jnp.mean(x, axis=-1)
  resized = h > SR_MAX_SIZE
  if resized:
    grey = jax.image.resize(grey, (b, SR_MAX_SIZE, SR_MAX_SIZE), 'linear', antialias=True)
  f = jnp.fft.fft2(grey)
  mag = jnp.sqrt(jnp.square(f.real) + jnp.square(f.imag) + _SR_EPS)
  log_mag = jnp.log(mag)
  residual = jnp.exp(log_mag - _box3_replicate(log_mag))
  s = jnp.abs(jnp.fft.ifft2(f * (residual / mag)))
  if blur is not None:
    s = gaussian_blur(s, *blur)
  if resized:
    s = jax.image.resize(s, (b, h, w), 'linear', antialias=False)
  return s.astype(jnp.float32)


def normalize_maps(maps: jax.Array) -> jax.Array:
  """Each `[H, W]` map divided by its sum; an all-zero map becomes uniform."""
  total = maps.sum(axis=(-2, -1), keepdims=True)
  uniform = jnp.full_like(maps, 1.0 / math.prod(maps.shape[-2:]))
  return jnp.where(total > 0, maps / jnp.where(total > 0, total, 1.0), uniform)


# --------------------------------------------------------------------------------------
# Pairing.
# --------------------------------------------------------------------------------------


def map_distances(maps: jax.Array) -> jax.Array:
  """`D [B, B]`: L2 distance between the flattened maps (`‖a‖² + ‖b‖² − 2a·b`, clipped)."""
  flat = maps.reshape(maps.shape[0], -1).astype(jnp.float32)
  sq = jnp.sum(jnp.square(flat), -1)
  gram = jnp.matmul(flat, flat.T, precision=jax.lax.Precision.HIGHEST)
  return jnp.sqrt(jnp.maximum(sq[:, None] + sq[None, :] - 2 * gram, 0.0))


def greedy_cycle(dist: jax.Array) -> jax.Array:
  """The paper's greedy pairing: one cycle through the batch along large distances.

  Start with the most distant ordered pair `i₀ → j₀`; from the last destination, go to the
  most distant image not yet used as a source (nor itself); close the cycle back to `i₀`.
  Ties go to the first index (row-major for the first pair), as NumPy's argmax.

  Args:
    dist: `[B, B]` float distances.

  Returns:
    int32 `[B]` partner indices `π` (a single B-cycle for B >= 2; `[0]` for B = 1).
  """
  n = dist.shape[0]
  eye = jnp.eye(n, dtype=bool)
  d = jnp.where(eye, -jnp.inf, dist.astype(jnp.float32))
  first = jnp.argmax(d.reshape(-1))
  i0, j0 = first // n, first % n
  perm = jnp.zeros(n, jnp.int32).at[i0].set(j0)
  used = jnp.zeros(n, bool).at[i0].set(True)

  def step(_, carry):
    perm, used, row = carry
    col = jnp.argmax(jnp.where(used | eye[row], -jnp.inf, d[row]))
    return perm.at[row].set(col), used.at[row].set(True), col

  perm, _, last = jax.lax.fori_loop(0, max(n - 2, 0), step, (perm, used, j0))
  return perm.at[last].set(i0).astype(jnp.int32)


def pair(maps: jax.Array, part: int | None = None) -> jax.Array:
  """Greedy pairing of `[B, H, W]` maps, within consecutive chunks of `part` if given."""
  b = maps.shape[0]
  if part is None or part >= b:
    return greedy_cycle(map_distances(maps))
  chunks = maps.reshape(b // part, part, *maps.shape[1:])
  perms = jax.vmap(lambda m: greedy_cycle(map_distances(m)))(chunks)
  return (perms + part * jnp.arange(b // part, dtype=jnp.int32)[:, None]).reshape(b)


# --------------------------------------------------------------------------------------
# Sample / apply.
# --------------------------------------------------------------------------------------


def mixing_ratio(maps: jax.Array, perm: jax.Array) -> jax.Array:
  """`M = s / (s + s_π)` per pixel (`[B, H, W]`), ½ where both maps are zero."""
  den = maps + maps[perm]
  return jnp.where(den > 0, maps / jnp.where(den > 0, den, 1.0), 0.5)


def guide_maps(params: dict[str, jax.Array], x: jax.Array, *, saliency: str,
               blur: tuple[int, float], sr_blur: tuple[int, float]) -> jax.Array:
  """The blurred, sum-1 maps that guide the mixing (`[B, H, W]`)."""
  if saliency == 'sr':
    raw = spectral_residual(jax.lax.stop_gradient(x), blur=sr_blur)
  else:
    raw = params['saliency']
  return normalize_maps(gaussian_blur(jax.lax.stop_gradient(raw), *blur))


def sample(key: jax.Array, shape: Sequence[int], *, saliency_kind: str = 'sr',
           saliency: jax.Array | None = None) -> dict[str, jax.Array]:
  """Draws the random permutation (used by `pairing='perm'`) and keeps the AP saliency.

  Returns:
    `{'perm': int32[B]}`, plus `'saliency': float32[B, H, W]` for Guided-AP.
  """
  b, h, w, _ = shape
  params = {'perm': base.partner(key, b, 'perm')}
  if saliency_kind == 'ap':
    if saliency is None or tuple(saliency.shape) != (b, h, w):
      got = None if saliency is None else tuple(saliency.shape)
      raise ValueError(f'saliency.shape={got} must be [B, H, W] = {(b, h, w)} for Guided-AP.')
    params['saliency'] = jax.lax.stop_gradient(saliency.astype(jnp.float32))
  return params


def apply(params: dict[str, jax.Array], x: jax.Array, y: jax.Array, *, saliency: str = 'sr',
          pairing: str = 'greedy', blur: tuple[int, float] = (7, 3.0),
          sr_blur: tuple[int, float] = (7, 3.0),
          part: int | None = None) -> tuple[jax.Array, jax.Array]:
  """Mixes a batch pixel-wise by the saliency ratio; deterministic given `params` and `x`.

  Returns:
    `x_mix [B, H, W, C]` float32, `y_mix [B, N]` with anchor weight `mean(M_b)`.
  """
  if part is not None and x.shape[0] % part:
    raise ValueError(f'part={part} must divide the batch size {x.shape[0]}.')
  x = x.astype(jnp.float32)

  def mix(_):
    maps = guide_maps(params, x, saliency=saliency, blur=blur, sr_blur=sr_blur)
    perm = pair(maps, part) if pairing == 'greedy' else params['perm']
    m = mixing_ratio(maps, perm)
    x_mix = m[..., None] * x + (1.0 - m[..., None]) * x[perm]
    lam = jnp.mean(m, axis=(1, 2))[:, None]
    return x_mix, lam * y + (1.0 - lam) * y[perm]

  if 'apply' in params:  # prob < 1: no saliency, pairing or mixing on a clean batch.
    return jax.lax.cond(params['apply'], mix, lambda _: (x, y), None)
  return mix(None)


def _check_blur(name, value):
  if (not isinstance(value, Sequence) or len(value) != 2 or isinstance(value[0], bool)
      or not isinstance(value[0], int) or value[0] < 1 or value[0] % 2 == 0):
    raise ValueError(f'{name}={value!r} must be (odd kernel size, sigma > 0).')
  base.check_positive(f'{name}[1]', value[1])
  return (int(value[0]), float(value[1]))


@base.register('guided_mixup')
def make(*, saliency: str = 'sr', pairing: str = 'greedy', blur: Sequence = (7, 3.0),
         sr_blur: Sequence = (7, 3.0), part: int = 0, clean_lam: float = 0.0) -> base.Mixer:
  """GuidedMixup mixer (docs/DESIGN.md#guided-mixup).

  Args:
    saliency: 'sr' (spectral residual of the images) or 'ap' (the model's input-gradient
      saliency: `sample` needs `saliency=[B, H, W]`).
    pairing: 'greedy' (paper) or 'perm' (what the released CIFAR/Tiny code runs).
    blur: `(size, σ)` of the Gaussian blur of both kinds of map.
    sr_blur: `(size, σ)` of the blur inside the spectral residual ('sr' is blurred twice).
    part: greedy pairing within consecutive chunks of this many images (0: whole batch).
    clean_lam: Guided-AP's clean loss `2·clean_lam/N·CE` from the saliency pass (trainer;
      CIFAR 0, Tiny-ImageNet 1).

  Papers' apply probability: `prob=0.5` for SR, `0.8` for AP (shared `prob`).
  """
  base.check_choice('saliency', saliency, SALIENCIES)
  base.check_choice('pairing', pairing, PAIRINGS)
  blur = _check_blur('blur', blur)
  sr_blur = _check_blur('sr_blur', sr_blur)
  base.check_int('part', part, minimum=0)
  if isinstance(clean_lam, bool) or not isinstance(clean_lam, (int, float)) or not (
      0.0 <= clean_lam < float('inf')):
    raise ValueError(f'clean_lam={clean_lam!r} must be a finite number >= 0.')
  return base.Mixer('guided_mixup', {},
                    functools.partial(sample, saliency_kind=saliency),
                    functools.partial(apply, saliency=saliency, pairing=pairing, blur=blur,
                                      sr_blur=sr_blur, part=part or None),
                    needs_saliency=saliency == 'ap')


def guided_mixup(key: jax.Array, x: jax.Array, y: jax.Array, saliency: jax.Array | None = None,
                 **hparams) -> tuple[jax.Array, jax.Array]:
  """GuidedMixup (Kang & Kim): saliency-ratio mixing of greedily paired images.

  Args:
    key: PRNG key.
    x: `[B, H, W, C]` float images (the normalised model input, as the reference).
    y: `[B, N]` soft labels.
    saliency: `[B, H, W]` input-gradient saliency, for `saliency='ap'` only.
    **hparams: see `make`, plus the shared `prob` and `label_smoothing`.

  Returns:
    `(x_mix [B, H, W, C], y_mix [B, N])`.

  Follows the reference code (3neutronstar/GuidedMixup `mixup.py`, `spectral_residual.py`,
  `pairing.pyx`) except: greedy pairing by default (the released CIFAR/Tiny code silently
  pairs at random: `pairing='perm'`); ½ where both maps are zero (0/0 there); distances by
  the Gram form (`B × B` memory instead of `B × B × H × W`).

  References:
    Kang & Kim, "GuidedMixup: An Efficient Mixup Strategy Guided by Saliency Maps"
    (AAAI 2023); github.com/3neutronstar/GuidedMixup.
  """
  kw = {} if saliency is None else {'saliency': saliency}
  return base.get('guided_mixup', **hparams)(key, x, y, **kw)
