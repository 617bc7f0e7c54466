"""The label-preserving image operations PixMix and IPMix draw from (AugMix's list + 2).

PROVISIONAL: a minimal, self-contained op set written alongside AugMix's op list
(`mixing/augmix.py`); the two are meant to be unified into one (docs/DESIGN.md#pixmix-ops).
Ops are indexed by `ALL_OPS`; a method draws uniformly from its own list (`AUGMIX_OPS`,
`PIXMIX_ALL_OPS`, `IPMIX_OPS`) mapped to those indices by `op_indices`.

Every op works on one integer-valued float32 image `[H, W, C]` in [0, 255] (the uint8 image PIL
would see) and returns an integer-valued image. Magnitudes as the references' augmentation
modules, with `level ~ U(0.1, severity)` and a fair sign per call:

| op | effect |
|---|---|
| autocontrast | per channel, `floor((v - lo) 255 / (hi - lo))` (identity when `hi == lo`) |
| equalize | PIL's per-channel histogram equalisation table |
| posterize | keep the `4 - int(level 4 / 10)` high bits |
| solarize | `255 - v` where `v >= 256 - int(level 256 / 10)` |
| rotate | `sign int(level 30 / 10)` degrees about the centre (PIL: counter-clockwise) |
| shear_x / shear_y | affine `x += s y` / `y += s x`, `s = sign level 0.3 / 10` |
| translate_x / translate_y | `sign int(level (S / 3) / 10)` px, `S` = W / H |
| color, contrast, brightness, sharpness | blend with grey / mean grey / black / smoothed image, factor `level 1.8 / 10 + 0.1` |
| mirror | left-right flip (IPMix) |
| invert | `255 - v` (IPMix) |

Geometric ops sample the input at `M (x + 0.5, y + 0.5)` bilinearly (PIL's pixel-centre
convention), black outside, result truncated to an integer.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

ALL_OPS = ('autocontrast', 'equalize', 'posterize', 'rotate', 'solarize', 'shear_x', 'shear_y',
           'translate_x', 'translate_y', 'color', 'contrast', 'brightness', 'sharpness',
           'mirror', 'invert')
AUGMIX_OPS = ALL_OPS[:9]          # AugMix's default list (no test-corruption overlap)
PIXMIX_ALL_OPS = ALL_OPS[:13]     # AugMix's `--all-ops` list, PixMix's recipe
IPMIX_OPS = ('equalize', 'posterize', 'rotate', 'solarize', 'shear_x', 'shear_y',
             'translate_x', 'translate_y', 'mirror', 'invert')  # IPMix's `augmentations`


# Branch of `op_step` for each op of ALL_OPS.
_BRANCH = jnp.asarray([0, 1, 2, 4, 3, 4, 4, 4, 4, 5, 5, 5, 5, 6, 7], jnp.int32)


def op_indices(names: Sequence[str]) -> jax.Array:
  """int32 indices into `ALL_OPS` of the named ops (a method's op list)."""
  for name in names:
    if name not in ALL_OPS:
      raise ValueError(f'op {name!r} is not one of {ALL_OPS}.')
  return jnp.asarray([ALL_OPS.index(n) for n in names], jnp.int32)


def _int_param(level, maxval):
  return jnp.floor(level * maxval / 10.0)


def _channels_last(fn):
  """Applies `fn(v [H*W]) -> [H*W]` to each channel of an image [H, W, C]."""
  def run(img):
    h, w, c = img.shape
    return jax.vmap(fn, in_axes=1, out_axes=1)(img.reshape(h * w, c)).reshape(h, w, c)
  return run


def autocontrast(img: jax.Array) -> jax.Array:
  lo = jnp.min(img, axis=(0, 1))
  hi = jnp.max(img, axis=(0, 1))
  scale = 255.0 / jnp.maximum(hi - lo, 1.0)
  out = jnp.clip(jnp.floor((img - lo) * scale), 0.0, 255.0)
  return jnp.where(hi > lo, out, img)


def _equalize_channel(v: jax.Array) -> jax.Array:
  idx = v.astype(jnp.int32)
  hist = jnp.bincount(idx, length=256)
  last = hist[jnp.max(idx)]  # count of the highest level present (PIL: last non-zero bin)
  step = (v.shape[0] - last) // 255
  before = jnp.cumsum(hist) - hist  # pixels below each level
  lut = jnp.minimum((step // 2 + before) // jnp.maximum(step, 1), 255)
  return jnp.where(step > 0, lut[idx].astype(jnp.float32), v)


equalize = _channels_last(_equalize_channel)


def posterize(img: jax.Array, level: jax.Array) -> jax.Array:
  div = 2.0 ** (8 - (4 - _int_param(level, 4)))
  return jnp.floor(img / div) * div


def solarize(img: jax.Array, level: jax.Array) -> jax.Array:
  threshold = 256 - _int_param(level, 256)
  return jnp.where(img >= threshold, 255.0 - img, img)


def affine(img: jax.Array, matrix: jax.Array) -> jax.Array:
  """`Image.transform(AFFINE, matrix, BILINEAR)`: output `(x, y)` samples `M (x+.5, y+.5)`."""
  h, w, _ = img.shape
  a, b, c, d, e, f = (matrix[i] for i in range(6))
  ys = jnp.arange(h, dtype=jnp.float32)[:, None] + 0.5
  xs = jnp.arange(w, dtype=jnp.float32)[None, :] + 0.5
  xi, yi = a * xs + b * ys + c, d * xs + e * ys + f
  inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
  xf, yf = xi - 0.5, yi - 0.5
  x0, y0 = jnp.floor(xf), jnp.floor(yf)
  fx, fy = (xf - x0)[..., None], (yf - y0)[..., None]
  x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
  xa, xb = jnp.clip(x0, 0, w - 1), jnp.clip(x0 + 1, 0, w - 1)
  ya, yb = jnp.clip(y0, 0, h - 1), jnp.clip(y0 + 1, 0, h - 1)
  top = img[ya, xa] * (1 - fx) + img[ya, xb] * fx
  bottom = img[yb, xa] * (1 - fx) + img[yb, xb] * fx
  value = top * (1 - fy) + bottom * fy
  return jnp.where(inside[..., None], jnp.floor(jnp.clip(value, 0.0, 255.0)), 0.0)


def rotate_matrix(degrees: jax.Array, h: int, w: int) -> jax.Array:
  """PIL `rotate(degrees)` about `(W/2, H/2)` as the inverse map of `affine`."""
  t = -jnp.deg2rad(degrees)
  cos, sin = jnp.cos(t), jnp.sin(t)
  cx, cy = w / 2.0, h / 2.0
  return jnp.stack([cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy])


def grey(img: jax.Array) -> jax.Array:
  """PIL `convert('L')` ([H, W, 1]): ITU-R 601-2 luma in 16-bit fixed point."""
  if img.shape[-1] != 3:
    return jnp.floor(jnp.mean(img, axis=-1, keepdims=True) + 0.5)
  r, g, b = (img[..., i].astype(jnp.int32) for i in range(3))
  return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16)[..., None].astype(jnp.float32)


def smooth(img: jax.Array) -> jax.Array:
  """PIL `ImageFilter.SMOOTH` (3x3 kernel [1 1 1; 1 5 1; 1 1 1] / 13), borders kept."""
  h, w, _ = img.shape
  p = jnp.pad(img, ((1, 1), (1, 1), (0, 0)))
  total = sum(p[i:i + h, j:j + w] for i in range(3) for j in range(3)) + 4.0 * img
  out = jnp.floor(jnp.clip(total / 13.0 + 0.5, 0.0, 255.0))
  rows, cols = jnp.arange(h)[:, None, None], jnp.arange(w)[None, :, None]
  border = (rows == 0) | (rows == h - 1) | (cols == 0) | (cols == w - 1)
  return jnp.where(border, img, out)


def blend(degenerate: jax.Array, img: jax.Array, factor: jax.Array) -> jax.Array:
  """PIL `Image.blend(degenerate, img, factor)`, truncated to [0, 255]."""
  return jnp.floor(jnp.clip(degenerate + factor * (img - degenerate), 0.0, 255.0))


def op_step(img: jax.Array, op: jax.Array, level: jax.Array, sign: jax.Array) -> jax.Array:
  """Applies op `ALL_OPS[op]` at `level` (sign +-1 for the geometric ops) to one image.

  Args:
    img: [H, W, C] integer-valued float32 in [0, 255].
    op: int32 [] index into `ALL_OPS`.
    level: float32 [] magnitude in [0.1, severity).
    sign: float32 [] +1 or -1.

  Returns:
    [H, W, C] integer-valued float32 in [0, 255].
  """
  h, w, _ = img.shape
  one, zero = jnp.float32(1), jnp.float32(0)
  shear = sign * level * 0.3 / 10.0
  # The five geometric ops share one warp (matrix picked by `op`), the four enhance ops one
  # blend (degenerate image picked by `op`): 8 branches to trace and compile, not 15.
  warp_matrices = jnp.stack([
      rotate_matrix(sign * _int_param(level, 30), h, w),
      jnp.stack([one, shear, zero, zero, one, zero]),
      jnp.stack([one, zero, zero, shear, one, zero]),
      jnp.stack([one, zero, sign * _int_param(level, w / 3), zero, one, zero]),
      jnp.stack([one, zero, zero, zero, one, sign * _int_param(level, h / 3)]),
  ])
  warp_index = jnp.clip(jnp.where(op == 3, 0, op - 4), 0, 4)  # rotate, shear_x, ..., translate_y

  def enhance(im):
    g = grey(im)
    degenerate = jnp.stack([
        jnp.broadcast_to(g, im.shape),                           # color
        jnp.full_like(im, jnp.floor(jnp.mean(g) + 0.5)),          # contrast
        jnp.zeros_like(im),                                      # brightness
        smooth(im),                                              # sharpness
    ])[jnp.clip(op - 9, 0, 3)]
    return blend(degenerate, im, level * 1.8 / 10.0 + 0.1)

  branches = [
      autocontrast,
      equalize,
      lambda im: posterize(im, level),
      lambda im: solarize(im, level),
      lambda im: affine(im, warp_matrices[warp_index]),
      enhance,
      lambda im: im[:, ::-1],
      lambda im: 255.0 - im,
  ]
  return jax.lax.switch(_BRANCH[op], branches, img.astype(jnp.float32))


def sample_ops(key: jax.Array, shape: Sequence[int], names: Sequence[str],
               severity: float) -> dict[str, jax.Array]:
  """Uniform op draws from the list `names`: `{'op': int32 (ALL_OPS index), 'level', 'sign'}`."""
  op_key, level_key, sign_key = jax.random.split(key, 3)
  which = jax.random.randint(op_key, tuple(shape), 0, len(names))
  return {
      'op': op_indices(names)[which],
      'level': jax.random.uniform(level_key, tuple(shape), jnp.float32, 0.1, severity),
      'sign': jnp.where(jax.random.bernoulli(sign_key, 0.5, tuple(shape)), 1.0, -1.0),
  }
