"""AugMix (Hendrycks et al., 2020): chains of label-preserving augmentations, mixed convexly.

Per example and per view (docs/DESIGN.md#augmix):

  w ~ Dirichlet(alpha 1_width),  m ~ Beta(alpha, alpha)
  chain_i = op_{i,d_i}(... op_{i,1}(x)),  d_i ~ U{1, 2, 3} (depth=-1) or d_i = depth
  x_aug = (1 - m) x + m sum_i w_i chain_i

with each op drawn uniformly, with replacement, from the op list and its magnitude
`level ~ U(0.1, severity)` drawn per call, as the reference `augmentations.py`. The default list
leaves out color / contrast / brightness / sharpness, which overlap the CIFAR-C / ImageNet-C test
corruptions; `all_ops=True` adds them (PixMix's recipe).

Value range. The ops are PIL's uint8 operations, so the op works in pixel space: `x` holds values
in [0, 255] (the input pipeline's uint8 batch, converted to float32 BEFORE the mixer since
`Mixer.apply` keeps `x.dtype`) and the output is float32 in [0, 255]. The trainer calls it before
`normalize` (`Mixer.needs_pixels`); the mix is convex, so normalising afterwards equals the
reference's mixing in normalised space. Every intermediate chain image is integer-valued, as PIL's.

How the ops run on an accelerator. Every op is a per-channel look-up table (autocontrast,
equalize, posterize, solarize), an affine inverse warp with PIL's bilinear rule (rotate, shear,
translate) or a blend with a "degenerate" image (the enhance ops). A chain step applies all three
stages, with the two it does not use set to their exact identities (identity LUT, identity
matrix, blend factor 1), so one step is three passes over the image whichever op was drawn,
instead of the 9-13 branches `lax.switch` evaluates under `vmap`. Steps beyond a chain's depth
use the identity op.

Parity with PIL (tested op by op): the LUT ops are exact, except autocontrast at exact-integer
points of `(v - lo) 255 / (hi - lo)`, where PIL's float64 arithmetic lands one level lower on
~0.4% of (lo, hi, v) triples and we keep the exact value; the warps and the blends are computed
in float32 against PIL's float64 and truncated as PIL does, so a few pixels differ by one level.

The same ops, plus IPMix's `mirror` and `invert` (`OP_NAMES`), serve PixMix and IPMix
(`op_indices`, `sample_ops` draw from a method's list; docs/DESIGN.md#pixmix-ops).

With `jsd=True` the mixer returns `[x; aug_1; aug_2]` (3B rows, k-major: row `k * B + b`) and
the labels three times; the training objective is then `losses.consistency_objective`
(cross-entropy on the clean view + `jsd_weight` x Jensen-Shannon divergence of the three views).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from storm_jax.mixing import base

# Reference order (`augmentations.augmentations` / `augmentations_all`).
OPS = ('autocontrast', 'equalize', 'posterize', 'rotate', 'solarize', 'shear_x', 'shear_y',
       'translate_x', 'translate_y')
ENHANCE_OPS = ('color', 'contrast', 'brightness', 'sharpness')
ALL_OPS = OPS + ENHANCE_OPS
# The op set PixMix and IPMix draw from too (docs/DESIGN.md#pixmix-ops): AugMix's ops, then
# IPMix's two extra ones (PIL `ImageOps.mirror`, `ImageOps.invert`). An op index is a position
# in `OP_NAMES`; a method draws from its own list through `op_indices`.
EXTRA_OPS = ('mirror', 'invert')
OP_NAMES = ALL_OPS + EXTRA_OPS
IPMIX_OPS = ('equalize', 'posterize', 'rotate', 'solarize', 'shear_x', 'shear_y',
             'translate_x', 'translate_y', 'mirror', 'invert')  # IPMix's `augmentations`
MAX_DEPTH = 3  # depth=-1 draws U{1, 2, 3}.
IDENTITY = len(OP_NAMES)  # op index of a no-op step (beyond a chain's depth).

# Which table / matrix / degenerate image each op index uses (slot 0 = identity).
_LUT_SLOT = jnp.array([1, 2, 3, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0], jnp.int32)
_WARP_SLOT = jnp.array([0, 0, 0, 1, 0, 2, 3, 4, 5, 0, 0, 0, 0, 6, 0, 0], jnp.int32)
_BLEND_SLOT = jnp.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 0, 0, 0], jnp.int32)


def op_indices(names: Sequence[str]) -> jax.Array:
  """int32 indices into `OP_NAMES` of the named ops (a method's op list)."""
  for name in names:
    if name not in OP_NAMES:
      raise ValueError(f'op {name!r} is not one of {OP_NAMES}.')
  return jnp.asarray([OP_NAMES.index(n) for n in names], jnp.int32)


def sample_ops(key: jax.Array, shape: Sequence[int], names: Sequence[str],
               severity: float) -> dict[str, jax.Array]:
  """Uniform op draws from the list `names`, as the references' `np.random.choice(ops)`.

  Returns:
    `{'op': int32 (`OP_NAMES` index), 'level': float32 in [0.1, severity), 'sign': float32
    +-1}`, each of `shape`.
  """
  op_key, level_key, sign_key = jax.random.split(key, 3)
  which = jax.random.randint(op_key, tuple(shape), 0, len(names))
  return {
      'op': op_indices(names)[which],
      'level': jax.random.uniform(level_key, tuple(shape), jnp.float32, 0.1, severity),
      'sign': jnp.where(jax.random.bernoulli(sign_key, 0.5, tuple(shape)), 1.0, -1.0),
  }


# --------------------------------------------------------------------------------------
# The operations, on one integer-valued float32 image [H, W, C] in [0, 255].
# --------------------------------------------------------------------------------------


def histogram(img: jax.Array) -> jax.Array:
  """Per-channel 256-bin histograms: int32 [C, 256] of an integer-valued image [H, W, C]."""
  idx = img.astype(jnp.int32).reshape(-1, img.shape[-1])
  return jax.vmap(lambda v: jnp.bincount(v, length=256), in_axes=1)(idx)


def autocontrast_lut(hist: jax.Array) -> jax.Array:
  """PIL `ImageOps.autocontrast` (cutoff 0): stretch each channel's [lo, hi] onto [0, 255].

  `lut[v] = clip(floor((v - lo) 255 / (hi - lo)), 0, 255)` in exact integer arithmetic; the
  identity when a channel has one value. Returns float32 [C, 256].
  """
  levels = jnp.arange(256, dtype=jnp.int32)
  present = hist > 0
  lo = jnp.argmax(present, axis=-1)[:, None]
  hi = (255 - jnp.argmax(present[:, ::-1], axis=-1))[:, None]
  span = jnp.maximum(hi - lo, 1)
  stretched = jnp.clip(jnp.floor_divide((levels - lo) * 255, span), 0, 255)
  return jnp.where(hi > lo, stretched, levels).astype(jnp.float32)


def equalize_lut(hist: jax.Array) -> jax.Array:
  """PIL `ImageOps.equalize`: per channel, `lut[v] = (step // 2 + #{pixels < v}) // step`.

  `step = (N - count of the brightest present value) // 255`; the identity when a channel has
  fewer than two values or `step == 0`. Returns float32 [C, 256] (clipped to 255 as PIL's LUT).
  """
  levels = jnp.arange(256, dtype=jnp.int32)
  present = hist > 0
  last = 255 - jnp.argmax(present[:, ::-1], axis=-1)
  total = jnp.sum(hist, axis=-1)
  step = (total - jnp.take_along_axis(hist, last[:, None], axis=-1)[:, 0]) // 255
  below = jnp.cumsum(hist, axis=-1) - hist  # pixels strictly darker than v
  safe = jnp.maximum(step, 1)[:, None]
  lut = jnp.clip((safe // 2 + below) // safe, 0, 255)
  keep = (jnp.sum(present, axis=-1) <= 1) | (step == 0)
  return jnp.where(keep[:, None], levels, lut).astype(jnp.float32)


def posterize_lut(bits: jax.Array, channels: int) -> jax.Array:
  """PIL `ImageOps.posterize`: keep the `bits` high bits (0 bits -> black). float32 [C, 256]."""
  levels = jnp.arange(256, dtype=jnp.int32)
  drop = jnp.clip(8 - bits, 0, 8)
  lut = (levels >> drop) << drop
  return jnp.broadcast_to(lut, (channels, 256)).astype(jnp.float32)


def solarize_lut(threshold: jax.Array, channels: int) -> jax.Array:
  """PIL `ImageOps.solarize`: invert every value >= threshold. float32 [C, 256]."""
  levels = jnp.arange(256, dtype=jnp.int32)
  lut = jnp.where(levels < threshold, levels, 255 - levels)
  return jnp.broadcast_to(lut, (channels, 256)).astype(jnp.float32)


def apply_lut(img: jax.Array, lut: jax.Array) -> jax.Array:
  """`out[h, w, c] = lut[c, img[h, w, c]]` for an integer-valued image [H, W, C]."""
  channels = jnp.arange(img.shape[-1])
  return lut[channels, img.astype(jnp.int32)]


def rotate_matrix(degrees: jax.Array, height: int, width: int) -> jax.Array:
  """PIL `Image.rotate(degrees)` (counter-clockwise about (W/2, H/2)) as an inverse affine map.

  Returns the 6 coefficients `(a, b, c, d, e, f)`: output pixel centre `(x, y)` samples the
  input at `(a x + b y + c, d x + e y + f)`.
  """
  angle = -jnp.deg2rad(degrees.astype(jnp.float32))
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  cx, cy = width / 2.0, height / 2.0
  return jnp.stack([cos, sin, cx - cos * cx - sin * cy,
                    -sin, cos, cy + sin * cx - cos * cy])


def affine_warp(img: jax.Array, matrix: jax.Array) -> jax.Array:
  """PIL `Image.transform(size, AFFINE, matrix, BILINEAR)` with black fill, float32 math.

  Output pixel `(x, y)` (column, row) maps to `(xi, yi) = M (x + 0.5, y + 0.5)`; outside
  `[0, W) x [0, H)` it is 0, otherwise the bilinear interpolation at `(xi - 0.5, yi - 0.5)`
  with edge-clamped neighbours, truncated to an integer. The identity matrix returns `img`
  bit for bit.

  Args:
    img: [H, W, C] integer-valued float32.
    matrix: float32 [6].

  Returns:
    [H, W, C] integer-valued float32.
  """
  height, width, _ = img.shape
  a, b, c, d, e, f = (matrix[i] for i in range(6))
  ys = jnp.arange(height, dtype=jnp.float32)[:, None] + 0.5
  xs = jnp.arange(width, dtype=jnp.float32)[None, :] + 0.5
  xi = a * xs + b * ys + c
  yi = d * xs + e * ys + f
  inside = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
  xf, yf = xi - 0.5, yi - 0.5
  x0, y0 = jnp.floor(xf), jnp.floor(yf)
  dx, dy = (xf - x0)[..., None], (yf - y0)[..., None]
  x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
  cols = jnp.clip(x0, 0, width - 1), jnp.clip(x0 + 1, 0, width - 1)
  rows = jnp.clip(y0, 0, height - 1), jnp.clip(y0 + 1, 0, height - 1)
  top = img[rows[0], cols[0]] + (img[rows[0], cols[1]] - img[rows[0], cols[0]]) * dx
  bottom = img[rows[1], cols[0]] + (img[rows[1], cols[1]] - img[rows[1], cols[0]]) * dx
  value = top + (bottom - top) * dy
  return jnp.where(inside[..., None], jnp.floor(jnp.clip(value, 0.0, 255.0)), 0.0)


def grayscale(img: jax.Array) -> jax.Array:
  """PIL `convert('L')`: `(19595 R + 38470 G + 7471 B + 2^15) >> 16` ([H, W, 1] float32)."""
  if img.shape[-1] == 1:
    return img
  v = img.astype(jnp.int32)
  lum = (v[..., 0] * 19595 + v[..., 1] * 38470 + v[..., 2] * 7471 + 0x8000) >> 16
  return lum[..., None].astype(jnp.float32)


def smooth(img: jax.Array) -> jax.Array:
  """PIL `ImageFilter.SMOOTH` (3x3 kernel [1 1 1; 1 5 1; 1 1 1] / 13), border pixels kept."""
  height, width, _ = img.shape
  kernel = jnp.array([[1., 1., 1.], [1., 5., 1.], [1., 1., 1.]], jnp.float32) / 13.0
  padded = jnp.pad(img, ((1, 1), (1, 1), (0, 0)))
  total = sum(kernel[i, j] * padded[i:i + height, j:j + width]
              for i in range(3) for j in range(3))
  filtered = jnp.floor(jnp.clip(total + 0.5, 0.0, 255.0))
  rows = jnp.arange(height)[:, None, None]
  cols = jnp.arange(width)[None, :, None]
  border = (rows == 0) | (rows == height - 1) | (cols == 0) | (cols == width - 1)
  return jnp.where(border, img, filtered)


def blend(degenerate: jax.Array, img: jax.Array, factor: jax.Array) -> jax.Array:
  """PIL `Image.blend(degenerate, img, factor)` (`ImageEnhance`): truncated, clipped to uint8."""
  value = degenerate + factor * (img - degenerate)
  return jnp.floor(jnp.clip(value, 0.0, 255.0))


def op_step(img: jax.Array, op: jax.Array, level: jax.Array, sign: jax.Array, *,
            all_ops: bool) -> jax.Array:
  """One chain step: the op with index `op` (into `OP_NAMES`; `IDENTITY` = no-op) at `level`.

  Magnitudes as the reference `augmentations.py`, with `S` the image side for translations
  (W for translate_x, H for translate_y; the reference's IMAGE_SIZE on square images).
  IPMix's `invert` is a table (`255 - v`) and its `mirror` a warp (`x -> W - x`, exact).
  PixMix and IPMix call this op too (docs/DESIGN.md#pixmix-ops).

  Args:
    img: [H, W, C] integer-valued float32 in [0, 255].
    op: int32 [] op index.
    level: float32 [] in [0.1, severity).
    sign: float32 [] +-1 (geometric ops).
    all_ops: whether the enhance ops exist (static; skips the blend stage when False).

  Returns:
    [H, W, C] integer-valued float32.
  """
  height, width, channels = img.shape
  int_param = lambda maxval: jnp.floor(level * maxval / 10.0)  # reference `int_parameter`
  float_param = lambda maxval: level * maxval / 10.0
  # 1. Per-channel look-up tables.
  hist = histogram(img)
  luts = jnp.stack([
      jnp.broadcast_to(jnp.arange(256, dtype=jnp.float32), (channels, 256)),
      autocontrast_lut(hist),
      equalize_lut(hist),
      posterize_lut(4 - int_param(4).astype(jnp.int32), channels),
      solarize_lut(256 - int_param(256).astype(jnp.int32), channels),
      solarize_lut(jnp.int32(0), channels),  # invert
  ])
  img = apply_lut(img, luts[_LUT_SLOT[op]])
  # 2. Affine warps (inverse maps, PIL's `transform` data).
  one, zero = jnp.float32(1), jnp.float32(0)
  shear = sign * float_param(0.3)
  mats = jnp.stack([
      jnp.stack([one, zero, zero, zero, one, zero]),
      rotate_matrix(sign * int_param(30), height, width),
      jnp.stack([one, shear, zero, zero, one, zero]),
      jnp.stack([one, zero, zero, shear, one, zero]),
      jnp.stack([one, zero, sign * int_param(width / 3), zero, one, zero]),
      jnp.stack([one, zero, zero, zero, one, sign * int_param(height / 3)]),
      jnp.stack([-one, zero, jnp.float32(width), zero, one, zero]),  # mirror: exact
  ])
  img = affine_warp(img, mats[_WARP_SLOT[op]])
  if not all_ops:
    return img
  # 3. Enhance ops: blend with a degenerate image (factor 1 = identity for the others).
  gray = grayscale(img)
  mean = jnp.floor(jnp.mean(gray) + 0.5)
  degenerates = jnp.stack([
      img,
      jnp.broadcast_to(gray, img.shape),
      jnp.broadcast_to(mean, img.shape),
      jnp.zeros_like(img),
      smooth(img),
  ])
  slot = _BLEND_SLOT[op]
  factor = jnp.where(slot > 0, float_param(1.8) + 0.1, 1.0)
  return blend(degenerates[slot], img, factor)


def chain(img: jax.Array, ops: jax.Array, levels: jax.Array, signs: jax.Array,
          depth: jax.Array, *, all_ops: bool) -> jax.Array:
  """Applies the first `depth` of the drawn steps `ops[s]` to one image [H, W, C].

  A `lax.scan` over the steps, so the op is compiled once, not once per step.
  """
  def step(img, inputs):
    s, op, level, sign = inputs
    op = jnp.where(s < depth, op, IDENTITY)
    return op_step(img, op, level, sign, all_ops=all_ops), None

  steps = jnp.arange(ops.shape[-1])
  return jax.lax.scan(step, img, (steps, ops, levels, signs))[0]


# --------------------------------------------------------------------------------------
# sample / apply.
# --------------------------------------------------------------------------------------


def sample(key: jax.Array, shape: Sequence[int], *, width: int, depth: int, severity: float,
           alpha: float, all_ops: bool, jsd: bool) -> dict[str, jax.Array]:
  """Draws every random choice of AugMix for a batch of static `shape = (B, H, W, C)`.

  Returns:
    With V = 2 views if `jsd` else 1, S = 3 steps if `depth == -1` else `depth`:
    `{'weights': float32 [B, V, width] (Dirichlet), 'm': float32 [B, V] (Beta),
      'depth': int32 [B, V, width] in [1, S], 'ops': int32 [B, V, width, S] indices into
      ALL_OPS, 'levels': float32 [B, V, width, S] in [0.1, severity),
      'signs': float32 [B, V, width, S] in {-1, +1}}`.
  """
  batch_size = shape[0]
  lead = (batch_size, 2 if jsd else 1)
  steps = MAX_DEPTH if depth < 0 else depth
  n_ops = len(ALL_OPS) if all_ops else len(OPS)
  w_key, m_key, d_key, o_key, l_key, s_key = jax.random.split(key, 6)
  if depth < 0:
    depths = jax.random.randint(d_key, lead + (width,), 1, MAX_DEPTH + 1, dtype=jnp.int32)
  else:
    depths = jnp.full(lead + (width,), depth, jnp.int32)
  step_shape = lead + (width, steps)
  return {
      'weights': jax.random.dirichlet(w_key, jnp.full((width,), alpha, jnp.float32), lead),
      'm': base.beta(m_key, alpha, lead),
      'depth': depths,
      'ops': jax.random.randint(o_key, step_shape, 0, n_ops, dtype=jnp.int32),
      'levels': jax.random.uniform(l_key, step_shape, jnp.float32, 0.1, severity),
      'signs': jnp.where(jax.random.bernoulli(s_key, 0.5, step_shape), -1.0, 1.0),
  }


def augment(params: dict[str, jax.Array], x: jax.Array, *, all_ops: bool) -> jax.Array:
  """The AugMix views of `x`: float32 [V, B, H, W, C] (see `sample` for the params)."""
  x = x.astype(jnp.float32)
  pixels = jnp.clip(jnp.round(x), 0.0, 255.0)  # the integer image PIL would see
  run = functools.partial(chain, all_ops=all_ops)
  per_chain = jax.vmap(run, in_axes=(None, 0, 0, 0, 0))  # over the width chains
  per_view = jax.vmap(per_chain, in_axes=(None, 0, 0, 0, 0))  # over the views
  chains = jax.vmap(per_view)(pixels, params['ops'], params['levels'], params['signs'],
                              params['depth'])  # [B, V, width, H, W, C]
  mix = jnp.einsum('bvk,bvkhwc->bvhwc', params['weights'], chains,
                   precision=jax.lax.Precision.HIGHEST)
  m = params['m'][..., None, None, None]
  views = (1.0 - m) * x[:, None] + m * mix
  return jnp.moveaxis(views, 1, 0)


def apply(params: dict[str, jax.Array], x: jax.Array, y: jax.Array, *, all_ops: bool,
          jsd: bool) -> tuple[jax.Array, jax.Array]:
  """AugMix views; labels unchanged.

  Args:
    params: from `sample`.
    x: [B, H, W, C] float pixel values in [0, 255] (C = 1 or 3 when `all_ops`).
    y: [B, N] float32 soft labels.
    all_ops: include the enhance ops (static; must match `sample`).
    jsd: return `[x; aug_1; aug_2]` (3B rows, k-major) instead of one view (B rows).

  Returns:
    `(x_out [V' B, H, W, C] float32 in [0, 255], y_out [V' B, N])`, V' = 3 if jsd else 1.
  """
  if all_ops and x.shape[-1] not in (1, 3):
    raise ValueError(f'augmix all_ops=True needs C in (1, 3) channels (grayscale conversion); '
                     f'got x.shape={x.shape}.')
  views = augment(params, x, all_ops=all_ops)
  if not jsd:
    return views[0], y
  x_out = jnp.concatenate([x.astype(jnp.float32)[None], views]).reshape((-1,) + x.shape[1:])
  return x_out, jnp.tile(y, (3, 1))


@base.register('augmix')
def make(*, width: int = 3, depth: int = -1, severity: float = 3.0, alpha: float = 1.0,
         all_ops: bool = False, jsd: bool = True, jsd_weight: float = 12.0) -> base.Mixer:
  """AugMix; see the module docstring. CIFAR: severity 3; ImageNet: severity 1."""
  base.check_int('width', width)
  if isinstance(depth, bool) or not isinstance(depth, int) or not (depth == -1 or depth >= 1):
    raise ValueError(f'depth={depth!r} must be -1 (random in 1..3) or an integer >= 1.')
  if isinstance(severity, bool) or not isinstance(severity, (int, float)) or not (
      math.isfinite(severity) and 0.1 < severity <= 10):
    raise ValueError(f'severity={severity!r} must be a number in (0.1, 10].')
  base.check_positive('alpha', alpha)
  for name, flag in (('all_ops', all_ops), ('jsd', jsd)):
    if not isinstance(flag, bool):
      raise ValueError(f'{name}={flag!r} must be True or False.')
  if isinstance(jsd_weight, bool) or not isinstance(jsd_weight, (int, float)) or not (
      math.isfinite(jsd_weight) and jsd_weight >= 0):
    raise ValueError(f'jsd_weight={jsd_weight!r} must be a finite number >= 0.')
  hp = dict(width=width, depth=depth, severity=float(severity), alpha=float(alpha),
            all_ops=bool(all_ops), jsd=bool(jsd))
  return base.Mixer('augmix', {**hp, 'jsd_weight': float(jsd_weight)},
                    functools.partial(sample, **hp),
                    functools.partial(apply, all_ops=bool(all_ops), jsd=bool(jsd)),
                    multiplicity=3 if jsd else 1, needs_pixels=True,
                    consistency_weight=float(jsd_weight) if jsd else 0.0)


def augmix(key: jax.Array, x: jax.Array, y: jax.Array, **hparams) -> tuple[jax.Array, jax.Array]:
  """AugMix: `(1 - m) x + m sum_i w_i chain_i(x)` per example; labels unchanged.

  Args:
    key: a `jax.random.key`.
    x: `[B, H, W, C]` float32 pixel values in [0, 255] (un-normalised; convert uint8 first).
    y: `[B, N]` float32 soft labels.
    **hparams: `width=3` chains, `depth=-1` (ops per chain, -1: U{1, 2, 3}), `severity=3.0`
      (levels ~ U(0.1, severity); ImageNet uses 1), `alpha=1.0` (Dirichlet and Beta
      concentration), `all_ops=False` (add color/contrast/brightness/sharpness, which overlap
      the test corruptions), `jsd=True` (return clean + two views for the JSD objective),
      `jsd_weight=12.0`, plus the shared `prob` and `label_smoothing`.

  Returns:
    `(x_out, y_out)`: `[3B, ...]` (clean, view 1, view 2; k-major) with `jsd=True`, else one
    view `[B, ...]`; float32 pixel values in [0, 255]; labels repeated.

  References:
    Hendrycks, Mu, Cubuk, Zoph, Gilmer, Lakshminarayanan, "AugMix: A Simple Data Processing
    Method to Improve Robustness and Uncertainty", ICLR 2020; ops as google-research/augmix
    `augmentations.py`.
  """
  return base.get('augmix', **hparams)(key, x, y)
