"""WSOL (docs/DESIGN.md#metrics-wsol): ground-truth boxes through the eval transform, and
`evaluate --wsol` end to end on a fake Tiny-ImageNet written in the official layout."""

from __future__ import annotations

import dataclasses
import io
import os

import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from configs import common
from storm_jax import data
from storm_jax import evaluation
from storm_jax import train
from storm_jax.evaluation import runner
from storm_jax.data import input_pipeline
from storm_jax.data import sources
from storm_jax.data import tiny_imagenet

_WHOLE = (0, 0, 63, 63)
# Fake validation images: (wnid index, official box x0 y0 x1 y1 (inclusive pixels)).
_VAL = [(3, _WHOLE), (7, _WHOLE), (11, (10, 12, 20, 19)),
        (3, _WHOLE), (7, _WHOLE), (11, (40, 2, 50, 9))]


def _png(image: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, 'PNG')
  return buf.getvalue()


def _picture(seed: int, box) -> np.ndarray:
  """A noisy 64x64 background with a bright object filling `box`."""
  rng = np.random.default_rng(seed)
  image = rng.integers(0, 90, (64, 64, 3)).astype(np.uint8)
  x0, y0, x1, y1 = box
  image[y0:y1 + 1, x0:x1 + 1] = rng.integers(150, 256, 3).astype(np.uint8)
  return image


def _write_tiny(root: str, val_wnids) -> None:
  """Tiny-ImageNet's extracted layout: 4 train images, the val images of `_VAL`."""
  wnids = tiny_imagenet.WNIDS
  files = {'wnids.txt': ('\n'.join(wnids) + '\n').encode()}
  for i in range(4):
    wnid = wnids[_VAL[i][0]]
    files[f'train/{wnid}/images/{wnid}_{i}.JPEG'] = _png(_picture(100 + i, (8, 8, 40, 50)))
  lines = []
  for i, ((_, box), wnid) in enumerate(zip(_VAL, val_wnids)):
    files[f'val/images/val_{i}.JPEG'] = _png(_picture(i, box))
    lines.append('\t'.join([f'val_{i}.JPEG', wnid, *map(str, box)]))
  files['val/val_annotations.txt'] = ('\n'.join(lines) + '\n').encode()
  for rel, content in files.items():
    path = os.path.join(root, 'downloads', 'manual', 'tiny-imagenet-200', rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
      f.write(content)


def _all(batches, key):
  return np.concatenate([b[key] for b in batches])


def _which(image: np.ndarray) -> int:
  """Index in `_VAL` of a decoded val image (tfds stores examples in hashed-key order)."""
  dist = [np.abs(image.astype(int) - _picture(i, box)).mean() for i, (_, box) in enumerate(_VAL)]
  assert min(dist) < 1, dist  # PNG: lossless
  return int(np.argmin(dist))


# ----------------------------------------------------------------------------- boxes


def test_boxes_follow_resize_and_centre_crop_of_a_non_square_image():
  """Hand case: 100x200 image -> shorter side 73 (= round(64 / 0.875)) -> 73x146 -> central
  64x64 at (top, left) = (4, 41). The box's rows [20, 80) map to [10.6, 54.4) and its
  columns [60, 120) to [2.8, 46.6): inclusive pixels x 3..46, y 11..53."""
  info = dataclasses.replace(data.get_info('caltech_birds2011'), image_shape=(64, 64, 3))
  assert info.eval_resize and info.eval_crop_fraction == 0.875
  norm = tf.constant([[0.2, 0.3, 0.8, 0.6],    # (ymin, xmin, ymax, xmax) of the stored image
                      [0.1, 0.0, 0.9, 0.2],    # entirely in the cropped-away left margin
                      [0.0, 0.0, 1.0, 1.0]])   # the whole image
  boxes, valid = input_pipeline.eval_boxes(norm, tf.constant([100, 200]), info, max_boxes=4)
  np.testing.assert_array_equal(boxes.numpy(), [[3, 11, 46, 53], [0, 0, 0, 0], _WHOLE,
                                                [0, 0, 0, 0]])
  np.testing.assert_array_equal(valid.numpy(), [True, False, True, False])
  # The pixels went through the same geometry: the object's pixels (more than half covered
  # by it, i.e. brighter than mid-grey after the antialiased resize) are exactly the box.
  image = np.zeros((100, 200, 3), np.uint8)
  image[20:80, 60:120] = 255
  out = input_pipeline.eval_transform(tf.constant(_png(image)), info).numpy()
  assert out.shape == (64, 64, 3)
  rows, cols = np.nonzero(out[..., 0] > 127)
  assert [cols.min(), rows.min(), cols.max(), rows.max()] == [3, 11, 46, 53]
  # max_boxes truncates (the first box survives).
  boxes, valid = input_pipeline.eval_boxes(norm, tf.constant([100, 200]), info, max_boxes=1)
  assert boxes.numpy().tolist() == [[3, 11, 46, 53]] and valid.numpy().tolist() == [True]


def test_boxes_scale_with_the_output_size_without_eval_resize():
  info = data.get_info('tiny_imagenet', image_size=32)
  norm = tf.constant([[32 / 64, 0.0, 63 / 64, 45 / 64]])  # official (0, 32, 44, 62)
  boxes, valid = input_pipeline.eval_boxes(norm, tf.constant([64, 64]), info, max_boxes=1)
  # Rows [32, 63) -> [16, 31.5) -> 16..31 (round half to even), columns [0, 45) -> 0..21.
  assert boxes.numpy().tolist() == [[0, 16, 21, 31]] and valid.numpy().all()


def test_sequence_box_features_are_padded_to_fixed_slots(monkeypatch):
  """Datasets with several boxes per image (a tfds Sequence) fill K slots, rest masked."""
  features = tfds.features.FeaturesDict({
      'image': tfds.features.Image(shape=(None, None, 3)),
      'label': tfds.features.ClassLabel(num_classes=1000),
      'objects': tfds.features.Sequence({'bbox': tfds.features.BBoxFeature(),
                                         'label': tfds.features.ClassLabel(num_classes=3)}),
  })
  fake = type('B', (), {'info': type('I', (), {'features': features})()})()
  monkeypatch.setattr(sources, 'builder', lambda *a, **k: fake)
  assert input_pipeline.box_feature('imagenet2012') == ('objects', 'bbox')
  record = features.serialize_example({
      'image': np.zeros((8, 8, 3), np.uint8), 'label': 5,
      'objects': {'bbox': [tfds.features.BBox(0.0, 0.0, 0.5, 0.25),
                           tfds.features.BBox(0.5, 0.5, 1.0, 1.0)], 'label': [0, 2]}})
  parse, k = input_pipeline.box_parser(
      'imagenet2012', None, None)
  assert k == input_pipeline.DEFAULT_MAX_BOXES
  norm = parse(tf.constant(record))
  info = dataclasses.replace(data.get_info('tiny_imagenet'), image_shape=(8, 8, 3))
  boxes, valid = input_pipeline.eval_boxes(norm, tf.constant([8, 8]), info, max_boxes=3)
  assert boxes.numpy().tolist() == [[0, 0, 1, 3], [4, 4, 7, 7], [0, 0, 0, 0]]
  assert valid.numpy().tolist() == [True, True, False]
  with pytest.raises(ValueError, match='max_boxes=0'):
    input_pipeline.box_parser('imagenet2012', None, 0)


@pytest.fixture(scope='module')
def tiny_dirs(tmp_path_factory):
  """(dir A, dir B): the same images; in B the labels of val images 0, 1 (whole-image boxes)
  and 2 (small box) are filled in later with the trained model's predictions."""
  root = tmp_path_factory.mktemp('wsol')
  wnids = tiny_imagenet.WNIDS
  a = str(root / 'a')
  _write_tiny(a, [wnids[c] for c, _ in _VAL])
  return a, str(root / 'b')


def test_eval_iterator_with_boxes_on_tiny_imagenet(tiny_dirs):
  d = tiny_dirs[0]
  plain = list(data.eval_iterator('tiny_imagenet', global_batch_size=4, data_dir=d))
  boxed = list(data.eval_iterator('tiny_imagenet', global_batch_size=4, data_dir=d,
                                  with_boxes=True))
  assert set(plain[0]) == {'image', 'label', 'mask'}  # unchanged without with_boxes
  assert set(boxed[0]) == {'image', 'label', 'mask', 'boxes', 'box_mask'}
  for key in ('image', 'label', 'mask'):
    np.testing.assert_array_equal(_all(plain, key), _all(boxed, key))
  boxes, box_mask = _all(boxed, 'boxes'), _all(boxed, 'box_mask')
  assert boxes.shape == (8, 1, 4) and boxes.dtype == np.int32 and box_mask.shape == (8, 1)
  # 64x64 images: the official inclusive pixel corners come back exactly.
  order = [_which(image) for image in _all(boxed, 'image')[:6]]
  assert sorted(order) == list(range(6))
  np.testing.assert_array_equal(boxes[:6, 0], [_VAL[i][1] for i in order])
  assert box_mask[:, 0].tolist() == [True] * 6 + [False] * 2
  assert not boxes[6:].any()
  # The object is where the box says.
  for image, (x0, y0, x1, y1) in zip(_all(boxed, 'image')[:6], boxes[:6, 0]):
    inside = np.zeros((64, 64), bool)
    inside[y0:y1 + 1, x0:x1 + 1] = True
    assert image[inside].mean() > 140
    assert inside.all() or image[~inside].mean() < 60


def test_datasets_without_boxes_raise_naming_them(tmp_path):
  for name in ('digits', 'imagenet2012', 'cifar100_corrupted/fog_1'):
    with pytest.raises(ValueError, match=f"dataset '{name}'.*no bounding-box"):
      data.eval_iterator(name, global_batch_size=4, data_dir=str(tmp_path), with_boxes=True)
  assert not os.listdir(tmp_path)  # nothing prepared or read before the error
  assert input_pipeline.box_feature('caltech_birds2011', data_dir=str(tmp_path)) == ('bbox',)


# ----------------------------------------------------------------------------- evaluate


def _config(data_dir: str):
  config = common.get_config()
  config.dataset.name = 'tiny_imagenet'
  config.dataset.data_dir = data_dir
  config.model.name = 'cnn_small'
  common.smoke(config)
  config.num_train_steps = 2
  config.batch_size = 4
  config.eval_batch_size = 4
  config.preview_images = 0
  config.tensorboard = False
  return config


def _direct(model, variables, data_dir, threshold):
  """WSOL accuracies recomputed with the storm_jax.evaluation functions, image by image.

  Returns:
    (loc acc %, GT-known loc acc %, {index in _VAL: predicted class}).
  """
  info = data.get_info('tiny_imagenet')
  mean, std = jnp.asarray(info.mean), jnp.asarray(info.std)
  loc, gt_known, preds = [], [], {}
  for batch in data.eval_iterator('tiny_imagenet', global_batch_size=4, data_dir=data_dir,
                                  with_boxes=True):
    x = (batch['image'] / 255.0 - mean) / std
    logits, features = model.apply(variables, x, train=False, return_features=True)
    pred = evaluation.predict_boxes(logits, features, variables['params']['head']['kernel'],
                                    image_size=(64, 64), threshold=threshold)
    top1 = np.asarray(jnp.argmax(logits, -1)) == batch['label']
    for i in np.flatnonzero(batch['mask']):
      gt = batch['boxes'][i][batch['box_mask'][i]]
      loc.append(evaluation.localization_correct(pred[i], gt, top1_correct=top1[i]))
      gt_known.append(evaluation.localization_correct(pred[i], gt, top1_correct=True))
      preds[_which(batch['image'][i])] = int(jnp.argmax(logits[i]))
  return 100 * np.mean(loc), 100 * np.mean(gt_known), preds


@pytest.mark.slow  # prepares the fake Tiny-ImageNet, trains 2 steps, evaluates twice
def test_evaluate_wsol_end_to_end(tiny_dirs, tmp_path):
  dir_a, dir_b = tiny_dirs
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(_config(dir_a), workdir)  # 2 steps on the 4 fake train images
  # The evaluator's WSOL pass (default CAM threshold) equals the direct computation.
  ev = runner.Evaluator(_config(dir_a), workdir)
  loc, gt_known, preds = _direct(ev.model, ev.variables, dir_a, 0.25)
  assert runner.WSOL_CAM_THRESHOLD == 0.25
  got = ev.wsol('tiny_imagenet', None)
  assert (100 * got[0], 100 * got[1]) == pytest.approx((loc, gt_known))
  assert 0 <= loc <= gt_known <= 100

  # Same images, labels the model gets right for val 0, 1, 2 and wrong for 3, 4, 5. CAM
  # threshold 0 keeps every pixel above the CAM's minimum: the box is (almost) the whole
  # image, which matches the whole-image boxes (val 0, 1, 3, 4), not the small ones (2, 5).
  # Localised and right: val 0 and 1.
  wnids = tiny_imagenet.WNIDS
  _write_tiny(dir_b, [wnids[preds[i] if i < 3 else (preds[i] + 1) % 200] for i in range(6)])
  metrics = runner.evaluate_checkpoint(_config(dir_b), workdir, fgsm_eps=(), wsol=True,
                                       wsol_cam_threshold=0.0)
  assert metrics['top1_acc'] == pytest.approx(50.0)
  assert metrics['wsol_gt_known_loc_acc'] == pytest.approx(100 * 4 / 6)
  assert metrics['wsol_loc_acc'] == pytest.approx(100 * 2 / 6)
  assert metrics['wsol_cam_threshold'] == 0.0
  loc, gt_known, _ = _direct(ev.model, ev.variables, dir_b, 0.0)
  assert (metrics['wsol_loc_acc'], metrics['wsol_gt_known_loc_acc']) == pytest.approx(
      (loc, gt_known))
  summary = open(os.path.join(workdir, 'eval_summary.md')).read()
  assert '| wsol_loc_acc |' in summary and '| wsol_gt_known_loc_acc |' in summary


def test_wsol_bad_inputs_raise_before_restoring(tmp_path):
  config = common.get_config()  # digits: no boxes
  with pytest.raises(ValueError, match="dataset 'digits'"):
    runner.evaluate_checkpoint(config, str(tmp_path), fgsm_eps=(), wsol=True)
  with pytest.raises(ValueError, match='wsol_cam_threshold=1.0'):
    runner.evaluate_checkpoint(config, str(tmp_path), fgsm_eps=(), wsol=True,
                               wsol_cam_threshold=1.0)
