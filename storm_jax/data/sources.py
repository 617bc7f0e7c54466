"""Random-access record sources: prepared tfds datasets (ArrayRecord) and image folders.

The input pipeline shuffles by computing a permutation of example indices (stateless, from
(seed, epoch)), so it needs random access: tfds datasets are read through
`builder.as_data_source` from ArrayRecord files, which is what `prepare()` writes. Sources
return raw records; decoding and augmentation happen in tf.data (see input_pipeline.py).

Nothing here downloads implicitly. A dataset that is not prepared raises
`DatasetNotFoundError` naming the files to place and the command that prepares them; only
the custom builders whose inputs are already on disk (`digits` always: scikit-learn ships
it; `fractals` always: it is generated; `tiny_imagenet` and `cifar100_corrupted` once their
manual files are in place) are prepared on first use.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core import decode as tfds_decode

from storm_jax.data import cifar100_corrupted
from storm_jax.data import digits
from storm_jax.data import fractals
from storm_jax.data import info as info_lib
from storm_jax.data import tiny_imagenet

_CUSTOM_BUILDERS = {
    'digits': digits.Digits,
    'tiny_imagenet': tiny_imagenet.TinyImagenet,
    'cifar100_corrupted': cifar100_corrupted.Cifar100Corrupted,
    'fractals': fractals.Fractals,
}
# Custom builders that generate their data (nothing to place): prepared on first use.
_GENERATED = ('digits', 'fractals')
_IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')
_IMAGE_FOLDER = 'image_folder:'
_PREPARE_CMD = 'python -m storm_jax.data.prepare {name} --data_dir={data_dir}'


class DatasetNotFoundError(ValueError):
  """A dataset is not available locally; the message says what to place where."""


def default_data_dir(data_dir: str | None) -> str:
  """The tfds data_dir actually used: data_dir, else $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
  # An empty $TFDS_DATA_DIR counts as unset (tfds would otherwise write to the cwd).
  return os.path.expanduser(data_dir or os.environ.get('TFDS_DATA_DIR')
                            or '~/tensorflow_datasets')


def default_manual_dir(data_dir: str | None) -> str:
  return os.path.join(default_data_dir(data_dir), 'downloads', 'manual')


def builder(tfds_name: str, data_dir: str | None = None) -> tfds.core.DatasetBuilder:
  """A tfds builder for `name[/config]`; never consults GCS."""
  base, _, config = tfds_name.partition('/')
  data_dir = default_data_dir(data_dir)
  if base in _CUSTOM_BUILDERS:
    return _CUSTOM_BUILDERS[base](data_dir=data_dir, config=config or None)
  return tfds.builder(tfds_name, data_dir=data_dir, try_gcs=False)


def _manual_source(tfds_name: str, manual_dir: str) -> str | None:
  """The manually placed source files of a custom builder, if present."""
  base, _, config = tfds_name.partition('/')
  if base == 'tiny_imagenet':
    return tiny_imagenet.find_source(manual_dir)
  if base == 'cifar100_corrupted':
    return cifar100_corrupted.find_source(manual_dir, config.rpartition('_')[0] or None)
  return None


def _configs_of(tfds_name: str) -> list[str]:
  """All config names to prepare for a name given with or without its config."""
  base, _, config = tfds_name.partition('/')
  if config or base not in ('cifar100_corrupted', 'cifar10_corrupted'):
    return [tfds_name]
  return [f'{base}/{c.name}' for c in builder(base).BUILDER_CONFIGS]


def prepare(name: str, *, data_dir: str | None = None, manual_dir: str | None = None,
            download: bool = True) -> list[str]:
  """Prepares dataset `name` in `data_dir` as ArrayRecord files (what the pipeline reads).

  Args:
    name: storm_jax or tfds name; 'cifar100_corrupted' / 'cifar10_corrupted' without a
      config prepare all 95 configs.
    data_dir: tfds data_dir (default $TFDS_DATA_DIR or ~/tensorflow_datasets).
    manual_dir: where manually downloaded files are (default <data_dir>/downloads/manual).
    download: allow tfds to download what is not in manual_dir.

  Returns:
    The prepared dataset directories.
  """
  if name.startswith(_IMAGE_FOLDER):
    raise ValueError(f'name={name!r}: image folders are read in place, nothing to prepare.')
  try:  # storm_jax names (aliases, official corruption names) -> tfds names
    name = info_lib.get_info(name, data_dir=data_dir).tfds_name
  except ValueError:
    pass  # a tfds name, or 'cifar10_corrupted' / 'cifar100_corrupted' for all configs
  manual_dir = manual_dir or default_manual_dir(data_dir)
  out = []
  for tfds_name in _configs_of(name):
    b = builder(tfds_name, data_dir)
    if _prepared_format(b) == 'tfrecord':
      _convert_to_array_record(b)
    elif not b.is_prepared():
      if not download and _manual_source(tfds_name, manual_dir) is None \
          and tfds_name.partition('/')[0] not in _GENERATED:
        raise DatasetNotFoundError(missing_message(tfds_name, data_dir))
      logging.info('Preparing %s in %s (ArrayRecord)...', tfds_name, b.data_dir)
      b.download_and_prepare(
          file_format='array_record',
          download_config=tfds.download.DownloadConfig(
              manual_dir=manual_dir, try_download_gcs=False))
    out.append(str(b.data_dir))
  return out


def _prepared_format(b: tfds.core.DatasetBuilder) -> str | None:
  """'array_record', 'tfrecord' (no ArrayRecord copy), or None if not prepared."""
  if not b.is_prepared():
    return None
  formats = {b.info.file_format.value} | {
      f.value for f in getattr(b.info, 'alternative_file_formats', ()) or ()}
  return 'array_record' if 'array_record' in formats else 'tfrecord'


def _convert_to_array_record(b: tfds.core.DatasetBuilder) -> None:
  """Writes an ArrayRecord copy of every TFRecord shard and records it in dataset_info.json.

  What `tfds convert_format` does (same file names and shard lengths), without its Apache
  Beam dependency (which tfds 4.9.10 imports unconditionally there).
  """
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  root = str(b.data_dir)
  logging.info('Writing an ArrayRecord copy of %s next to its TFRecord files...', root)
  for path in sorted(glob.glob(os.path.join(root, '*.tfrecord-*'))):
    out = path.replace('.tfrecord-', '.array_record-')
    if os.path.exists(out):
      continue
    writer = array_record_module.ArrayRecordWriter(out + '.incomplete', 'group_size:1')
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
      writer.write(record)
    writer.close()
    os.replace(out + '.incomplete', out)
  info_path = os.path.join(root, 'dataset_info.json')
  with open(info_path) as f:
    info = json.load(f)
  # tfds builders restore `fileFormat` from this file but not `alternativeFileFormats`, so
  # ArrayRecord becomes the main format and TFRecord (still there) the alternative.
  old = info.get('fileFormat', 'tfrecord')
  info['fileFormat'] = 'array_record'
  info['alternativeFileFormats'] = sorted(
      (set(info.get('alternativeFileFormats', [])) | {old}) - {'array_record'})
  with open(info_path + '.incomplete', 'w') as f:
    json.dump(info, f, indent=2)
  os.replace(info_path + '.incomplete', info_path)


def missing_message(tfds_name: str, data_dir: str | None) -> str:
  """What to place where, and the command that prepares `tfds_name`."""
  base = tfds_name.partition('/')[0]
  root = default_data_dir(data_dir)
  manual = default_manual_dir(data_dir)
  cmd = _PREPARE_CMD.format(name=tfds_name, data_dir=root)
  head = f'Dataset {tfds_name!r} is not prepared in data_dir {root}.'
  if base == 'tiny_imagenet':
    return (f'{head} Place {tiny_imagenet.ZIP_NAME} ({tiny_imagenet.URL}) or its extracted '
            f'{tiny_imagenet.FOLDER_NAME}/ folder in {manual}/ and run `{cmd}` (or pass '
            '--manual_dir=<folder holding it>); storm_jax also prepares it on first use once '
            'the file is there.')
  if base == 'cifar100_corrupted':
    corruption = tfds_name.partition('/')[2].rpartition('_')[0] or '<corruption>'
    return (f'{head} Place {cifar100_corrupted.TAR_NAME} ({cifar100_corrupted.URL}) or its '
            f'extracted {cifar100_corrupted.FOLDER_NAME}/ folder (with {corruption}.npy and '
            f'labels.npy) in {manual}/ and run `{cmd}`; storm_jax also prepares it on first '
            'use once the files are there.')
  if base == 'imagenet2012':
    return (f'{head} Place ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar (from '
            f'https://image-net.org/download-images) in {manual}/ and run `{cmd}`.')
  b = builder(tfds_name, data_dir)
  return (f'{head} The pipeline never downloads: run `{cmd}` (tfds downloads the source files '
          'and writes ArrayRecord files), or run it on a machine with network and copy the '
          f'folder it writes, {b.data_dir}/, to the same place here.')


def open_split(tfds_name: str, split: str, data_dir: str | None) -> 'RecordSource':
  """Opens a prepared split for random access, preparing custom datasets whose files exist.

  Raises:
    DatasetNotFoundError: the dataset is not prepared and cannot be prepared offline.
    ValueError: the split does not exist.
  """
  if tfds_name.startswith(_IMAGE_FOLDER):
    return FolderSource(tfds_name[len(_IMAGE_FOLDER):], split)
  b = builder(tfds_name, data_dir)
  fmt = _prepared_format(b)
  base = tfds_name.partition('/')[0]
  if fmt == 'tfrecord':
    raise DatasetNotFoundError(
        f'Dataset {tfds_name!r} in {b.data_dir} is prepared as TFRecord only; the storm_jax '
        'pipeline reads ArrayRecord (random access for stateless, resumable shuffling). '
        f'Run `{_PREPARE_CMD.format(name=tfds_name, data_dir=default_data_dir(data_dir))}` '
        'to add an ArrayRecord copy.')
  if fmt is None:
    if base in _GENERATED or _manual_source(tfds_name, default_manual_dir(data_dir)) is not None:
      prepare(tfds_name, data_dir=data_dir, download=False)
      b = builder(tfds_name, data_dir)
    else:
      try:  # tfds.testing.mock_data serves unprepared datasets through as_data_source
        return TfdsSource(b, split)
      except Exception:  # pylint: disable=broad-except
        raise DatasetNotFoundError(missing_message(tfds_name, data_dir)) from None
  if split not in b.info.splits:
    raise ValueError(f'split={split!r}: {b.info.full_name} has splits {list(b.info.splits)}.')
  return TfdsSource(b, split)


class RecordSource:
  """Random access to one split: `read(indices) -> records`, `parse(record) -> (image, label)`.

  `parse` runs inside tf.data and returns the *encoded* image bytes (PNG/JPEG) and an int32
  label, so that decoding (and JPEG crop-while-decoding) stays in tf.data's parallel map.
  """
  num_examples: int
  image_hw: tuple[int, int] | None = None  # (height, width) of every image, if fixed

  def read(self, indices: np.ndarray) -> np.ndarray:
    raise NotImplementedError

  def parse(self, record: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    raise NotImplementedError


class TfdsSource(RecordSource):
  """A split of a prepared tfds dataset, read from its ArrayRecord files."""

  def __init__(self, b: tfds.core.DatasetBuilder, split: str):
    self._source = b.as_data_source(split=split,
                                    deserialize_method=tfds_decode.DeserializeMethod.RAW_BYTES)
    self.num_examples = len(self._source)
    self._features = b.info.features
    image_key, label_key = b.info.supervised_keys or ('image', 'label')
    # Unlabelled sets (the `fractals` mixing pictures) parse with label 0.
    self._keys = (image_key, label_key if label_key in self._features else None)
    shape = self._features[image_key].shape
    if shape[0] is not None and shape[1] is not None:
      self.image_hw = (int(shape[0]), int(shape[1]))
    # Images stay encoded: the pipeline decodes (and crops) them itself.
    self._decoders = {k: tfds.decode.SkipDecoding() for k, f in self._features.items()
                      if isinstance(f, tfds.features.Image)}

  def read(self, indices: np.ndarray) -> np.ndarray:
    keys = [int(i) for i in indices]
    try:
      records = self._source.__getitems__(keys)  # one batched (parallel) ArrayRecord read
    except TypeError:  # tfds.testing.mock_data's data source only supports __getitem__
      records = [self._source[k] for k in keys]
    return np.array(records, dtype=object)

  def parse(self, record):
    ex = self._features.deserialize_example(record, decoders=self._decoders)
    if self._keys[1] is None:
      return ex[self._keys[0]], tf.constant(0, tf.int32)
    return ex[self._keys[0]], tf.cast(ex[self._keys[1]], tf.int32)


def _scan_folder(root: str) -> tuple[list[str], dict[str, list[tuple[str, str]]]]:
  """Sorted class names (union over splits) and, per split, sorted (class, path) pairs."""
  if not os.path.isdir(root):
    raise DatasetNotFoundError(
        f'image folder {root!r} does not exist; expected {root}/<split>/<class>/*.jpg|png.')
  splits = {}
  for split in sorted(os.listdir(root)):
    split_dir = os.path.join(root, split)
    if not os.path.isdir(split_dir):
      continue
    items = []
    for cls in sorted(os.listdir(split_dir)):
      cls_dir = os.path.join(split_dir, cls)
      if os.path.isdir(cls_dir):
        items += [(cls, os.path.join(cls_dir, f)) for f in sorted(os.listdir(cls_dir))
                  if f.lower().endswith(_IMAGE_EXTENSIONS)]
    if items:
      splits[split] = items
  if not splits:
    raise DatasetNotFoundError(
        f'image folder {root!r} holds no images; expected {root}/<split>/<class>/*.jpg|png.')
  classes = sorted({c for items in splits.values() for c, _ in items})
  return classes, splits


class FolderSource(RecordSource):
  """`root/<split>/<class>/*.jpg|png`, labels = index of the class in the sorted class names.

  The same layout and label order as `tfds.ImageFolder` (class names sorted over all splits),
  read in place without preparing.
  """

  def __init__(self, root: str, split: str):
    classes, splits = _scan_folder(root)
    if split not in splits:
      raise ValueError(f'split={split!r}: image folder {root} has splits {sorted(splits)}.')
    index = {c: i for i, c in enumerate(classes)}
    self._paths = np.array([p.encode() for _, p in splits[split]], dtype=object)
    self._labels = np.array([index[c] for c, _ in splits[split]], np.int32)
    self.num_examples = len(self._paths)

  def read(self, indices: np.ndarray) -> np.ndarray:
    # Records are "<label>:<path>"; the file is read by tf.data's parallel map.
    idx = np.asarray(indices, np.int64)
    return np.array([b'%d:%s' % (l, p) for l, p in zip(self._labels[idx], self._paths[idx])],
                    dtype=object)

  def parse(self, record):
    parts = tf.strings.split(record, ':', maxsplit=1)
    return tf.io.read_file(parts[1]), tf.strings.to_number(parts[0], tf.int32)


def image_folder_info(name: str) -> info_lib.DatasetInfo:
  """DatasetInfo of 'image_folder:<root>': natural-photo defaults (ImageNet statistics,
  random-resized crop + flip, resize + centre-crop eval); image size = the first train
  image's height (override with image_size)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  root = name[len(_IMAGE_FOLDER):]
  classes, splits = _scan_folder(root)
  train = 'train' if 'train' in splits else None
  eval_split = next((s for s in ('validation', 'val', 'test') if s in splits), None)
  if eval_split is None:
    eval_split = train or sorted(splits)[0]
  with Image.open(splits[train or eval_split][0][1]) as im:
    size = im.size[1]
  return info_lib.DatasetInfo(
      name=name, tfds_name=name, num_classes=len(classes), image_shape=(size, size, 3),
      mean=info_lib._IMAGENET_MEAN, std=info_lib._IMAGENET_STD,  # pylint: disable=protected-access
      train_split=train, eval_split=eval_split, num_train=len(splits.get(train, ())),
      num_eval=len(splits[eval_split]), train_augment='rrc_flip', eval_resize=True)


def with_prepared_split_sizes(info: info_lib.DatasetInfo,
                              data_dir: str | None) -> info_lib.DatasetInfo:
  """`info` with num_train/num_eval read from the prepared dataset, when it is prepared."""
  try:
    b = builder(info.tfds_name, data_dir)
    if not b.is_prepared():
      return info
    splits = b.info.splits
    return dataclasses.replace(
        info,
        num_train=splits[info.train_split].num_examples if info.train_split else 0,
        num_eval=splits[info.eval_split].num_examples)
  except Exception:  # pylint: disable=broad-except
    return info  # unreadable metadata: the table's numbers still hold for the full dataset

