"""Manifold Mixup (Verma et al., 2019): Mixup of the hidden states at a randomly drawn layer.

Per batch: `lam ~ Beta(alpha, alpha)`, one permutation `perm`, and a mixing point `k` drawn
uniformly from `points` (default (0, 1, 2): the input, the output of the first stage, the output
of the second; docs/DESIGN.md#manifold-mixup). The train-mode forward pass replaces the running
activation at point k by `lam h + (1 - lam) h[perm]`; the labels are `lam y + (1 - lam) y[perm]`.
Layers before the point see the clean batch, layers after it (batch norm included) the mixed one.

The work is split between the mixer and the model:

  params = mixer.sample(key, x.shape)        # {'lam': [], 'perm': [B], 'point': int32 []}
  x_mix, y_mix = mixer.apply(params, x, y)   # mixes x only when point == 0; labels always
  mix = hidden_params(params)                # what the model needs, see below
  logits = model.apply(variables, x_mix, train=True, mix=mix, ...)

Every model calls `mix_hidden(h, mix, i)` on its residual stream after stage `i` (i = 1, 2);
`mix_hidden` is a no-op where `mix['point'] != i`, so one compiled program serves every draw.

Groups. `hidden_params` gives the model `{'lam': [G], 'perm': [G, B/G], 'point': [G]}`: the batch
as G groups of consecutive samples, each with its own draw and with partners inside the group.
G = 1 for one draw over the batch; under `mix.scope='device'` the trainer mixes inside
`jax.shard_map`, each shard returns its own `hidden_params` (G = 1 locally) and the out-spec
P('data') stacks them to G = device count, so the hidden gather stays on the device (a batched
gather over the sharded group axis) and each device mixes at its own point, as a DDP process
drawing its own layer would.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp

from storm_jax.mixing import base
from storm_jax.mixing.mixup import apply as mixup_apply

# Mixing points every model exposes: 0 = input (mixed by `apply`), 1 and 2 = stage outputs.
# The references also code a point after stage 3 but never draw it (randint(0, 2)).
NUM_POINTS = 3
NO_POINT = -1  # `point` value that disables mixing (mixer prob draw failed, mixing off).


def sample(key: jax.Array, shape: Sequence[int], *, alpha: float, points: tuple[int, ...],
           pairing: str) -> dict[str, jax.Array]:
  """Draws `{'lam': float32 [], 'perm': int32 [B], 'point': int32 []}` for one batch."""
  lam_key, perm_key, point_key = jax.random.split(key, 3)
  point = jnp.asarray(points, jnp.int32)[jax.random.randint(point_key, (), 0, len(points))]
  return {'lam': base.beta(lam_key, alpha), 'perm': base.partner(perm_key, shape[0], pairing),
          'point': point}


def apply(params: Mapping[str, jax.Array], x: jax.Array,
          y: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Input Mixup when `point == 0` (else `x` unchanged); mixed labels for every point.

  Args:
    params: `{'lam': [], 'perm': int [B], 'point': int []}`.
    x: `[B, H, W, C]` images.
    y: `[B, N]` float32 soft labels.

  Returns:
    `(x_out [B, H, W, C] float32, y_mix [B, N] float32)`.
  """
  x_mix, y_mix = mixup_apply(params, x, y)
  return jnp.where(params['point'] == 0, x_mix, x.astype(jnp.float32)), y_mix


def hidden_params(params: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
  """The model's `mix` argument for one group (the whole batch, or one device's shard).

  Returns `{'lam': [1], 'perm': [1, B], 'point': [1]}`; `point` is `NO_POINT` when the mixer's
  apply-probability draw (`params['apply']`) failed. Concatenating the results of several
  groups along axis 0 (shard_map's out-spec P('data')) gives the G-group form.
  """
  point = jnp.asarray(params['point'], jnp.int32)
  if 'apply' in params:
    point = jnp.where(params['apply'], point, NO_POINT)
  return {'lam': jnp.asarray(params['lam'], jnp.float32)[None],
          'perm': jnp.asarray(params['perm'], jnp.int32)[None], 'point': point[None]}


def disable(mix: Mapping[str, jax.Array], off: jax.Array) -> dict[str, jax.Array]:
  """`mix` with every group's point set to `NO_POINT` where the traced bool `off` is True."""
  return {**mix, 'point': jnp.where(off, NO_POINT, mix['point'])}


def mix_hidden(h: jax.Array, mix: Mapping[str, jax.Array] | None, point: int) -> jax.Array:
  """`lam h + (1 - lam) h[perm]` per group where the group's drawn point is `point`.

  Args:
    h: `[B, ...]` activation at mixing point `point` (the full residual stream).
    mix: None (no mixing: `h` is returned as is) or `{'lam': [G], 'perm': int [G, B/G],
      'point': int [G]}` (see `hidden_params`); `perm` indexes within each group.
    point: the static index of this mixing point (1 or 2 in the models).

  Returns:
    `[B, ...]` in `h.dtype`; bitwise `h` for the groups that mix elsewhere.
  """
  if mix is None:
    return h
  groups = mix['perm'].shape[0]
  if h.shape[0] % groups:
    raise ValueError(f'mix has {groups} groups, which do not divide the batch h.shape={h.shape}.')
  hg = h.reshape((groups, -1) + h.shape[1:])
  partner = jax.vmap(lambda a, p: a[p])(hg, mix['perm'])
  expand = (groups,) + (1,) * (h.ndim)
  lam = mix['lam'].astype(jnp.float32).reshape(expand)
  mixed = base.lerp(lam, hg, partner).astype(h.dtype)
  on = (mix['point'] == point).reshape(expand)
  return jnp.where(on, mixed, hg).reshape(h.shape)


@base.register('manifold_mixup')
def make(*, alpha: float = 2.0, points: Sequence[int] = (0, 1, 2),
         pairing: str = 'perm') -> base.Mixer:
  """Manifold Mixup mixer (`hidden_points = 3`); see the module docstring."""
  base.check_positive('alpha', alpha)
  points = tuple(points) if isinstance(points, (list, tuple)) else points
  if (not isinstance(points, tuple) or not points or len(set(points)) != len(points) or any(
      isinstance(p, bool) or not isinstance(p, int) or not 0 <= p < NUM_POINTS for p in points)):
    raise ValueError(f'points={points!r} must be distinct integers in [0, {NUM_POINTS}) '
                     '(0 = input, 1 and 2 = outputs of the first two stages).')
  base.check_choice('pairing', pairing, base.PAIRINGS)
  hp = dict(alpha=float(alpha), points=points, pairing=pairing)
  return base.Mixer('manifold_mixup', hp, functools.partial(sample, **hp), apply,
                    hidden_points=NUM_POINTS)


def manifold_mixup(key: jax.Array, x: jax.Array, y: jax.Array,
                   **hparams) -> tuple[jax.Array, jax.Array]:
  """The input half of Manifold Mixup (mixes `x` only when the drawn point is 0).

  Training needs the model half too: use `get('manifold_mixup')`, `hidden_params` and the
  models' `mix` argument (module docstring). Hyper-parameters: `alpha=2.0` (CIFAR; 0.2 for
  Tiny-ImageNet), `points=(0, 1, 2)`, `pairing='perm'`, plus `prob` and `label_smoothing`.

  References:
    Verma, Lamb, Beckham, Najafi, Mitliagkas, Lopez-Paz, Bengio, "Manifold Mixup: Better
    Representations by Interpolating Hidden States", ICML 2019; mixing points as
    vikasverma1077/manifold_mixup and snu-mllab/PuzzleMix models.
  """
  return base.get('manifold_mixup', **hparams)(key, x, y)
