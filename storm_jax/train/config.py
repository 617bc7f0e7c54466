"""From a run config to what training needs: validation, step counts, mixer, model, data.

Every other module of `storm_jax.train` reads the config through these functions; a bad
config raises a `ValueError` naming the field and its value before anything compiles.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator
from typing import Any

import jax
import ml_collections

from storm_jax import data
from storm_jax import errors
from storm_jax import mixing
from storm_jax import models
from storm_jax.train import optim

MIX_SCOPES = ('device', 'global')
# `config.compute_dtype`: the models' activations and convolutions. float16 would need loss
# scaling, which the trainer does not do (docs/DESIGN.md#compute-dtype).
COMPUTE_DTYPES = ('float32', 'bfloat16')
# Batch norm of the input-gradient saliency pass (docs/DESIGN.md#saliency-pass): train mode with
# its statistics update kept (R-Mix, Guided-AP, PuzzleMix / Co-Mixup with clean_lam > 0) or
# dropped, or eval mode on the running statistics (PuzzleMix / Co-Mixup with clean_lam = 0).
SALIENCY_BATCH_STATS = ('keep', 'discard', 'eval')


def dataset_info(config: ml_collections.ConfigDict) -> data.DatasetInfo:
  """`data.get_info` for `config.dataset` (image_size override and prepared split sizes).

  Raises:
    errors.UserError: unknown dataset or bad image size, naming the config field.
  """
  try:
    return data.get_info(config.dataset.name, data_dir=config.dataset.data_dir,
                         image_size=config.dataset.image_size)
  except ValueError as e:
    raise errors.UserError(f'dataset.name={config.dataset.name!r} / dataset.image_size='
                           f'{config.dataset.image_size!r}: {e}') from e


def check_dataset(config: ml_collections.ConfigDict, info: data.DatasetInfo) -> None:
  """Opens the training split (and the mixing-picture set of PixMix / IPMix): a dataset that is
  missing fails before any model is built.

  Custom datasets whose source files are present are prepared here (e.g. the bundled digits).

  Raises:
    data.DatasetNotFoundError: (a UserError) saying what to place where.
  """
  data.open_split(info.tfds_name, info.train_split, config.dataset.data_dir)
  check_mixing_set(config)


def mixing_set(config: ml_collections.ConfigDict) -> str | None:
  """The mixing-picture set the run reads (PixMix / IPMix), or None when its mixer needs none."""
  if not build_mixer(config).needs_mixing_pictures:
    return None
  return config.dataset.mixing_set


def check_mixing_set(config: ml_collections.ConfigDict) -> None:
  """Opens the mixing-picture set, if the run reads one; the generated `fractals` sets are
  prepared here on first use (docs/DESIGN.md#mixing-stream).

  Raises:
    errors.UserError: a bad set name or a set that is missing, naming dataset.mixing_set.
  """
  name = mixing_set(config)
  if name is None:
    return
  try:
    data.open_split(name, 'train', config.dataset.data_dir)
  except errors.UserError:
    raise
  except ValueError as e:
    raise errors.UserError(f'dataset.mixing_set={name!r}: {e}') from None


def mixing_iterator(config: ml_collections.ConfigDict, info: data.DatasetInfo, *,
                    start_step: int = 0) -> Iterator:
  """`data.mixing_iterator` of `config.dataset.mixing_set` for this process, from `start_step`.

  Batch t holds the mixing pictures of step t, at the training images' shape: with the same
  `start_step` as `train_iterator`, a resumed run pairs every step with the same pictures.
  """
  return data.mixing_iterator(
      mixing_set(config), global_batch_size=config.batch_size, seed=config.seed,
      image_shape=tuple(info.image_shape), start_step=start_step,
      data_dir=config.dataset.data_dir, process_index=jax.process_index(),
      process_count=jax.process_count())


def train_iterator(config: ml_collections.ConfigDict, *, start_step: int = 0) -> Iterator:
  """`data.train_iterator` of `config.dataset` for this process, from `start_step` on."""
  return data.train_iterator(
      config.dataset.name, global_batch_size=config.batch_size, seed=config.seed,
      start_step=start_step, data_dir=config.dataset.data_dir,
      augment=config.dataset.augment, image_size=config.dataset.image_size,
      process_index=jax.process_index(), process_count=jax.process_count(),
      train_examples=config.dataset.train_examples)


def eval_iterator(config: ml_collections.ConfigDict, *, dataset: str | None = None,
                  split: str | None = None, with_boxes: bool = False) -> Iterator:
  """`data.eval_iterator` of `dataset` (default `config.dataset.name`) for this process.

  Batches of `config.eval_batch_size` with a 'mask' of the valid (non-padding) examples.
  """
  return data.eval_iterator(
      dataset or config.dataset.name, global_batch_size=config.eval_batch_size, split=split,
      data_dir=config.dataset.data_dir, image_size=config.dataset.image_size,
      process_index=jax.process_index(), process_count=jax.process_count(),
      with_boxes=with_boxes)


def check_has_boxes(config: ml_collections.ConfigDict) -> None:
  """Raises a `ValueError` naming the dataset if it has no bounding boxes (for WSOL)."""
  data.box_feature(config.dataset.name, data_dir=config.dataset.data_dir)


def build_mixer(config: ml_collections.ConfigDict,
                info: data.DatasetInfo | None = None) -> mixing.Mixer:
  """The mixer of `config.mix`, with `config.label_smoothing` applied inside it (once).

  With `info`, a method that works in [0, 1] pixel units on the normalised input (PuzzleMix's
  smoothness term and adversarial clip: `mean` / `std` hyper-parameters) gets the dataset's
  normalisation unless the config sets its own.
  """
  hparams = dict(config.mix.hparams)
  if 'label_smoothing' in hparams:
    raise errors.UserError('mix.hparams.label_smoothing is not allowed: set '
                           'config.label_smoothing (got mix.hparams.label_smoothing='
                           f'{hparams["label_smoothing"]!r}).')
  if (info is not None and config.mix.name in mixing.names() and
      {'mean', 'std'} <= set(mixing.hparam_names(config.mix.name)) and
      'mean' not in hparams and 'std' not in hparams):
    hparams.update(mean=tuple(info.mean), std=tuple(info.std))
  try:
    return mixing.get(config.mix.name, label_smoothing=config.label_smoothing, **hparams)
  except ValueError as e:  # The op names the hyper-parameter; say where it is in the config.
    message = str(e)
    if any(message.startswith(f'{name}=') for name in hparams):
      message = f'mix.hparams.{message}'
    raise errors.UserError(message) from None


def model_options(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The options of `config.model.kwargs` that are set (None = the model's own default).

  configs/common.py gives every config a field for every option of every model, so that any
  option can be set from the command line; the ones that are set must belong to
  `config.model.name` (docs/DESIGN.md#model-options).

  Raises:
    errors.UserError: a set option that the model does not take, naming the model and the
      options it does take (with their defaults).
  """
  name = config.model.name
  if name not in models.names():
    raise errors.unknown_name_error('model.name', name, models.names(), 'model')
  options = {k: v for k, v in config.model.kwargs.items() if v is not None}
  defaults = models.defaults(name)
  for key, value in options.items():
    if key not in defaults:
      raise errors.UserError(
          f'model.kwargs.{key}={value!r} is not an option of model.name={name!r}.'
          f'{errors.did_you_mean(key, defaults)} Its options: '
          f'{", ".join(f"{k}={v!r}" for k, v in defaults.items())}.')
  return options


def build_model(config: ml_collections.ConfigDict, num_classes: int):
  """The flax module of `config.model`, with the options that are set (`model_options`),
  computing in `config.compute_dtype` (parameters and logits float32,
  docs/DESIGN.md#compute-dtype)."""
  options = model_options(config)
  errors.check('dtype' not in options, 'model.kwargs.dtype', options.get('dtype'),
               'is not a field: set config.compute_dtype instead.')
  try:
    return models.get(config.model.name, num_classes=num_classes, dtype=config.compute_dtype,
                      **options)
  except ValueError as e:  # The registry names the option; say where it is in the config.
    message = str(e)
    if any(message.startswith(f'{key}=') for key in options):
      message = f'model.kwargs.{message}'
    raise errors.UserError(message) from None


def num_train_examples(config: ml_collections.ConfigDict, info: data.DatasetInfo) -> int:
  """Examples trained on: the split, or its first `dataset.train_examples` (reduced runs)."""
  limit = config.dataset.train_examples
  return info.num_train if limit is None else min(info.num_train, limit)


def steps_per_epoch(config: ml_collections.ConfigDict, info: data.DatasetInfo) -> int:
  """Optimiser steps per epoch (the last incomplete batch of an epoch is dropped)."""
  return max(1, num_train_examples(config, info) // config.batch_size)


def total_steps(config: ml_collections.ConfigDict, info: data.DatasetInfo) -> int:
  if config.num_train_steps is not None:
    return int(config.num_train_steps)
  return int(math.ceil(config.num_epochs * steps_per_epoch(config, info)))


def mix_off_step(config: ml_collections.ConfigDict, info: data.DatasetInfo) -> int:
  """First step at which mixing is turned off (== total steps when it never is)."""
  n = total_steps(config, info)
  off = n
  if config.mix.off_after_step is not None:
    off = min(off, int(config.mix.off_after_step))
  if config.mix.off_last_epochs > 0:
    off = min(off, n - int(config.mix.off_last_epochs * steps_per_epoch(config, info)))
  return max(0, off)


def validate_config(config: ml_collections.ConfigDict, *, device_count: int | None = None,
                    process_count: int | None = None,
                    info: data.DatasetInfo | None = None) -> None:
  """Checks the config before anything is built or compiled.

  `info` (default: `dataset_info(config)`, which reads the disk through the TensorFlow
  pipeline) lets synthetic-data callers such as the benchmarks validate without TensorFlow.

  Everything checkable without compiling is checked here: fields and hyper-parameters, the
  mixer's shape-dependent constraints on this dataset's images (traced abstractly), and that
  the dataset is prepared (or preparable offline).

  Raises:
    errors.UserError: naming the offending field and its value (a ValueError).
  """
  device_count = jax.device_count() if device_count is None else device_count
  process_count = jax.process_count() if process_count is None else process_count
  if config.model.name not in models.names():
    raise errors.unknown_name_error('model.name', config.model.name, models.names(), 'model')
  if config.mix.name not in mixing.names():
    raise errors.unknown_name_error('mix.name', config.mix.name, mixing.names(),
                                    'mixing method')
  errors.check(config.mix.scope in MIX_SCOPES, 'mix.scope', config.mix.scope,
         f'must be one of {MIX_SCOPES}.')
  errors.check(config.compute_dtype in COMPUTE_DTYPES, 'compute_dtype', config.compute_dtype,
               f'must be one of {COMPUTE_DTYPES} (float16 would need loss scaling).'
               f'{errors.did_you_mean(config.compute_dtype, COMPUTE_DTYPES)}')
  errors.check(config.mix.saliency_batch_stats in SALIENCY_BATCH_STATS,
         'mix.saliency_batch_stats', config.mix.saliency_batch_stats,
         f'must be one of {SALIENCY_BATCH_STATS}.')
  for field in ('batch_size', 'eval_batch_size'):
    value = config[field]
    errors.check(isinstance(value, int) and value >= 1, field, value, 'must be an integer >= 1.')
    errors.check(value % device_count == 0, field, value,
           f'must be divisible by the number of devices ({device_count}).')
    errors.check(value % process_count == 0, field, value,
           f'must be divisible by the number of processes ({process_count}).')
  for field in ('num_train_steps', 'halt_after_step'):
    errors.check(config[field] is None or config[field] >= 1, field, config[field],
                 'must be an integer >= 1 (or unset).')
  errors.check(config.num_train_steps is not None or config.num_epochs > 0, 'num_epochs',
               config.num_epochs, 'must be > 0 when num_train_steps is not set.')
  errors.check(0.0 <= config.label_smoothing < 1.0, 'label_smoothing', config.label_smoothing,
         'must be in [0, 1).')
  errors.check(config.mix.objective in mixing.OBJECTIVES, 'mix.objective', config.mix.objective,
         f'must be one of {list(mixing.OBJECTIVES)}.')
  errors.check(config.loss in mixing.LOSSES, 'loss', config.loss,
         f'is not one of {sorted(mixing.LOSSES)}.')
  for field in ('log_every_steps', 'checkpoint_every_steps', 'eval_every_steps'):
    errors.check(isinstance(config[field], int) and config[field] >= 0, field, config[field],
           'must be an integer >= 0 (0 = only at the end).')
  errors.check(config.keep_checkpoints >= 1, 'keep_checkpoints', config.keep_checkpoints,
         'must be >= 1.')
  optim.validate(config.optim)
  errors.check(config.mix.off_last_epochs >= 0, 'mix.off_last_epochs',
         config.mix.off_last_epochs, 'must be >= 0.')
  errors.check(config.mix.off_after_step is None or config.mix.off_after_step >= 0,
               'mix.off_after_step', config.mix.off_after_step, 'must be >= 0 (or unset).')

  mixer = build_mixer(config)  # Raises UserError for bad hyper-parameters.
  if mixer.needs_mixing_pictures:  # PixMix / IPMix: a second stream of mixing pictures.
    errors.check(bool(config.dataset.mixing_set), 'dataset.mixing_set',
                 config.dataset.mixing_set, f'must name the mixing pictures that '
                 f'mix.name={config.mix.name!r} mixes with, e.g. \'fractals\' (generated) or '
                 '\'image_folder:<root>\' (docs/DESIGN.md#mixing-stream).')
  if info is None:
    info = dataset_info(config)  # Raises UserError for an unknown dataset.
  h, w, c = info.image_shape
  model = build_model(config, info.num_classes)  # Raises UserError for bad model options.
  if mixer.hidden_points:  # Manifold Mixup: the model mixes hidden states (`mix=` argument).
    errors.check('mix' in inspect.signature(type(model).__call__).parameters, 'model.name',
           config.model.name, f'does not take the `mix` argument that mix.name='
           f'{config.mix.name!r} needs (hidden-state mixing, see storm_jax.mixing.manifold).')
  if mixer.hparams.get('all_ops'):  # AugMix's enhance ops convert to grey: 1 or 3 channels.
    errors.check(c in (1, 3), 'mix.hparams.all_ops', True,
           f'needs images with 1 or 3 channels; dataset.name={config.dataset.name!r} has {c}.')
  if mixer.needs_saliency and mixer.saliency_kind == 'fine_grained':  # OpenCV's grey image.
    errors.check(c in (1, 3), 'mix.name', config.mix.name,
           f'needs images with 1 or 3 channels; dataset.name={config.dataset.name!r} has {c}.')
  if mixer.hparams.get('clean_lam'):  # The loss of the input-gradient saliency pass.
    errors.check(mixer.needs_saliency and mixer.saliency_kind == 'input_gradient',
                 'mix.hparams.clean_lam', mixer.hparams['clean_lam'],
                 f'is the weight of the input-gradient saliency pass\'s loss; mix.name='
                 f'{config.mix.name!r} with these hyper-parameters has no such pass (use 0).')
  if mixer.name == 'ipmix':  # Every patch side must fit the image.
    errors.check(max(mixer.hparams['patch_sizes']) <= min(h, w), 'mix.hparams.patch_sizes',
                 tuple(mixer.hparams['patch_sizes']), f'must all fit the {h}x{w} images of '
                 f'dataset.name={config.dataset.name!r} (e.g. (2, 4, 8) for 8x8 images).')
  if 'grid_sizes' in mixer.hparams:  # R-Mix: every grid side must tile the image.
    for p in mixer.hparams['grid_sizes']:
      errors.check(h % p == 0 and w % p == 0, 'mix.hparams.grid_sizes', mixer.hparams['grid_sizes'],
             f'must all divide the image size {h}x{w}.')
  # Shape-dependent constraints (e.g. StoRM's k vs the image side with points='distinct'),
  # traced abstractly on one device's batch: nothing compiles.
  try:
    mixer.check((max(config.batch_size // device_count, 1), h, w, c), info.num_classes)
  except ValueError as e:
    raise errors.UserError(f'mix.name={config.mix.name!r}, mix.hparams='
                           f'{dict(config.mix.hparams)!r} on {h}x{w} images: {e}') from None
  train_examples = config.dataset.train_examples
  errors.check(train_examples is None or train_examples >= 1, 'dataset.train_examples',
         train_examples, 'must be an integer >= 1 (unset = the whole split).')
  n_train = num_train_examples(config, info)
  errors.check(config.batch_size <= max(n_train, 1), 'batch_size', config.batch_size,
         f'exceeds the training set ({n_train} examples).')
