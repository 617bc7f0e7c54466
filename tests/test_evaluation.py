"""Tests for storm_jax.evaluation: ECE, accuracy, temperature, FGSM/PGD, mCE, WSOL, timing."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

from storm_jax import evaluation as ev

# ----------------------------------------------------------------------------- classification

# Five examples, three classes, M = 10 bins (hand-computed below).
PROBS = np.array([
    [0.95, 0.03, 0.02],   # conf .95, correct  -> bin (0.9, 1.0]
    [0.05, 0.85, 0.10],   # conf .85, wrong    -> bin (0.8, 0.9]
    [0.62, 0.30, 0.08],   # conf .62, correct  -> bin (0.6, 0.7]
    [0.20, 0.15, 0.65],   # conf .65, correct  -> bin (0.6, 0.7]
    [0.45, 0.35, 0.20],   # conf .45, wrong    -> bin (0.4, 0.5]
], np.float32)
LABELS = np.array([0, 0, 0, 2, 1], np.int32)
# 1/5 |1 - .95| + 1/5 |0 - .85| + 2/5 |1 - (.62 + .65) / 2| + 1/5 |0 - .45|
#  = .01 + .17 + .146 + .09
ECE_BY_HAND = 0.416


def _ece_reference(probs, labels, n_bins):
  """Loop over bins ((m-1)/M, m/M] in float64, straight from the definition."""
  conf = probs.max(-1).astype(np.float64)
  correct = probs.argmax(-1) == labels
  total = 0.0
  for m in range(1, n_bins + 1):
    in_bin = (conf > (m - 1) / n_bins) & (conf <= m / n_bins)
    if in_bin.any():
      total += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
  return total


def test_ece_hand_computed():
  assert float(ev.ece(PROBS, LABELS, n_bins=10)) == pytest.approx(ECE_BY_HAND, abs=1e-6)
  bins = ev.calibration_bins(PROBS, LABELS, n_bins=10)
  np.testing.assert_array_equal(bins['count'], [0, 0, 0, 0, 1, 0, 2, 0, 1, 1])
  np.testing.assert_allclose(bins['accuracy'][6], 1.0)
  np.testing.assert_allclose(bins['confidence'][6], 0.635, atol=1e-6)


def test_ece_matches_reference_and_ignores_padding():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(300, 7)) * 3
  probs = np.asarray(jax.nn.softmax(jnp.asarray(logits, jnp.float32)))
  labels = rng.integers(0, 7, 300).astype(np.int32)
  for n_bins in (10, 15):
    assert float(ev.ece(probs, labels, n_bins=n_bins)) == pytest.approx(
        _ece_reference(probs, labels, n_bins), abs=1e-5)
  # Padded rows (mask False) change nothing.
  padded_probs = np.concatenate([probs, np.eye(7, dtype=np.float32)[:5]])
  padded_labels = np.concatenate([labels, np.full(5, 3, np.int32)])
  mask = np.arange(305) < 300
  assert float(ev.ece(padded_probs, padded_labels, mask=mask)) == pytest.approx(
      float(ev.ece(probs, labels)), abs=1e-6)


def test_ece_bins_are_right_closed():
  # With M = 4 the edges are exact in binary: 0.5 belongs to (0.25, 0.5], 0.75 to (0.5, 0.75].
  probs = np.array([[0.5, 0.5, 0.0], [0.75, 0.25, 0.0], [0.25 + 2**-20, 0.5 - 2**-20, 0.25]],
                   np.float32)
  bins = ev.calibration_bins(probs, np.zeros(3, np.int32), n_bins=4)
  np.testing.assert_array_equal(bins['count'], [0, 2, 1, 0])
  # 0.7 with M = 10: ceil(0.7 * 10) - 1 = 7 in floating point; the right bin is 6.
  bins = ev.calibration_bins(np.array([[0.7, 0.3]], np.float32), np.zeros(1, np.int32))
  assert int(np.argmax(bins['count'])) == 6


def test_ece_rejects_bad_bins():
  with pytest.raises(ValueError, match='n_bins'):
    ev.ece(PROBS, LABELS, n_bins=0)


def test_accuracy_topk_error_and_nll():
  logits = np.array([[3., 2., 1., 0.], [0., 1., 2., 3.], [1., 3., 2., 0.]], np.float32)
  labels = np.array([0, 1, 3], np.int32)
  assert float(ev.accuracy(logits, labels)) == pytest.approx(1 / 3)
  assert float(ev.accuracy(logits, labels, k=3)) == pytest.approx(2 / 3)
  assert float(ev.error(logits, labels, k=1)) == pytest.approx(2 / 3)
  mask = np.array([True, False, True])
  assert float(ev.accuracy(logits, labels, mask=mask)) == pytest.approx(1 / 2)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  assert float(ev.nll(logits, labels)) == pytest.approx(-logp[[0, 1, 2], labels].mean(), rel=1e-6)
  assert float(ev.nll(logits, labels, mask=mask)) == pytest.approx(
      -logp[[0, 2], labels[[0, 2]]].mean(), rel=1e-6)
  with pytest.raises(ValueError, match='k=5'):
    ev.accuracy(logits, labels, k=5)


def test_temperature_scaling_fixes_an_overconfident_toy():
  rng = np.random.default_rng(1)
  base = rng.normal(size=(2000, 10)).astype(np.float32) * 1.5
  p = np.exp(base) / np.exp(base).sum(-1, keepdims=True)
  labels = np.array([rng.choice(10, p=row) for row in p], np.int32)   # calibrated at T = 1
  logits = 3.0 * base                                                  # overconfident
  t = float(ev.fit_temperature(logits, labels))
  assert t == pytest.approx(3.0, rel=0.15)
  assert float(ev.nll(logits / t, labels)) < float(ev.nll(logits, labels)) - 0.1
  before = float(ev.ece(jax.nn.softmax(logits), labels))
  after, t2 = ev.temperature_scaled_ece(logits, labels)
  assert float(t2) == pytest.approx(t)
  assert float(after) < 0.5 * before


def test_reliability_diagram_writes_png(tmp_path):
  path = tmp_path / 'reliability.png'
  bins = ev.reliability_diagram(PROBS, LABELS, str(path), title='toy')
  assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert float(bins['ece']) == pytest.approx(ECE_BY_HAND, abs=1e-6)
  np.testing.assert_array_equal(bins['count'], [0, 0, 0, 0, 1, 0, 2, 0, 1, 1])


# ----------------------------------------------------------------------------- adversarial

MEAN = np.array([0.5, 0.4, 0.3], np.float32)
STD = np.array([0.25, 0.2, 0.3], np.float32)


class _Linear:
  """A model with the storm_jax.models calling convention: logits = flatten(x) @ W + b."""

  def apply(self, variables, x, *, train):
    assert not train   # the attack runs the model in eval mode
    return x.reshape(x.shape[0], -1) @ variables['w'] + variables['b']


def _linear_setup(shape=(3, 4, 5, 3), num_classes=4, low=0.2, high=0.8):
  rng = np.random.default_rng(2)
  variables = {'w': jnp.asarray(rng.normal(size=(np.prod(shape[1:]), num_classes)), jnp.float32),
               'b': jnp.asarray(rng.normal(size=num_classes), jnp.float32)}
  x = jnp.asarray(rng.uniform(low, high, size=shape), jnp.float32)
  labels = jnp.asarray(rng.integers(0, num_classes, shape[0]), jnp.int32)
  fn = ev.normalized_logits_fn(_Linear(), variables, mean=MEAN, std=STD)
  return fn, variables, x, labels


def _linear_input_gradient(variables, x, labels):
  """d CE / d x01 for the linear model, by hand: W (p - onehot) / std, reshaped."""
  w = np.asarray(variables['w'], np.float64)
  z = ((np.asarray(x, np.float64) - MEAN) / STD).reshape(x.shape[0], -1) @ w + np.asarray(
      variables['b'])
  p = np.exp(z - z.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  g = (p - np.eye(w.shape[1])[np.asarray(labels)]) @ w.T
  return g.reshape(x.shape) / STD


def _ce(fn, x, labels):
  return np.asarray(-jnp.take_along_axis(jax.nn.log_softmax(fn(x)), labels[:, None], 1)[:, 0])


def test_fgsm_moves_every_pixel_by_epsilon_along_the_gradient_sign():
  fn, variables, x, labels = _linear_setup()
  eps = 8 / 255
  x_adv = ev.fgsm(fn, x, labels, epsilon=eps)
  grad = _linear_input_gradient(variables, x, labels)
  assert np.all(grad != 0)
  # No pixel is near 0 or 1, so nothing is clipped: |delta| == eps exactly, in pixel units
  # (not eps * std: the normalisation is inside the attacked function).
  np.testing.assert_allclose(np.abs(x_adv - x), eps, atol=1e-6)
  np.testing.assert_array_equal(np.sign(x_adv - x), np.sign(grad))
  # CE is convex in x for a linear model: the step raises every example's loss.
  assert np.all(_ce(fn, x_adv, labels) > _ce(fn, x, labels))
  # Jitted with the variables as an argument (the documented usage): same result.
  jitted = jax.jit(lambda v, x, y: ev.fgsm(
      ev.normalized_logits_fn(_Linear(), v, mean=MEAN, std=STD), x, y, epsilon=eps))
  np.testing.assert_allclose(jitted(variables, x, labels), x_adv, atol=1e-6)


def test_fgsm_clips_to_unit_interval():
  fn, variables, x, labels = _linear_setup(low=0.0, high=1.0)
  x = x.at[0, 0, 0].set(jnp.array([0.0, 1.0, 0.01]))
  eps = 0.1
  x_adv = ev.fgsm(fn, x, labels, epsilon=eps)
  grad = _linear_input_gradient(variables, x, labels)
  np.testing.assert_allclose(x_adv, np.clip(np.asarray(x) + eps * np.sign(grad), 0, 1),
                             atol=1e-6)
  assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
  assert np.any(np.asarray(x_adv) == 0.0) and np.any(np.asarray(x_adv) == 1.0)


def test_fgsm_rejects_epsilon_in_255_units():
  fn, _, x, labels = _linear_setup()
  with pytest.raises(ValueError, match='epsilon=8'):
    ev.fgsm(fn, x, labels, epsilon=8)


def test_pgd_one_step_without_random_start_is_fgsm_and_stays_in_ball():
  fn, _, x, labels = _linear_setup()
  eps = 4 / 255
  np.testing.assert_allclose(
      ev.pgd(fn, x, labels, key=None, epsilon=eps, step_size=eps, num_steps=1,
             random_start=False),
      ev.fgsm(fn, x, labels, epsilon=eps), atol=1e-7)
  assert ev.PUZZLEMIX_PGD['epsilon'] == eps
  x_adv = ev.pgd(fn, x, labels, key=jax.random.key(3), **ev.PUZZLEMIX_PGD)
  assert float(jnp.max(jnp.abs(x_adv - x))) <= eps + 1e-6
  assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
  assert np.all(_ce(fn, x_adv, labels) > _ce(fn, x, labels))
  with pytest.raises(ValueError, match='key'):
    ev.pgd(fn, x, labels, key=None, epsilon=eps, step_size=eps, num_steps=2)


def test_fgsm_on_a_storm_jax_model_leaves_batch_stats_alone():
  from storm_jax import models
  model = models.get('cnn_small', num_classes=5, width=2)
  x = jnp.asarray(np.random.default_rng(4).uniform(0.1, 0.9, (2, 8, 8, 1)), jnp.float32)
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  rng = np.random.default_rng(5)
  variables = jax.tree.map(
      lambda s: jnp.asarray(np.abs(rng.normal(size=s.shape)) + 0.5, s.dtype), shapes)
  fn = ev.normalized_logits_fn(model, variables, mean=(0.5,), std=(0.3,))
  labels = jnp.array([1, 3], jnp.int32)
  x_adv = ev.fgsm(fn, x, labels, epsilon=2 / 255)
  assert x_adv.shape == x.shape
  moved = np.abs(np.asarray(x_adv - x))
  assert np.all((np.abs(moved - 2 / 255) < 1e-6) | (moved == 0))
  np.testing.assert_array_equal(fn(x), model.apply(variables, (x - 0.5) / 0.3, train=False))


# ----------------------------------------------------------------------------- mCE


def test_mce_arithmetic_on_a_fixed_table():
  errors = {
      'fog': [10.0, 20.0, 30.0, 40.0, 50.0],          # CE 30
      'snow': [5.0, 5.0, 5.0, 5.0, 5.0],              # CE 5
      'contrast': [0.0, 10.0, 20.0, 30.0, 100.0],     # CE 32
      'unused': [99.0] * 5,
  }
  mce, table = ev.mce(errors, corruptions=['fog', 'snow', 'contrast'])
  assert table == {'fog': 30.0, 'snow': 5.0, 'contrast': 32.0}
  assert mce == pytest.approx(67.0 / 3)
  assert 'mCE' in ev.format_table(table, mce)
  with pytest.raises(ValueError, match='missing'):
    ev.mce(errors, corruptions=['fog', 'frost'])
  with pytest.raises(ValueError, match='severities'):
    ev.mce({'fog': [1.0, 2.0]}, corruptions=['fog'])
  np.testing.assert_allclose(ev.corruption_errors(np.array([[1., 2., 3.], [0., 0., 3.]])),
                             [2.0, 1.0])


def test_corruption_lists_are_the_canonical_ones():
  all19 = ev.corruption_list('all19')
  standard = ev.corruption_list('standard15')
  assert len(all19) == len(set(all19)) == 19 and len(standard) == len(set(standard)) == 15
  assert set(standard) < set(all19)
  assert set(all19) - set(standard) == {'speckle_noise', 'gaussian_blur', 'spatter', 'saturate'}
  errors = {c: [float(i)] * 5 for i, c in enumerate(all19)}
  assert ev.mce(errors)[0] == pytest.approx(9.0)   # mean of 0..18, default = all 19
  with pytest.raises(ValueError, match='corruptions'):
    ev.corruption_list('imagenet_c')


# ----------------------------------------------------------------------------- WSOL


def test_box_iou_hand_cases():
  assert ev.box_iou([0, 0, 9, 9], [0, 0, 9, 9]) == pytest.approx(1.0)
  assert ev.box_iou([0, 0, 4, 4], [5, 5, 9, 9]) == pytest.approx(0.0)
  # Inclusive pixel boxes: 2x2 and 2x2 overlapping in one pixel: 1 / (4 + 4 - 1).
  assert ev.box_iou([0, 0, 1, 1], [1, 1, 2, 2]) == pytest.approx(1 / 7)
  # 10x10 vs its left half (5 x 10): 50 / 100.
  np.testing.assert_allclose(ev.box_iou([0, 0, 9, 9], [[0, 0, 4, 9], [20, 20, 30, 30]]),
                             [0.5, 0.0])
  assert ev.localization_correct([0, 0, 9, 9], [[0, 0, 4, 9]], top1_correct=True)
  assert not ev.localization_correct([0, 0, 9, 9], [[0, 0, 4, 9]], top1_correct=False)
  assert not ev.localization_correct([0, 0, 9, 9], [[0, 0, 3, 9]], top1_correct=True)
  assert ev.localization_correct([0, 0, 9, 9], [[0, 0, 3, 9], [0, 0, 9, 8]], top1_correct=True)
  # No ground-truth box left (all outside the crop): not localised.
  assert not ev.localization_correct([0, 0, 9, 9], np.zeros((0, 4)), top1_correct=True)
  assert ev.IOU_THRESHOLD == 0.5


def test_largest_component_box():
  cam = np.zeros((10, 12), np.uint8)
  cam[1:3, 1:3] = 200              # 4 px blob
  cam[5, 6] = cam[6, 7] = cam[7, 8] = cam[8, 9] = 255   # diagonal: one 8-connected blob, 4 px
  cam[6, 6] = 100                  # joins the diagonal blob: 5 px
  cam[0, 11] = 60                  # below 0.25 * 255 = 63.75: background
  np.testing.assert_array_equal(ev.largest_component_box(cam), [6, 5, 9, 8])
  # Strict threshold: a value equal to threshold * max is background.
  cam2 = np.zeros((4, 4), np.uint8)
  cam2[0, 0], cam2[3, 3], cam2[3, 2] = 200, 100, 100
  np.testing.assert_array_equal(ev.largest_component_box(cam2, threshold=0.5), [0, 0, 0, 0])
  np.testing.assert_array_equal(ev.largest_component_box(cam2, threshold=0.49), [2, 3, 3, 3])
  np.testing.assert_array_equal(ev.largest_component_box(np.zeros((5, 5), np.uint8)),
                                [0, 0, 0, 0])


def test_cam_on_a_synthetic_feature_map():
  features = np.zeros((2, 4, 4, 2), np.float32)
  features[:, 0, 0, 0] = 1.0        # channel 0: top-left cell
  features[:, 3, 3, 1] = 1.0        # channel 1: bottom-right cell
  head_kernel = jnp.asarray([[1.0, 0.0], [0.0, 2.0]])  # class c reads channel c
  cam = ev.class_activation_map(jnp.asarray(features), head_kernel, jnp.array([0, 1]))
  np.testing.assert_allclose(cam[0], features[0, :, :, 0])
  np.testing.assert_allclose(cam[1], 2 * features[1, :, :, 1])
  np.testing.assert_allclose(
      ev.smooth_cam(cam),
      [scipy.ndimage.convolve(np.asarray(c), np.ones((3, 3)), mode='constant') for c in cam])
  u8 = ev.cam_to_uint8(cam, (32, 48))
  assert u8.shape == (2, 32, 48) and u8.dtype == jnp.uint8
  assert int(u8.min()) == 0 and int(u8.max()) == 255
  logits = jnp.array([[5.0, 1.0], [0.0, 1.0]])       # predicts class 0, then class 1
  boxes = ev.predict_boxes(logits, jnp.asarray(features), head_kernel, image_size=(32, 48))
  # predict_boxes = the device part (CAMs) followed by the host part (boxes).
  cams = ev.predicted_class_cams(logits, jnp.asarray(features), head_kernel, (32, 48))
  np.testing.assert_array_equal(cams, u8)  # predicted classes 0, 1: the CAMs above
  np.testing.assert_array_equal(ev.cam_boxes(cams), boxes)
  assert ev.cam_boxes(cams[:0]).shape == (0, 4)
  # Smoothed, the hot cell covers the 2x2 corner cells = the corner quarter of the image
  # (16 x 24 px); bicubic spreading moves the 25 % contour a few pixels outwards.
  x0, y0, x1, y1 = boxes[0]
  assert (x0, y0) == (0, 0) and 20 <= x1 <= 30 and 13 <= y1 <= 20
  x0, y0, x1, y1 = boxes[1]
  assert (x1, y1) == (47, 31) and 17 <= x0 <= 27 and 11 <= y0 <= 18


# ----------------------------------------------------------------------------- timing


def test_time_step_and_overhead():
  @functools.partial(jax.jit, donate_argnums=0)
  def step(state, x):
    return state + x, jnp.sum(x)

  state, x = jnp.zeros((64, 64)), jnp.ones((64, 64))
  stats = ev.time_step(step, (state, x), warmup=1, repeats=3, carry=True)
  assert set(stats) == {'compile_s', 'mean_s', 'median_s', 'std_s', 'min_s'}
  assert stats['compile_s'] > 0 and 0 < stats['min_s'] <= stats['median_s']
  plain = ev.time_step(lambda a: a * 2, (x,), warmup=0, repeats=2)
  assert plain['mean_s'] > 0
  assert ev.augmentation_overhead(1.5, 1.0) == pytest.approx(0.5)
  with pytest.raises(ValueError, match='t_vanilla'):
    ev.augmentation_overhead(1.0, 0.0)
  with pytest.raises(ValueError, match='repeats'):
    ev.time_step(step, (state, x), repeats=0)
