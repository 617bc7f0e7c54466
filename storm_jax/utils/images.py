"""Image normalisation shared by the train step and the evaluation code (one definition)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp


def normalize(images: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
  """Images -> float32 `(x - mean) / std` with x in [0, 1] pixel units.

  Args:
    images: [..., C] uint8 images in [0, 255] (divided by 255 first), or float images already
      in [0, 1] (e.g. the inputs the adversarial attacks perturb).
    mean, std: per-channel statistics in [0, 1] pixel units (`DatasetInfo.mean` / `.std`).
  """
  x = images.astype(jnp.float32)
  if images.dtype == jnp.uint8:
    x = x / 255.0
  return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
