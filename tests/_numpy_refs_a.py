"""Plain NumPy references (float64) for Mixup, CutMix, the Mixup/CutMix switch, HMix and GMix.

Written from docs/DESIGN.md#mixup to #gmix (the reference codes' semantics), one sample at a time
with Python integers for the box geometry, so they share no code with the JAX ops they check.
Also test helpers used by the tests of these methods.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

JIT_VARIANTS = ('nojit', 'jit')


def maybe_jit(fn, variant: str):
  return jax.jit(fn) if variant == 'jit' else fn


def identity_batch(batch_size: int, height: int, width: int):
  """Image b is the constant one-hot of b over C = B channels; labels are one_hot(b).

  After any mix, `x_mix[b].mean((0, 1))[c]` is source c's pixel share in sample b, which must
  equal its label weight `y_mix[b, c]` (the same partner index for images and labels).
  """
  eye = jnp.eye(batch_size, dtype=jnp.float32)
  x = jnp.broadcast_to(eye[:, None, None, :], (batch_size, height, width, batch_size))
  return x, eye


def pixel_shares(x_mix) -> np.ndarray:
  return np.asarray(x_mix, np.float64).mean(axis=(1, 2))


def random_batch(seed: int, shape, num_classes: int = 10):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=shape).astype(np.float32)
  y = np.eye(num_classes, dtype=np.float32)[rng.integers(0, num_classes, shape[0])]
  return x, y


def _per_sample(value, batch_size):
  value = np.asarray(value)
  return np.broadcast_to(value, (batch_size,)) if value.ndim == 0 else value


# ------------------------------------------------------------------------------------------
# References.
# ------------------------------------------------------------------------------------------


def mixup(x, y, lam, perm):
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  out_x, out_y = np.empty_like(x), np.empty_like(y)
  lams = _per_sample(lam, len(x)).astype(np.float64)
  for b, (l, p) in enumerate(zip(lams, perm)):
    out_x[b] = l * x[b] + (1 - l) * x[p]
    out_y[b] = l * y[b] + (1 - l) * y[p]
  return out_x, out_y


def rand_bbox(height, width, side, cy, cx):
  """The reference `rand_bbox` for a given side ratio and centre (python ints)."""
  cut_h, cut_w = int(height * float(side)), int(width * float(side))
  cy, cx = int(cy), int(cx)
  y1 = min(max(cy - cut_h // 2, 0), height)
  y2 = min(max(cy + cut_h // 2, 0), height)
  x1 = min(max(cx - cut_w // 2, 0), width)
  x2 = min(max(cx + cut_w // 2, 0), width)
  return y1, y2, x1, x2


def cutmix(x, y, lam, cy, cx, perm, correct_lam=True):
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  batch_size, height, width, _ = x.shape
  out_x, out_y = x.copy(), np.empty_like(y)
  lams, cys, cxs = (_per_sample(v, batch_size) for v in (lam, cy, cx))
  for b in range(batch_size):
    l = float(lams[b])
    y1, y2, x1, x2 = rand_bbox(height, width, math.sqrt(1 - l), cys[b], cxs[b])
    out_x[b, y1:y2, x1:x2] = x[perm[b], y1:y2, x1:x2]
    if correct_lam:
      l = 1 - (y2 - y1) * (x2 - x1) / (height * width)
    out_y[b] = l * y[b] + (1 - l) * y[perm[b]]
  return out_x, out_y


def hmix(x, y, lam, r, cy, cx, perm):
  """HMix `_mix_batch` of naver-ai/hmix-gmix ("bug fixed"): one box for the batch."""
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  _, height, width, _ = x.shape
  lam = float(lam)
  y1, y2, x1, x2 = rand_bbox(height, width, math.sqrt(1 - lam) * math.sqrt(float(r)), cy, cx)
  c = 1 - (y2 - y1) * (x2 - x1) / (height * width)
  m = lam / c if c > 0 else 0.0
  out_x = m * x + (1 - m) * x[perm]
  out_x[:, y1:y2, x1:x2] = x[perm][:, y1:y2, x1:x2]
  lam_label = m * c
  return out_x, lam_label * y + (1 - lam_label) * y[perm]


def gmix(x, y, lam, cy, cx, perm, square_reference=False):
  """GMix `_mix_batch`; `square_reference` builds the grid as the code (img_h for both axes)."""
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  _, height, width, _ = x.shape
  lam = float(lam)
  s = max(min(lam, 1 - lam), 1e-6)
  if square_reference:
    assert height == width
    cols = np.tile(np.arange(height), (height, 1)) - cx
    rows = np.tile(np.arange(height), (height, 1)).T - cy
    g = np.exp(-(cols ** 2.0 + rows ** 2.0) * math.pi / (s * height * height))
  else:
    rows = np.arange(height)[:, None] - cy
    cols = np.arange(width)[None, :] - cx
    g = np.exp(-math.pi * (rows ** 2 + cols ** 2) / (s * height * width))
  m = g if lam < 0.5 else 1 - g
  out_x = m[None, :, :, None] * x + (1 - m[None, :, :, None]) * x[perm]
  lam_label = m.mean()
  return out_x, lam_label * y + (1 - lam_label) * y[perm], m
