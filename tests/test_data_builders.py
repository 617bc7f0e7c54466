"""Custom tfds builders prepared from tiny fake files in the official layouts, then read back
through the input pipeline: Tiny-ImageNet (zip and folder), CIFAR-100-C (folder and tar), and
user image folders."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile

import numpy as np
from PIL import Image
import pytest

from storm_jax import data
from storm_jax.data import sources
from storm_jax.data import tiny_imagenet

# Tiny-ImageNet fake: (split, file name, wnid, colour, greyscale, box x0 y0 x1 y1).
_A, _B, _C = tiny_imagenet.WNIDS[5], tiny_imagenet.WNIDS[17], tiny_imagenet.WNIDS[199]
_TINY = [
    ('train', f'{_A}_0.JPEG', _A, (220, 30, 30), False, (0, 10, 63, 58)),
    ('train', f'{_A}_1.JPEG', _A, (30, 220, 30), False, (1, 2, 40, 50)),
    ('train', f'{_B}_0.JPEG', _B, (30, 30, 220), False, (5, 6, 30, 31)),
    ('train', f'{_C}_0.JPEG', _C, (128, 128, 128), True, (0, 0, 63, 63)),
    ('val', 'val_0.JPEG', _B, (220, 220, 30), False, (0, 32, 44, 62)),
    ('val', 'val_1.JPEG', _A, (30, 220, 220), False, (52, 55, 57, 59)),
    ('val', 'val_2.JPEG', _C, (60, 60, 60), True, (4, 0, 60, 55)),
]


def _jpeg(colour, grey):
  buf = io.BytesIO()
  if grey:
    Image.fromarray(np.full((64, 64), colour[0], np.uint8), mode='L').save(buf, 'JPEG')
  else:
    Image.fromarray(np.full((64, 64, 3), colour, np.uint8)).save(buf, 'JPEG', quality=95)
  return buf.getvalue()


def _tiny_files() -> dict[str, bytes]:
  files = {'wnids.txt': ('\n'.join(tiny_imagenet.WNIDS) + '\n').encode(),
           'words.txt': b'n00000000\tentity\n'}
  boxes, val = {}, []
  for split, fname, wnid, colour, grey, box in _TINY:
    if split == 'train':
      files[f'train/{wnid}/images/{fname}'] = _jpeg(colour, grey)
      boxes.setdefault(wnid, []).append('\t'.join([fname, *map(str, box)]))
    else:
      files[f'val/images/{fname}'] = _jpeg(colour, grey)
      val.append('\t'.join([fname, wnid, *map(str, box)]))
  for wnid, lines in boxes.items():
    files[f'train/{wnid}/{wnid}_boxes.txt'] = ('\n'.join(lines) + '\n').encode()
  files['val/val_annotations.txt'] = ('\n'.join(val) + '\n').encode()
  return files


def _write_tiny(manual_dir, as_zip: bool):
  os.makedirs(manual_dir, exist_ok=True)
  files = _tiny_files()
  if as_zip:
    with zipfile.ZipFile(os.path.join(manual_dir, 'tiny-imagenet-200.zip'), 'w') as z:
      for rel, content in files.items():
        z.writestr(f'tiny-imagenet-200/{rel}', content)
  else:
    for rel, content in files.items():
      path = os.path.join(manual_dir, 'tiny-imagenet-200', rel)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, 'wb') as f:
        f.write(content)


def _expected_label(image):
  """Label of the fake example whose colour is nearest to the decoded image's mean colour."""
  mean = image.reshape(-1, 3).mean(0)
  dist = [np.abs(mean - np.array(c[3] if not c[4] else (c[3][0],) * 3)).sum() for c in _TINY]
  row = _TINY[int(np.argmin(dist))]
  assert min(dist) < 12, f'decoded colour {mean} matches no fake image'
  return tiny_imagenet.WNIDS.index(row[2]), row


@pytest.mark.parametrize('as_zip', [True, False])
def test_tiny_imagenet_builder_from_official_layout(tmp_path, as_zip):
  d = str(tmp_path / 'tfds')
  _write_tiny(os.path.join(d, 'downloads', 'manual'), as_zip)
  # Prepared on first use from the manual dir, then read through the pipeline.
  evals = list(data.eval_iterator('tiny_imagenet', global_batch_size=4, data_dir=d))
  info = data.get_info('tiny_imagenet', data_dir=d)
  assert (info.num_train, info.num_eval, info.num_classes) == (4, 3, 200)
  assert len(evals) == 1 and evals[0]['mask'].tolist() == [True, True, True, False]
  images, labels = evals[0]['image'][:3], evals[0]['label'][:3]
  assert images.shape == (3, 64, 64, 3) and images.dtype == np.uint8  # greyscale -> 3 channels
  seen = set()
  for image, label in zip(images, labels):
    want, row = _expected_label(image)
    assert label == want, f'{row[1]} should have the label of {row[2]}'
    seen.add(row[1])
  assert seen == {'val_0.JPEG', 'val_1.JPEG', 'val_2.JPEG'}
  train = list(data.eval_iterator('tiny_imagenet', split='train', global_batch_size=4,
                                  data_dir=d))
  for image, label in zip(train[0]['image'], train[0]['label']):
    assert label == _expected_label(image)[0]  # label = line of wnids.txt of the folder name
  batch = next(data.train_iterator('tiny_imagenet', global_batch_size=8, seed=0, data_dir=d))
  assert batch['image'].shape == (8, 64, 64, 3) and batch['label'].dtype == np.int32
  # Boxes: official inclusive pixel corners, normalised (ymin, xmin, ymax, xmax).
  source = sources.builder('tiny_imagenet', d).as_data_source(split='validation')
  by_name = {ex['file_name'].decode() if isinstance(ex['file_name'], bytes)
             else ex['file_name']: ex for ex in (source[i] for i in range(len(source)))}
  np.testing.assert_allclose(by_name['val_0.JPEG']['bbox'], [32 / 64, 0, 63 / 64, 45 / 64],
                             atol=1e-6)
  assert by_name['val_0.JPEG']['label'] == tiny_imagenet.WNIDS.index(_B)


def test_tiny_imagenet_rejects_wrong_wnids_order(tmp_path):
  d = str(tmp_path / 'tfds')
  manual = os.path.join(d, 'downloads', 'manual')
  _write_tiny(manual, as_zip=False)
  path = os.path.join(manual, 'tiny-imagenet-200', 'wnids.txt')
  with open(path, 'w') as f:
    f.write('\n'.join(reversed(tiny_imagenet.WNIDS)))
  with pytest.raises(Exception, match='wnids.txt differs'):
    data.prepare('tiny_imagenet', data_dir=d, download=False)


def _write_cifar100_c(folder, corruptions=('fog',), per_severity=3):
  os.makedirs(folder, exist_ok=True)
  n = 5 * per_severity
  rows = np.arange(n)
  # Pixel value = 10 * severity + position in the severity block; labels likewise distinct.
  values = (10 * (rows // per_severity + 1) + rows % per_severity).astype(np.uint8)
  for c in corruptions:
    np.save(os.path.join(folder, f'{c}.npy'),
            np.broadcast_to(values[:, None, None, None], (n, 32, 32, 3)).copy())
  np.save(os.path.join(folder, 'labels.npy'), (rows * 7 % 100).astype(np.int64))


@pytest.mark.parametrize('severity', [1, 3, 5])
def test_cifar100_corrupted_builder_reads_the_severity_block(tmp_path, severity):
  d = str(tmp_path / 'tfds')
  _write_cifar100_c(os.path.join(d, 'downloads', 'manual', 'CIFAR-100-C'))
  name = f'cifar100_corrupted/fog_{severity}'
  evals = list(data.eval_iterator(name, global_batch_size=4, data_dir=d))
  mask = np.concatenate([b['mask'] for b in evals])
  images = np.concatenate([b['image'] for b in evals])[mask]
  labels = np.concatenate([b['label'] for b in evals])[mask]
  assert images.shape == (3, 32, 32, 3) and mask.sum() == 3
  pos = images[:, 0, 0, 0].astype(int) - 10 * severity
  assert sorted(pos.tolist()) == [0, 1, 2]  # exactly this severity's block
  assert (images == images[:, :1, :1, :1]).all()  # PNG round trip is lossless
  np.testing.assert_array_equal(labels, ((severity - 1) * 3 + pos) * 7 % 100)


def test_cifar100_corrupted_from_tar_and_missing_corruption(tmp_path):
  src = tmp_path / 'src' / 'CIFAR-100-C'
  _write_cifar100_c(str(src))
  manual = tmp_path / 'manual'
  manual.mkdir()
  with tarfile.open(manual / 'CIFAR-100-C.tar', 'w') as tar:
    tar.add(str(src), arcname='CIFAR-100-C')
  d = str(tmp_path / 'tfds')
  data.prepare('cifar100_corrupted/fog_2', data_dir=d, manual_dir=str(manual), download=False)
  evals = list(data.eval_iterator('cifar100_corrupted/fog_2', global_batch_size=3, data_dir=d))
  assert sorted(evals[0]['image'][:, 0, 0, 0].tolist()) == [20, 21, 22]
  with pytest.raises(Exception, match='snow.npy'):
    data.prepare('cifar100_corrupted/snow_1', data_dir=d, manual_dir=str(manual),
                 download=False)


def test_cifar100_corrupted_missing_corruption_file_is_a_clear_error(tmp_path):
  d = str(tmp_path / 'tfds')
  _write_cifar100_c(os.path.join(d, 'downloads', 'manual', 'CIFAR-100-C'), ('fog',))
  with pytest.raises(data.DatasetNotFoundError, match=r'snow\.npy and labels\.npy'):
    data.eval_iterator('cifar100_corrupted/snow_1', global_batch_size=4, data_dir=d)


def test_image_folder(tmp_path):
  colours = {'cat': (200, 40, 40), 'dog': (40, 40, 200)}
  for split, n in (('train', 3), ('val', 2)):
    for cls, colour in colours.items():
      os.makedirs(tmp_path / split / cls)
      for i in range(n):
        size = (16, 16) if i else (16, 20)  # one non-square image: resized, not crashing
        Image.fromarray(np.full((*size, 3), colour, np.uint8)).save(
            tmp_path / split / cls / f'{i}.png')
  name = f'image_folder:{tmp_path}'
  info = data.get_info(name)
  assert (info.num_classes, info.num_train, info.num_eval, info.eval_split) == (2, 6, 4, 'val')
  evals = list(data.eval_iterator(name, global_batch_size=4, image_size=8))
  images = np.concatenate([b['image'] for b in evals])
  labels = np.concatenate([b['label'] for b in evals])
  mask = np.concatenate([b['mask'] for b in evals])
  assert images.shape[1:] == (8, 8, 3) and mask.sum() == 4
  for image, label in zip(images[mask], labels[mask]):
    # Class index = position in the sorted class names (cat=0, dog=1), as tfds.ImageFolder.
    assert label == (0 if image[4, 4, 0] > image[4, 4, 2] else 1)
  batch = next(data.train_iterator(name, global_batch_size=4, seed=0, image_size=8))
  assert batch['image'].shape == (4, 8, 8, 3) and batch['image'].dtype == np.uint8
  with pytest.raises(data.DatasetNotFoundError, match='does not exist'):
    data.get_info(f'image_folder:{tmp_path}/nope')
