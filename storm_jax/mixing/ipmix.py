"""IPMix (Huang et al., NeurIPS 2023): image-, patch- and pixel-level mixing in AugMix chains.

Per example and per view (docs/DESIGN.md#ipmix), with one mixing picture `p` per example:

  w ~ Dirichlet(alpha 1_width),  m ~ Beta(alpha, alpha)
  chain_i = n_i steps (n_i ~ U{0, ..., t}) of one kind, a fair coin per chain:
    'IMG': one op of IPMix's list (AugMix's without autocontrast, + mirror, invert), severity
    'P'  : a patch mixing with p: side s ~ U(patch_sizes); top-left (i, j) ~ U{0..H-s} x
           U{0..W-s}; a fair coin between the s x s square and a rectangle of height and width
           ~ U{2..s}; inside it, one of
             add / multiply (PixMix's, coefficients from `beta`),
             random_pixels: keep the image's pixel where u_hw < q, else p's (q ~ U(0, 1)),
             random_elems:  the same per channel (u_hwc < q);
           the patch is clipped to [0, 255] and truncated to integers (the reference pastes
           a uint8 patch)
  x_ipmix = (1 - m) x + m sum_i w_i chain_i

Labels are unchanged. With `jsd=True` (how the published numbers were trained) the mixer
returns `[x; view_1; view_2]` (3B rows, k-major) with the labels three times, and the objective
is cross-entropy on the clean view + `jsd_weight` x the Jensen-Shannon divergence of the three
(`Mixer.consistency_weight`). Both views use the example's same mixing picture, as the
reference. Mixing pictures come from `data.mixing_iterator` and are passed as
`sample(key, shape, mixing_pictures=[B, H, W, C])`.

Value range: pixel values in [0, 255] in and out (`Mixer.needs_pixels`); every chain image is
integer-valued, the convex mix is not.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from storm_jax.mixing import base
from storm_jax.mixing.augmix import IPMIX_OPS, op_step, sample_ops
from storm_jax.mixing.pixmix import add, check_flag, check_mixing_pictures, check_severity
from storm_jax.mixing.pixmix import multiply, sample_ab

MIXING_OPS = ('add', 'multiply', 'random_pixels', 'random_elems')


def patch_mix(img: jax.Array, picture: jax.Array, *, mix_op: jax.Array, top: jax.Array,
              left: jax.Array, height: jax.Array, width: jax.Array, a: jax.Array,
              b: jax.Array, q: jax.Array, noise: jax.Array) -> jax.Array:
  """One patch mixing of an integer-valued image [H, W, C] with its mixing picture.

  Args:
    img, picture: [H, W, C] float32 in [0, 255] (img integer-valued).
    mix_op: int32 [] index into `MIXING_OPS`.
    top, left, height, width: int32 [] the patch rows [top, top + height) and columns
      [left, left + width).
    a, b: float32 [] add / multiply coefficients.
    q: float32 [] keep-probability of random_pixels / random_elems.
    noise: [H, W, C] float32 in [0, 1) (random_pixels uses channel 0).

  Returns:
    [H, W, C] integer-valued float32: `img` outside the patch.
  """
  h, w, _ = img.shape
  u, v = img / 255.0, picture / 255.0
  mixed = jnp.stack([
      jnp.clip(add(u, v, a, b), 0.0, 1.0) * 255.0,
      jnp.clip(multiply(u, v, a, b), 0.0, 1.0) * 255.0,
      jnp.where(noise[..., :1] < q, img, picture),
      jnp.where(noise < q, img, picture),
  ])[mix_op]
  rows = jnp.arange(h)[:, None, None]
  cols = jnp.arange(w)[None, :, None]
  inside = (rows >= top) & (rows < top + height) & (cols >= left) & (cols < left + width)
  return jnp.where(inside, jnp.floor(mixed + 1e-4), img)


# Per-step and per-chain params (the rest: weights, m, mixing_pictures).
_STEP_KEYS = ('op', 'level', 'sign', 'mix_op', 'top', 'left', 'height', 'width', 'a', 'b',
              'q', 'noise')
_CHAIN_KEYS = ('patch', 'steps') + _STEP_KEYS


def chain(img: jax.Array, picture: jax.Array, p: dict[str, jax.Array]) -> jax.Array:
  """One IPMix chain of one image: `p['steps']` steps of kind 'P' or 'IMG' (`p['patch']`)."""
  def step(img, q):
    image_step = op_step(img, q['op'], q['level'], q['sign'], all_ops=False)
    patch_step = patch_mix(img, picture, mix_op=q['mix_op'], top=q['top'], left=q['left'],
                           height=q['height'], width=q['width'], a=q['a'], b=q['b'], q=q['q'],
                           noise=q['noise'])
    new = jnp.where(q['s'] < p['steps'], jnp.where(p['patch'], patch_step, image_step), img)
    return new, None

  # A scan, not an unrolled loop: one step to compile whatever max_steps is.
  per_step = {k: p[k] for k in _STEP_KEYS}
  per_step['s'] = jnp.arange(p['op'].shape[-1])
  return jax.lax.scan(step, img, per_step)[0]


def sample(key: jax.Array, shape: Sequence[int], *, mixing_pictures: jax.Array,
           width: int = 3, max_steps: int = 3, patch_sizes: Sequence[int] = (4, 8, 16, 32),
           beta: float = 3.0, severity: float = 3.0, alpha: float = 1.0,
           jsd: bool = True) -> dict[str, jax.Array]:
  """Draws every random choice of IPMix for a batch of static `shape = (B, H, W, C)`.

  Returns:
    With V = 2 views if `jsd` else 1, K = width, T = max_steps: `{'weights': [B, V, K]
    (Dirichlet), 'm': [B, V] (Beta), 'patch': bool [B, V, K] (chain kind 'P'), 'steps':
    int32 [B, V, K] in [0, T]}` and per step `[B, V, K, T]`: `'op', 'level', 'sign'` (IMG op,
    `augmix.OP_NAMES` index), `'mix_op'` (index into `MIXING_OPS`), `'top', 'left',
    'height', 'width'` (patch), `'a', 'b'` (add / multiply), `'q'` (random_* keep
    probability), `'noise'` float32 [B, V, K, T, H, W, C]; and `'mixing_pictures'`.
  """
  b, h, w, c = shape
  check_mixing_pictures(mixing_pictures, shape)
  _check_patch_sizes(patch_sizes, h, w)
  lead = (b, 2 if jsd else 1, width)
  steps = lead + (max_steps,)
  keys = iter(jax.random.split(key, 12))
  sizes = jnp.asarray(patch_sizes, jnp.int32)[
      jax.random.randint(next(keys), steps, 0, len(patch_sizes))]
  top = jax.random.randint(next(keys), steps, 0, h - sizes + 1, dtype=jnp.int32)
  left = jax.random.randint(next(keys), steps, 0, w - sizes + 1, dtype=jnp.int32)
  square = jax.random.bernoulli(next(keys), 0.5, steps)
  rect_h, rect_w = jax.random.randint(next(keys), (2,) + steps, 2, sizes + 1, dtype=jnp.int32)
  a, bb = sample_ab(next(keys), beta, steps)
  weights, m = _dirichlet_and_beta(next(keys), alpha, width, lead[:2])
  return {
      'weights': weights,
      'm': m,
      'patch': jax.random.bernoulli(next(keys), 0.5, lead),
      'steps': jax.random.randint(next(keys), lead, 0, max_steps + 1, dtype=jnp.int32),
      **sample_ops(next(keys), steps, IPMIX_OPS, severity),
      'mix_op': jax.random.randint(next(keys), steps, 0, len(MIXING_OPS), dtype=jnp.int32),
      'top': top,
      'left': left,
      'height': jnp.where(square, sizes, rect_h),
      'width': jnp.where(square, sizes, rect_w),
      'a': a,
      'b': bb,
      **_noise(next(keys), steps, (h, w, c)),
      'mixing_pictures': jax.lax.stop_gradient(mixing_pictures.astype(jnp.float32)),
  }


def _dirichlet_and_beta(key, alpha: float, width: int, shape):
  """`Dirichlet(alpha 1_width)` [*shape, width] and `Beta(alpha, alpha)` [*shape] draws.

  Both from one `loggamma` call of `width + 2` Gamma(alpha) variables, normalised in log space
  (as `base.beta`): one rejection-sampling loop to compile instead of three.
  """
  log_g = jax.random.loggamma(key, alpha, (width + 2, *shape), dtype=jnp.float32)
  w = jnp.exp(log_g[:width] - jnp.max(log_g[:width], axis=0))
  weights = jnp.moveaxis(w / jnp.sum(w, axis=0), 0, -1)
  g = jnp.exp(log_g[width:] - jnp.max(log_g[width:], axis=0))
  return weights, jnp.clip(g[0] / (g[0] + g[1]), 0.0, 1.0)


def _noise(key, steps, hwc):
  q_key, noise_key = jax.random.split(key)
  return {'q': jax.random.uniform(q_key, steps, jnp.float32),
          'noise': jax.random.uniform(noise_key, steps + hwc, jnp.float32)}


def views(params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
  """The IPMix views of `x`: float32 [V, B, H, W, C] in [0, 255]."""
  x = x.astype(jnp.float32)
  orig = jnp.clip(jnp.round(x), 0.0, 255.0)
  chain_params = {k: params[k] for k in _CHAIN_KEYS}
  run = jax.vmap(chain, in_axes=(None, None, 0))        # over chains
  run = jax.vmap(run, in_axes=(None, None, 0))          # over views
  run = jax.vmap(run)                                   # over the batch
  chains = run(orig, params['mixing_pictures'], chain_params)  # [B, V, K, H, W, C]
  mix = jnp.einsum('bvk,bvkhwc->bvhwc', params['weights'], chains,
                   precision=jax.lax.Precision.HIGHEST)
  m = params['m'][..., None, None, None]
  out = (1.0 - m) * x[:, None] + m * mix
  return jnp.moveaxis(out, 1, 0)


def apply(params: dict[str, jax.Array], x: jax.Array, y: jax.Array, *,
          jsd: bool = True) -> tuple[jax.Array, jax.Array]:
  """IPMix with the drawn params; labels unchanged.

  Args:
    params: from `sample` (with the same `jsd`).
    x: [B, H, W, C] float pixel values in [0, 255].
    y: [B, N] float32 soft labels.
    jsd: return `[x; view_1; view_2]` (3B rows, k-major) instead of one view.

  Returns:
    `(x_out [V' B, H, W, C] float32 in [0, 255], y_out [V' B, N])`, V' = 3 if jsd else 1.
  """
  v = views(params, x)
  if not jsd:
    return v[0], y
  x_out = jnp.concatenate([x.astype(jnp.float32)[None], v]).reshape((-1,) + x.shape[1:])
  return x_out, jnp.tile(y, (3, 1))


def _check_patch_sizes(patch_sizes, h: int | None = None, w: int | None = None) -> None:
  if isinstance(patch_sizes, int) or not isinstance(patch_sizes, Sequence) or not patch_sizes \
      or any(isinstance(s, bool) or not isinstance(s, int) or s < 2 for s in patch_sizes):
    raise ValueError(f'patch_sizes={patch_sizes!r} must be a non-empty sequence of integers '
                     '>= 2.')
  if h is not None and max(patch_sizes) > min(h, w):
    raise ValueError(f'patch_sizes={tuple(patch_sizes)!r}: every patch side must fit the '
                     f'image height H={h} and width W={w}.')


@base.register('ipmix')
def make(*, width: int = 3, max_steps: int = 3, patch_sizes: Sequence[int] = (4, 8, 16, 32),
         beta: float = 3.0, severity: float = 3.0, alpha: float = 1.0, jsd: bool = True,
         jsd_weight: float = 12.0) -> base.Mixer:
  """IPMix; `sample` needs `mixing_pictures=[B, H, W, C]`; pixel-space input (see module).

  Args:
    width: chains per view (reference `--k` 3).
    max_steps: steps per chain ~ U{0..max_steps} (reference `--t` 3).
    patch_sizes: patch sides to draw from (CIFAR reference (4, 8, 16, 32)).
    beta: add / multiply coefficient concentration (reference 3).
    severity: IMG op levels ~ U(0.1, severity) (reference 3).
    alpha: Dirichlet / Beta concentration of the chain weights and m (reference 1).
    jsd: three views and the JSD objective (the published numbers); False: one view, CE.
    jsd_weight: weight of the JS term (reference 12).
  """
  base.check_int('width', width)
  base.check_int('max_steps', max_steps)
  _check_patch_sizes(patch_sizes)
  base.check_positive('beta', beta)
  check_severity(severity)
  base.check_positive('alpha', alpha)
  check_flag('jsd', jsd)
  if isinstance(jsd_weight, bool) or not isinstance(jsd_weight, (int, float)) or not (
      math.isfinite(jsd_weight) and jsd_weight >= 0):
    raise ValueError(f'jsd_weight={jsd_weight!r} must be a finite number >= 0.')
  hp = dict(width=width, max_steps=max_steps, patch_sizes=tuple(patch_sizes), beta=float(beta),
            severity=float(severity), alpha=float(alpha), jsd=jsd)
  return base.Mixer('ipmix', {**hp, 'jsd_weight': float(jsd_weight)},
                    functools.partial(sample, **hp), functools.partial(apply, jsd=jsd),
                    multiplicity=3 if jsd else 1, needs_pixels=True,
                    consistency_weight=float(jsd_weight) if jsd else 0.0,
                    needs_mixing_pictures=True)


def ipmix(key: jax.Array, x: jax.Array, y: jax.Array, mixing_pictures: jax.Array,
          **hparams) -> tuple[jax.Array, jax.Array]:
  """IPMix: AugMix-style chains of image ops and patch / pixel mixings with a mixing picture.

  Args:
    key: PRNG key.
    x: `[B, H, W, C]` float32 pixel values in [0, 255] (un-normalised).
    y: `[B, N]` soft labels.
    mixing_pictures: `[B, H, W, C]` pixel values in [0, 255], one per example.
    **hparams: `width=3, max_steps=3, patch_sizes=(4, 8, 16, 32), beta=3.0, severity=3.0,
      alpha=1.0, jsd=True, jsd_weight=12.0`, plus the shared `prob` and `label_smoothing`.

  Returns:
    `(x_out, y_out)`: `[3B, ...]` (clean, view 1, view 2; k-major) with `jsd=True`, else one
    view `[B, ...]`; pixel values in [0, 255]; labels repeated. With jsd, train on CE of the
    clean view + jsd_weight x JS of the three views.

  Follows the reference (hzlsaber/IPMix `cifar.py`, `IPMix_utils.py`) except that a mixed
  patch is clipped to [0, 1] before it is stored as uint8 (the reference's float-to-uint8
  conversion wraps out-of-range values around).

  References:
    Huang, Bao, Zhang, Zhang, Tu, Wu, Yang, "IPMix: Label-Preserving Data Augmentation Method
    for Training Robust Classifiers", NeurIPS 2023.
  """
  return base.get('ipmix', **hparams)(key, x, y, mixing_pictures=mixing_pictures)
