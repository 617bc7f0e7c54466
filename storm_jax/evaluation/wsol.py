"""Weakly-supervised object localisation with CAM (docs/DESIGN.md#metrics-wsol; Co-Mixup's WSOL
protocol).

Pipeline per image (device part jit-able, box extraction on host):
  1. CAM = sum_c w[c, y_hat] F[..., c] with y_hat the predicted top-1 class, F the last conv
     feature map (`model.apply(..., return_features=True)`), w the 'head' kernel [F, N];
  2. smoothed by a 3x3 all-ones convolution with zero padding 1 (a 3x3 box *sum*);
  3. bicubic upsampling to the input size (`jax.image.resize(..., 'cubic')`);
  4. min-max normalised per image and converted to uint8 (truncation, as `np.uint8(255 * x)`);
  5. binarised at `threshold * max` (0.25; strict `>` as OpenCV's THRESH_BINARY);
  6. box = bounding rectangle of the largest connected component;
  7. correct iff max IoU with the ground-truth boxes >= 0.5 AND the top-1 prediction is right.

Deviations from the PyTorch/OpenCV reference, both small and documented here:
  * Step 3: `jax.image.resize` 'cubic' is the Keys kernel with a = -0.5 (PIL/TF), PyTorch's
    bicubic uses a = -0.75; both use half-pixel centres (align_corners=False).
  * Step 6: the reference takes OpenCV `findContours(RETR_TREE)` and the contour of largest
    polygon area; we label 8-connected components with `scipy.ndimage.label` and take the one
    with the most pixels. The two agree for hole-free blobs (the usual CAM case); they can differ
    when a component has holes or two components have nearly equal size.
Boxes are [x_min, y_min, x_max, y_max] in *inclusive* integer pixel coordinates (x = column,
y = row), as cv2.boundingRect (x, y, x + w - 1, y + h - 1) and the ImageNet annotations; IoU
counts pixels, i.e. uses (x_max - x_min + 1) widths.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.ndimage

# Step 7: a box localises the object when its IoU with a ground-truth box is at least this.
IOU_THRESHOLD = 0.5


def class_activation_map(features: jax.Array, head_kernel: jax.Array,
                         class_index: jax.Array) -> jax.Array:
  """CAM = features . head_kernel[:, class].

  Args:
    features: [B, h, w, F] last conv feature map.
    head_kernel: [F, N] kernel of the 'head' Dense layer.
    class_index: [B] int class per image (the predicted top-1 class for WSOL).

  Returns:
    [B, h, w] float32 (bias omitted: it is constant over space and min-max removes it).
  """
  weights = jnp.take(head_kernel, class_index, axis=1).T       # [B, F]
  return jnp.einsum('bhwf,bf->bhw', features.astype(jnp.float32), weights.astype(jnp.float32))


def smooth_cam(cam: jax.Array) -> jax.Array:
  """3x3 all-ones convolution with zero padding 1: [B, h, w] -> [B, h, w]."""
  padded = jnp.pad(cam, ((0, 0), (1, 1), (1, 1)))
  h, w = cam.shape[1:]
  return sum(padded[:, i:i + h, j:j + w] for i in range(3) for j in range(3))


def cam_to_uint8(cam: jax.Array, size: tuple[int, int]) -> jax.Array:
  """Smooth, bicubic-upsample to `size` = (H, W), min-max normalise, uint8: [B, H, W].

  A constant CAM (max == min) maps to all zeros (the reference would divide by zero).
  """
  cam = smooth_cam(cam)
  up = jax.image.resize(cam, (cam.shape[0], *size), method='cubic')
  lo = jnp.min(up, axis=(1, 2), keepdims=True)
  hi = jnp.max(up, axis=(1, 2), keepdims=True)
  norm = jnp.where(hi > lo, (up - lo) / jnp.where(hi > lo, hi - lo, 1.0), 0.0)
  return jnp.floor(255.0 * norm).astype(jnp.uint8)


def largest_component_box(cam_uint8: np.ndarray, *, threshold: float = 0.25) -> np.ndarray:
  """Box around the largest 8-connected component of `cam > threshold * max(cam)`.

  Args:
    cam_uint8: [H, W] uint8 map (host array).
    threshold: fraction of the map's maximum (0.25 in Co-Mixup's protocol).

  Returns:
    int64 [4] box [x_min, y_min, x_max, y_max] (inclusive); [0, 0, 0, 0] if nothing exceeds
    the threshold (an all-zero map), as wsolevaluation does for an empty contour list.
  """
  cam_uint8 = np.asarray(cam_uint8)
  if cam_uint8.ndim != 2:
    raise ValueError(f'cam_uint8.shape={cam_uint8.shape} must be [H, W].')
  if not 0 <= threshold < 1:
    raise ValueError(f'threshold={threshold!r} must be in [0, 1).')
  binary = cam_uint8.astype(np.float64) > threshold * float(cam_uint8.max())
  labels, num = scipy.ndimage.label(binary, structure=np.ones((3, 3), bool))
  if num == 0:
    return np.zeros(4, np.int64)
  sizes = np.bincount(labels.ravel())[1:]
  rows, cols = np.nonzero(labels == 1 + int(np.argmax(sizes)))
  return np.array([cols.min(), rows.min(), cols.max(), rows.max()], np.int64)


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
  """IoU of inclusive integer boxes [x_min, y_min, x_max, y_max].

  Args:
    box: [4].
    boxes: [K, 4] (or [4]).

  Returns:
    [K] float64 (or a scalar for a single box).
  """
  box = np.asarray(box, np.float64)
  boxes = np.asarray(boxes, np.float64)
  ix = np.minimum(box[2], boxes[..., 2]) - np.maximum(box[0], boxes[..., 0]) + 1
  iy = np.minimum(box[3], boxes[..., 3]) - np.maximum(box[1], boxes[..., 1]) + 1
  inter = np.clip(ix, 0, None) * np.clip(iy, 0, None)
  area = lambda b: (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
  return inter / (area(box) + area(boxes) - inter)


def localization_correct(pred_box: np.ndarray, gt_boxes: np.ndarray, *, top1_correct: bool,
                         iou_threshold: float = IOU_THRESHOLD) -> bool:
  """Correct iff max IoU with any ground-truth box >= iou_threshold AND top-1 is correct.

  `top1_correct=True` gives the GT-known criterion (the IoU condition alone). An image with no
  ground-truth box (e.g. every box fell outside the centre crop) is not localised.
  """
  gt_boxes = np.asarray(gt_boxes).reshape(-1, 4)
  if not top1_correct or gt_boxes.shape[0] == 0:
    return False
  return bool(np.max(box_iou(pred_box, gt_boxes)) >= iou_threshold)


def predicted_class_cams(logits: jax.Array, features: jax.Array, head_kernel: jax.Array,
                         image_size: tuple[int, int]) -> jax.Array:
  """Steps 1-4 on device: the predicted class's CAM of each image as uint8 [B, H, W].

  Args:
    logits: [B, N] (the top-1 class selects the CAM weights).
    features: [B, h, w, F] from `model.apply(..., return_features=True)`.
    head_kernel: [F, N] = variables['params']['head']['kernel'].
    image_size: (H, W) of the model input, the size boxes are expressed in.
  """
  cam = class_activation_map(features, head_kernel, jnp.argmax(logits, axis=-1))
  return cam_to_uint8(cam, tuple(image_size))


def cam_boxes(cams_uint8: np.ndarray, *, threshold: float = 0.25) -> np.ndarray:
  """Steps 5-6 on the host: [B, H, W] uint8 CAMs -> [B, 4] int64 boxes."""
  boxes = [largest_component_box(c, threshold=threshold) for c in np.asarray(cams_uint8)]
  return np.stack(boxes) if boxes else np.zeros((0, 4), np.int64)


def predict_boxes(logits: jax.Array, features: jax.Array, head_kernel: jax.Array, *,
                  image_size: tuple[int, int], threshold: float = 0.25) -> np.ndarray:
  """Steps 1-6 for a batch: predicted-class CAM boxes, [B, 4] int64 (host).

  Args:
    logits, features, head_kernel, image_size: as `predicted_class_cams`.
    threshold: CAM binarisation threshold as a fraction of the max.
  """
  cams = _jitted_cams(logits, features, head_kernel, tuple(image_size))
  return cam_boxes(cams, threshold=threshold)


_jitted_cams = jax.jit(predicted_class_cams, static_argnums=3)
