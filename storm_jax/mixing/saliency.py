"""Saliency helpers shared by the saliency-guided mixers (PuzzleMix, Co-Mixup, ...).

The per-pixel saliency itself is `rmix.input_gradient_saliency` (the RMS over channels of
the input gradient of the loss); these functions reduce it to the block grid a method
optimises over. All are pure and jit-able; grid sizes are static.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _check_blocks(h: int, w: int, grid: tuple[int, int]) -> None:
  gh, gw = grid
  if gh < 1 or gw < 1 or h % gh or w % gw:
    raise ValueError(f'grid={grid!r}: image height H={h} and width W={w} must be divisible by '
                     'the block grid (rows, columns), both >= 1.')


def block_pool(saliency: jax.Array, grid: int | tuple[int, int]) -> jax.Array:
  """Average-pools `[B, H, W]` to a `[B, gh, gw]` block grid (kernel `H // gh` by `W // gw`).

  `grid` is the number of blocks per side (an int for a square grid), not the kernel size.
  """
  grid = (grid, grid) if isinstance(grid, int) else tuple(grid)
  b, h, w = saliency.shape
  _check_blocks(h, w, grid)
  gh, gw = grid
  return saliency.reshape(b, gh, h // gh, gw, w // gw).mean(axis=(2, 4))


def normalize_per_image(pooled: jax.Array) -> jax.Array:
  """Divides each image's block map `[B, ...]` by its sum, so that every map sums to 1.

  PuzzleMix's unary weights (docs/DESIGN.md#puzzlemix). An all-zero map (constant image, or
  a model whose loss gradient vanishes) becomes uniform instead of the reference's 0/0 = NaN:
  every block is then equally salient, which is what a zero map says.
  """
  b = pooled.shape[0]
  flat = pooled.reshape(b, -1).astype(jnp.float32)
  total = jnp.sum(flat, axis=1, keepdims=True)
  uniform = jnp.full_like(flat, 1.0 / flat.shape[1])
  safe = jnp.where(total > 0, total, 1.0)
  return jnp.where(total > 0, flat / safe, uniform).reshape(pooled.shape)


def block_saliency(saliency: jax.Array, grid: int | tuple[int, int]) -> jax.Array:
  """`normalize_per_image(block_pool(saliency, grid))` under `stop_gradient`: `[B, gh, gw]`."""
  saliency = jax.lax.stop_gradient(saliency.astype(jnp.float32))
  return normalize_per_image(block_pool(saliency, grid))
