"""image_folder:<root> with CIFAR-like 32x32 PNGs: native-size eval, own statistics, bad files."""

import io
import json
import os

import numpy as np
from PIL import Image
import pytest

from storm_jax import data
from storm_jax import errors
from storm_jax.data import sources

CLASSES = ('cat', 'dog')


def _write_folder(root, n_train=6, n_test=4):
  """root/{train,test}/{cat,dog}/i.png, 32x32 random RGB; returns {split: [(label, pixels)]}."""
  rng = np.random.default_rng(0)
  out = {}
  for split, n in (('train', n_train), ('test', n_test)):
    out[split] = []
    for label, cls in enumerate(CLASSES):
      os.makedirs(root / split / cls)
      for i in range(n):
        pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        pixels[..., label] = 255 - label * 200  # class cue in one channel
        Image.fromarray(pixels).save(root / split / cls / f'{i:02d}.png')
        out[split].append((label, pixels))
  return out


def _eval_images(name):
  batches = list(data.eval_iterator(name, global_batch_size=4))
  mask = np.concatenate([b['mask'] for b in batches])
  images = np.concatenate([b['image'] for b in batches])[mask]
  labels = np.concatenate([b['label'] for b in batches])[mask]
  return images, labels


def _bad_jpeg(path, size=32):
  buf = io.BytesIO()
  noise = np.random.default_rng(1).integers(0, 256, (size, size, 3), dtype=np.uint8)
  Image.fromarray(noise).save(buf, 'JPEG', quality=95)
  whole = buf.getvalue()  # ~3 kB of scan data after ~600 bytes of header
  path.write_bytes(whole[:int(len(whole) * 0.6)])  # header intact, image data cut off


def test_cifar_like_folder_trains_with_crop_flip_and_evaluates_at_native_size(tmp_path):
  written = _write_folder(tmp_path)
  name = f'image_folder:{tmp_path}'
  info = data.get_info(name)
  assert info.image_shape == (32, 32, 3)
  assert (info.train_augment, info.crop_padding, info.eval_resize) == ('crop_flip', 4, False)
  images, labels = _eval_images(name)
  # Native size: the eval images are the stored pixels, in the sorted-file order.
  np.testing.assert_array_equal(images, np.stack([p for _, p in written['test']]))
  np.testing.assert_array_equal(labels, [l for l, _ in written['test']])
  batch = next(data.train_iterator(name, global_batch_size=4, seed=0))
  assert batch['image'].shape == (4, 32, 32, 3)


def test_folder_mean_std_from_the_train_split_computed_once_and_cached(tmp_path):
  written = _write_folder(tmp_path)
  name = f'image_folder:{tmp_path}'
  info = data.get_info(name)
  pixels = np.stack([p for _, p in written['train']]).reshape(-1, 3) / 255.0
  np.testing.assert_allclose(info.mean, pixels.mean(0), atol=1e-6)
  np.testing.assert_allclose(info.std, pixels.std(0), atol=1e-6)
  cache = tmp_path / sources.FOLDER_STATS
  stats = json.loads(cache.read_text())
  assert stats['num_files'] == 12
  # Read from the cache from now on (a marker value proves it), recomputed when files change.
  stats['mean'] = [0.25, 0.5, 0.75]
  cache.write_text(json.dumps(stats))
  assert data.get_info(name).mean == (0.25, 0.5, 0.75)
  Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / 'train' / 'cat' / 'new.png')
  assert data.get_info(name).mean != (0.25, 0.5, 0.75)
  assert json.loads(cache.read_text())['num_files'] == 13


def test_folder_settings_file_overrides_statistics_and_eval_resize(tmp_path):
  written = _write_folder(tmp_path)
  (tmp_path / sources.FOLDER_SETTINGS).write_text(json.dumps(
      {'mean': [0.5, 0.5, 0.5], 'std': [0.2, 0.2, 0.2], 'eval_resize': True}))
  name = f'image_folder:{tmp_path}'
  info = data.get_info(name)
  assert (info.mean, info.std, info.eval_resize) == ((0.5,) * 3, (0.2,) * 3, True)
  assert not (tmp_path / sources.FOLDER_STATS).exists()  # nothing to compute
  images, _ = _eval_images(name)  # resize to 37 + centre crop 32: not the stored pixels
  assert images.shape[1:] == (32, 32, 3)
  assert not np.array_equal(images, np.stack([p for _, p in written['test']]))
  (tmp_path / sources.FOLDER_SETTINGS).write_text(json.dumps({'eval_resise': False}))
  with pytest.raises(errors.UserError, match="eval_resise.*Did you mean 'eval_resize'"):
    data.get_info(name)


def test_photos_of_varying_size_keep_the_natural_photo_defaults(tmp_path):
  _write_folder(tmp_path)
  Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / 'test' / 'cat' / '00.png')
  info = data.get_info(f'image_folder:{tmp_path}')
  assert (info.train_augment, info.eval_resize) == ('rrc_flip', True)


def test_corrupt_jpeg_in_the_train_split_is_named_before_training(tmp_path):
  _write_folder(tmp_path)
  bad = tmp_path / 'train' / 'dog' / 'zz_broken.jpg'
  _bad_jpeg(bad)
  with pytest.raises(data.UnreadableImageError, match=str(bad)) as e:
    data.get_info(f'image_folder:{tmp_path}')  # the statistics pass decodes the train split
  assert isinstance(e.value, errors.UserError) and 'Remove or replace it' in str(e.value)


def test_corrupt_jpeg_met_by_the_pipeline_is_named(tmp_path):
  _write_folder(tmp_path)
  bad = tmp_path / 'test' / 'dog' / 'zz_broken.jpg'
  _bad_jpeg(bad)
  name = f'image_folder:{tmp_path}'
  assert data.get_info(name).num_eval == 9  # headers read fine; the data is cut off
  with pytest.raises(data.UnreadableImageError, match=str(bad)):
    list(data.eval_iterator(name, global_batch_size=4))
  assert sources.find_unreadable(sources.FolderSource(str(tmp_path), 'test').paths) == [str(bad)]
