"""Evaluation metrics of the papers (docs/DESIGN.md#metrics), as pure functions.

  from storm_jax import evaluation as ev
  ev.accuracy(logits, labels, k=5, mask=mask)             # top-k accuracy; ev.error = 1 - acc
  ev.ece(jax.nn.softmax(logits), labels, n_bins=10)       # 15 bins: Guo et al.
  ev.temperature_scaled_ece(logits, labels)               # (ece, T)
  f = ev.normalized_logits_fn(model, variables, mean=info.mean, std=info.std)
  x_adv = ev.fgsm(f, x01, labels, epsilon=8 / 255)        # eps in [0, 1] pixel units
  mce, table = ev.mce({corruption: [err_s1, ..., err_s5]}, corruptions='all19')
  boxes = ev.predict_boxes(logits, features, head_kernel, image_size=(224, 224))
  stats = ev.time_step(jitted_step, args, warmup=2, repeats=20)

All values are fractions; the papers report 100 x them.

`storm_jax.evaluation.runner` (imported on its own: it needs the training stack) evaluates
a run's checkpoint with these functions; `python -m storm_jax.evaluate` is its CLI.
"""

from storm_jax.evaluation.adversarial import (FGSM_EPSILONS, PUZZLEMIX_PGD, fgsm,
                                             normalized_logits_fn, pgd)
from storm_jax.evaluation.classification import (accuracy, calibration_bins, ece, error,
                                                 fit_temperature, nll, reliability_diagram,
                                                 temperature_scaled_ece, topk_correct)
from storm_jax.evaluation.corruption import (CORRUPTION_SETS, corruption_errors,
                                             corruption_list, format_table, mce)
from storm_jax.evaluation.timing import augmentation_overhead, time_step
from storm_jax.evaluation.wsol import (IOU_THRESHOLD, box_iou, cam_boxes, cam_to_uint8,
                                       class_activation_map, largest_component_box,
                                       localization_correct, predict_boxes,
                                       predicted_class_cams, smooth_cam)
