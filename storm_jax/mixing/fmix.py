"""FMix (Harris et al., 2020): a binarised low-frequency Fourier mask of mean λ.

Per batch (docs/DESIGN.md#fmix): `lam ~ Beta(alpha, alpha)`; a random spectrum over the
`[H, W // 2 + 1]` real-FFT bins, each bin `a(f) (n1 + i n2)` with `n1, n2 ~ N(0, 1)` and
amplitude `a(f) = max(f, 1 / max(H, W))^-decay_power` (`f = sqrt(fx^2 + fy^2)`, numpy
`fftfreq` bins); the grey image `m = irfft2(spectrum, (H, W))`; its `num` largest pixels form
the anchor's region (mask 1), the rest the partner's, with `num = ceil(lam H W)` or
`floor(lam H W)` on a fair coin. `max_soft > 0` softens the edge: the ranks `[num - s, num + s)`,
`s = int(H W min(max_soft, lam, 1 - lam))`, get `linspace(1, 0, 2 s)` (the mask mean stays
`num / (H W)`). One mask for the whole batch, `x_mix = M x + (1 - M) x[perm]`.

The label weight is the realised share `num / (H W)` (`label='realised'`, the default); the
reference labels with the drawn λ (`label='sampled'`), less than `1 / (H W)` away.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from storm_jax.mixing import base
from storm_jax.mixing.mixup import per_sample

LABELS = ('realised', 'sampled')


def amplitude(height: int, width: int, decay_power: float) -> np.ndarray:
  """`max(f, 1 / max(H, W))^-decay_power` on the `[H, W // 2 + 1]` real-FFT bins (float32)."""
  fy = np.fft.fftfreq(height)[:, None]
  fx = np.fft.fftfreq(width)[:width // 2 + 1]
  freq = np.sqrt(fx * fx + fy * fy)
  return (1.0 / np.maximum(freq, 1.0 / max(height, width)) ** decay_power).astype(np.float32)


def low_frequency_image(spectrum: jax.Array, height: int, width: int) -> jax.Array:
  """`irfft2` of a `[..., H, W // 2 + 1, 2]` (real, imaginary) spectrum: float32 `[..., H, W]`."""
  return jnp.fft.irfft2(jax.lax.complex(spectrum[..., 0], spectrum[..., 1]), s=(height, width))


def binarise(m: jax.Array, num: jax.Array, soft: jax.Array) -> jax.Array:
  """The mask of one `[H, W]` image `m`: 1 on its `num` largest pixels, soft ramp of `2 soft`.

  Ranks come from one descending sort (rank 0 = the largest). Rank `r < num - soft` gives 1,
  `r >= num + soft` gives 0 and the ranks between get `1 - (r - num + soft) / (2 soft - 1)`
  (numpy `linspace(1, 0, 2 soft)`).
  """
  size = m.size
  order = jnp.argsort(-m.reshape(-1))
  rank = jnp.zeros(size, jnp.int32).at[order].set(jnp.arange(size, dtype=jnp.int32))
  rank = rank.reshape(m.shape)
  low = num - soft
  ramp = 1.0 - (rank - low).astype(jnp.float32) / jnp.maximum(2 * soft - 1, 1).astype(jnp.float32)
  return jnp.where(rank < low, 1.0, jnp.where(rank >= num + soft, 0.0, ramp))


def sample(key: jax.Array, shape: Sequence[int], *, alpha: float, decay_power: float,
           pairing: str, granularity: str) -> dict[str, jax.Array]:
  """Draws FMix's random quantities for a batch of static `shape = (B, H, W, C)`.

  Args:
    key: a `jax.random.key`.
    shape: the static image-batch shape `(B, H, W, C)`.
    alpha: Beta concentration.
    decay_power: the spectrum's decay exponent δ (amplitude ∝ f^-δ).
    pairing: `'perm'`, `'flip'` or `'roll'`.
    granularity: `'batch'` (one mask, the reference) or `'example'` (one per sample).

  Returns:
    `{'lam': float32 [], 'spectrum': float32 [H, W // 2 + 1, 2] (scaled by the amplitude),
    'ceil': bool [], 'perm': int32 [B]}`; `lam`, `spectrum`, `ceil` get a leading `[B]` axis
    with `granularity='example'`.
  """
  batch_size, height, width, _ = shape
  lam_key, spec_key, coin_key, perm_key = jax.random.split(key, 4)
  lead = () if granularity == 'batch' else (batch_size,)
  noise = jax.random.normal(spec_key, (*lead, height, width // 2 + 1, 2), jnp.float32)
  return {'lam': base.beta(lam_key, alpha, lead),
          'spectrum': noise * amplitude(height, width, decay_power)[..., None],
          'ceil': jax.random.bernoulli(coin_key, 0.5, lead),
          'perm': base.partner(perm_key, batch_size, pairing)}


def mask(params: dict[str, jax.Array], height: int, width: int,
         max_soft: float) -> tuple[jax.Array, jax.Array]:
  """The anchor's mask `[H, W]` (or `[B, H, W]`) and its realised share `num / (H W)`."""
  size = height * width
  lam = jnp.asarray(params['lam'], jnp.float32)
  scaled = lam * size
  num = jnp.where(params['ceil'], jnp.ceil(scaled), jnp.floor(scaled)).astype(jnp.int32)
  soft = jnp.floor(size * jnp.minimum(jnp.minimum(lam, 1.0 - lam), max_soft)).astype(jnp.int32)
  m = low_frequency_image(params['spectrum'], height, width)
  fn = binarise if m.ndim == 2 else jax.vmap(binarise)
  return fn(m, num, soft), num.astype(jnp.float32) / jnp.float32(size)


def apply(params: dict[str, jax.Array], x: jax.Array, y: jax.Array, *, max_soft: float,
          label: str) -> tuple[jax.Array, jax.Array]:
  """Mixes `x_mix = M x + (1 - M) x[perm]` with the FMix mask `M`.

  Args:
    params: as returned by `sample`.
    x: `[B, H, W, C]` images.
    y: `[B, N]` float32 soft labels.
    max_soft: soft-edge width as a fraction of the pixels (0 = binary mask).
    label: `'realised'` (label weight = mask mean `num / (H W)`) or `'sampled'` (the drawn λ).

  Returns:
    `(x_mix [B, H, W, C] float32, y_mix [B, N] float32)`.
  """
  _, height, width, _ = x.shape
  perm = params['perm']
  m, share = mask(params, height, width, max_soft)
  x = x.astype(jnp.float32)
  m = m[..., None] if m.ndim == 3 else m[None, ..., None]
  x_mix = base.lerp(m, x, x[perm])
  lam_label = share if label == 'realised' else jnp.asarray(params['lam'], jnp.float32)
  return x_mix, base.lerp(per_sample(lam_label, y.ndim), y, y[perm])


@base.register('fmix')
def make(*, alpha: float = 1.0, decay_power: float = 3.0, max_soft: float = 0.0,
         label: str = 'realised', granularity: str = 'batch',
         pairing: str = 'perm') -> base.Mixer:
  """FMix with `lam ~ Beta(alpha, alpha)`; see `fmix`."""
  base.check_positive('alpha', alpha)
  base.check_positive('decay_power', decay_power)
  if isinstance(max_soft, bool) or not isinstance(max_soft, (int, float)) or not (
      0.0 <= max_soft <= 0.5):
    raise ValueError(f'max_soft={max_soft!r} must be a number in [0, 0.5].')
  base.check_choice('label', label, LABELS)
  base.check_choice('granularity', granularity, base.GRANULARITIES)
  base.check_choice('pairing', pairing, base.PAIRINGS)
  hp = dict(alpha=float(alpha), decay_power=float(decay_power), pairing=pairing,
            granularity=granularity)
  return base.Mixer('fmix', {**hp, 'max_soft': float(max_soft), 'label': label},
                    functools.partial(sample, **hp),
                    functools.partial(apply, max_soft=float(max_soft), label=label))


def fmix(key: jax.Array, x: jax.Array, y: jax.Array, **hparams) -> tuple[jax.Array, jax.Array]:
  """FMix: mixes each sample with its partner through a binarised low-frequency mask.

  A random Fourier spectrum with amplitude `f^-decay_power` gives a smooth image whose
  `num ~ lam H W` largest pixels (`lam ~ Beta(alpha, alpha)`) come from `x[b]` and the rest
  from `x[perm[b]]`; one mask per batch as the reference. Label `lam' y[b] + (1 - lam')
  y[perm[b]]` with `lam' = num / (H W)`, the anchor's pixel share.

  Args:
    key: a `jax.random.key`.
    x: `[B, H, W, C]` float images (any H, W, C).
    y: `[B, N]` float32 soft labels.
    **hparams: `alpha=1.0`, `decay_power=3.0`, `max_soft=0.0` (soft-edge fraction, <= 0.5),
      `label='realised'` (`'sampled'`: the reference's drawn λ), `granularity='batch'`
      (`'example'`: one mask per sample), `pairing='perm'`, plus the shared `prob=1.0` and
      `label_smoothing=0.0`.

  Returns:
    `(x_mix [B, H, W, C] in x.dtype, y_mix [B, N] float32)`.

  Raises:
    ValueError: a bad hyper-parameter (the message names it).

  References:
    Harris, Marcu, Painter, Niranjan, Prügel-Bennett, Hare, "FMix: Enhancing Mixed Sample Data
    Augmentation", arXiv:2002.12047, 2020; ecs-vlc/FMix.
  """
  return base.get('fmix', **hparams)(key, x, y)

