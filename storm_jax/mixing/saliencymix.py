"""SaliencyMix (Uddin et al., ICLR 2021): a CutMix box centred on the partner's saliency peak.

The reference (docs/DESIGN.md#saliencymix), per batch: `lam ~ Beta(alpha, alpha)`, a random
permutation `perm`, the fine-grained static saliency map (OpenCV `StaticSaliencyFineGrained`) of
ONE image, `x[perm[0]]`, and its first maximum `(r, c)` in row-major order; every sample gets the
same CutMix box `[r - cut_h // 2, r + cut_h // 2) x [c - cut_w // 2, c + cut_w // 2)` (clipped,
`cut = floor(size * sqrt(1 - lam))`) filled from its partner; the label weight is the anchor's
realised pixel share `1 - box_area / (H W)`.

The released code computes that saliency on the mean/std-normalised float image, which OpenCV's
8-bit code path misreads: its "peak" is a pseudo-random, top-biased pixel, so the published
SaliencyMix numbers come from a CutMix variant with one random centre per batch. Here
`centre='saliency'` (default) uses the saliency of the de-normalised uint8 image, as the paper
intends, and `centre='uniform'` draws the centre uniformly (what the reference effectively did);
`box='example'` gives every sample the box around its own partner's peak.

`fine_grained_saliency(images)` is OpenCV's fine-grained saliency of uint8 images in pure JAX,
bit-exact given OpenCV's grey image (docs/DESIGN.md#fine-grained-saliency). The trainer computes
it from the uint8 batch and passes it to `sample(key, shape, saliency=...)`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from storm_jax.mixing import base
from storm_jax.mixing.cutmix import apply as cutmix_apply
from storm_jax.mixing.cutmix import sample_centre

CENTRES = ('saliency', 'uniform')
BOXES = ('batch', 'example')
# Half-sizes of the centre-surround windows (OpenCV's `neighborhoods`).
_WINDOWS = (12, 24, 48, 28, 56, 112)


def _grey(images: jax.Array) -> jax.Array:
  """OpenCV `cvtColor(BGR2GRAY)` on uint8 (14-bit fixed point), or the single channel.

  Channel 0 gets the blue weight: the reference hands RGB arrays to this BGR conversion.
  """
  c = images.astype(jnp.int32)
  if images.shape[-1] == 1:
    return c[..., 0]
  return (1868 * c[..., 0] + 9617 * c[..., 1] + 4899 * c[..., 2] + (1 << 13)) >> 14


def _blur(g: jax.Array) -> jax.Array:
  """OpenCV's 3x3 `GaussianBlur` (sigma 0) on uint8: [1, 2, 1] / 4 per axis, reflect-101."""
  p = jnp.pad(g, ((0, 0), (1, 1), (1, 1)), mode='reflect')
  v = p[:, :-2] + 2 * p[:, 1:-1] + p[:, 2:]
  s = v[:, :, :-2] + 2 * v[:, :, 1:-1] + v[:, :, 2:]
  return (s + 8) >> 4


def _scale_255(v: jax.Array, vmax: jax.Array) -> jax.Array:
  """`(uchar)(255. * (float)(v / (float)vmax))` for integers `0 <= v <= vmax`, exactly.

  The float32 quotient is within 2^-24 of `v / vmax`, so the truncated (exact, double)
  product is `255 v // vmax` unless `255 v / vmax` is an integer k and float32 `k / 255` rounds
  down, which happens for no k in 0..255 (checked in the tests). Integer arithmetic also keeps
  XLA from rewriting a division as a multiplication by the reciprocal (not the same float).
  """
  return (255 * v) // jnp.maximum(vmax, 1)  # A constant image: OpenCV's 0 / 0 ends up as 0.


def _window_sums(integral: jax.Array) -> jax.Array:
  """Sums over rows `[y - n + 1, y + n + 1)` x cols alike (clamped), n in `_WINDOWS`.

  From the `[B, H + 1, W + 1]` integral image: row differences first (`[B, 6 H, W + 1]`, one
  take of whole rows), then column differences; static indices. Returns int32 `[B, 6, H, W]`.
  """
  batch, h1, w1 = integral.shape
  height, width = h1 - 1, w1 - 1
  n = np.asarray(_WINDOWS)[:, None]
  y1, y2 = np.clip(np.arange(height) - n + 1, 0, height), np.clip(np.arange(height) + n + 1, 0,
                                                                     height)
  x1, x2 = np.clip(np.arange(width) - n + 1, 0, width), np.clip(np.arange(width) + n + 1, 0,
                                                                  width)
  rows = jnp.take(integral, y2.reshape(-1), axis=1) - jnp.take(integral, y1.reshape(-1), axis=1)
  rows = rows.reshape(batch, len(_WINDOWS), height, w1)
  return jnp.stack([jnp.take(rows[:, i], x2[i], axis=2) - jnp.take(rows[:, i], x1[i], axis=2)
                    for i in range(len(_WINDOWS))], axis=1)


def _floor_div(num: jax.Array, den: np.ndarray) -> jax.Array:
  """`num // den` for int32 `|num| < 2^24` and a constant `den >= 1`, exactly.

  A float32 multiply by `1 / den` is within one of the floor; integer checks fix it (integer
  division is several times slower on CPU).
  """
  q = jnp.floor(num.astype(jnp.float32) * (1.0 / den).astype(np.float32)).astype(jnp.int32)
  q = q - (q * den > num)
  return q + ((q + 1) * den <= num)


def fine_grained_saliency(images: jax.Array) -> jax.Array:
  """OpenCV's `StaticSaliencyFineGrained` map of uint8 images, in pure JAX.

  grey (`cvtColor`), two 3x3 Gaussian blurs, then for six window half-sizes n the window rows
  `[y - n + 1, y + n + 1)` and columns likewise (clamped to the image) give the surround mean
  `mu = (window_sum - g) / (area - 1)`; `on = trunc(g - mu)` where positive, `off = trunc(mu - g)` where positive, summed over
  the windows, each scaled to 0..255 by its image maximum, and `S = (on + off) * 255 /
  max(max on, max off)`, truncated and wrapped to 8 bits as OpenCV's cast does. A constant
  image gives zeros (OpenCV divides 0 by 0 there).

  Args:
    images: `[B, H, W, C]` uint8 (or integer-valued) images, C = 3 (read as OpenCV reads them,
      channel 0 as blue) or C = 1 (already grey).

  Returns:
    int32 `[B, H, W]` saliency in 0..255 (OpenCV >= 3.4 returns this divided by 255).

  Raises:
    ValueError: images not `[B, H, W, 1 or 3]`.
  """
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f'images.shape={images.shape} must be [B, H, W, C] with C in (1, 3).')
  _, height, width, _ = images.shape
  g = _blur(_blur(_grey(images)))
  # Window sums from the integral image, exactly in int32. OpenCV's float32 integral gives
  # the same sums while they stay below 2^24 (any image with H W <= 32768 pixels).
  integral = jnp.pad(jnp.cumsum(jnp.cumsum(g, axis=1), axis=2), ((0, 0), (1, 0), (1, 0)))
  window = _window_sums(integral)  # [B, 6, H, W]
  n = np.asarray(_WINDOWS)[:, None]
  rows = (np.clip(np.arange(height) + n + 1, 0, height) -
          np.clip(np.arange(height) - n + 1, 0, height))[:, :, None]  # [6, H, 1]
  cols = (np.clip(np.arange(width) + n + 1, 0, width) -
          np.clip(np.arange(width) - n + 1, 0, width))[:, None, :]    # [6, 1, W]
  # OpenCV: mu = float32((window - g) / (area - 1)), on = trunc(g - mu) where > 0. When mu is
  # an integer the float ops are exact; otherwise g - mu is at least 1 / (area - 1) from any
  # integer, more than the float32 error, so the floors below (in integers) are OpenCV's.
  d = np.maximum(rows * cols - 1, 1).astype(np.int32)  # area - 1: [6, H, W]
  excess = g[:, None] * (d + 1) - window  # (g - mu) (area - 1), an integer
  on = jnp.maximum(_floor_div(excess, d), 0).sum(1)
  off = jnp.maximum(_floor_div(-excess, d), 0).sum(1)
  image_max = lambda a: jnp.max(a, axis=(1, 2), keepdims=True)
  on8 = _scale_255(on, image_max(on))
  off8 = _scale_255(off, image_max(off))
  top = jnp.maximum(image_max(on8), image_max(off8))
  return jnp.where(top > 0, (255 * (on8 + off8)) // jnp.maximum(top, 1), 0) % 256


def saliency_peak(saliency: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Row and column of the first maximum (row-major, as `np.argmax`) of `[..., H, W]` maps."""
  width = saliency.shape[-1]
  flat = jnp.argmax(saliency.reshape(*saliency.shape[:-2], -1), axis=-1).astype(jnp.int32)
  return flat // width, flat % width


def sample(key: jax.Array, shape: Sequence[int], saliency: jax.Array | None = None, *,
           alpha: float, pairing: str, centre: str, box: str) -> dict[str, jax.Array]:
  """Draws SaliencyMix's quantities for a batch of static `shape = (B, H, W, C)`.

  Args:
    key: a `jax.random.key`.
    shape: the static image-batch shape `(B, H, W, C)`.
    saliency: `[B, H, W]` saliency maps of the batch (`fine_grained_saliency` of the uint8
      images); required with `centre='saliency'`, where only `saliency[perm[0]]` is read with
      `box='batch'`, `saliency[perm]` with `box='example'`.
    alpha: Beta concentration.
    pairing: `'perm'`, `'flip'` or `'roll'`.
    centre: `'saliency'` (peak of the partner's map) or `'uniform'` (uniform integer pixel).
    box: `'batch'` (one box from the partner of sample 0, the reference) or `'example'`.

  Returns:
    `{'lam': float32 [] or [B], 'cy', 'cx': int32 [] or [B], 'perm': int32 [B]}`.
  """
  batch_size, height, width, _ = shape
  lam_key, centre_key, perm_key = jax.random.split(key, 3)
  draw_shape = () if box == 'batch' else (batch_size,)
  perm = base.partner(perm_key, batch_size, pairing)
  if centre == 'uniform':
    cy, cx = sample_centre(centre_key, height, width, draw_shape)
  else:
    if saliency is None or saliency.shape != (batch_size, height, width):
      raise ValueError(f'saliency={None if saliency is None else saliency.shape} must be '
                       f'[B, H, W] = {(batch_size, height, width)} with centre="saliency".')
    cy, cx = saliency_peak(saliency[perm[0]] if box == 'batch' else saliency[perm])
  return {'lam': base.beta(lam_key, alpha, draw_shape), 'cy': cy, 'cx': cx, 'perm': perm}


def apply(params: dict[str, jax.Array], x: jax.Array,
          y: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Pastes the box around `(cy, cx)` from each sample's partner; label = realised share.

  The box is placed as CutMix's (`cutmix.apply`, realised-area labels); only where its centre
  comes from differs (the saliency peak, drawn in `sample`).

  Args:
    params: `{'lam', 'cy', 'cx'}` each `[]` or `[B]`, and `'perm': int [B]`.
    x: `[B, H, W, C]` images.
    y: `[B, N]` float32 soft labels.

  Returns:
    `(x_mix [B, H, W, C] float32, y_mix [B, N] float32)`.
  """
  return cutmix_apply(params, x, y, correct_lam=True)


@base.register('saliencymix')
def make(*, alpha: float = 1.0, pairing: str = 'perm', centre: str = 'saliency',
         box: str = 'batch') -> base.Mixer:
  """SaliencyMix with `lam ~ Beta(alpha, alpha)`; see `saliencymix`."""
  base.check_positive('alpha', alpha)
  base.check_choice('pairing', pairing, base.PAIRINGS)
  base.check_choice('centre', centre, CENTRES)
  base.check_choice('box', box, BOXES)
  hp = dict(alpha=float(alpha), pairing=pairing, centre=centre, box=box)
  return base.Mixer('saliencymix', hp, functools.partial(sample, **hp), apply,
                    needs_saliency=centre == 'saliency', saliency_kind='fine_grained')


def saliencymix(key: jax.Array, x: jax.Array, y: jax.Array, *,
                saliency: jax.Array | None = None, **hparams) -> tuple[jax.Array, jax.Array]:
  """SaliencyMix: a CutMix box centred on the saliency peak of the partner image.

  `lam ~ Beta(alpha, alpha)`; box side `floor(size * sqrt(1 - lam))` centred at the first
  maximum of `saliency[perm[0]]` (one box for the batch) and clipped; box pixels from
  `x[perm[b]]`; label `lam' y[b] + (1 - lam') y[perm[b]]` with `lam' = 1 - box_area / (H W)`.

  Args:
    key: a `jax.random.key`.
    x: `[B, H, W, C]` float images (normalised; the saliency comes from the uint8 images).
    y: `[B, N]` float32 soft labels.
    saliency: `[B, H, W]`, `fine_grained_saliency(uint8_images)`; needed unless
      `centre='uniform'`.
    **hparams: `alpha=1.0`, `pairing='perm'`, `centre='saliency'` (`'uniform'`: a uniform
      centre, what the released code effectively used), `box='batch'` (`'example'`: one box
      per sample from its own partner's peak), plus the shared `prob=1.0` (the reference uses
      0.5 on CIFAR, 1.0 on ImageNet) and `label_smoothing=0.0`.

  Returns:
    `(x_mix [B, H, W, C] in x.dtype, y_mix [B, N] float32)`.

  Raises:
    ValueError: a bad hyper-parameter, or no saliency with `centre='saliency'`.

  References:
    Uddin, Monira, Shin, Chung, Bae, "SaliencyMix: A Saliency Guided Data Augmentation
    Strategy for Better Regularization", ICLR 2021; afm-shahab-uddin/SaliencyMix.
  """
  mixer = base.get('saliencymix', **hparams)
  kw = {'saliency': saliency} if mixer.needs_saliency else {}
  return mixer(key, x, y, **kw)
