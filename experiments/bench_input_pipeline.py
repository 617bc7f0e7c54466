r"""Checks a dataset on real files and measures the input pipeline's throughput.

Prepares the dataset if needed (from --manual_dir), prints examples per split, checks every
label of the eval split against the official annotation file (Tiny-ImageNet), prints a few
decoded images' label names, and times the train pipeline (with its augmentation) and the
eval pipeline in images/s on this machine (host only: no model, no device transfer).

  python -m experiments.bench_input_pipeline --dataset=tiny_imagenet \
      --manual_dir=/path/to/tiny-imagenet-200-subset --data_dir=/tmp/tfds
"""

from __future__ import annotations

import io
import os
import pathlib
import sys
import time
import zipfile

from absl import app
from absl import flags
import numpy as np
from PIL import Image
import tensorflow as tf
import tensorflow_datasets as tfds

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # `python experiments/x.py`

from storm_jax import data  # pylint: disable=wrong-import-position
from storm_jax.data import input_pipeline  # pylint: disable=wrong-import-position
from storm_jax.data import sources  # pylint: disable=wrong-import-position
from storm_jax.data import tiny_imagenet  # pylint: disable=wrong-import-position

_DATASET = flags.DEFINE_string('dataset', 'tiny_imagenet', 'storm_jax dataset name.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'tfds data_dir.')
_MANUAL_DIR = flags.DEFINE_string('manual_dir', None, 'Folder with the source files.')
_BATCH = flags.DEFINE_integer('batch_size', 128, 'Batch size.')
_STEPS = flags.DEFINE_integer('steps', 200, 'Timed train batches.')
_WARMUP = flags.DEFINE_integer('warmup', 20, 'Untimed train batches first.')
_AUGMENT = flags.DEFINE_string('augment', None, "Train augmentation (default: the dataset's).")


def _tiny_words(manual_dir: str | None) -> dict[str, str]:
  """wnid -> first human-readable name, from words.txt next to the data (if available)."""
  path = tiny_imagenet.find_source(manual_dir)
  if path is None:
    return {}
  if zipfile.is_zipfile(path):
    with zipfile.ZipFile(path) as z:
      name = next((n for n in z.namelist() if n.endswith('words.txt')), None)
      text = z.read(name).decode() if name else ''
  else:
    words = os.path.join(path, 'words.txt')
    text = open(words).read() if os.path.exists(words) else ''
  return {l.split('\t')[0]: l.split('\t')[1].split(',')[0] for l in text.splitlines()
          if '\t' in l}


def _check_tiny_val_labels(data_dir: str | None, manual_dir: str | None) -> None:
  """Every label vs val_annotations.txt (validation) or the wnid folder (train), by file name."""
  path = tiny_imagenet.find_source(manual_dir)
  if path is None:
    print('(no source files to check labels against)')
    return
  archive = tiny_imagenet.Archive(path)
  truth = {l.split()[0]: l.split()[1]
           for l in archive.read('val/val_annotations.txt').decode().splitlines() if l.strip()}
  b = sources.builder('tiny_imagenet', data_dir)
  info = data.get_info('tiny_imagenet', data_dir=data_dir)
  for split, want in (('validation', lambda f: truth[f]), ('train', lambda f: f.split('_')[0])):
    src = b.as_data_source(split=split, decoders={'image': tfds.decode.SkipDecoding()})
    bad, grey = 0, []
    for i in range(len(src)):
      ex = src[i]
      f = ex['file_name'].decode() if isinstance(ex['file_name'], bytes) else ex['file_name']
      bad += tiny_imagenet.WNIDS[int(ex['label'])] != want(f)
      if Image.open(io.BytesIO(ex['image'])).mode != 'RGB':
        grey.append((f, ex['image']))
    source = 'val_annotations.txt' if split == 'validation' else 'folder names'
    print(f'{split} labels vs {source}: {len(src) - bad}/{len(src)} agree')
    shapes = {tuple(input_pipeline.eval_transform(tf.constant(raw), info).shape)
              for _, raw in grey}
    print(f'  {len(grey)} greyscale JPEGs (e.g. {[f for f, _ in grey[:2]]}) decode to {shapes}')


def main(argv):
  del argv
  name, data_dir, manual_dir = _DATASET.value, _DATA_DIR.value, _MANUAL_DIR.value
  t0 = time.time()
  data.prepare(name, data_dir=data_dir, manual_dir=manual_dir, download=False)
  print(f'prepared/opened in {time.time() - t0:.1f}s')
  info = data.get_info(name, data_dir=data_dir)
  print(f'{name}: {info.train_split}={info.num_train} examples, '
        f'{info.eval_split}={info.num_eval} examples, {info.num_classes} classes, '
        f'image {info.image_shape}, train augment {_AUGMENT.value or info.train_augment}')

  if name == 'tiny_imagenet':
    _check_tiny_val_labels(data_dir, manual_dir)
  words = _tiny_words(manual_dir) if name == 'tiny_imagenet' else {}
  batch = next(data.eval_iterator(name, global_batch_size=8, data_dir=data_dir))
  label_names = sources.builder(info.tfds_name, data_dir).info.features['label'].names
  for image, label in zip(batch['image'][:6], batch['label'][:6]):
    wnid = label_names[label]
    print(f'  eval image {image.shape} {image.dtype} mean={image.mean():6.1f} '
          f'label={label:3d} {wnid} {words.get(wnid, "")}')

  it = data.train_iterator(name, global_batch_size=_BATCH.value, seed=0, data_dir=data_dir,
                           augment=_AUGMENT.value)
  for _ in range(_WARMUP.value):
    next(it)
  t0 = time.time()
  for _ in range(_STEPS.value):
    b = next(it)
  dt = time.time() - t0
  assert b['image'].dtype == np.uint8
  print(f'train pipeline: {_STEPS.value * _BATCH.value / dt:,.0f} images/s '
        f'(batch {_BATCH.value}, {_STEPS.value} batches after {_WARMUP.value} warm-up, '
        f'{os.cpu_count()} CPUs)')

  t0, n = time.time(), 0
  for b in data.eval_iterator(name, global_batch_size=_BATCH.value, data_dir=data_dir):
    n += int(b['mask'].sum())
  print(f'eval pipeline: {n / (time.time() - t0):,.0f} images/s ({n} examples, one pass)')


if __name__ == '__main__':
  app.run(main)
