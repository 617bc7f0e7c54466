"""Train and eval input pipelines: stateless, resumable, multi-host, uint8 on the host.

Train stream (global, then split by process). The examples of the train split form one
endless global stream: global position g belongs to epoch e = g // N and is example
`index_shuffle(g % N, seed=fold_in(seed, e))`, a permutation of the split that depends only on
(seed, epoch). Global batch t is positions [t * B, (t + 1) * B) (B the global batch size), so
batches run across epoch boundaries like `repeat().batch()` and every epoch sees each example
exactly once. Process p of P reads (and decodes) only its part of each global batch, the
positions [t * B + p * b, t * B + (p + 1) * b) with b = B / P. Augmentation randomness is a
stateless function of (seed, g). Hence global batch t depends only on (seed, t), not on the
number of processes: the process batches concatenated in process order are the batch one
process reads (docs/DESIGN.md#data-pipeline), and `start_step=t` positions the stream in
O(1): nothing before it is read or decoded.

Eval stream. Each process reads its contiguous slice (sizes differ by at most one), in order,
padded to `num_eval_batches` full batches; `mask` is False on padding (whose image and label
are zeros), so metrics summed with the mask are exact and independent of the batch size.
With `with_boxes=True` (WSOL) it also carries each example's ground-truth boxes, mapped
through the same resize / centre crop as its pixels (`eval_boxes`) and padded to K slots.

Images leave the pipeline as uint8 [b, H, W, C] and labels as int32 [b]; normalisation
`(x / 255 - mean) / std` and mixing happen on device inside the train step.
"""

from __future__ import annotations

import math
from typing import Iterator

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from storm_jax.data import info as info_lib
from storm_jax.data import sources

_AUTOTUNE = tf.data.AUTOTUNE
_STREAM_END = 2**62  # "infinite" train stream
# Salts that keep the shuffle and augmentation random streams apart.
_SHUFFLE_SALT, _AUGMENT_SALT = 0x5F3759DF, 0x2545F491
# torchvision RandomResizedCrop defaults.
_RRC_SCALE, _RRC_RATIO = (0.08, 1.0), (3.0 / 4.0, 4.0 / 3.0)


def process_range(num_examples: int, process_index: int, process_count: int, *,
                  drop_remainder: bool) -> tuple[int, int]:
  """The contiguous slice [lo, hi) of a split that process `process_index` reads.

  Args:
    num_examples: examples in the split.
    process_index: this process, in [0, process_count).
    process_count: number of processes.
    drop_remainder: True: every process gets num_examples // process_count and the
      last num_examples % process_count examples are not used. False (eval): the first
      num_examples % process_count processes get one example more, so every example is read
      exactly once. Both are the slices of `tfds.even_splits(split, process_count,
      drop_remainder=...)[process_index]` (tested).

  Returns:
    (lo, hi).
  """
  base, extra = divmod(num_examples, process_count)
  if drop_remainder:
    return process_index * base, (process_index + 1) * base
  lo = process_index * base + min(process_index, extra)
  return lo, lo + base + (process_index < extra)


def _processes(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  count = jax.process_count() if process_count is None else process_count
  index = jax.process_index() if process_index is None else process_index
  if not isinstance(count, int) or count < 1:
    raise ValueError(f'process_count={count!r}: expected a positive int.')
  if not isinstance(index, int) or not 0 <= index < count:
    raise ValueError(f'process_index={index!r}: expected an int in [0, {count}).')
  return index, count


def _local_batch_size(global_batch_size: int, process_count: int) -> int:
  if not isinstance(global_batch_size, int) or global_batch_size < 1:
    raise ValueError(f'global_batch_size={global_batch_size!r}: expected a positive int.')
  if global_batch_size % process_count:
    raise ValueError(f'global_batch_size={global_batch_size} is not divisible by '
                     f'process_count={process_count}.')
  return global_batch_size // process_count


def _seed_tensor(seed: int, salt: int) -> tf.Tensor:
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
    raise ValueError(f'seed={seed!r}: expected an int.')
  return tf.constant([int(seed) % 2**63, salt], tf.int64)


# ----------------------------------------------------------------------------- image ops


def _decode(image_bytes: tf.Tensor, channels: int) -> tf.Tensor:
  """PNG/JPEG/... bytes -> uint8 [h, w, channels] (greyscale expanded to RGB if asked)."""
  image = tf.io.decode_image(image_bytes, channels=channels, expand_animations=False)
  image.set_shape([None, None, channels])
  return image


def _resize(image: tf.Tensor, height, width) -> tf.Tensor:
  # Antialiased bilinear, as PIL/torchvision resize; round back to uint8.
  out = tf.image.resize(image, tf.stack([height, width]), method='bilinear', antialias=True)
  return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)


def _fit(image: tf.Tensor, height: int, width: int,
         stored_hw: tuple[int, int] | None = None) -> tf.Tensor:
  """Resizes to (height, width) only when the image is not already that size.

  `stored_hw` is the size every stored image has (tfds' static feature shape), if known: then
  the check happens at graph-construction time and costs nothing per example.
  """
  if stored_hw is not None and tuple(stored_hw) == (height, width):
    return tf.ensure_shape(image, [height, width, image.shape[-1]])
  shape = tf.shape(image)
  same = tf.logical_and(tf.equal(shape[0], height), tf.equal(shape[1], width))
  image = tf.cond(same, lambda: image, lambda: _resize(image, height, width))
  image.set_shape([height, width, image.shape[-1]])
  return image


def _sample_crop_window(shape: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """RandomResizedCrop window [y, x, h, w]: area in scale, aspect ratio in ratio, 10 tries.

  Deviation from torchvision: after 10 failed tries TF's sampler returns the whole image
  (torchvision returns a centre crop with the ratio clamped); this is rare for photos.
  """
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]), seed=seed,
      min_object_covered=0.0, aspect_ratio_range=_RRC_RATIO, area_range=_RRC_SCALE,
      max_attempts=10, use_image_if_no_bounding_boxes=True)
  return tf.stack([begin[0], begin[1], size[0], size[1]])


def _random_resized_crop(image_bytes: tf.Tensor, seed: tf.Tensor, height: int, width: int,
                         channels: int) -> tf.Tensor:
  def from_jpeg():
    # Decode only the crop window: the common ImageNet speed-up.
    window = _sample_crop_window(tf.image.extract_jpeg_shape(image_bytes), seed)
    return tf.image.decode_and_crop_jpeg(image_bytes, window, channels=channels)

  def from_other():
    image = _decode(image_bytes, channels)
    w = _sample_crop_window(tf.shape(image), seed)
    return image[w[0]:w[0] + w[2], w[1]:w[1] + w[3]]

  image = tf.cond(tf.io.is_jpeg(image_bytes), from_jpeg, from_other)
  image.set_shape([None, None, channels])
  out = _resize(image, height, width)
  out.set_shape([height, width, channels])
  return out


def _centre_crop_geometry(image_hw: tf.Tensor, size_h: int, size_w: int,
                          crop_fraction: float) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """(resized [2] int32 (h, w), top, left) of `_resize_centre_crop` for an image of image_hw."""
  target = tf.cast(round(min(size_h, size_w) / crop_fraction), tf.float32)
  shape = tf.cast(image_hw, tf.float32)
  scale = target / tf.reduce_min(shape)
  new = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), [size_h, size_w])
  return new, (new[0] - size_h) // 2, (new[1] - size_w) // 2


def _resize_centre_crop(image: tf.Tensor, size_h: int, size_w: int,
                        crop_fraction: float) -> tf.Tensor:
  """Shorter side to size / crop_fraction (256 for 224), then the central size_h x size_w."""
  new, top, left = _centre_crop_geometry(tf.shape(image)[:2], size_h, size_w, crop_fraction)
  image = _resize(image, new[0], new[1])
  image = image[top:top + size_h, left:left + size_w]
  image.set_shape([size_h, size_w, image.shape[-1]])
  return image


def train_transform(image_bytes: tf.Tensor, seed: tf.Tensor, *, augment: str,
                    image_shape: tuple[int, int, int], crop_padding: int,
                    stored_hw: tuple[int, int] | None = None) -> tf.Tensor:
  """Encoded image -> augmented uint8 [H, W, C].

  Args:
    image_bytes: scalar tf.string, an encoded image.
    seed: [2] int64 stateless seed of this example.
    augment: 'crop_flip' (zero-pad by crop_padding, random HxW crop, random horizontal flip;
      torchvision RandomCrop(padding) + RandomHorizontalFlip), 'rrc_flip' (RandomResizedCrop
      scale (0.08, 1), ratio (3/4, 4/3), to HxW, + flip), 'flip' or 'none'. Images of another
      size than HxW are first resized (except for 'rrc_flip', which resizes the crop).
    image_shape: (H, W, C) of the output.
    crop_padding: pixels of zero padding per side for 'crop_flip'.
    stored_hw: (height, width) of every stored image, when the dataset fixes it.

  Returns:
    uint8 [H, W, C].
  """
  h, w, c = image_shape
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  if augment == 'rrc_flip':
    image = _random_resized_crop(image_bytes, crop_seed, h, w, c)
  else:
    image = _fit(_decode(image_bytes, c), h, w, stored_hw)
  if augment == 'crop_flip':
    p = crop_padding
    image = tf.pad(image, [[p, p], [p, p], [0, 0]])
    image = tf.image.stateless_random_crop(image, [h, w, c], seed=crop_seed)
  if augment in ('crop_flip', 'rrc_flip', 'flip'):
    image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
  return image


def eval_transform(image_bytes: tf.Tensor, info: info_lib.DatasetInfo,
                   stored_hw: tuple[int, int] | None = None) -> tf.Tensor:
  """Encoded image -> uint8 [H, W, C]: resize + centre crop (natural photos) or as is."""
  return _eval_image(_decode(image_bytes, info.image_shape[2]), info, stored_hw)


def _eval_image(image: tf.Tensor, info: info_lib.DatasetInfo,
                stored_hw: tuple[int, int] | None = None) -> tf.Tensor:
  """Decoded uint8 [h, w, C] -> the eval image uint8 [H, W, C] (see `eval_transform`)."""
  h, w, _ = info.image_shape
  if info.eval_resize:
    return _resize_centre_crop(image, h, w, info.eval_crop_fraction)
  return _fit(image, h, w, stored_hw)


def eval_boxes(boxes: tf.Tensor, image_hw: tf.Tensor, info: info_lib.DatasetInfo,
               max_boxes: int) -> tuple[tf.Tensor, tf.Tensor]:
  """Ground-truth boxes of a stored image -> pixel boxes of its eval image (`eval_transform`).

  A box is mapped through the same geometry as the pixels: scaled by (resized / stored) size
  per axis, shifted by the centre-crop offset (`eval_resize` datasets) or scaled to the output
  size (others; the identity for Tiny-ImageNet's 64x64 images), then clipped to the image.
  Continuous edges [X0, X1) become the inclusive integer pixels [round(X0), round(X1) - 1]
  that `evaluation.box_iou` expects: exact for tfds boxes made from inclusive pixel corners
  (Tiny-ImageNet stores (x1 + 1) / 64) under the identity. Co-Mixup instead truncates the
  clipped edges to int and measures IoU with exclusive widths; the two differ by < 1 pixel.

  Args:
    boxes: [n, 4] float tfds BBoxFeature values (ymin, xmin, ymax, xmax) in [0, 1] of the
      stored image.
    image_hw: [2] int (height, width) of the decoded stored image.
    info: the dataset's info (image_shape, eval_resize, eval_crop_fraction).
    max_boxes: K, the fixed number of box slots (extra boxes are dropped, missing ones padded).

  Returns:
    (pixel boxes int32 [K, 4] as [x_min, y_min, x_max, y_max] inclusive, valid bool [K]);
    a slot is invalid when it is padding or its box does not intersect the eval image (it
    then holds zeros).
  """
  h, w, _ = info.image_shape
  boxes = tf.cast(tf.reshape(boxes, [-1, 4])[:max_boxes], tf.float64)
  if info.eval_resize:
    new, top, left = _centre_crop_geometry(image_hw, h, w, info.eval_crop_fraction)
    scale = tf.cast(tf.stack([new[0], new[1], new[0], new[1]]), tf.float64)
    offset = tf.cast(tf.stack([top, left, top, left]), tf.float64)
  else:
    scale, offset = tf.constant([h, w, h, w], tf.float64), tf.zeros([4], tf.float64)
  edges = tf.clip_by_value(boxes * scale - offset, 0.0, tf.constant([h, w, h, w], tf.float64))
  y0, x0, y1, x1 = tf.unstack(edges, axis=-1)
  valid = tf.logical_and(y1 > y0, x1 > x0)
  lo = tf.minimum(tf.round(tf.stack([x0, y0], -1)), [w - 1, h - 1])
  hi = tf.maximum(tf.round(tf.stack([x1, y1], -1)) - 1, lo)
  pixels = tf.cast(tf.concat([lo, hi], -1), tf.int32) * tf.cast(valid, tf.int32)[:, None]
  pad = max_boxes - tf.shape(pixels)[0]
  pixels = tf.pad(pixels, [[0, pad], [0, 0]])
  valid = tf.pad(valid, [[0, pad]])
  pixels.set_shape([max_boxes, 4])
  valid.set_shape([max_boxes])
  return pixels, valid


# ----------------------------------------------------------------------------- boxes

# Box slots of datasets with a variable number of boxes per image (tfds Sequence features).
DEFAULT_MAX_BOXES = 32


def box_feature(name: str, *, data_dir: str | None = None) -> tuple[str, ...]:
  """Where dataset `name` keeps its ground-truth boxes (for WSOL), without reading any data.

  Returns:
    ('bbox',) for one tfds BBoxFeature per image (tiny_imagenet, caltech_birds2011, cars196),
    or the path of a Sequence of boxes: (key,) or (key, name), e.g. ('objects', 'bbox').

  Raises:
    ValueError: the dataset has no bounding-box feature (e.g. digits, CIFAR, image folders,
      and tfds' imagenet2012, whose validation split carries no boxes), naming the dataset.
  """
  return _box_feature(name, data_dir)[0]


def _box_feature(name: str, data_dir: str | None):
  """(`box_feature(name)`, the dataset's tfds FeaturesDict)."""
  info = sources.get_info(name, data_dir=data_dir)
  features = {}
  if not info.name.startswith('image_folder:'):
    features = sources.builder(info.tfds_name, data_dir).info.features
  single, nested = [], []
  for key, feature in features.items():
    if isinstance(feature, tfds.features.BBoxFeature):
      single.append((key,))
    elif isinstance(feature, tfds.features.Sequence):
      inner = feature.feature
      if isinstance(inner, tfds.features.BBoxFeature):
        nested.append((key,))
      elif isinstance(inner, tfds.features.FeaturesDict):
        nested += [(key, k) for k, f in inner.items() if isinstance(f, tfds.features.BBoxFeature)]
  found = sorted(single, key=lambda p: p != ('bbox',)) + nested
  if not found:
    raise ValueError(
        f'dataset {name!r} ({info.tfds_name}) has no bounding-box feature, so it cannot be '
        'used with boxes (WSOL); datasets with boxes: tiny_imagenet, caltech_birds2011, '
        'cars196 (tfds imagenet2012 has no boxes for its validation split).')
  return found[0], features


def box_parser(name: str, data_dir: str | None, max_boxes: int | None):
  """(record -> [n, 4] float32 normalised boxes, number of box slots K) of dataset `name`."""
  path, features = _box_feature(name, data_dir)
  sequence = isinstance(features[path[0]], tfds.features.Sequence)
  if max_boxes is None:
    max_boxes = DEFAULT_MAX_BOXES if sequence else 1
  if isinstance(max_boxes, bool) or not isinstance(max_boxes, int) or max_boxes < 1:
    raise ValueError(f'max_boxes={max_boxes!r}: expected a positive int (or None).')
  # A FeaturesDict of only the box feature parses just its keys of the stored tf.Example.
  sub = tfds.features.FeaturesDict({path[0]: features[path[0]]})
  if len(path) == 2:
    sub = tfds.decode.PartialDecoding({path[0]: {path[1]: True}}).extract_features(sub)

  def parse(record):
    out = sub.deserialize_example(record)
    for key in path:
      out = out[key]
    return tf.reshape(tf.cast(out, tf.float32), [-1, 4])
  return parse, max_boxes


# ----------------------------------------------------------------------------- datasets


def _read_records(ds: tf.data.Dataset, source: sources.RecordSource, b: int):
  """(..., indices [b]) batches -> per-example (..., record) with one batched read per batch."""
  def read(*args):
    records = tf.numpy_function(source.read, [args[-1]], tf.string, stateful=False)
    records.set_shape([b])
    return (*args[:-1], records)
  return ds.map(read, num_parallel_calls=_AUTOTUNE, deterministic=True).unbatch()


def _stream_positions(num_examples: int, index: int, count: int, b: int, start_step: int,
                      shuffle_seed: tf.Tensor) -> tf.data.Dataset:
  """Batches (g [b], example index [b]) of process `index`'s part of the global stream.

  Global position g is example `index_shuffle(g % N, seed=fold_in(shuffle_seed, g // N))`
  (N = num_examples). Global batch t holds positions [t * B, (t + 1) * B), B = count * b, and
  process `index` reads its contiguous part [t * B + index * b, t * B + (index + 1) * b):
  a function of (seed, t, index) whose concatenation over processes does not depend on
  `count`. Yields from global batch `start_step` on.
  """
  n, big_b = num_examples, count * b

  def locate(k):  # k: position in this process's own stream
    g = k // b * big_b + index * b + k % b
    epoch_seed = tf.random.experimental.stateless_fold_in(shuffle_seed, g // n)
    return g, tf.random.experimental.index_shuffle(g % n, seed=epoch_seed, max_index=n - 1)

  ds = tf.data.Dataset.range(int(start_step) * b, _STREAM_END // count)
  return ds.map(locate, num_parallel_calls=_AUTOTUNE, deterministic=True).batch(b)


def _augment_seed(seed: int, salt: int) -> tf.Tensor:
  # The fold-in of 0 stands where earlier versions folded in the process index: it keeps every
  # single-process stream bit-identical to theirs. The per-example key folds in the global
  # position, so an example's augmentation does not depend on which process reads it.
  return tf.random.experimental.stateless_fold_in(_seed_tensor(seed, salt), 0)


def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  options.threading.max_intra_op_parallelism = 1
  options.experimental_optimization.map_parallelization = True
  return options


def make_train_dataset(name: str, *, global_batch_size: int, seed: int, start_step: int = 0,
                       data_dir: str | None = None, augment: str | None = None,
                       image_size: int | None = None, process_index: int | None = None,
                       process_count: int | None = None, train_examples: int | None = None
                       ) -> tuple[tf.data.Dataset, info_lib.DatasetInfo]:
  """The train tf.data pipeline behind `train_iterator` (same arguments) and its info."""
  info = sources.get_info(name, data_dir=data_dir, image_size=image_size)
  if info.train_split is None:
    raise ValueError(f'dataset {name!r} has no train split (it is evaluation-only).')
  augment = info.train_augment if augment is None else augment
  if augment not in info_lib.AUGMENTS:
    raise ValueError(f'augment={augment!r}: expected one of {info_lib.AUGMENTS}.')
  if isinstance(start_step, bool) or not isinstance(start_step, (int, np.integer)) \
      or start_step < 0:
    raise ValueError(f'start_step={start_step!r}: expected an int >= 0.')
  index, count = _processes(process_index, process_count)
  b = _local_batch_size(global_batch_size, count)
  shuffle_seed, augment_seed = _seed_tensor(seed, _SHUFFLE_SALT), _augment_seed(seed, _AUGMENT_SALT)

  if train_examples is not None and (isinstance(train_examples, bool) or not isinstance(
      train_examples, (int, np.integer)) or train_examples < 1):
    raise ValueError(f'train_examples={train_examples!r}: expected an int >= 1 (or None).')
  source = sources.open_split(info.tfds_name, info.train_split, data_dir)
  num_examples = source.num_examples
  if train_examples is not None:  # a fixed prefix of the stored split (reduced protocols)
    num_examples = min(num_examples, int(train_examples))
  if num_examples == 0:
    raise ValueError(f'dataset {name!r}: split {info.train_split!r} has no examples.')

  def example(g, record):
    image_bytes, label = source.parse(record)
    seed_g = tf.random.experimental.stateless_fold_in(augment_seed, g)
    image = train_transform(image_bytes, seed_g, augment=augment, image_shape=info.image_shape,
                            crop_padding=info.crop_padding, stored_hw=source.image_hw)
    return {'image': image, 'label': label}

  ds = _read_records(
      _stream_positions(num_examples, index, count, b, start_step, shuffle_seed), source, b)
  ds = ds.map(example, num_parallel_calls=_AUTOTUNE, deterministic=True)
  ds = ds.batch(b, drop_remainder=True).prefetch(_AUTOTUNE)
  return ds.with_options(_options()), info


def train_iterator(name: str, *, global_batch_size: int, seed: int, start_step: int = 0,
                   data_dir: str | None = None, augment: str | None = None,
                   image_size: int | None = None, process_index: int | None = None,
                   process_count: int | None = None,
                   train_examples: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """Endless, deterministic train batches of this process: its part of each global batch.

  Global batch t is the same whatever the number of processes: concatenated in process order,
  the batches of processes 0..P-1 at step t are the batch of one process (module docstring).

  Args:
    name: dataset name (`names()`).
    global_batch_size: batch size over all processes; must divide by process_count.
    seed: int seed of the shuffle and the augmentations.
    start_step: the first batch yielded is batch `start_step` of the sequence an
      uninterrupted run with the same arguments sees (O(1) positioning, for resuming).
    data_dir: tfds data_dir (default $TFDS_DATA_DIR or ~/tensorflow_datasets).
    augment: override of the dataset's default train augmentation (`AUGMENTS`).
    image_size: override of the (square) output image size.
    process_index: this process (default jax.process_index()).
    process_count: number of processes (default jax.process_count()).
    train_examples: train on only the first `train_examples` examples of the stored split
      (a fixed subset, for reduced protocols); None = all.

  Returns:
    Iterator of {'image': uint8 [b, H, W, C], 'label': int32 [b]} with
    b = global_batch_size // process_count: rows [process_index * b, (process_index + 1) * b)
    of the global batch.

  Raises:
    DatasetNotFoundError: the dataset is not available locally.
    ValueError: bad arguments.
    UnreadableImageError (while iterating): an image-folder file does not decode (named).
  """
  ds, info = make_train_dataset(
      name, global_batch_size=global_batch_size, seed=seed, start_step=start_step,
      data_dir=data_dir, augment=augment, image_size=image_size, process_index=process_index,
      process_count=process_count, train_examples=train_examples)
  return sources.name_unreadable(ds.as_numpy_iterator(), info.tfds_name, info.train_split)


# ----------------------------------------------------------------------------- mixing pictures

# Salts of the mixing-picture stream: its own shuffle and crops, apart from the train stream's.
_MIXING_SHUFFLE_SALT, _MIXING_AUGMENT_SALT = 0x6A09E667, 0x3C6EF372
# PixMix / IPMix CIFAR references: mixing pictures through Resize(36) + RandomCrop(32).
MIXING_RESIZE = 36 / 32
DEFAULT_MIXING_SET = 'fractals'


def mixing_transform(image_bytes: tf.Tensor, seed: tf.Tensor, *, image_shape: tuple[int, int, int],
                     resize: float = MIXING_RESIZE) -> tf.Tensor:
  """Encoded mixing picture -> uint8 [H, W, C]: resize to `round(resize * (H, W))`, random crop.

  The references' `Resize(36)` + `RandomCrop(32)` at 32x32 (`resize = 36 / 32`); `resize=1`
  only fits the picture to H x W.
  """
  h, w, c = image_shape
  big_h, big_w = max(h, round(h * resize)), max(w, round(w * resize))
  image = _fit(_decode(image_bytes, c), big_h, big_w)
  if (big_h, big_w) != (h, w):
    image = tf.image.stateless_random_crop(image, [h, w, c], seed=seed)
  return image


def make_mixing_dataset(name: str = DEFAULT_MIXING_SET, *, global_batch_size: int, seed: int,
                        image_shape: tuple[int, int, int], start_step: int = 0,
                        data_dir: str | None = None, split: str = 'train',
                        resize: float = MIXING_RESIZE, process_index: int | None = None,
                        process_count: int | None = None) -> tf.data.Dataset:
  """The tf.data pipeline behind `mixing_iterator` (same arguments)."""
  if isinstance(start_step, bool) or not isinstance(start_step, (int, np.integer)) \
      or start_step < 0:
    raise ValueError(f'start_step={start_step!r}: expected an int >= 0.')
  if len(image_shape) != 3 or any(not isinstance(d, (int, np.integer)) or d < 1
                                  for d in image_shape):
    raise ValueError(f'image_shape={image_shape!r}: expected (H, W, C) positive ints.')
  if isinstance(resize, bool) or not isinstance(resize, (int, float)) or not resize >= 1.0:
    raise ValueError(f'resize={resize!r}: expected a number >= 1.')
  index, count = _processes(process_index, process_count)
  b = _local_batch_size(global_batch_size, count)
  shuffle_seed = _seed_tensor(seed, _MIXING_SHUFFLE_SALT)
  augment_seed = _augment_seed(seed, _MIXING_AUGMENT_SALT)
  source = sources.open_split(name, split, data_dir)
  if source.num_examples == 0:
    raise ValueError(f'mixing set {name!r} has no pictures in split {split!r}.')
  shape = tuple(int(d) for d in image_shape)

  def example(g, record):
    image_bytes, _ = source.parse(record)
    seed_g = tf.random.experimental.stateless_fold_in(augment_seed, g)
    return mixing_transform(image_bytes, seed_g, image_shape=shape, resize=float(resize))

  ds = _read_records(_stream_positions(source.num_examples, index, count, b, start_step,
                                       shuffle_seed), source, b)
  ds = ds.map(example, num_parallel_calls=_AUTOTUNE, deterministic=True)
  ds = ds.batch(b, drop_remainder=True).prefetch(_AUTOTUNE)
  return ds.with_options(_options())


def mixing_iterator(name: str = DEFAULT_MIXING_SET, *, global_batch_size: int, seed: int,
                    image_shape: tuple[int, int, int], start_step: int = 0,
                    data_dir: str | None = None, split: str = 'train',
                    resize: float = MIXING_RESIZE, process_index: int | None = None,
                    process_count: int | None = None) -> Iterator[np.ndarray]:
  """Endless batches of mixing pictures (PixMix / IPMix), one beside each train batch.

  A second stream with the train stream's structure (docs/DESIGN.md#mixing-stream): one
  global stream of the set in epochs reshuffled by `index_shuffle` from its own seed, each
  picture cropped with a stateless seed of (seed, global position); this process reads its
  part of each global batch. Global batch t depends only on (seed, t), not on the number of
  processes, and `start_step=t` resumes it exactly, as the train stream, so a resumed run
  pairs step t's training batch with the same pictures.

  Args:
    name: the mixing set: `fractals[/<H>x<W>_<count>_seed<s>]` (generated, prepared on first
      use), another tfds name, or `image_folder:<root>` (e.g. the references' downloaded set).
    global_batch_size: pictures per step over all processes (the train batch size).
    seed: the run's seed (salted apart from the train stream's).
    image_shape: (H, W, C) of the training images; pictures are emitted at that size.
    start_step: the first batch yielded is batch `start_step` of the uninterrupted sequence.
    data_dir: tfds data_dir.
    split: split of the set to read.
    resize: pictures are resized to `round(resize * (H, W))` and randomly cropped to (H, W)
      (36 / 32: the references' CIFAR transform).
    process_index: this process (default jax.process_index()).
    process_count: number of processes (default jax.process_count()).

  Returns:
    Iterator of uint8 [b, H, W, C] arrays, b = global_batch_size // process_count.
  """
  return make_mixing_dataset(
      name, global_batch_size=global_batch_size, seed=seed, image_shape=image_shape,
      start_step=start_step, data_dir=data_dir, split=split, resize=resize,
      process_index=process_index, process_count=process_count).as_numpy_iterator()


def _eval_setup(name, global_batch_size, split, data_dir, image_size, process_index,
                process_count):
  info = sources.get_info(name, data_dir=data_dir, image_size=image_size)
  split = info.eval_split if split is None else split
  index, count = _processes(process_index, process_count)
  b = _local_batch_size(global_batch_size, count)
  source = sources.open_split(info.tfds_name, split, data_dir)
  # Every process runs the same number of batches (collectives in the eval step need it).
  num_batches = math.ceil(math.ceil(source.num_examples / count) / b)
  return info, source, index, count, b, num_batches


def num_eval_batches(name: str, *, global_batch_size: int, split: str | None = None,
                     data_dir: str | None = None, image_size: int | None = None,
                     process_index: int | None = None,
                     process_count: int | None = None) -> int:
  """Number of batches `eval_iterator` yields with the same arguments (equal on all hosts)."""
  return _eval_setup(name, global_batch_size, split, data_dir, image_size, process_index,
                     process_count)[-1]


def make_eval_dataset(name: str, *, global_batch_size: int, split: str | None = None,
                      data_dir: str | None = None, image_size: int | None = None,
                      process_index: int | None = None, process_count: int | None = None,
                      with_boxes: bool = False, max_boxes: int | None = None
                      ) -> tuple[tf.data.Dataset, info_lib.DatasetInfo]:
  """The eval tf.data pipeline behind `eval_iterator` (same arguments) and its info."""
  if with_boxes:  # before the dataset is opened (or prepared)
    parse_boxes, max_boxes = box_parser(name, data_dir, max_boxes)
  info, source, index, count, b, num_batches = _eval_setup(
      name, global_batch_size, split, data_dir, image_size, process_index, process_count)
  total = source.num_examples
  lo, hi = process_range(total, index, count, drop_remainder=False)
  n = hi - lo

  def locate(j):
    # Padding positions re-read a valid example (then zeroed) so reads never go out of range.
    idx = tf.minimum(lo + tf.minimum(j, max(n - 1, 0)), total - 1)
    return j < n, idx

  def example(mask, record):
    image_bytes, label = source.parse(record)
    if not with_boxes:
      image = eval_transform(image_bytes, info, source.image_hw)
      return {'image': image * tf.cast(mask, tf.uint8),
              'label': label * tf.cast(mask, tf.int32), 'mask': mask}
    decoded = _decode(image_bytes, info.image_shape[2])
    boxes, box_mask = eval_boxes(parse_boxes(record), tf.shape(decoded)[:2], info, max_boxes)
    box_mask = tf.logical_and(box_mask, mask)
    return {'image': _eval_image(decoded, info, source.image_hw) * tf.cast(mask, tf.uint8),
            'label': label * tf.cast(mask, tf.int32), 'mask': mask,
            'boxes': boxes * tf.cast(box_mask, tf.int32)[:, None], 'box_mask': box_mask}

  ds = tf.data.Dataset.range(num_batches * b)
  ds = ds.map(locate, num_parallel_calls=_AUTOTUNE, deterministic=True).batch(b)
  ds = _read_records(ds, source, b)
  ds = ds.map(example, num_parallel_calls=_AUTOTUNE, deterministic=True)
  ds = ds.batch(b, drop_remainder=True).prefetch(_AUTOTUNE)
  return ds.with_options(_options()), info


def eval_iterator(name: str, *, global_batch_size: int, split: str | None = None,
                  data_dir: str | None = None, image_size: int | None = None,
                  process_index: int | None = None, process_count: int | None = None,
                  with_boxes: bool = False,
                  max_boxes: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """One pass over an eval split: every example exactly once, over all processes.

  Args:
    name: dataset name (`names()`).
    global_batch_size: batch size over all processes; must divide by process_count.
    split: tfds split (default the dataset's eval split).
    data_dir: tfds data_dir.
    image_size: override of the (square) output image size.
    process_index: this process (default jax.process_index()).
    process_count: number of processes (default jax.process_count()).
    with_boxes: also yield the ground-truth boxes of each example (WSOL), in pixels of the
      emitted image (`eval_boxes`: the same resize / centre crop as the image).
    max_boxes: box slots K per example with boxes (default 1 for one box per image,
      `DEFAULT_MAX_BOXES` for datasets with a sequence of boxes; extra boxes are dropped).

  Returns:
    Iterator of `num_eval_batches(...)` batches {'image': uint8 [b, H, W, C], 'label': int32
    [b], 'mask': bool [b]}; mask is False on padding (image and label zero there). With
    `with_boxes` also 'boxes': int32 [b, K, 4] ([x_min, y_min, x_max, y_max], inclusive
    pixels) and 'box_mask': bool [b, K] (False on empty slots, boxes outside the centre crop
    and padding examples; those boxes are zero).

  Raises:
    DatasetNotFoundError: the dataset is not available locally.
    ValueError: bad arguments, or `with_boxes` for a dataset without boxes (`box_feature`).
  """
  ds, info = make_eval_dataset(
      name, global_batch_size=global_batch_size, split=split, data_dir=data_dir,
      image_size=image_size, process_index=process_index, process_count=process_count,
      with_boxes=with_boxes, max_boxes=max_boxes)
  return sources.name_unreadable(ds.as_numpy_iterator(), info.tfds_name,
                                 info.eval_split if split is None else split)
