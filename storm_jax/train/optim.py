"""The optimiser and its learning-rate schedules.

Schedules are a registry, name -> builder, so that a config's `optim.schedule` is validated
against the same table that builds it:

  lr_fn, momentum_fn = optim.make_schedules(config, spe, num_steps)
  tx, lr_fn = optim.make_optimizer(config, spe, num_steps)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp
import ml_collections
import optax

from storm_jax import errors


class Schedule(NamedTuple):
  """What a schedule builder returns.

  Attributes:
    lr: the learning rate as a function of the step counted from the end of the warm-up.
    warmup_to: the learning rate the linear warm-up (if any) ramps up to.
    momentum: the momentum as a function of the global step, or None for a constant one.
  """
  lr: optax.Schedule
  warmup_to: float
  momentum: Callable[[Any], Any] | None = None


# name -> builder(optim config, steps per epoch, total steps, warm-up steps) -> Schedule.
ScheduleBuilder = Callable[[ml_collections.ConfigDict, int, int, int], Schedule]
SCHEDULES: dict[str, ScheduleBuilder] = {}


def register_schedule(name: str):
  """Decorator adding a schedule builder to `SCHEDULES` under `name`."""
  def add(builder: ScheduleBuilder) -> ScheduleBuilder:
    if name in SCHEDULES:
      raise ValueError(f'schedule {name!r} is already registered.')
    SCHEDULES[name] = builder
    return builder
  return add


@register_schedule('constant')
def _constant(optim, spe, num_steps, warmup) -> Schedule:
  del spe, num_steps, warmup
  return Schedule(optax.constant_schedule(float(optim.lr)), float(optim.lr))


@register_schedule('multistep')
def _multistep(optim, spe, num_steps, warmup) -> Schedule:
  # Milestones in epochs, counted from the start of training (warm-up included), as
  # PyTorch MultiStepLR does.
  del num_steps
  lr = float(optim.lr)
  return Schedule(optax.piecewise_constant_schedule(
      lr, {int(m * spe) - warmup: float(optim.gamma) for m in optim.milestones}), lr)


@register_schedule('cosine')
def _cosine(optim, spe, num_steps, warmup) -> Schedule:
  del spe
  lr = float(optim.lr)
  return Schedule(optax.cosine_decay_schedule(
      lr, max(1, num_steps - warmup), alpha=float(optim.final_lr_fraction)), lr)


@register_schedule('onecycle')
def _onecycle(optim, spe, num_steps, warmup) -> Schedule:
  """PyTorch OneCycleLR(anneal_strategy='cos'), as in the R-Mix code."""
  del spe
  n = max(1, num_steps - warmup)
  main = optax.cosine_onecycle_schedule(
      n, float(optim.lr), pct_start=float(optim.pct_start),
      div_factor=float(optim.div_factor), final_div_factor=float(optim.final_div_factor))
  momentum_fn = None
  if optim.cycle_momentum:
    # PyTorch OneCycleLR cycles momentum inversely to the LR: max -> base -> max.
    hi, lo = float(optim.max_momentum), float(optim.base_momentum)
    up = max(1, int(optim.pct_start * n))

    def momentum_fn(step):
      t = jnp.maximum(step - warmup, 0).astype(jnp.float32)
      frac1 = jnp.clip(t / up, 0.0, 1.0)
      frac2 = jnp.clip((t - up) / max(1, n - up), 0.0, 1.0)
      m1 = lo + (hi - lo) * (1 + jnp.cos(jnp.pi * frac1)) / 2
      m2 = hi + (lo - hi) * (1 + jnp.cos(jnp.pi * frac2)) / 2
      return jnp.where(t < up, m1, m2)

  return Schedule(main, main(0), momentum_fn)


def validate(optim: ml_collections.ConfigDict) -> None:
  """Checks `config.optim`; raises a UserError naming the field (as 'optim.<field>')."""
  if optim.schedule not in SCHEDULES:
    raise errors.unknown_name_error('optim.schedule', optim.schedule, tuple(SCHEDULES),
                                    'schedule')
  errors.check(optim.lr > 0, 'optim.lr', optim.lr, 'must be > 0.')
  errors.check(0.0 <= optim.momentum < 1.0, 'optim.momentum', optim.momentum, 'must be in [0, 1).')
  errors.check(optim.weight_decay >= 0, 'optim.weight_decay', optim.weight_decay, 'must be >= 0.')
  errors.check(optim.warmup_epochs >= 0, 'optim.warmup_epochs', optim.warmup_epochs, 'must be >= 0.')
  if optim.schedule == 'multistep':
    ms = list(optim.milestones)
    errors.check(ms == sorted(ms) and all(m > 0 for m in ms), 'optim.milestones', tuple(ms),
           'must be increasing positive epochs.')
  if optim.schedule == 'onecycle':
    errors.check(0.0 < optim.pct_start < 1.0, 'optim.pct_start', optim.pct_start, 'must be in (0, 1).')


def make_schedules(config: ml_collections.ConfigDict, spe: int, num_steps: int):
  """(learning-rate schedule, momentum schedule or None), both functions of the step."""
  optim = config.optim
  warmup = int(round(optim.warmup_epochs * spe))
  schedule = SCHEDULES[optim.schedule](optim, spe, num_steps, warmup)
  lr_fn = schedule.lr
  if warmup > 0:
    lr_fn = optax.join_schedules(
        [optax.linear_schedule(0.0, schedule.warmup_to, warmup), schedule.lr], [warmup])
  return lr_fn, schedule.momentum


def make_optimizer(config: ml_collections.ConfigDict, spe: int, num_steps: int):
  """SGD with (Nesterov) momentum and PyTorch-style coupled weight decay.

  Weight decay is added to the gradient before momentum (`torch.optim.SGD(weight_decay=)`),
  on every parameter as in the reference code.

  Returns:
    (optax transformation, learning-rate schedule).
  """
  optim = config.optim
  lr_fn, momentum_fn = make_schedules(config, spe, num_steps)
  momentum = float(optim.momentum) or None
  if momentum_fn is not None:
    sgd = optax.inject_hyperparams(optax.sgd, static_args=('nesterov',))(
        learning_rate=lr_fn, momentum=momentum_fn, nesterov=bool(optim.nesterov))
  else:
    sgd = optax.sgd(lr_fn, momentum=momentum, nesterov=bool(optim.nesterov))
  parts = []
  if optim.weight_decay > 0:
    parts.append(optax.add_decayed_weights(float(optim.weight_decay)))
  parts.append(sgd)
  return optax.chain(*parts), lr_fn
