"""Train and eval input pipelines: stateless, resumable, multi-host, uint8 on the host.

Train stream (per process). The process reads its slice [lo, lo + n) of the train split
(`process_range`, equal sizes: the remainder of N / process_count is dropped). Its examples
form an endless stream: stream position k belongs to epoch e = k // n and is example
`lo + index_shuffle(k % n, seed=fold_in(seed, e))`, a permutation of the slice that depends
only on (seed, epoch). Batch t is positions [t * b, (t + 1) * b) with b = global batch /
process count, so batches run across epoch boundaries like `repeat().batch()` and every
epoch sees each example exactly once. Augmentation randomness is a stateless function of
(seed, process index, k). Hence the batch at step t depends only on (seed, t, process), and
`start_step=t` positions the stream in O(1): nothing before it is read or decoded.

Eval stream. Each process reads its contiguous slice (sizes differ by at most one), in order,
padded to `num_eval_batches` full batches; `mask` is False on padding (whose image and label
are zeros), so metrics summed with the mask are exact and independent of the batch size.

Images leave the pipeline as uint8 [b, H, W, C] and labels as int32 [b]; normalisation
`(x / 255 - mean) / std` and mixing happen on device inside the train step.
"""

from __future__ import annotations

import math
from typing import Iterator

import jax
import numpy as np
import tensorflow as tf

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
    drop_remainder: True (train): every process gets num_examples // process_count and the
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


def _resize_centre_crop(image: tf.Tensor, size_h: int, size_w: int,
                        crop_fraction: float) -> tf.Tensor:
  """Shorter side to size / crop_fraction (256 for 224), then the central size_h x size_w."""
  target = tf.cast(round(min(size_h, size_w) / crop_fraction), tf.float32)
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  scale = target / tf.reduce_min(shape)
  new = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), [size_h, size_w])
  image = _resize(image, new[0], new[1])
  top, left = (new[0] - size_h) // 2, (new[1] - size_w) // 2
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
  h, w, c = info.image_shape
  image = _decode(image_bytes, c)
  if info.eval_resize:
    return _resize_centre_crop(image, h, w, info.eval_crop_fraction)
  return _fit(image, h, w, stored_hw)


# ----------------------------------------------------------------------------- datasets


def _read_records(ds: tf.data.Dataset, source: sources.RecordSource, b: int):
  """(..., indices [b]) batches -> per-example (..., record) with one batched read per batch."""
  def read(*args):
    records = tf.numpy_function(source.read, [args[-1]], tf.string, stateful=False)
    records.set_shape([b])
    return (*args[:-1], records)
  return ds.map(read, num_parallel_calls=_AUTOTUNE, deterministic=True).unbatch()


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
  info = info_lib.get_info(name, data_dir=data_dir, image_size=image_size)
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
  shuffle_seed, augment_seed = _seed_tensor(seed, _SHUFFLE_SALT), _seed_tensor(seed, _AUGMENT_SALT)
  augment_seed = tf.random.experimental.stateless_fold_in(augment_seed, index)

  if train_examples is not None and (isinstance(train_examples, bool) or not isinstance(
      train_examples, (int, np.integer)) or train_examples < 1):
    raise ValueError(f'train_examples={train_examples!r}: expected an int >= 1 (or None).')
  source = sources.open_split(info.tfds_name, info.train_split, data_dir)
  num_examples = source.num_examples
  if train_examples is not None:  # a fixed prefix of the stored split (reduced protocols)
    num_examples = min(num_examples, int(train_examples))
  lo, hi = process_range(num_examples, index, count, drop_remainder=True)
  n = hi - lo
  if n == 0:
    raise ValueError(f'dataset {name!r}: split {info.train_split!r} has '
                     f'{source.num_examples} examples, fewer than process_count={count}.')

  def locate(k):
    epoch_seed = tf.random.experimental.stateless_fold_in(shuffle_seed, k // n)
    pos = tf.random.experimental.index_shuffle(k % n, seed=epoch_seed, max_index=n - 1)
    return k, lo + pos

  def example(k, record):
    image_bytes, label = source.parse(record)
    seed_k = tf.random.experimental.stateless_fold_in(augment_seed, k)
    image = train_transform(image_bytes, seed_k, augment=augment, image_shape=info.image_shape,
                            crop_padding=info.crop_padding, stored_hw=source.image_hw)
    return {'image': image, 'label': label}

  ds = tf.data.Dataset.range(int(start_step) * b, _STREAM_END)
  ds = ds.map(locate, num_parallel_calls=_AUTOTUNE, deterministic=True).batch(b)
  ds = _read_records(ds, source, b)
  ds = ds.map(example, num_parallel_calls=_AUTOTUNE, deterministic=True)
  ds = ds.batch(b, drop_remainder=True).prefetch(_AUTOTUNE)
  return ds.with_options(_options()), info


def train_iterator(name: str, *, global_batch_size: int, seed: int, start_step: int = 0,
                   data_dir: str | None = None, augment: str | None = None,
                   image_size: int | None = None, process_index: int | None = None,
                   process_count: int | None = None,
                   train_examples: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """Endless, deterministic train batches of this process.

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
    b = global_batch_size // process_count.

  Raises:
    DatasetNotFoundError: the dataset is not available locally.
    ValueError: bad arguments.
  """
  ds, _ = make_train_dataset(
      name, global_batch_size=global_batch_size, seed=seed, start_step=start_step,
      data_dir=data_dir, augment=augment, image_size=image_size, process_index=process_index,
      process_count=process_count, train_examples=train_examples)
  return ds.as_numpy_iterator()


def _eval_setup(name, global_batch_size, split, data_dir, image_size, process_index,
                process_count):
  info = info_lib.get_info(name, data_dir=data_dir, image_size=image_size)
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
                      process_index: int | None = None, process_count: int | None = None
                      ) -> tuple[tf.data.Dataset, info_lib.DatasetInfo]:
  """The eval tf.data pipeline behind `eval_iterator` (same arguments) and its info."""
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
    image = eval_transform(image_bytes, info, source.image_hw)
    return {'image': image * tf.cast(mask, tf.uint8), 'label': label * tf.cast(mask, tf.int32),
            'mask': mask}

  ds = tf.data.Dataset.range(num_batches * b)
  ds = ds.map(locate, num_parallel_calls=_AUTOTUNE, deterministic=True).batch(b)
  ds = _read_records(ds, source, b)
  ds = ds.map(example, num_parallel_calls=_AUTOTUNE, deterministic=True)
  ds = ds.batch(b, drop_remainder=True).prefetch(_AUTOTUNE)
  return ds.with_options(_options()), info


def eval_iterator(name: str, *, global_batch_size: int, split: str | None = None,
                  data_dir: str | None = None, image_size: int | None = None,
                  process_index: int | None = None,
                  process_count: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """One pass over an eval split: every example exactly once, over all processes.

  Args:
    name: dataset name (`names()`).
    global_batch_size: batch size over all processes; must divide by process_count.
    split: tfds split (default the dataset's eval split).
    data_dir: tfds data_dir.
    image_size: override of the (square) output image size.
    process_index: this process (default jax.process_index()).
    process_count: number of processes (default jax.process_count()).

  Returns:
    Iterator of `num_eval_batches(...)` batches {'image': uint8 [b, H, W, C], 'label': int32
    [b], 'mask': bool [b]}; mask is False on padding (image and label zero there).

  Raises:
    DatasetNotFoundError: the dataset is not available locally.
    ValueError: bad arguments.
  """
  ds, _ = make_eval_dataset(
      name, global_batch_size=global_batch_size, split=split, data_dir=data_dir,
      image_size=image_size, process_index=process_index, process_count=process_count)
  return ds.as_numpy_iterator()


def to_global(batch, sharding: jax.sharding.Sharding):
  """Process-local numpy batch -> global jax.Arrays (`jax.make_array_from_process_local_data`).

  Args:
    batch: pytree of per-process arrays, leading dim b = global batch / process_count.
    sharding: sharding of the global batch, e.g. NamedSharding(mesh, P('data')).

  Returns:
    The same pytree of global arrays with leading dim global batch.
  """
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
