"""Training and evaluation: the sharded train step, the loop, checkpoints, metrics.

  from storm_jax import train
  final_metrics = train.train_and_evaluate(config, workdir)

Parallelism. One global-view `jax.jit` over a 1-D mesh `('data',)` built from every device
of every process. The train state is replicated, the batch is sharded on `'data'`, the
state is donated. The mesh axis is `AxisType.Auto`: models and mixers carry no sharding
annotations, and GSPMD propagation from the batch sharding is exactly what we want (an
`Explicit` axis would require every op with an ambiguous output sharding to name one).
Note that batch-norm statistics are then those of the global batch (synchronised BN),
unlike per-GPU BN in PyTorch DDP; on one device the two coincide.

Mixing scope (`config.mix.scope`):
  * 'device': each device mixes its own shard inside `jax.shard_map`, with a per-device
    key (`fold_in(key, axis_index('data'))`): per-device permutations, per-device λ, no
    collectives -- the DDP behaviour of the reference code (SPECS §0.4).
  * 'global': one permutation / one draw over the global batch (identical results for any
    number of devices).

Keys are stateless: the step key is `fold_in(seed_key, state.step)`, split into named
sub-keys, so a resumed run replays exactly (same mixing draws, same data order).

Objectives (SPECS §0.5, §6-§8, §10):
  * loss = CE(f(x_mix), y_mix) + w_clean * CE(f(x), y), w_clean = `mixer.clean_loss_weight`
    (1 for StoRM / Region Mixup, R-Mix's `clean_weight`). Two forward passes by default,
    each updating the batch-norm running statistics in turn (clean pass first), as two
    PyTorch forward calls would. `mix.single_pass=True` concatenates `[x; x_mix]` into one
    pass instead -- a documented deviation: batch-norm then normalises both halves with
    joint statistics.
  * R-Mix: the input-gradient saliency is computed with the current parameters in train
    mode, outside the differentiated loss (no gradient through the mask). Its batch-norm
    update is kept (`mix.saliency_batch_stats='keep'`, SPECS §8: the reference runs that
    pass in train mode, updating the running statistics) or dropped ('discard').
  * SaliencyMix: OpenCV's fine-grained saliency of the uint8 batch (before normalisation) is
    passed to the mixer (`mixer.saliency_kind == 'fine_grained'`); no model pass.
  * multi-mix: the mixer returns K*B samples; the loss is their mean.
  * "Mixing off for the last N epochs" (`mix.off_last_epochs` / `mix.off_after_step`) is
    decided from `state.step` inside the step, so crossing the boundary does not
    recompile. When off, the step trains on the clean (label-smoothed) batch only.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from absl import logging
from flax.training import train_state
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import ml_collections
import numpy as np
import optax

from storm_jax import checkpointing
from storm_jax import data
from storm_jax import mixing
from storm_jax import models
from storm_jax.utils import metric_writers
from storm_jax.utils import preview

MIX_SCOPES = ('device', 'global')
SCHEDULES = ('constant', 'multistep', 'cosine', 'onecycle')
SALIENCY_BATCH_STATS = ('keep', 'discard')


class TrainState(train_state.TrainState):
  """`flax` TrainState plus the batch-norm running statistics."""

  batch_stats: Any = None


# --------------------------------------------------------------------------------------
# Config helpers and validation.
# --------------------------------------------------------------------------------------


def _opt(value: Any) -> Any:
  """Config fields use '' / 0 for 'not set' (ml_collections cannot override None)."""
  return None if value is None or value == '' or value == 0 else value


def dataset_info(config: ml_collections.ConfigDict):
  """`data.get_info` for `config.dataset` (image_size override and prepared split sizes).

  Raises:
    ValueError: unknown dataset or bad image size, naming the config field.
  """
  try:
    return data.get_info(config.dataset.name, data_dir=_opt(config.dataset.data_dir),
                         image_size=_opt(config.dataset.image_size))
  except ValueError as e:
    raise ValueError(f'dataset.name={config.dataset.name!r} / dataset.image_size='
                     f'{config.dataset.image_size!r}: {e}') from e


def image_shape(config: ml_collections.ConfigDict, info: Any) -> tuple[int, int, int]:
  """(H, W, C) of the images the model sees (`info` from `dataset_info`)."""
  del config
  return tuple(info.image_shape)


def build_mixer(config: ml_collections.ConfigDict) -> mixing.Mixer:
  """The mixer of `config.mix`, with `config.label_smoothing` applied inside it (once)."""
  hparams = dict(config.mix.get('hparams', {}) or {})
  if 'label_smoothing' in hparams:
    raise ValueError('mix.hparams.label_smoothing is not allowed: set config.label_smoothing '
                     f'(got mix.hparams.label_smoothing={hparams["label_smoothing"]!r}).')
  return mixing.get(config.mix.name, label_smoothing=config.label_smoothing, **hparams)


def build_model(config: ml_collections.ConfigDict, num_classes: int):
  return models.get(config.model.name, num_classes=num_classes,
                    **dict(config.model.get('kwargs', {}) or {}))


def num_train_examples(config: ml_collections.ConfigDict, info: Any) -> int:
  """Examples trained on: the split, or its first `dataset.train_examples` (reduced runs)."""
  limit = int(config.dataset.get('train_examples', 0) or 0)
  return min(info.num_train, limit) if limit > 0 else info.num_train


def steps_per_epoch(config: ml_collections.ConfigDict, info: Any) -> int:
  """Optimiser steps per epoch (the last incomplete batch of an epoch is dropped)."""
  return max(1, num_train_examples(config, info) // config.batch_size)


def total_steps(config: ml_collections.ConfigDict, info: Any) -> int:
  if config.get('num_train_steps', -1) and config.num_train_steps > 0:
    return int(config.num_train_steps)
  return int(math.ceil(config.num_epochs * steps_per_epoch(config, info)))


def mix_off_step(config: ml_collections.ConfigDict, info: Any) -> int:
  """First step at which mixing is turned off (== total steps when it never is)."""
  n = total_steps(config, info)
  off = n
  if config.mix.get('off_after_step', -1) >= 0:
    off = min(off, int(config.mix.off_after_step))
  if config.mix.get('off_last_epochs', 0) > 0:
    off = min(off, n - int(config.mix.off_last_epochs * steps_per_epoch(config, info)))
  return max(0, off)


def _check(cond: bool, field: str, value: Any, why: str) -> None:
  if not cond:
    raise ValueError(f'{field}={value!r} {why}')


def validate_config(config: ml_collections.ConfigDict, *, device_count: int | None = None,
                    process_count: int | None = None) -> None:
  """Checks the config before anything is built or compiled.

  Raises:
    ValueError: naming the offending field and its value.
  """
  device_count = jax.device_count() if device_count is None else device_count
  process_count = jax.process_count() if process_count is None else process_count
  _check(config.model.name in models.names(), 'model.name', config.model.name,
         f'is not a known model; known: {", ".join(models.names())}.')
  _check(config.mix.name in mixing.names(), 'mix.name', config.mix.name,
         f'is not a known mixing method; known: {", ".join(mixing.names())}.')
  _check(config.mix.scope in MIX_SCOPES, 'mix.scope', config.mix.scope,
         f'must be one of {MIX_SCOPES}.')
  _check(config.mix.get('saliency_batch_stats', 'keep') in SALIENCY_BATCH_STATS,
         'mix.saliency_batch_stats', config.mix.get('saliency_batch_stats'),
         f'must be one of {SALIENCY_BATCH_STATS}.')
  for field in ('batch_size', 'eval_batch_size'):
    value = config[field]
    _check(isinstance(value, int) and value >= 1, field, value, 'must be an integer >= 1.')
    _check(value % device_count == 0, field, value,
           f'must be divisible by the number of devices ({device_count}).')
    _check(value % process_count == 0, field, value,
           f'must be divisible by the number of processes ({process_count}).')
  _check(config.num_train_steps > 0 or config.num_epochs > 0, 'num_epochs', config.num_epochs,
         'must be > 0 when num_train_steps is not set.')
  _check(0.0 <= config.label_smoothing < 1.0, 'label_smoothing', config.label_smoothing,
         'must be in [0, 1).')
  _check(config.loss in mixing.LOSSES, 'loss', config.loss,
         f'is not one of {sorted(mixing.LOSSES)}.')
  for field in ('log_every_steps', 'checkpoint_every_steps', 'eval_every_steps'):
    _check(isinstance(config[field], int) and config[field] >= 0, field, config[field],
           'must be an integer >= 0 (0 = only at the end).')
  _check(config.keep_checkpoints >= 1, 'keep_checkpoints', config.keep_checkpoints,
         'must be >= 1.')
  optim = config.optim
  _check(optim.schedule in SCHEDULES, 'optim.schedule', optim.schedule,
         f'must be one of {SCHEDULES}.')
  _check(optim.lr > 0, 'optim.lr', optim.lr, 'must be > 0.')
  _check(0.0 <= optim.momentum < 1.0, 'optim.momentum', optim.momentum, 'must be in [0, 1).')
  _check(optim.weight_decay >= 0, 'optim.weight_decay', optim.weight_decay, 'must be >= 0.')
  _check(optim.warmup_epochs >= 0, 'optim.warmup_epochs', optim.warmup_epochs, 'must be >= 0.')
  if optim.schedule == 'multistep':
    ms = list(optim.milestones)
    _check(ms == sorted(ms) and all(m > 0 for m in ms), 'optim.milestones', tuple(ms),
           'must be increasing positive epochs.')
  if optim.schedule == 'onecycle':
    _check(0.0 < optim.pct_start < 1.0, 'optim.pct_start', optim.pct_start, 'must be in (0, 1).')
  _check(config.mix.get('off_last_epochs', 0) >= 0, 'mix.off_last_epochs',
         config.mix.get('off_last_epochs'), 'must be >= 0.')

  mixer = build_mixer(config)  # Raises ValueError for bad hyper-parameters.
  info = dataset_info(config)  # Raises ValueError for an unknown dataset.
  h, w, _ = image_shape(config, info)
  if 'grid_sizes' in mixer.hparams:  # R-Mix: every grid side must tile the image.
    for p in mixer.hparams['grid_sizes']:
      _check(h % p == 0 and w % p == 0, 'mix.hparams.grid_sizes', mixer.hparams['grid_sizes'],
             f'must all divide the image size {h}x{w}.')
  train_examples = config.dataset.get('train_examples', 0)
  _check(isinstance(train_examples, int) and train_examples >= 0, 'dataset.train_examples',
         train_examples, 'must be an integer >= 0 (0 = the whole split).')
  n_train = num_train_examples(config, info)
  _check(config.batch_size <= max(n_train, 1), 'batch_size', config.batch_size,
         f'exceeds the training set ({n_train} examples).')


# --------------------------------------------------------------------------------------
# Optimiser.
# --------------------------------------------------------------------------------------


def make_schedules(config: ml_collections.ConfigDict, spe: int, num_steps: int):
  """(learning-rate schedule, momentum schedule or None), both functions of the step."""
  optim = config.optim
  warmup = int(round(optim.warmup_epochs * spe))
  lr = float(optim.lr)
  if optim.schedule == 'constant':
    main = optax.constant_schedule(lr)
  elif optim.schedule == 'multistep':
    # Milestones in epochs, counted from the start of training (warm-up included), as
    # PyTorch MultiStepLR does.
    main = optax.piecewise_constant_schedule(
        lr, {int(m * spe) - warmup: float(optim.gamma) for m in optim.milestones})
  elif optim.schedule == 'cosine':
    main = optax.cosine_decay_schedule(lr, max(1, num_steps - warmup),
                                       alpha=float(optim.get('final_lr_fraction', 0.0)))
  else:  # onecycle, as PyTorch OneCycleLR(anneal_strategy='cos') in the R-Mix code.
    main = optax.cosine_onecycle_schedule(
        max(1, num_steps - warmup), lr, pct_start=float(optim.pct_start),
        div_factor=float(optim.div_factor), final_div_factor=float(optim.final_div_factor))
  lr_fn = main
  if warmup > 0:
    lr_fn = optax.join_schedules(
        [optax.linear_schedule(0.0, lr if optim.schedule != 'onecycle' else main(0), warmup),
         main], [warmup])
  momentum_fn = None
  if optim.schedule == 'onecycle' and optim.get('cycle_momentum', False):
    # PyTorch OneCycleLR cycles momentum inversely to the LR: max -> base -> max.
    hi, lo = float(optim.max_momentum), float(optim.base_momentum)
    n = max(1, num_steps - warmup)
    up = max(1, int(optim.pct_start * n))

    def momentum_fn(step):
      t = jnp.maximum(step - warmup, 0).astype(jnp.float32)
      frac1 = jnp.clip(t / up, 0.0, 1.0)
      frac2 = jnp.clip((t - up) / max(1, n - up), 0.0, 1.0)
      m1 = lo + (hi - lo) * (1 + jnp.cos(jnp.pi * frac1)) / 2
      m2 = hi + (lo - hi) * (1 + jnp.cos(jnp.pi * frac2)) / 2
      return jnp.where(t < up, m1, m2)

  return lr_fn, momentum_fn


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


# --------------------------------------------------------------------------------------
# State creation.
# --------------------------------------------------------------------------------------


def make_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D `('data',)` mesh over all devices (of all processes), axis type Auto."""
  devices = jax.devices() if devices is None else devices
  return jax.make_mesh((len(devices),), ('data',), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices)


def create_train_state(config: ml_collections.ConfigDict, model, key: jax.Array,
                       mesh: jax.sharding.Mesh, *, tx: optax.GradientTransformation | None = None,
                       input_shape: tuple[int, int, int] | None = None) -> TrainState:
  """Initialises the train state directly with replicated shardings on `mesh`.

  Args:
    config: the run config (dataset and optimiser fields are used).
    model: a flax Linen module (`models.get(...)`).
    key: init key.
    mesh: the `('data',)` mesh.
    tx: the optimiser; default `make_optimizer(config, ...)`.
    input_shape: (H, W, C); default from the dataset info.
  """
  if tx is None or input_shape is None:
    info = dataset_info(config)
    input_shape = input_shape or image_shape(config, info)
    if tx is None:
      tx, _ = make_optimizer(config, steps_per_epoch(config, info), total_steps(config, info))

  def init(key):
    variables = model.init(key, jnp.zeros((1, *input_shape), jnp.float32), train=False)
    return TrainState.create(apply_fn=model.apply, params=variables['params'], tx=tx,
                             batch_stats=variables.get('batch_stats', {}))

  abstract = jax.eval_shape(init, key)
  shardings = jax.tree.map(lambda _: NamedSharding(mesh, P()), abstract)
  return jax.jit(init, out_shardings=shardings)(key)


# --------------------------------------------------------------------------------------
# The train step.
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StepContext:
  """Everything static the train / eval steps need (bound with functools.partial)."""

  model: Any
  mixer: mixing.Mixer
  mean: tuple[float, ...]
  std: tuple[float, ...]
  num_classes: int
  mesh: jax.sharding.Mesh
  scope: str = 'device'
  single_pass: bool = False
  mix_off_step: int = 2**31 - 1
  saliency_batch_stats: str = 'keep'
  lr_fn: Any = None
  loss: str = 'softmax_ce'


def normalize(images: jax.Array, mean, std) -> jax.Array:
  """uint8 `[B, H, W, C]` -> float32 `(x / 255 - mean) / std` (on device)."""
  x = images.astype(jnp.float32) / 255.0
  return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def _forward(ctx: StepContext, params, batch_stats, x, *, train: bool = True):
  """Train-mode forward; returns (logits, new batch_stats)."""
  logits, updates = ctx.model.apply({'params': params, 'batch_stats': batch_stats}, x,
                                    train=train, mutable=['batch_stats'])
  return logits, updates['batch_stats']


def _mix(ctx: StepContext, key, x, y, saliency):
  """Applies the mixer globally or per device (shard_map, device index folded in)."""
  mixer = ctx.mixer
  kw_names = ('saliency',) if saliency is not None else ()
  args = (saliency,) if saliency is not None else ()

  def fn(key, x, y, *extra):
    return mixer(key, x, y, **dict(zip(kw_names, extra)))

  if ctx.scope == 'global':
    return fn(key, x, y, *args)

  def local(key, x, y, *extra):
    # Per-device draws (DDP behaviour): each shard gets its own key.
    key = jax.random.fold_in(key, jax.lax.axis_index('data'))
    return fn(key, x, y, *extra)

  return jax.shard_map(local, mesh=ctx.mesh,
                       in_specs=(P(), P('data'), P('data')) + (P('data'),) * len(args),
                       out_specs=(P('data'), P('data')))(key, x, y, *args)


def mixed_inputs(ctx: StepContext, state: TrainState, batch: Mapping[str, jax.Array],
                 key: jax.Array):
  """The inputs of one train step.

  Returns:
    dict with x, y_clean ([B, N], smoothed), x_mix ([K*B, H, W, C]), y_mix, mix_on (bool
    scalar), batch_stats (after the saliency pass, if any and kept).
  """
  x = normalize(batch['image'], ctx.mean, ctx.std)
  y = jax.nn.one_hot(batch['label'], ctx.num_classes, dtype=jnp.float32)
  y_clean = mixing.smooth_labels(y, ctx.mixer.label_smoothing)
  mix_on = state.step < ctx.mix_off_step
  batch_stats = state.batch_stats
  saliency = None
  if ctx.mixer.needs_saliency and ctx.mixer.saliency_kind == 'fine_grained':
    # SaliencyMix: OpenCV's saliency of the uint8 images, before normalisation.
    saliency = mixing.fine_grained_saliency(batch['image'])
  elif ctx.mixer.needs_saliency:
    # Current parameters, train mode; the mask never receives a gradient.
    def logits_fn(inputs):
      return _forward(ctx, state.params, state.batch_stats, inputs)

    saliency, saliency_stats = mixing.input_gradient_saliency(logits_fn, x, y_clean,
                                                              has_aux=True)
    saliency = jax.lax.stop_gradient(saliency)
    if ctx.saliency_batch_stats == 'keep':
      batch_stats = saliency_stats
  x_mix, y_mix = _mix(ctx, key, x, y, saliency)
  x_mix, y_mix = jax.lax.stop_gradient((x_mix, y_mix))
  k = ctx.mixer.multiplicity
  x_mix = jnp.where(mix_on, x_mix, jnp.tile(x, (k, 1, 1, 1)))
  y_mix = jnp.where(mix_on, y_mix, jnp.tile(y_clean, (k, 1)))
  return dict(x=x, y_clean=y_clean, x_mix=x_mix, y_mix=y_mix, mix_on=mix_on,
              batch_stats=batch_stats)


def train_step(state: TrainState, batch: Mapping[str, jax.Array], key: jax.Array, *,
               ctx: StepContext) -> tuple[TrainState, dict[str, jax.Array]]:
  """One SGD step on a (sharded) global batch.

  Args:
    state: replicated train state (donated).
    batch: {'image': uint8 [B, H, W, C], 'label': int32 [B]}, sharded on 'data'.
    key: the run's seed key; the step key is `fold_in(key, state.step)`.
    ctx: static step context.

  Returns:
    (new state, metrics dict of scalars).
  """
  step_key = jax.random.fold_in(key, state.step)
  mix_key, = jax.random.split(step_key, 1)
  inputs = mixed_inputs(ctx, state, batch, mix_key)
  clean_weight = float(ctx.mixer.clean_loss_weight)
  # When mixing is off the step trains on the clean batch only (no clean term on top).
  w_clean = clean_weight * inputs['mix_on'].astype(jnp.float32)
  b = inputs['x'].shape[0]

  def loss_fn(params):
    batch_stats = inputs['batch_stats']
    logits_clean = None
    if clean_weight and ctx.single_pass:
      logits, batch_stats = _forward(
          ctx, params, batch_stats, jnp.concatenate([inputs['x'], inputs['x_mix']]))
      logits_clean, logits_mix = logits[:b], logits[b:]
    else:
      if clean_weight:
        logits_clean, batch_stats = _forward(ctx, params, batch_stats, inputs['x'])
      logits_mix, batch_stats = _forward(ctx, params, batch_stats, inputs['x_mix'])
    loss_of = mixing.LOSSES[ctx.loss]
    loss = jnp.mean(loss_of(logits_mix, inputs['y_mix']))
    if clean_weight:
      loss += w_clean * jnp.mean(loss_of(logits_clean, inputs['y_clean']))
    return loss, (batch_stats, logits_mix)

  (loss, (batch_stats, logits_mix)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  agree = jnp.argmax(logits_mix, -1) == jnp.argmax(inputs['y_mix'], -1)
  metrics = {
      'loss': loss,
      'accuracy': jnp.mean(agree.astype(jnp.float32)),  # vs the dominant mixed label.
      'l2_grads': optax.tree.norm(grads),
      'mix_on': inputs['mix_on'].astype(jnp.float32),
  }
  if ctx.lr_fn is not None:
    metrics['lr'] = jnp.asarray(ctx.lr_fn(state.step), jnp.float32)
  return new_state, metrics


def eval_step(variables: Mapping[str, Any], batch: Mapping[str, jax.Array], *,
              ctx: StepContext, label_smoothing: float = 0.0) -> dict[str, jax.Array]:
  """Sums over the valid (mask=True) examples of one eval batch; never mixes.

  Returns:
    {'count', 'correct_top1', 'correct_top5', 'nll', 'loss'}: sums, float32 scalars.
  """
  x = normalize(batch['image'], ctx.mean, ctx.std)
  logits = ctx.model.apply(variables, x, train=False)
  labels = batch['label']
  mask = batch['mask'].astype(jnp.float32)
  one_hot = jax.nn.one_hot(labels, ctx.num_classes, dtype=jnp.float32)
  nll = mixing.soft_cross_entropy(logits, one_hot)
  loss = mixing.soft_cross_entropy(logits, mixing.smooth_labels(one_hot, label_smoothing))
  top1 = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  k = min(5, ctx.num_classes)
  _, topk = jax.lax.top_k(logits, k)
  top5 = jnp.any(topk == labels[:, None], axis=-1).astype(jnp.float32)
  return {'count': jnp.sum(mask), 'correct_top1': jnp.sum(top1 * mask),
          'correct_top5': jnp.sum(top5 * mask), 'nll': jnp.sum(nll * mask),
          'loss': jnp.sum(loss * mask)}


# --------------------------------------------------------------------------------------
# Host side: batches, evaluation, the loop.
# --------------------------------------------------------------------------------------


def _to_global(batch: Mapping[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in batch.items()}


def _prefetch(iterator: Iterator, sharding: NamedSharding, size: int = 2) -> Iterator:
  """Puts the next `size` batches on device while the current step runs."""
  queue = []
  for batch in iterator:
    queue.append(_to_global(batch, sharding))
    if len(queue) > size:
      yield queue.pop(0)
  yield from queue


def evaluate(eval_fn, variables, config: ml_collections.ConfigDict, sharding: NamedSharding,
             *, split: str | None = None) -> dict[str, float]:
  """Exact metrics over the whole eval split (padding masked out)."""
  totals = None
  it = data.eval_iterator(
      config.dataset.name, global_batch_size=config.eval_batch_size, split=split,
      data_dir=_opt(config.dataset.data_dir), image_size=_opt(config.dataset.image_size),
      process_index=jax.process_index(), process_count=jax.process_count())
  for batch in it:
    sums = eval_fn(variables, _to_global(batch, sharding))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  if totals is None:
    raise ValueError(f'dataset.name={config.dataset.name!r}: the eval split is empty.')
  totals = jax.device_get(totals)
  n = float(totals['count'])
  return {'accuracy': float(totals['correct_top1']) / n,
          'top5_accuracy': float(totals['correct_top5']) / n,
          'nll': float(totals['nll']) / n, 'loss': float(totals['loss']) / n,
          'num_examples': int(n)}


class _SigtermFlag:
  """Sets a flag on SIGTERM so the loop can save a checkpoint and stop cleanly."""

  def __init__(self):
    self.set = False
    self._previous = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning('SIGTERM received: saving a checkpoint and stopping.')
    self.set = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _make_context(config, info, model, mixer, mesh, lr_fn) -> StepContext:
  return StepContext(
      model=model, mixer=mixer, mean=tuple(info.mean), std=tuple(info.std),
      num_classes=info.num_classes, mesh=mesh, scope=config.mix.scope,
      single_pass=bool(config.mix.get('single_pass', False)),
      mix_off_step=mix_off_step(config, info),
      saliency_batch_stats=config.mix.get('saliency_batch_stats', 'keep'), lr_fn=lr_fn,
      loss=config.loss)


def _compile_steps(ctx: StepContext, config, state_sharding, mesh):
  batch_sharding = NamedSharding(mesh, P('data'))
  replicated = NamedSharding(mesh, P())
  p_train = jax.jit(functools.partial(train_step, ctx=ctx), donate_argnums=0,
                    in_shardings=(state_sharding, batch_sharding, replicated),
                    out_shardings=(state_sharding, replicated))
  p_eval = jax.jit(functools.partial(eval_step, ctx=ctx,
                                     label_smoothing=float(config.label_smoothing)),
                   out_shardings=replicated)
  p_preview = jax.jit(lambda state, batch, key: mixed_inputs(
      ctx, state, batch, jax.random.split(jax.random.fold_in(key, state.step), 1)[0]))
  return p_train, p_eval, p_preview, batch_sharding


def _write_preview(workdir, p_preview, state, batch, key, info, config) -> None:
  out = jax.device_get(p_preview(state, batch, key))
  path = os.path.join(workdir, 'mixed_batch.png')
  preview.mixed_batch_grid(
      path, out['x_mix'], out['y_mix'], mean=info.mean, std=info.std,
      max_images=int(config.get('preview_images', 16)),
      title=f'{config.mix.name} {dict(config.mix.hparams)} (step {int(state.step)})')
  logging.info('Wrote a grid of one mixed batch to %s', path)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains, evaluates, checkpoints; resumes from the latest checkpoint in `workdir`.

  Returns:
    Final metrics: 'step', eval metrics (prefixed 'eval_'), best eval accuracy,
    'train_loss' (last logged window), 'wall_time_s', 'images_per_sec'.

  Raises:
    ValueError: bad config (before anything compiles).
    FloatingPointError: the training loss became non-finite (message names the step).
  """
  validate_config(config)
  t_start = time.time()
  is_main = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)
  info = dataset_info(config)
  mesh = make_mesh()
  model = build_model(config, info.num_classes)
  mixer = build_mixer(config)
  spe, num_steps = steps_per_epoch(config, info), total_steps(config, info)
  tx, lr_fn = make_optimizer(config, spe, num_steps)
  seed_key = jax.random.key(config.seed)
  init_key, train_key = jax.random.split(seed_key)
  logging.info('Devices: %d (%s), processes: %d; %d steps (%d per epoch), global batch %d.',
               jax.device_count(), jax.devices()[0].platform, jax.process_count(), num_steps,
               spe, config.batch_size)

  state = create_train_state(config, model, init_key, mesh, tx=tx,
                             input_shape=image_shape(config, info))
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, 'checkpoints'),
                                    every_steps=config.checkpoint_every_steps,
                                    keep=config.keep_checkpoints)
  if ckpt.latest_step() is not None:
    state = ckpt.restore(state)
    logging.info('Resumed from step %d.', int(state.step))
  start_step = int(jax.device_get(state.step))

  ctx = _make_context(config, info, model, mixer, mesh, lr_fn)
  state_sharding = jax.tree.map(lambda x: x.sharding, state)
  p_train, p_eval, p_preview, batch_sharding = _compile_steps(ctx, config, state_sharding, mesh)
  writer = metric_writers.MetricWriter(workdir, enabled=is_main,
                                       tensorboard=bool(config.get('tensorboard', True)))
  best = {'eval_accuracy': -1.0, 'step': -1}
  for row in metric_writers.read_jsonl(writer.path):
    if 'eval_accuracy' in row and row['step'] <= start_step and (
        row['eval_accuracy'] > best['eval_accuracy']):
      best = {'eval_accuracy': row['eval_accuracy'], 'step': row['step']}

  train_iter = _prefetch(data.train_iterator(
      config.dataset.name, global_batch_size=config.batch_size, seed=config.seed,
      start_step=start_step, data_dir=_opt(config.dataset.data_dir),
      augment=_opt(config.dataset.augment), image_size=_opt(config.dataset.image_size),
      process_index=jax.process_index(), process_count=jax.process_count(),
      train_examples=config.dataset.get('train_examples', 0) or None), batch_sharding)

  def run_eval(step):
    variables = {'params': state.params, 'batch_stats': state.batch_stats}
    t0 = time.time()
    metrics = {f'eval_{k}': v for k, v in evaluate(p_eval, variables, config,
                                                     batch_sharding).items()}
    logging.info('Eval at step %d (%.1fs): %s', step, time.time() - t0,
                 ', '.join(f'{k}={v:.4f}' for k, v in metrics.items()))
    writer.write_scalars(step, metrics)
    if metrics['eval_accuracy'] > best['eval_accuracy']:
      best.update(eval_accuracy=metrics['eval_accuracy'], step=step)
    return metrics

  pbar = None
  if is_main and config.get('progress_bar', True):
    from tqdm import auto as tqdm  # pylint: disable=g-import-not-at-top
    pbar = tqdm.tqdm(total=num_steps, initial=start_step, desc='train', unit='step',
                     dynamic_ncols=True)
  pending: list[tuple[int, dict[str, jax.Array]]] = []
  last_train: dict[str, float] = {}
  eval_metrics: dict[str, float] = {}
  n_images, t_steady = 0, None
  step = start_step
  stopped_early = False
  log_every = config.log_every_steps or num_steps
  with _SigtermFlag() as sigterm:
    for step in range(start_step, num_steps):
      batch = next(train_iter)
      if step == start_step:
        if is_main and start_step == 0 and config.get('preview_images', 16) > 0:
          _write_preview(workdir, p_preview, state, batch, train_key, info, config)
        logging.info('Initial compilation, this might take some minutes...')
      state, metrics = p_train(state, batch, train_key)
      pending.append((step + 1, metrics))
      # At most two steps in flight: the host still prepares step t+1 while the devices run
      # step t, and a SIGTERM stops the run within two steps (with up to `log_every` steps
      # dispatched ahead, it waited for all of them: minutes where steps are slow).
      if len(pending) > 1:
        jax.block_until_ready(pending[-2][1])
      if step == start_step:
        jax.block_until_ready(metrics)
        logging.info('Compiled and ran the first step in %.1fs.', time.time() - t_start)
        t_steady = time.time()
      else:
        n_images += config.batch_size
      if pbar is not None:
        pbar.update(1)
      done = step + 1
      if done % log_every == 0 or done == num_steps:
        last_train = _flush_train_metrics(pending, writer, t_steady, n_images, pbar)
        pending = []
      if config.eval_every_steps and done % config.eval_every_steps == 0 and done < num_steps:
        eval_metrics = run_eval(done)
      ckpt.maybe_save(done, state)
      if sigterm.set or done == config.get('halt_after_step', -1):
        stopped_early = True  # Preempted (or told to halt): save below and leave.
        break
  jax.block_until_ready(state)
  train_time = (time.time() - t_steady) if t_steady is not None else 0.0
  if pending:
    last_train = _flush_train_metrics(pending, writer, t_steady, n_images, pbar)
  if pbar is not None:
    pbar.close()
  final_step = int(jax.device_get(state.step))
  ckpt.save(final_step, state)
  if not stopped_early:  # On SIGTERM: save and leave quickly, no final evaluation.
    eval_metrics = run_eval(final_step)
  ckpt.close()  # Waits for the asynchronous saves; raises if one failed.
  wall = time.time() - t_start
  summary = {
      'step': final_step, **eval_metrics, 'best_eval_accuracy': best['eval_accuracy'],
      'best_eval_step': best['step'], 'train_loss': last_train.get('train_loss', float('nan')),
      'wall_time_s': wall, 'images_per_sec': n_images / train_time if train_time > 0 else 0.0,
      'stopped_early': stopped_early,
  }
  writer.write_scalars(final_step, {f'summary_{k}': v for k, v in summary.items()
                                    if isinstance(v, (int, float)) and k != 'step'})
  writer.close()
  if is_main:
    logging.info('Done: step %d, eval accuracy %.4f (best %.4f at step %d), top-5 %.4f, '
                 'wall time %.1fs, %.1f images/s.', final_step,
                 summary.get('eval_accuracy', float('nan')), summary['best_eval_accuracy'],
                 summary['best_eval_step'], summary.get('eval_top5_accuracy', float('nan')),
                 wall, summary['images_per_sec'])
  return summary


def _flush_train_metrics(pending, writer, t_steady, n_images, pbar) -> dict[str, float]:
  """Fetches the buffered step metrics, stops on a non-finite loss, writes the means."""
  fetched = jax.device_get([m for _, m in pending])
  means = {f'train_{k}': float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
  if t_steady is not None and n_images:
    means['images_per_sec'] = n_images / max(time.time() - t_steady, 1e-9)
  step = pending[-1][0]
  writer.write_scalars(step, means)  # Written first, so the log shows the blow-up.
  for (s, _), m in zip(pending, fetched):
    if not np.isfinite(m['loss']):
      writer.flush()
      raise FloatingPointError(f'non-finite training loss {float(m["loss"])} at step {s} '
                               '(after the update of that step was computed); stopping.')
  if pbar is not None:
    pbar.set_postfix(loss=f'{means["train_loss"]:.4f}',
                     img_s=f'{means.get("images_per_sec", 0.0):.0f}')
  return means


def restore_for_eval(config: ml_collections.ConfigDict, workdir: str):
  """Loads the latest checkpoint of `workdir` for evaluation.

  Returns:
    (model, variables {'params', 'batch_stats'}, dataset info).
  """
  info = dataset_info(config)
  model = build_model(config, info.num_classes)
  mesh = make_mesh()
  state = create_train_state(config, model, jax.random.key(config.seed), mesh,
                             input_shape=image_shape(config, info))
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, 'checkpoints'), async_save=False)
  state = ckpt.restore(state)
  ckpt.close()
  return model, {'params': state.params, 'batch_stats': state.batch_stats}, info
