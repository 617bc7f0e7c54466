"""storm_jax.data: dataset table, pipeline determinism/resume/slicing/padding, errors, mocks."""

from __future__ import annotations

import collections
import hashlib
import importlib.util
import io

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from storm_jax import data
from storm_jax.data import digits as digits_lib
from storm_jax.data import input_pipeline
from storm_jax.data import sources


@pytest.fixture(scope='module')
def digits_dir(tmp_path_factory):
  """A tfds data_dir where `digits` prepares itself on first use (offline)."""
  d = str(tmp_path_factory.mktemp('tfds'))
  data.prepare('digits', data_dir=d)
  return d


def _hashes(images):
  return collections.Counter(hashlib.sha1(np.ascontiguousarray(x).tobytes()).hexdigest()
                             for x in images)


def _sklearn_digits():
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  d = datasets.load_digits()
  images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  test = digits_lib.split_masks(d.target)
  return images, d.target, test


def _take(it, n):
  return [next(it) for _ in range(n)]


# ------------------------------------------------------------------------------ table / info


def test_tf_sees_no_gpu(monkeypatch):
  # docs/DESIGN.md#pitfalls (flax #445): TF must leave the accelerators to JAX. tensorflow-cpu
  # has no GPU to hide, so check the calls: loading the pipeline's TF module hides them ...
  hidden = []
  monkeypatch.setattr(data, 'hide_gpus_from_tf', lambda: hidden.append(True))
  spec = importlib.util.spec_from_file_location('_sources_copy', sources.__file__)
  spec.loader.exec_module(importlib.util.module_from_spec(spec))  # a copy: the module is kept
  assert hidden == [True]
  monkeypatch.undo()
  # ... and hiding them asks TF to see none.
  calls = []
  monkeypatch.setattr(tf.config, 'set_visible_devices', lambda *a: calls.append(a))
  data.hide_gpus_from_tf()
  assert calls == [([], 'GPU')]


def test_get_info_table_and_errors():
  info = data.get_info('cifar100')
  assert (info.num_classes, info.image_shape, info.num_train, info.num_eval) == (
      100, (32, 32, 3), 50_000, 10_000)
  assert info.train_augment == 'crop_flip' and info.crop_padding == 4
  assert len(info.mean) == len(info.std) == 3
  assert data.get_info('digits').image_shape == (8, 8, 1)
  assert data.get_info('imagenet2012').train_augment == 'rrc_flip'
  assert data.get_info('cub').name == 'caltech_birds2011'
  assert data.get_info('cifar10', image_size=40).image_shape == (40, 40, 3)
  with pytest.raises(ValueError, match='Known:.*cifar100'):
    data.get_info('cifar1000')
  with pytest.raises(ValueError, match='image_size'):
    data.get_info('cifar10', image_size=0)
  for name in ('digits', 'cifar10', 'tiny_imagenet', 'caltech_birds2011', 'cars196'):
    assert name in data.names()


@pytest.mark.parametrize('name', ['digits', 'cifar10', 'cifar100', 'tiny_imagenet',
                                  'imagenet2012', 'caltech_birds2011', 'cars196',
                                  'cifar10_corrupted/fog_1', 'cifar100_corrupted/fog_1'])
def test_table_agrees_with_the_tfds_builders(name, tmp_path):
  from storm_jax.data import sources  # pylint: disable=g-import-not-at-top
  info = data.get_info(name)
  features = sources.builder(info.tfds_name, str(tmp_path)).info.features
  assert features['label'].num_classes == info.num_classes
  assert features['image'].shape[-1] == info.image_shape[-1]


def test_corrupted_names_load_their_own_config():
  # docs/DESIGN.md#pitfalls (hendrycks/robustness #29): each name must load its config, not the
  # default.
  names = data.corrupted_names('cifar100')
  assert len(names) == 19 * 5 and len(set(names)) == 95
  assert len(data.corrupted_names('cifar10', data.CIFAR_C_STANDARD_15)) == 75
  info = data.get_info('cifar10_corrupted/elastic_transform_2')
  assert info.tfds_name == 'cifar10_corrupted/elastic_2'  # tfds' name for the official file
  assert info.train_split is None and info.num_eval == 10_000 and info.num_classes == 10
  from storm_jax.data import sources  # pylint: disable=g-import-not-at-top
  for name in ('cifar10_corrupted/fog_3', 'cifar10_corrupted/glass_blur_5',
               'cifar100_corrupted/speckle_noise_4'):
    b = sources.builder(data.get_info(name).tfds_name, '/nonexistent')
    corruption, severity = name.split('/')[1].rsplit('_', 1)
    assert b.builder_config.severity == int(severity)
    assert b.builder_config.name.startswith(
        {'glass_blur': 'frosted_glass_blur'}.get(corruption, corruption))
  with pytest.raises(ValueError, match='severity'):
    data.get_info('cifar100_corrupted/fog_6')
  with pytest.raises(ValueError, match='corruption'):
    data.get_info('cifar100_corrupted/smoke_1')


@pytest.mark.parametrize('n', [0, 1, 7, 10, 1501])
@pytest.mark.parametrize('p', [1, 2, 3, 8])
def test_process_range_arithmetic(n, p):
  evals = [input_pipeline.process_range(n, i, p, drop_remainder=False) for i in range(p)]
  covered = np.concatenate([np.arange(lo, hi) for lo, hi in evals])
  np.testing.assert_array_equal(covered, np.arange(n))  # every example exactly once, in order
  sizes = [hi - lo for lo, hi in evals]
  assert max(sizes) - min(sizes) <= 1
  trains = [input_pipeline.process_range(n, i, p, drop_remainder=True) for i in range(p)]
  assert {hi - lo for lo, hi in trains} == {n // p}
  assert all(trains[i][1] <= trains[i + 1][0] for i in range(p - 1))  # disjoint


@pytest.mark.parametrize('drop_remainder', [False, True])
def test_process_range_matches_tfds_even_splits(drop_remainder):
  from tensorflow_datasets.core import splits as splits_lib  # pylint: disable=g-import-not-at-top
  for n in (5, 10, 1501):
    split_dict = splits_lib.SplitDict([splits_lib.SplitInfo(
        name='train', shard_lengths=[n], num_bytes=0, filename_template=None)])
    for p in (1, 3, 4, 8):
      for i, split in enumerate(tfds.even_splits('train', n=p, drop_remainder=drop_remainder)):
        (instr,) = split.to_absolute(split_dict)
        want = (instr.from_ or 0, n if instr.to is None else instr.to)
        assert input_pipeline.process_range(n, i, p, drop_remainder=drop_remainder) == want


# ------------------------------------------------------------------------------ digits


def test_digits_offline_split_and_scaling(digits_dir):
  info = data.get_info('digits', data_dir=digits_dir)
  images, labels, test = _sklearn_digits()
  assert (info.num_train, info.num_eval) == (int((~test).sum()), int(test.sum())) == (1501, 296)
  # Statistics in the table are those of the train split.
  train = images[~test] / 255.0
  np.testing.assert_allclose(info.mean, [train.mean()], atol=1e-4)
  np.testing.assert_allclose(info.std, [train.std()], atol=1e-4)
  # Stratified: every class has 29-30 test images.
  assert set(np.bincount(labels[test])) <= {29, 30}
  batches = list(data.eval_iterator('digits', global_batch_size=64, data_dir=digits_dir))
  assert len(batches) == data.num_eval_batches('digits', global_batch_size=64,
                                               data_dir=digits_dir) == 5
  b = batches[0]
  assert b['image'].dtype == np.uint8 and b['image'].shape == (64, 8, 8, 1)
  assert b['label'].dtype == np.int32 and b['mask'].dtype == bool
  got = np.concatenate([x['image'][x['mask']] for x in batches])
  got_labels = np.concatenate([x['label'][x['mask']] for x in batches])
  assert got.max() == 255  # 0..16 scaled to 0..255
  # Exactly the sklearn test images, each once, with their labels.
  assert _hashes(got) == _hashes(images[test])
  want = {hashlib.sha1(x.tobytes()).hexdigest(): l for x, l in zip(images[test], labels[test])}
  assert all(want[hashlib.sha1(x.tobytes()).hexdigest()] == l for x, l in zip(got, got_labels))


def test_eval_padding_mask(digits_dir):
  batches = list(data.eval_iterator('digits', global_batch_size=100, data_dir=digits_dir))
  masks = np.concatenate([b['mask'] for b in batches])
  assert masks.shape == (300,) and masks.sum() == 296 and masks[:296].all()
  last = batches[-1]
  assert not last['image'][~last['mask']].any() and not last['label'][~last['mask']].any()
  # Batch-size independence of the multiset of evaluated examples (flax #527).
  other = list(data.eval_iterator('digits', global_batch_size=7, data_dir=digits_dir))
  cat = lambda bs: np.concatenate([b['image'][b['mask']] for b in bs])
  np.testing.assert_array_equal(cat(batches), cat(other))


def test_eval_multiprocess_slices_cover_split_once(digits_dir):
  single = list(data.eval_iterator('digits', global_batch_size=60, data_dir=digits_dir))
  want = np.concatenate([b['image'][b['mask']] for b in single])
  per_process, counts = [], set()
  for i in range(3):
    kw = dict(global_batch_size=60, data_dir=digits_dir, process_index=i, process_count=3)
    bs = list(data.eval_iterator('digits', **kw))
    counts.add(len(bs))
    assert len(bs) == data.num_eval_batches('digits', **kw) and bs[0]['image'].shape[0] == 20
    per_process.append(np.concatenate([b['image'][b['mask']] for b in bs]))
  assert len(counts) == 1  # every host runs the same number of eval steps
  np.testing.assert_array_equal(np.concatenate(per_process), want)


def test_train_batches_deterministic_and_seed_dependent(digits_dir):
  kw = dict(global_batch_size=32, data_dir=digits_dir)
  a = _take(data.train_iterator('digits', seed=3, **kw), 3)
  b = _take(data.train_iterator('digits', seed=3, **kw), 3)
  c = _take(data.train_iterator('digits', seed=4, **kw), 1)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x['image'], y['image'])
    np.testing.assert_array_equal(x['label'], y['label'])
  assert not np.array_equal(a[0]['label'], c[0]['label'])
  assert a[0]['image'].shape == (32, 8, 8, 1) and a[0]['image'].dtype == np.uint8
  assert a[0]['label'].dtype == np.int32


def test_train_epochs_are_permutations_and_resume_is_exact(digits_dir):
  # 1501 = 19 * 79: 19 batches of 79 are exactly one epoch.
  images, _, test = _sklearn_digits()
  kw = dict(global_batch_size=79, seed=0, data_dir=digits_dir, augment='none')
  stream = _take(data.train_iterator('digits', **kw), 24)
  epoch0 = np.concatenate([b['image'] for b in stream[:19]])
  assert _hashes(epoch0) == _hashes(images[~test])  # each train example exactly once
  epoch1_head = np.concatenate([b['image'] for b in stream[19:]])
  assert not np.array_equal(epoch1_head, epoch0[:len(epoch1_head)])  # reshuffled per epoch
  # Resume in the middle of epoch 1 and across the epoch boundary: same batches.
  for start in (5, 18, 20):
    resumed = _take(data.train_iterator('digits', start_step=start, **kw), 24 - start)
    for x, y in zip(resumed, stream[start:]):
      np.testing.assert_array_equal(x['image'], y['image'])
      np.testing.assert_array_equal(x['label'], y['label'])


def test_resume_is_exact_with_augmentation(digits_dir):
  kw = dict(global_batch_size=16, seed=1, data_dir=digits_dir, augment='crop_flip')
  stream = _take(data.train_iterator('digits', **kw), 4)
  resumed = next(data.train_iterator('digits', start_step=3, **kw))
  np.testing.assert_array_equal(resumed['image'], stream[3]['image'])


@pytest.mark.parametrize('augment', ['none', 'crop_flip'])
def test_global_batch_does_not_depend_on_the_process_count(digits_dir, augment):
  """Process batches concatenated in process order == the one-process batch, step by step.

  20 examples in batches of 8: step 2 straddles the first epoch boundary and step 5 starts the
  third epoch; crop_flip checks that an example's augmentation does not depend on the process
  that reads it.
  """
  kw = dict(global_batch_size=8, seed=2, data_dir=digits_dir, augment=augment,
            train_examples=20)
  single = _take(data.train_iterator('digits', **kw), 7)
  for count in (2, 4):
    for start in (0, 2, 5):  # from the start, and resumed (start_step) across the boundaries
      parts = [_take(data.train_iterator('digits', start_step=start, process_index=i,
                                         process_count=count, **kw), 7 - start)
               for i in range(count)]
      for t, want in enumerate(single[start:], start):
        got = [p[t - start] for p in parts]
        assert got[0]['image'].shape == (8 // count, 8, 8, 1)
        for key in ('image', 'label'):
          np.testing.assert_array_equal(np.concatenate([g[key] for g in got]), want[key],
                                        err_msg=f'{key}, step {t}, {count} processes')


def test_bad_arguments_raise_value_error(digits_dir):
  kw = dict(seed=0, data_dir=digits_dir)
  with pytest.raises(ValueError, match='global_batch_size=10 is not divisible'):
    data.train_iterator('digits', global_batch_size=10, process_index=0, process_count=4, **kw)
  with pytest.raises(ValueError, match='augment'):
    data.train_iterator('digits', global_batch_size=8, augment='autoaugment', **kw)
  with pytest.raises(ValueError, match='start_step'):
    data.train_iterator('digits', global_batch_size=8, start_step=-1, **kw)
  with pytest.raises(ValueError, match='process_index'):
    data.train_iterator('digits', global_batch_size=8, process_index=2, process_count=2, **kw)
  with pytest.raises(ValueError, match='evaluation-only'):
    data.train_iterator('cifar100_corrupted/fog_1', global_batch_size=8, **kw)
  with pytest.raises(ValueError, match='split'):
    data.eval_iterator('digits', global_batch_size=8, split='validation', data_dir=digits_dir)


# ------------------------------------------------------------------------------ transforms


def _png(image):
  buf = io.BytesIO()
  Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(buf, 'PNG')
  return tf.constant(buf.getvalue())


def test_crop_flip_is_a_window_of_the_zero_padded_image():
  image = np.arange(8 * 12 * 3, dtype=np.uint8).reshape(8, 12, 3)  # non-square catches H/W swaps
  padded = np.pad(image, [(2, 2), (2, 2), (0, 0)])
  windows = [padded[y:y + 8, x:x + 12] for y in range(5) for x in range(5)]
  windows += [w[:, ::-1] for w in windows]
  seen_flip, seen_shift = False, False
  for s in range(20):
    out = input_pipeline.train_transform(
        _png(image), tf.constant([s, 7], tf.int64), augment='crop_flip', image_shape=(8, 12, 3),
        crop_padding=2).numpy()
    match = [i for i, w in enumerate(windows) if np.array_equal(out, w)]
    assert match, 'output is not a (flipped) crop of the padded image'
    seen_flip |= match[0] >= 25
    seen_shift |= match[0] % 25 != 12  # 12 = the centred window
  assert seen_flip and seen_shift


def _jpeg(image):
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, 'JPEG', quality=95)
  return tf.constant(buf.getvalue())


@pytest.mark.parametrize('encode', [_png, _jpeg])  # JPEG: crop-while-decoding path
def test_rrc_flip_shape_and_determinism(encode):
  image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
  kw = dict(augment='rrc_flip', image_shape=(24, 24, 3), crop_padding=0)
  a = input_pipeline.train_transform(encode(image), tf.constant([1, 2], tf.int64), **kw).numpy()
  b = input_pipeline.train_transform(encode(image), tf.constant([1, 2], tf.int64), **kw).numpy()
  c = input_pipeline.train_transform(encode(image), tf.constant([1, 3], tf.int64), **kw).numpy()
  assert a.shape == (24, 24, 3) and a.dtype == np.uint8
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_eval_resize_then_centre_crop_non_square():
  # 40x80 image: left half 0, right half 250. Shorter side -> round(16 / 0.875) = 18, so the
  # resized image is 18x36 and the central 16x16 window spans columns 10..26 around the edge.
  image = np.zeros((40, 80, 3), np.uint8)
  image[:, 40:] = 250
  info = data.get_info('imagenet2012', image_size=16)
  out = input_pipeline.eval_transform(_png(image), info).numpy()
  assert out.shape == (16, 16, 3)
  assert (out[:, :7] == 0).all() and (out[:, 9:] == 250).all()  # the edge is in the middle


def test_greyscale_jpeg_decodes_to_three_channels():
  buf = io.BytesIO()
  Image.fromarray(np.full((64, 64), 200, np.uint8), mode='L').save(buf, 'JPEG')
  info = data.get_info('tiny_imagenet')
  out = input_pipeline.eval_transform(tf.constant(buf.getvalue()), info).numpy()
  assert out.shape == (64, 64, 3) and abs(int(out.mean()) - 200) <= 2


# ------------------------------------------------------------------------------ errors / mocks


def test_missing_dataset_error_says_what_to_place_where(tmp_path):
  d = str(tmp_path)
  with pytest.raises(data.DatasetNotFoundError) as e:
    data.train_iterator('cifar10', global_batch_size=8, seed=0, data_dir=d)
  msg = str(e.value)
  assert f'python -m storm_jax.data.prepare cifar10 --data_dir={d}' in msg
  assert f'{d}/cifar10/' in msg and 'Traceback' not in msg
  with pytest.raises(data.DatasetNotFoundError, match=r'tiny-imagenet-200\.zip.*downloads/manual'):
    data.eval_iterator('tiny_imagenet', global_batch_size=8, data_dir=d)
  with pytest.raises(data.DatasetNotFoundError, match=r'CIFAR-100-C\.tar'):
    data.eval_iterator('cifar100_corrupted/fog_1', global_batch_size=8, data_dir=d)
  with pytest.raises(data.DatasetNotFoundError, match='ILSVRC2012_img_train.tar'):
    data.eval_iterator('imagenet2012', global_batch_size=8, data_dir=d)


@pytest.mark.parametrize('name,shape', [('cifar10', (32, 32, 3)), ('cifar100', (32, 32, 3))])
def test_builtin_datasets_through_mock_data(tmp_path, name, shape):
  with tfds.testing.mock_data(num_examples=10):
    batch = next(data.train_iterator(name, global_batch_size=4, seed=0, data_dir=str(tmp_path)))
    assert batch['image'].shape == (4, *shape) and batch['image'].dtype == np.uint8
    assert ((0 <= batch['label']) & (batch['label'] < data.get_info(name).num_classes)).all()
    evals = list(data.eval_iterator(name, global_batch_size=4, data_dir=str(tmp_path)))
  assert [int(b['mask'].sum()) for b in evals] == [4, 4, 2]


def test_corrupted_eval_through_mock_data(tmp_path):
  with tfds.testing.mock_data(num_examples=6):
    evals = list(data.eval_iterator('cifar10_corrupted/fog_5', global_batch_size=4,
                                    data_dir=str(tmp_path)))
  assert [int(b['mask'].sum()) for b in evals] == [4, 2]
  assert evals[0]['image'].shape == (4, 32, 32, 3)


def test_default_data_dir_never_the_working_directory(monkeypatch, tmp_path):
  from storm_jax.data import sources  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv('HOME', str(tmp_path))
  monkeypatch.setenv('TFDS_DATA_DIR', '')  # empty counts as unset
  assert sources.default_data_dir(None) == f'{tmp_path}/tensorflow_datasets'
  monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path / 'x'))
  assert sources.default_data_dir(None) == str(tmp_path / 'x')
  assert sources.default_data_dir(str(tmp_path / 'y')) == str(tmp_path / 'y')


def test_tfrecord_prepared_dataset_gets_an_array_record_copy(tmp_path):
  from storm_jax.data import sources  # pylint: disable=g-import-not-at-top
  d = str(tmp_path)
  sources.builder('digits', d).download_and_prepare(
      file_format='tfrecord',
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  with pytest.raises(data.DatasetNotFoundError,
                     match=f'TFRecord only.*python -m storm_jax.data.prepare digits'):
    data.eval_iterator('digits', global_batch_size=64, data_dir=d)
  data.prepare('digits', data_dir=d)
  batches = list(data.eval_iterator('digits', global_batch_size=64, data_dir=d))
  assert sum(int(b['mask'].sum()) for b in batches) == 296


def test_train_examples_restricts_to_a_fixed_prefix():
  """Reduced protocols: train on the first N examples; every epoch sees exactly those."""
  n, b = 40, 8
  it = data.train_iterator('digits', global_batch_size=b, seed=3, augment='none',
                           train_examples=n)
  images = np.concatenate([next(it)['image'] for _ in range(2 * n // b)])
  # Each epoch of n examples is a permutation of the same n (distinct) examples.
  first = [im.tobytes() for im in images[:n]]
  second = [im.tobytes() for im in images[n:]]
  assert len(set(first)) == n
  assert sorted(first) == sorted(second)
  assert first != second  # reshuffled per epoch
  with pytest.raises(ValueError, match='train_examples=0'):
    data.train_iterator('digits', global_batch_size=b, seed=0, train_examples=0)
