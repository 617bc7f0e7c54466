"""storm_jax.data: tfds input pipelines for every dataset the papers use, working offline.

    from storm_jax import data
    info = data.get_info('cifar100')
    it = data.train_iterator('cifar100', global_batch_size=128, seed=0, start_step=step)
    batch = data.to_global(next(it), sharding)   # uint8 images; normalise on device
    for batch in data.eval_iterator('cifar100', global_batch_size=500): ...  # batch['mask']

Importing this package hides every GPU from TensorFlow: tf.data runs on the host while JAX
owns the accelerators (TF would otherwise reserve GPU memory).

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

from absl import logging
import tensorflow as tf


def hide_gpus_from_tf() -> None:
  """Hides every GPU from TensorFlow (run on import): tf.data stays on the host, JAX owns them."""
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:  # TF initialised its devices before this import
    if tf.config.get_visible_devices('GPU'):
      logging.warning('TensorFlow already sees GPUs %s; import storm_jax.data before using TF '
                      'so that it leaves the accelerators to JAX.',
                      tf.config.get_visible_devices('GPU'))


hide_gpus_from_tf()

# pylint: disable=g-import-not-at-top,g-bad-import-order
from storm_jax.data.info import AUGMENTS
from storm_jax.data.info import CIFAR_C_CORRUPTIONS
from storm_jax.data.info import CIFAR_C_STANDARD_15
from storm_jax.data.info import IMAGENET_MEAN
from storm_jax.data.info import IMAGENET_STD
from storm_jax.data.info import DatasetInfo
from storm_jax.data.info import SEVERITIES
from storm_jax.data.info import corrupted_names
from storm_jax.data.info import names
from storm_jax.data.input_pipeline import box_feature
from storm_jax.data.input_pipeline import eval_iterator
from storm_jax.data.input_pipeline import make_eval_dataset
from storm_jax.data.input_pipeline import make_mixing_dataset
from storm_jax.data.input_pipeline import make_train_dataset
from storm_jax.data.input_pipeline import mixing_iterator
from storm_jax.data.input_pipeline import num_eval_batches
from storm_jax.data.input_pipeline import process_range
from storm_jax.data.input_pipeline import to_global
from storm_jax.data.input_pipeline import train_iterator
from storm_jax.data.sources import DatasetNotFoundError
from storm_jax.data.sources import get_info
from storm_jax.data.sources import open_split
from storm_jax.data.sources import UnreadableImageError
from storm_jax.data.sources import prepare
