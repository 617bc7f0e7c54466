"""R-Mix: saliency-guided mixup through random gradient thresholding (docs/DESIGN.md#rmix).

Per batch: one grid side `p` drawn from `grid_sizes`, one `λ ~ Beta(α, α)` and one pairing
`π`. Per example: a percentile `q_b` drawn uniformly from `linspace(0, 0.99, K)`. The
saliency `s[b, h, w]` (input-gradient RMS over channels, `input_gradient_saliency`) is
average-pooled to a `p × p` grid; patches at or above the `q_b` quantile (linear
interpolation) are "top" (`m = 1`), the others "least" (`m = 0`). Where anchor and partner
agree (`e = [m == m_π]`) the pixels are mixed as Mixup with λ; where they disagree the image
whose patch is top is copied. Labels are the realised pixel shares:

  w_e = mean(e), w_1 = mean((1 - e) m), w_2 = mean((1 - e) m_π),
  ỹ = w_e (λ y + (1 - λ) y_π) + w_1 y + w_2 y_π     (anchor share w_e λ + w_1).

`p` is the number of patches per side (reference `num_patches`, pooling kernel `H // p` by
`W // p`), not the pooling kernel of the paper's Eq. 3 (docs/DESIGN.md#rmix-mask). The sampled
quantities are `perm`, `lam`, `grid` (index into `grid_sizes`) and `q`; the saliency is
kept in the params so that `apply` builds the masks from whatever `q` / `grid` it is given.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from storm_jax.mixing import base
from storm_jax.mixing.losses import soft_cross_entropy

# Added to the per-image saliency sum before normalising: an all-zero saliency map would
# otherwise give 0/0 = NaN, and NaN compares False everywhere (no "top" patch at all).
_EPS = 1e-12


def thresholds(num_thresholds: int) -> jax.Array:
  """The top-k space `A = linspace(0, 0.99, K)` the percentiles `q` are drawn from.

  Computed in float64 and rounded once (as the reference's `np.linspace`), so each value is
  the float32 nearest to `0.11 k`; float32 `jnp.linspace` can be one ulp off.
  """
  return jnp.asarray(np.linspace(0.0, 0.99, num_thresholds), jnp.float32)


def _check_grid(shape: Sequence[int], grid_sizes: Sequence[int]) -> None:
  _, h, w, _ = shape
  for p in grid_sizes:
    if h % p or w % p:
      raise ValueError(f'grid_sizes={tuple(grid_sizes)!r}: image height H={h} and width W={w} '
                       f'must both be divisible by every grid size (not by {p}).')


def _grid_mask(saliency: jax.Array, q: jax.Array, p: int) -> jax.Array:
  """Top-patch mask of one static grid side `p`: `[B, H, W]` bool."""
  b, h, w = saliency.shape
  kh, kw = h // p, w // p
  pooled = saliency.reshape(b, p, kh, p, kw).mean(axis=(2, 4)).reshape(b, p * p)
  # Per-image normalisation (reference); it only matters through the eps guard.
  pooled = pooled / (jnp.sum(pooled, axis=1, keepdims=True) + _EPS)
  thr = jax.vmap(lambda s, qb: jnp.quantile(s, qb, method='linear'))(pooled, q)
  top = (pooled >= thr[:, None]).reshape(b, p, p)
  # Nearest up-sampling by the pooling kernel.
  return jnp.repeat(jnp.repeat(top, kh, axis=1), kw, axis=2)


def saliency_mask(saliency: jax.Array, q: jax.Array, grid: jax.Array,
                  grid_sizes: Sequence[int]) -> jax.Array:
  """The R-Mix top-salient mask `m` at full resolution (docs/DESIGN.md#rmix-mask).

  Args:
    saliency: `[B, H, W]` float; non-negative saliency per pixel.
    q: `[B]` float32 percentile per image (0 makes every patch "top").
    grid: int32 scalar index into `grid_sizes` (the grid side `p` of this batch).
    grid_sizes: static grid sides; H and W must be divisible by each.

  Returns:
    `[B, H, W]` bool, True on the patches whose pooled saliency is >= the `q`-quantile.
  """
  saliency = jax.lax.stop_gradient(saliency.astype(jnp.float32))
  q = jnp.asarray(q, jnp.float32)
  branches = [functools.partial(_grid_mask, p=p) for p in grid_sizes]
  if len(branches) == 1:
    return branches[0](saliency, q)
  # Each grid side pools to a different static shape: compute the chosen branch only
  # (both are traced) and return the common [B, H, W] mask.
  return jax.lax.switch(grid, branches, saliency, q)


def sample(key: jax.Array, shape: Sequence[int], *, saliency: jax.Array, alpha: float = 1.0,
           grid_sizes: Sequence[int] = (2, 4), num_thresholds: int = 10,
           pairing: str = 'perm') -> dict[str, jax.Array]:
  """Draws the R-Mix random quantities for a batch of static `shape = (B, H, W, C)`.

  Args:
    key: PRNG key.
    shape: `(B, H, W, C)`.
    saliency: `[B, H, W]` float saliency of the batch (e.g. `input_gradient_saliency`).
    alpha: Beta concentration of the per-batch λ.
    grid_sizes: grid sides `p` to choose from (one per batch, uniformly).
    num_thresholds: K, the size of the top-k space `linspace(0, 0.99, K)`.
    pairing: partner selection, see `base.partner`.

  Returns:
    `{'perm': int32[B], 'lam': float32[], 'grid': int32[], 'q': float32[B],
    'saliency': float32[B, H, W]}`.

  Raises:
    ValueError: H or W not divisible by a grid size, or a saliency of the wrong shape.
  """
  b, h, w, _ = shape
  _check_grid(shape, grid_sizes)
  if tuple(saliency.shape) != (b, h, w):
    raise ValueError(f'saliency.shape={tuple(saliency.shape)} must be [B, H, W] = {(b, h, w)}.')
  perm_key, lam_key, grid_key, q_key = jax.random.split(key, 4)
  q_index = jax.random.randint(q_key, (b,), 0, num_thresholds)
  return {
      'perm': base.partner(perm_key, b, pairing),
      'lam': base.beta(lam_key, alpha),
      'grid': jax.random.randint(grid_key, (), 0, len(grid_sizes), dtype=jnp.int32),
      'q': thresholds(num_thresholds)[q_index],
      'saliency': jax.lax.stop_gradient(saliency.astype(jnp.float32)),
  }


def apply(params: dict[str, jax.Array], x: jax.Array, y: jax.Array, *,
          grid_sizes: Sequence[int] = (2, 4)) -> tuple[jax.Array, jax.Array]:
  """Mixes a batch with the drawn params (docs/DESIGN.md#rmix-labels); deterministic.

  Args:
    params: from `sample`; the masks are rebuilt here from `saliency`, `q` and `grid`
      (under `stop_gradient`), so overriding `q` (e.g. zeros: plain Mixup) takes effect.
    x: `[B, H, W, C]` float images; H and W divisible by every grid size.
    y: `[B, N]` float32 soft labels.
    grid_sizes: the static grid sides `params['grid']` indexes.

  Returns:
    `x_mix: [B, H, W, C]` float32 and `y_mix: [B, N]` float32 (realised pixel shares).
  """
  _check_grid(x.shape, grid_sizes)
  perm, lam = params['perm'], params['lam']
  m = saliency_mask(params['saliency'], params['q'], params['grid'], grid_sizes)
  m_p = m[perm]
  agree = m == m_p  # e: both top or both least -> Mixup with λ.
  x = x.astype(jnp.float32)
  x_p = x[perm]
  x_mix = jnp.where(agree[..., None], base.lerp(lam, x, x_p),
                    jnp.where(m[..., None], x, x_p))  # n: copy the top-salient patch.
  # Per-pixel anchor weight; its mean is the anchor's pixel share w_e λ + w_1.
  anchor = jnp.where(agree, lam, m.astype(jnp.float32))
  lam_eff = jnp.mean(anchor, axis=(1, 2))
  y_mix = base.lerp(lam_eff[:, None], y, y[perm])
  return x_mix, y_mix


def input_gradient_saliency(logits_fn: Callable[[jax.Array], jax.Array], x: jax.Array,
                            y: jax.Array, *, has_aux: bool = False):
  """R-Mix / PuzzleMix saliency: RMS over channels of the input gradient of the loss.

  `s[b, h, w] = sqrt(mean_c g[b, h, w, c]^2)` with `g = d/dx mean_b CE(logits_fn(x)_b, y_b)`
  (docs/DESIGN.md#rmix-saliency). The result is under `stop_gradient`: no gradient flows back
  through the saliency (reference: `torch.no_grad()`).

  Args:
    logits_fn: `x -> logits [B, N]` (or `x -> (logits, aux)` with `has_aux=True`, e.g. to
      keep the batch-statistics update of a train-mode pass, as the reference does).
    x: `[B, H, W, C]` float, the (normalised) model input.
    y: `[B, N]` soft labels, or `[B]` integer class labels.
    has_aux: whether `logits_fn` returns `(logits, aux)`.

  Returns:
    `[B, H, W]` float32 saliency, or `(saliency, aux)` with `has_aux=True`.
  """
  x = x.astype(jnp.float32)

  def loss_fn(inputs):
    out = logits_fn(inputs)
    logits, aux = out if has_aux else (out, None)
    labels = y
    if labels.ndim == 1:
      labels = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32)
    return jnp.mean(soft_cross_entropy(logits, labels)), aux

  grads, aux = jax.grad(loss_fn, has_aux=True)(x)
  s = jax.lax.stop_gradient(jnp.sqrt(jnp.mean(jnp.square(grads), axis=-1)))
  return (s, aux) if has_aux else s


def _check_grid_sizes(grid_sizes) -> tuple[int, ...]:
  if isinstance(grid_sizes, int) or not isinstance(grid_sizes, Sequence) or not grid_sizes:
    raise ValueError(f'grid_sizes={grid_sizes!r} must be a non-empty sequence of integers >= 1.')
  for p in grid_sizes:
    if isinstance(p, bool) or not isinstance(p, int) or p < 1:
      raise ValueError(f'grid_sizes={grid_sizes!r} must be a non-empty sequence of integers >= 1.')
  return tuple(grid_sizes)


@base.register('rmix')
def make(*, alpha: float = 1.0, grid_sizes: Sequence[int] = (2, 4), num_thresholds: int = 10,
         pairing: str = 'perm', clean_weight: float = 0.0) -> base.Mixer:
  """R-Mix mixer; `sample` needs `saliency=[B, H, W]` (docs/DESIGN.md#rmix).

  Args:
    alpha: Beta concentration of λ (CIFAR 1.0, ImageNet 0.2).
    grid_sizes: grid sides p, one drawn per batch ({2, 4} in the paper).
    num_thresholds: K, the top-k space `linspace(0, 0.99, K)` (10 in the paper).
    pairing: 'perm' (CIFAR reference) or 'flip' (ImageNet reference) or 'roll'.
    clean_weight: weight of the clean CE term (0 CIFAR, 1 ImageNet reference).
  """
  base.check_positive('alpha', alpha)
  grid_sizes = _check_grid_sizes(grid_sizes)
  base.check_int('num_thresholds', num_thresholds)
  base.check_choice('pairing', pairing, base.PAIRINGS)
  if isinstance(clean_weight, bool) or not isinstance(clean_weight, (int, float)) or not (
      0.0 <= clean_weight < float('inf')):
    raise ValueError(f'clean_weight={clean_weight!r} must be a finite number >= 0.')
  hp = dict(alpha=alpha, grid_sizes=grid_sizes, num_thresholds=num_thresholds,
            pairing=pairing)
  return base.Mixer('rmix', {}, functools.partial(sample, **hp),
                    functools.partial(apply, grid_sizes=grid_sizes),
                    clean_loss_weight=float(clean_weight), needs_saliency=True)


def rmix(key: jax.Array, x: jax.Array, y: jax.Array, saliency: jax.Array,
         **hparams) -> tuple[jax.Array, jax.Array]:
  """R-Mix (Luu et al.): saliency-guided mixup through random gradient thresholding.

  Args:
    key: PRNG key.
    x: `[B, H, W, C]` float images; H and W divisible by every grid size.
    y: `[B, N]` soft labels.
    saliency: `[B, H, W]` float, e.g. `input_gradient_saliency(logits_fn, x, y)`.
    **hparams: `alpha=1.0, grid_sizes=(2, 4), num_thresholds=10, pairing='perm',
      clean_weight=0.0`, plus the shared `prob` and `label_smoothing`.

  Returns:
    `(x_mix [B, H, W, C], y_mix [B, N])`; train on `CE(f(x_mix), y_mix)` plus
    `clean_weight * CE(f(x), y)`.

  Follows the reference code (minhlong94/Random-Mixup `mix_topleast_choose_top`,
  `rl_mix.py`) instead of the paper where they differ: `p` is the grid side, not the
  pooling kernel; q per example from `linspace(0, 0.99, K)`; quantile by linear
  interpolation; labels from full-resolution pixel counts; soft-target CE (not BCE).
  Non-square images use `H // p` by `W // p` patches (the reference assumes H == W).

  References:
    Luu et al., "Expeditious Saliency-guided Mix-up through Random Gradient Thresholding"
    (AAAI-23 Practical-DL workshop); github.com/minhlong94/Random-Mixup.
  """
  return base.get('rmix', **hparams)(key, x, y, saliency=saliency)
