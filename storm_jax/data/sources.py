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

import concurrent.futures
import dataclasses
import glob
import hashlib
import json
import os

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core import decode as tfds_decode

from storm_jax import errors
from storm_jax.data import hide_gpus_from_tf
from storm_jax.data import cifar100_corrupted
from storm_jax.data import digits
from storm_jax.data import fractals
from storm_jax.data import info as info_lib
from storm_jax.data import tiny_imagenet

# The pipeline's first TensorFlow import: TF must leave the accelerators to JAX.
hide_gpus_from_tf()

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
# Image folders (docs/DESIGN.md#image-folders). Optional settings a user writes in the root:
FOLDER_SETTINGS = 'storm_jax.json'  # {"mean": [..], "std": [..], "eval_resize": false}
# Per-channel statistics computed once from the train split, cached in the root (or, if the
# root is read-only, under <tfds data_dir>/image_folder_stats/).
FOLDER_STATS = 'storm_jax_stats.json'
FOLDER_STATS_MAX_IMAGES = 5000  # evenly spaced over the sorted train split
_SIZE_PROBES = 16  # images per split whose size decides "fixed-size" vs "natural photos"
_FIXED_SIZE_CROP_PADDING = 4  # RandomCrop padding of the CIFAR and Tiny-ImageNet protocols
_PREPARE_CMD = 'python -m storm_jax.data.prepare {name} --data_dir={data_dir}'


class DatasetNotFoundError(errors.UserError):
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
    name = info_lib.lookup(name).tfds_name
  except ValueError:
    pass  # a tfds name, or 'cifar10_corrupted' / 'cifar100_corrupted' for all configs
  manual_dir = manual_dir or default_manual_dir(data_dir)
  base = name.partition('/')[0]
  if base not in _CUSTOM_BUILDERS and base not in tfds.list_builders(with_community_datasets=False):
    known = [*info_lib.names()[:-1], *_CUSTOM_BUILDERS]
    raise DatasetNotFoundError(
        f'name={name!r} is neither a storm_jax dataset nor a tfds builder.'
        f'{errors.did_you_mean(name, [n for n in known if "/" not in n])} storm_jax datasets: '
        f'{", ".join(sorted({n.partition("/")[0] for n in known}))}.')
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
    self.paths = [p for _, p in splits[split]]

  def read(self, indices: np.ndarray) -> np.ndarray:
    # Records are "<label>:<path>"; the file is read by tf.data's parallel map.
    idx = np.asarray(indices, np.int64)
    return np.array([b'%d:%s' % (l, p) for l, p in zip(self._labels[idx], self._paths[idx])],
                    dtype=object)

  def parse(self, record):
    parts = tf.strings.split(record, ':', maxsplit=1)
    return tf.io.read_file(parts[1]), tf.strings.to_number(parts[0], tf.int32)


class UnreadableImageError(errors.UserError):
  """An image file of an image folder does not decode; the message names the file."""


def _unreadable_message(path: str, why: str) -> str:
  return (f'image folder file {path} does not decode ({why}). Remove or replace it: storm_jax '
          'stops rather than skipping it, since a skipped file would change the split, its '
          'epochs and the data order a resumed run replays.')


def decode_file(path: str, channels: int = 3) -> np.ndarray:
  """Decodes one image file as the pipeline does (uint8 [h, w, channels]).

  Raises:
    UnreadableImageError: the file does not decode (naming it).
  """
  try:
    image = tf.io.decode_image(tf.io.read_file(path), channels=channels,
                               expand_animations=False)
    return image.numpy()
  except (tf.errors.OpError, ValueError) as e:
    why = (getattr(e, 'message', None) or str(e)).strip().splitlines()[0]
    raise UnreadableImageError(_unreadable_message(path, why)) from None


def name_unreadable(iterator, name: str, split: str):
  """`iterator` of dataset `name`, where a decode failure in an image folder becomes an
  `UnreadableImageError` naming the file(s) (tf.data's message names none)."""
  if not name.startswith(_IMAGE_FOLDER):
    return iterator
  return _name_unreadable(iterator, name[len(_IMAGE_FOLDER):], split)


def _name_unreadable(iterator, root: str, split: str):
  while True:
    try:
      batch = next(iterator)
    except StopIteration:
      return
    except tf.errors.InvalidArgumentError:
      paths = FolderSource(root, split).paths
      bad = find_unreadable(paths)
      if not bad:
        raise
      try:
        decode_file(bad[0])
      except UnreadableImageError as e:
        more = f' ({len(bad)} of {len(paths)} files of split {split!r} do not decode: ' \
               f'{", ".join(bad[:5])}{", ..." if len(bad) > 5 else ""})' if len(bad) > 1 else ''
        raise UnreadableImageError(f'{e}{more}') from None
    yield batch


def find_unreadable(paths, *, max_workers: int = 8) -> list[str]:
  """The files among `paths` that do not decode (in the order given)."""
  def bad(path):
    try:
      decode_file(path)
      return None
    except UnreadableImageError:
      return path
  with concurrent.futures.ThreadPoolExecutor(max_workers) as pool:
    return [p for p in pool.map(bad, paths) if p is not None]


def _image_sizes(paths) -> set[tuple[int, int]]:
  """(height, width) of the files, from their headers (nothing decoded)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  sizes = set()
  for path in paths:
    try:
      with Image.open(path) as im:
        sizes.add((im.size[1], im.size[0]))
    except Exception as e:  # pylint: disable=broad-except
      raise UnreadableImageError(_unreadable_message(path, f'{type(e).__name__}: {e}')) from None
  return sizes


def _evenly_spaced(items, n: int):
  if len(items) <= n:
    return list(items)
  return [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


def _stats_cache_paths(root: str) -> list[str]:
  key = hashlib.sha1(os.path.abspath(root).encode()).hexdigest()[:16]
  return [os.path.join(root, FOLDER_STATS),
          os.path.join(default_data_dir(None), 'image_folder_stats', f'{key}.json')]


def folder_statistics(root: str, paths: list[str]) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """Per-channel (mean, std) in [0, 1] pixel units of the train images `paths`, cached.

  Computed once over at most `FOLDER_STATS_MAX_IMAGES` evenly spaced files of the sorted
  train split (every pixel weighs the same; population std), then read from the cache file
  (`FOLDER_STATS` in the root, else under the tfds data_dir), which is recomputed when the
  number of train files changes.

  Raises:
    UnreadableImageError: a sampled file does not decode.
  """
  for cache in _stats_cache_paths(root):
    try:
      with open(cache) as f:
        stats = json.load(f)
      if stats.get('num_files') == len(paths):
        return tuple(stats['mean']), tuple(stats['std'])
    except (OSError, ValueError, KeyError, AttributeError):
      continue
  sample = _evenly_spaced(paths, FOLDER_STATS_MAX_IMAGES)
  total = np.zeros(3)
  total_sq = np.zeros(3)
  count = 0

  def moments(path):
    x = decode_file(path).reshape(-1, 3).astype(np.float64) / 255.0
    return x.sum(0), np.square(x).sum(0), x.shape[0]

  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    for s, sq, n in pool.map(moments, sample):
      total, total_sq, count = total + s, total_sq + sq, count + n
  mean = total / count
  std = np.sqrt(np.maximum(total_sq / count - np.square(mean), 0.0))
  stats = {'mean': [round(float(m), 6) for m in mean], 'std': [round(float(v), 6) for v in std],
           'num_files': len(paths), 'num_images_used': len(sample), 'split': 'train'}
  for cache in _stats_cache_paths(root):
    try:
      os.makedirs(os.path.dirname(cache), exist_ok=True)
      tmp = f'{cache}.tmp-{os.getpid()}'
      with open(tmp, 'w') as f:
        json.dump(stats, f, indent=1)
      os.replace(tmp, cache)
      logging.info('Image folder %s: train mean %s, std %s (cached in %s).', root,
                   stats['mean'], stats['std'], cache)
      break
    except OSError:
      continue
  return tuple(stats['mean']), tuple(stats['std'])


def _folder_settings(root: str) -> dict:
  path = os.path.join(root, FOLDER_SETTINGS)
  if not os.path.exists(path):
    return {}
  try:
    with open(path) as f:
      settings = json.load(f)
  except (OSError, ValueError) as e:
    raise errors.UserError(f'{path} is not a readable JSON object: {e}') from None
  allowed = ('mean', 'std', 'eval_resize')
  if not isinstance(settings, dict):
    raise errors.UserError(f'{path} must hold a JSON object with keys {allowed}.')
  for key in settings:
    if key not in allowed:
      raise errors.UserError(f'{path}: unknown setting {key!r}.'
                             f'{errors.did_you_mean(key, allowed)} Allowed: {allowed}.')
  for key in ('mean', 'std'):
    value = settings.get(key)
    if value is not None and not (isinstance(value, list) and len(value) == 3 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
      raise errors.UserError(f'{path}: {key}={value!r} must be a list of 3 numbers in [0, 1] '
                             'pixel units.')
  if 'std' in settings and min(settings['std']) <= 0:
    raise errors.UserError(f'{path}: std={settings["std"]!r} must be > 0.')
  if not isinstance(settings.get('eval_resize', False), bool):
    raise errors.UserError(f'{path}: eval_resize={settings["eval_resize"]!r} must be true or '
                           'false.')
  return settings


def image_folder_info(name: str) -> info_lib.DatasetInfo:
  """DatasetInfo of 'image_folder:<root>' (docs/DESIGN.md#image-folders).

  Image size = the first train image's height (override with image_size). Two kinds:
    * fixed-size folders (the first images of the train and eval splits all have one size,
      e.g. CIFAR-like 32x32 PNGs): trained with random crop (zero padding 4) + flip and
      evaluated at native size, as the CIFAR / Tiny-ImageNet protocols;
    * natural photos (sizes vary): random-resized crop + flip, resize + centre-crop eval.
  Mean/std are the folder's own (`folder_statistics` of the train split, computed once and
  cached; ImageNet's when there is no train split). `<root>/storm_jax.json` may set "mean",
  "std" and "eval_resize" by hand.

  Raises:
    DatasetNotFoundError: no such folder, or no images in it.
    UnreadableImageError: a probed file does not decode (naming it).
  """
  root = name[len(_IMAGE_FOLDER):]
  classes, splits = _scan_folder(root)
  train = 'train' if 'train' in splits else None
  eval_split = next((s for s in ('validation', 'val', 'test') if s in splits), None)
  if eval_split is None:
    eval_split = train or sorted(splits)[0]
  probes = [p for s in dict.fromkeys((train or eval_split, eval_split))
            for _, p in splits[s][:_SIZE_PROBES]]
  size = _image_sizes(probes[:1]).pop()[0]
  fixed = len(_image_sizes(probes)) == 1
  settings = _folder_settings(root)
  mean, std = info_lib.IMAGENET_MEAN, info_lib.IMAGENET_STD
  if train is not None and not ('mean' in settings and 'std' in settings):
    mean, std = folder_statistics(root, [p for _, p in splits[train]])
  mean, std = tuple(settings.get('mean', mean)), tuple(settings.get('std', std))
  return info_lib.DatasetInfo(
      name=name, tfds_name=name, num_classes=len(classes), image_shape=(size, size, 3),
      mean=mean, std=std, train_split=train, eval_split=eval_split,
      num_train=len(splits.get(train, ())), num_eval=len(splits[eval_split]),
      train_augment='crop_flip' if fixed else 'rrc_flip',
      crop_padding=_FIXED_SIZE_CROP_PADDING if fixed else 0,
      eval_resize=settings.get('eval_resize', not fixed))


def get_info(name: str, *, data_dir: str | None = None,
             image_size: int | None = None) -> info_lib.DatasetInfo:
  """Returns the facts about dataset `name`: the table's (`info.lookup`) and the disk's.

  Args:
    name: a name from `names()`, e.g. 'cifar100', 'cifar100_corrupted/fog_3' or
      'image_folder:/path/to/root' (whose classes, splits and image size are read from disk).
    data_dir: tfds data_dir. When the dataset is already prepared there, split sizes come
      from the prepared data (e.g. a Tiny-ImageNet subset); otherwise from the table.
    image_size: overrides the emitted (square) image size.

  Returns:
    The `DatasetInfo`.

  Raises:
    ValueError: unknown name (the message lists the known ones) or bad image_size.
  """
  name = info_lib.canonical_name(name)
  try:
    if name.startswith(_IMAGE_FOLDER):
      return info_lib.with_image_size(image_folder_info(name), image_size)
    info = info_lib.with_image_size(info_lib.lookup(name), image_size)
  except info_lib.UnknownDatasetError as e:  # The table is a leaf module: the hint is added here.
    hint = errors.did_you_mean(e.name, [*info_lib.names(), *info_lib.ALIASES])
    raise errors.UserError(str(info_lib.UnknownDatasetError(e.name, hint))) from None
  except errors.UserError:
    raise
  except ValueError as e:  # The table's other errors (a bad image_size) are the user's too.
    raise errors.UserError(str(e)) from None
  return with_prepared_split_sizes(info, data_dir)


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

