"""ResizeMix (Qin et al., 2020): paste the whole partner image, shrunk into a random box.

OpenMixup's reference (docs/DESIGN.md#resizemix), per batch: a scale `tau ~ U(scope)` (or,
with `alpha`, `tau ~ Beta(alpha, alpha)` redrawn uniformly in `scope` when outside it); a
CutMix-style box of side `floor(size * tau)` (half-extent `cut // 2` around an integer centre
uniform over the pixels, clipped to the image); every partner image `x[perm[b]]` resized to
the clipped box (so a clipped box squeezes it) and pasted there. The label weight of the anchor
is its realised pixel share `1 - box_area / (H W)`.

The reference reads the box rows from the width (`W = size[2]` of an NCHW tensor); rows here
come from H and columns from W, which only differs for non-square images. The nearest resize
reads partner pixel `((i - y1) H // h, (j - x1) W // w)` for output pixel `(i, j)` of an
`h x w` box: PyTorch's `nearest` rule in exact integer arithmetic (PyTorch multiplies by a
float32 scale, which can land one pixel lower at exact multiples).

A sample paired with itself is not unchanged: its own shrunk copy is pasted.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from storm_jax.mixing import base
from storm_jax.mixing.cutmix import box_bounds, box_fraction, box_mask, sample_centre
from storm_jax.mixing.mixup import per_sample

INTERPOLATIONS = ('nearest', 'bilinear')


def sample(key: jax.Array, shape: Sequence[int], *, scope: tuple[float, float],
           alpha: float | None, pairing: str) -> dict[str, jax.Array]:
  """Draws ResizeMix's random quantities for a batch of static `shape = (B, H, W, C)`.

  Args:
    key: a `jax.random.key`.
    shape: the static image-batch shape `(B, H, W, C)`.
    scope: `(low, high)` range of the box side as a fraction of the image side.
    alpha: None (`tau ~ U(scope)`, the paper) or a Beta concentration (OpenMixup
      `use_alpha=True`: `Beta(alpha, alpha)`, redrawn uniformly when outside `scope`).
    pairing: `'perm'`, `'flip'` or `'roll'`.

  Returns:
    `{'tau': float32 [], 'cy': int32 [], 'cx': int32 [], 'perm': int32 [B]}`.
  """
  batch_size, height, width, _ = shape
  tau_key, beta_key, centre_key, perm_key = jax.random.split(key, 4)
  low, high = scope
  tau = jax.random.uniform(tau_key, (), jnp.float32, low, high)
  if alpha is not None:
    drawn = base.beta(beta_key, alpha)
    tau = jnp.where((drawn < low) | (drawn > high), tau, drawn)
  cy, cx = sample_centre(centre_key, height, width)
  return {'tau': tau, 'cy': cy, 'cx': cx, 'perm': base.partner(perm_key, batch_size, pairing)}


def _resize_into_box(images: jax.Array, box, interpolation: str) -> jax.Array:
  """`images [B, H, W, C]` resized to the box and placed there, in a full `[B, H, W, C]` frame.

  Only the pixels inside the box are meaningful.
  """
  _, height, width, _ = images.shape
  y1, y2, x1, x2 = box
  h, w = jnp.maximum(y2 - y1, 1), jnp.maximum(x2 - x1, 1)
  if interpolation == 'nearest':
    rows = jnp.clip((jnp.arange(height) - y1) * height // h, 0, height - 1)
    cols = jnp.clip((jnp.arange(width) - x1) * width // w, 0, width - 1)
    return images[:, rows][:, :, cols]
  scale = jnp.stack([h / height, w / width]).astype(jnp.float32)
  translation = jnp.stack([y1, x1]).astype(jnp.float32)
  return jax.image.scale_and_translate(images, images.shape, (1, 2), scale, translation,
                                       method='linear', antialias=False)


def apply(params: dict[str, jax.Array], x: jax.Array, y: jax.Array, *,
          interpolation: str) -> tuple[jax.Array, jax.Array]:
  """Pastes each partner, resized, into the box; label = realised pixel share.

  Args:
    params: `{'tau': [], 'cy': [], 'cx': [], 'perm': int [B]}`.
    x: `[B, H, W, C]` images.
    y: `[B, N]` float32 soft labels.
    interpolation: `'nearest'` (the reference default) or `'bilinear'`.

  Returns:
    `(x_mix [B, H, W, C] float32, y_mix [B, N] float32)`.
  """
  _, height, width, _ = x.shape
  perm = params['perm']
  box = box_bounds(params['cy'], params['cx'], params['tau'], height, width)
  x = x.astype(jnp.float32)
  pasted = _resize_into_box(x[perm], box, interpolation)
  x_mix = jnp.where(box_mask(box, height, width)[None, ..., None], pasted, x)
  lam = 1.0 - box_fraction(box, height, width)
  return x_mix, base.lerp(per_sample(lam, y.ndim), y, y[perm])


@base.register('resizemix')
def make(*, scope: tuple[float, float] = (0.1, 0.8), alpha: float | None = None,
         interpolation: str = 'nearest', pairing: str = 'perm') -> base.Mixer:
  """ResizeMix with a box side `tau ~ U(scope)`; see `resizemix`."""
  if (not isinstance(scope, (tuple, list)) or len(scope) != 2 or
      any(isinstance(s, bool) or not isinstance(s, (int, float)) for s in scope) or
      not 0.0 < scope[0] <= scope[1] <= 1.0):
    raise ValueError(f'scope={scope!r} must be (low, high) with 0 < low <= high <= 1.')
  if alpha is not None:
    base.check_positive('alpha', alpha)
  base.check_choice('interpolation', interpolation, INTERPOLATIONS)
  base.check_choice('pairing', pairing, base.PAIRINGS)
  hp = dict(scope=(float(scope[0]), float(scope[1])),
            alpha=None if alpha is None else float(alpha), pairing=pairing)
  return base.Mixer('resizemix', {**hp, 'interpolation': interpolation},
                    functools.partial(sample, **hp),
                    functools.partial(apply, interpolation=interpolation))


def resizemix(key: jax.Array, x: jax.Array, y: jax.Array,
              **hparams) -> tuple[jax.Array, jax.Array]:
  """ResizeMix: pastes every partner image, resized, into one random box of its anchor.

  `tau ~ U(scope)`; box side `floor(size * tau)` around a uniform integer centre, clipped; the
  partner `x[perm[b]]` is resized to the clipped box and pasted into `x[b]`. Label
  `lam' y[b] + (1 - lam') y[perm[b]]` with `lam' = 1 - box_area / (H W)`.

  Args:
    key: a `jax.random.key`.
    x: `[B, H, W, C]` float images (any H, W, C).
    y: `[B, N]` float32 soft labels.
    **hparams: `scope=(0.1, 0.8)`, `alpha=None` (a Beta concentration: OpenMixup's
      `use_alpha`), `interpolation='nearest'` (or `'bilinear'`), `pairing='perm'`, plus the
      shared `prob=1.0` and `label_smoothing=0.0`.

  Returns:
    `(x_mix [B, H, W, C] in x.dtype, y_mix [B, N] float32)`.

  Raises:
    ValueError: a bad hyper-parameter (the message names it).

  References:
    Qin, Fang, Zhao, Wei, Xie, Tian, Zhang, Wang, Wang, "ResizeMix: Mixing Data with Preserved
    Object Information and True Labels", arXiv:2012.11101, 2020; Westlake-AI/openmixup.
  """
  return base.get('resizemix', **hparams)(key, x, y)
