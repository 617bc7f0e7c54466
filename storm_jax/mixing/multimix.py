"""multi-mix: K interpolations of every pair in one step (docs/DESIGN.md#multimix).

The paper writes `mix(z, z'; λ) = (1 - λ) z + λ z'` (λ = the PARTNER's weight) and draws K
values `λ_1 < ... < λ_K` from `Beta(α, α)`, shared by the batch, with one pairing π for all K.
Here, as everywhere in storm_jax, `params['lam']` is the ANCHOR's weight: `lam[k] = 1 - λ_k`
(so `lam` is sorted in decreasing order and output k holds more of the partner as k grows).

Output k of sample b is row `k * B + b` (k-major); K*B samples in all.

* base='mixup': `x̃_k = lam_k x + (1 - lam_k) x_π` — Mixup's `apply` with `lam = lam[k]`.
* base='cutmix': one integer centre shared by the K boxes and the batch; box k is CutMix's
  box (`cutmix.box_bounds`) of side `sqrt(1 - lam_k) = sqrt(λ_k)` (the partner's share),
  clipped; the label is the realised pixel share — CutMix's `apply` with `lam = lam[k]`.
  Boxes with a common centre and growing sides are nested even after clipping.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from storm_jax.mixing import base
from storm_jax.mixing.cutmix import apply as cutmix_apply
from storm_jax.mixing.cutmix import sample_centre
from storm_jax.mixing.mixup import apply as mixup_apply

# `make` takes a hyper-parameter named `base` (the registry name), which hides the module.
_base = base

BASES = ('mixup', 'cutmix')


def sample(key: jax.Array, shape: Sequence[int], *, base_method: str = 'mixup', K: int = 5,
           alpha: float = 1.0, pairing: str = 'perm') -> dict[str, jax.Array]:
  """Draws the multi-mix random quantities for a batch of static `shape = (B, H, W, C)`.

  Returns:
    `{'lam': float32[K] (anchor weights, decreasing), 'perm': int32[B]}`, plus
    `'cy', 'cx'`: int32 scalars (the shared box centre) for `base_method='cutmix'`.
  """
  batch_size, height, width, _ = shape
  lam_key, perm_key, centre_key = jax.random.split(key, 3)
  partner_weight = jnp.sort(base.beta(lam_key, alpha, (K,)))  # the paper's λ_1 <= ... <= λ_K
  params = {'lam': 1.0 - partner_weight, 'perm': base.partner(perm_key, batch_size, pairing)}
  if base_method == 'cutmix':
    params['cy'], params['cx'] = sample_centre(centre_key, height, width)
  return params


def apply(params: dict[str, jax.Array], x: jax.Array, y: jax.Array, *,
          base_method: str = 'mixup') -> tuple[jax.Array, jax.Array]:
  """Applies the base method once per `lam[k]` with the shared pairing (and centre).

  Args:
    params: from `sample`; `lam: [K]` anchor weights.
    x: `[B, H, W, C]` float images.
    y: `[B, N]` float32 soft labels.
    base_method: 'mixup' or 'cutmix'.

  Returns:
    `x_mix: [K * B, H, W, C]` float32 and `y_mix: [K * B, N]` float32, row `k * B + b`.
  """
  base_apply = mixup_apply if base_method == 'mixup' else cutmix_apply
  shared = {key: value for key, value in params.items() if key != 'lam'}
  x_mix, y_mix = jax.vmap(lambda lam: base_apply({**shared, 'lam': lam}, x, y))(params['lam'])
  return (x_mix.reshape((-1,) + x_mix.shape[2:]), y_mix.reshape((-1,) + y_mix.shape[2:]))


@_base.register('multimix')
def make(*, base: str = 'mixup', K: int = 5, alpha: float = 1.0,
         pairing: str = 'perm') -> _base.Mixer:
  """multi-mix mixer; `multiplicity=K` (outputs K*B samples, k-major)."""
  base_method = base
  _base.check_choice('base', base_method, BASES)
  _base.check_int('K', K)
  _base.check_positive('alpha', alpha)
  _base.check_choice('pairing', pairing, _base.PAIRINGS)
  hp = dict(base_method=base_method, K=K, alpha=float(alpha), pairing=pairing)
  return _base.Mixer('multimix', {}, functools.partial(sample, **hp),
                     functools.partial(apply, base_method=base_method), multiplicity=K)


def multimix(key: jax.Array, x: jax.Array, y: jax.Array,
             **hparams) -> tuple[jax.Array, jax.Array]:
  """multi-mix: every pair mixed at K sorted interpolation weights shared by the batch.

  Args:
    key: PRNG key.
    x: `[B, H, W, C]` float images.
    y: `[B, N]` soft labels.
    **hparams: `base='mixup'` (or `'cutmix'`), `K=5`, `alpha=1.0` (Beta concentration;
      not stated in the paper, PuzzleMix's default), `pairing='perm'`, plus the shared `prob`
      and `label_smoothing`.

  Returns:
    `(x_mix [K*B, H, W, C], y_mix [K*B, N])`, row `k * B + b` is interpolation k of sample b;
    the loss is the mean over all K*B rows (paper Eq. 7).

  The paper's λ is the partner's weight; `params['lam']` stores the anchor's `1 - λ_k`. The
  CutMix extension's integer geometry and labels are not specified in the paper: we use
  CutMix's box (integer centre, `floor(side * sqrt(λ_k))`, clipping) and its realised-area
  label (docs/DESIGN.md#multimix). The evaluated PuzzleMix extension is not implemented here.

  References:
    Shen, Yu, Yang, Kwok, "Mixup with multiple interpolations" (multi-mix).
  """
  return _base.get('multimix', **hparams)(key, x, y)
