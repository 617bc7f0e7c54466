"""storm_jax.data: tfds input pipelines for every dataset the papers use, working offline.

    from storm_jax import data
    info = data.get_info('cifar100')
    it = data.train_iterator('cifar100', global_batch_size=128, seed=0, start_step=step)
    batch = data.to_global(next(it), sharding)   # uint8 images; normalise on device
    for batch in data.eval_iterator('cifar100', global_batch_size=500): ...  # batch['mask']

TensorFlow is imported on first use of the pipeline (`get_info`, the iterators, `prepare`,
...), not by `import storm_jax.data`: the dataset facts (`info`, `DatasetInfo`, `names`) and
`to_global` work without it (e.g. on accelerator machines without TensorFlow). Loading the
pipeline (`sources.py`) hides every GPU from TensorFlow: tf.data runs on the host while JAX
owns the accelerators.

Datasets (`names()`; facts per dataset in info.py, one table with no I/O; `get_info` in
sources.py adds what the disk knows):
  digits                     scikit-learn 8x8 digits; prepares itself offline on first use.
  cifar10, cifar100          tfds; `python -m storm_jax.data.prepare cifar10` (downloads).
  tiny_imagenet              tiny-imagenet-200.zip (or the extracted folder) in
                             <data_dir>/downloads/manual/; prepared on first use.
  imagenet2012               ILSVRC2012_img_{train,val}.tar in <data_dir>/downloads/manual/.
  caltech_birds2011, cars196 tfds (downloads).
  cifar10_corrupted/<c>_<s>  tfds CIFAR-10-C; official corruption names accepted.
  cifar100_corrupted/<c>_<s> CIFAR-100-C.tar (or CIFAR-100-C/*.npy) in the manual dir.
  image_folder:<root>        <root>/<split>/<class>/*.jpg|png, read in place.
  fractals[/<H>x<W>_<n>_seed<s>]  generated PixMix/IPMix mixing pictures (no labels); read by
                             `mixing_iterator`, prepared on first use.
The pipeline reads ArrayRecord files (random access: stateless shuffling, O(1) resume);
`python -m storm_jax.data.prepare NAME [--data_dir=...] [--manual_dir=...]` writes them, or
adds them to a dataset prepared earlier as TFRecord. Nothing downloads during training: a
missing dataset raises `DatasetNotFoundError` saying what to place where. FGVC-Aircraft is
not in tfds 4.9.10, so it is not offered.
"""

from __future__ import annotations

import importlib
from typing import Any

from storm_jax.data import info
from storm_jax.data.arrays import to_global
from storm_jax.data.info import AUGMENTS
from storm_jax.data.info import CIFAR_C_CORRUPTIONS
from storm_jax.data.info import CIFAR_C_STANDARD_15
from storm_jax.data.info import IMAGENET_MEAN
from storm_jax.data.info import IMAGENET_STD
from storm_jax.data.info import DatasetInfo
from storm_jax.data.info import SEVERITIES
from storm_jax.data.info import corrupted_names
from storm_jax.data.info import names

# Names of the TensorFlow-backed modules, imported on first access (PEP 562).
_LAZY = {
    'DatasetNotFoundError': 'sources',
    'UnreadableImageError': 'sources',
    'box_feature': 'input_pipeline',
    'eval_iterator': 'input_pipeline',
    'get_info': 'sources',
    'make_eval_dataset': 'input_pipeline',
    'make_mixing_dataset': 'input_pipeline',
    'make_train_dataset': 'input_pipeline',
    'mixing_iterator': 'input_pipeline',
    'num_eval_batches': 'input_pipeline',
    'open_split': 'sources',
    'prepare': 'sources',
    'process_range': 'input_pipeline',
    'train_iterator': 'input_pipeline',
}


def hide_gpus_from_tf() -> None:
  """Hides every GPU from TensorFlow: tf.data stays on the host, JAX owns the accelerators."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:  # TF initialised its devices before this import
    if tf.config.get_visible_devices('GPU'):
      logging.warning('TensorFlow already sees GPUs %s; use storm_jax.data before using TF '
                      'so that it leaves the accelerators to JAX.',
                      tf.config.get_visible_devices('GPU'))


def __getattr__(name: str) -> Any:
  if name not in _LAZY:
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
  value = getattr(importlib.import_module(f'{__name__}.{_LAZY[name]}'), name)
  globals()[name] = value  # later lookups skip __getattr__
  return value


def __dir__() -> list[str]:
  return sorted(set(globals()) | set(_LAZY))
