"""Evaluates the latest checkpoint of a run with the papers' metrics (docs/DESIGN.md#metrics).

  from storm_jax.evaluation import runner
  metrics = runner.evaluate_checkpoint(config, workdir, fgsm_eps=(4, 8), wsol=True)

`python -m storm_jax.evaluate` is the command line of `evaluate_checkpoint`. It writes to the
workdir:
  eval_metrics.json   every metric (accuracies, errors, ECE in %; merged with earlier results)
  eval_summary.md     the same as a markdown table, plus the per-corruption table
  reliability.png     the reliability diagram of the clean split

Metrics: top-1/top-5 accuracy and error, NLL, ECE (10 equal-width bins by default) and the
temperature-scaled ECE (T fitted on the evaluated split: an oracle temperature, see
`evaluation.temperature_scaled_ece`), FGSM error at each epsilon (in 1/255 pixel units;
normalisation inside the model, eval mode), optionally PGD error, and mCE over CIFAR-10-C /
CIFAR-100-C (unnormalised, the corruption set configurable), and with `wsol` the CAM
weakly-supervised localisation accuracy (docs/DESIGN.md#metrics-wsol; `evaluation.wsol`):
`wsol_loc_acc` (% of images whose CAM box has IoU >= 0.5 with a ground-truth box AND whose top-1
prediction is right) and `wsol_gt_known_loc_acc` (the IoU condition alone). WSOL needs a dataset
with boxes (tiny_imagenet, caltech_birds2011, cars196; tfds imagenet2012 has no validation boxes).
Boxes go through the same resize / centre crop as the images (`data.eval_iterator(...,
with_boxes=True)`); batching does not change the result (eval-mode BatchNorm; Co-Mixup used
batch 1). The eval path never mixes.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from storm_jax import checkpointing
from storm_jax import data
from storm_jax import train
from storm_jax.evaluation import adversarial
from storm_jax.evaluation import classification
from storm_jax.evaluation import corruption
from storm_jax.evaluation import wsol as wsol_lib

WSOL_CAM_THRESHOLD = 0.25  # CAM binarisation threshold, a fraction of the max (Co-Mixup).


def _host(x: jax.Array) -> np.ndarray:
  """A global array as one numpy array on every process."""
  if jax.process_count() > 1:
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))


def check_flags(fgsm_eps: Sequence[float], corruptions: str, dataset: str, ece_bins: int,
                wsol_cam_threshold: float = WSOL_CAM_THRESHOLD) -> None:
  """Raises a ValueError naming the first bad argument of `evaluate_checkpoint`."""
  for eps in fgsm_eps:
    if not 0 < eps <= 255:
      raise ValueError(f'fgsm_eps={eps!r} must be in (0, 255] (units of 1/255).')
  if ece_bins < 1:
    raise ValueError(f'ece_bins={ece_bins!r} must be >= 1.')
  if not 0 <= wsol_cam_threshold < 1:
    raise ValueError(f'wsol_cam_threshold={wsol_cam_threshold!r} must be in [0, 1).')
  if corruptions and dataset not in ('cifar10', 'cifar100'):
    raise ValueError(f'corruptions={corruptions!r} needs dataset.name cifar10 or cifar100, got '
                     f'{dataset!r}.')


def corruption_names(spec: str) -> tuple[str, ...]:
  """'all19' | 'standard15' | 'fog,snow' -> corruption names (validated)."""
  if spec in corruption.CORRUPTION_SETS:
    return corruption.corruption_list(spec)
  names = tuple(c.strip() for c in spec.split(',') if c.strip())
  unknown = [c for c in names if c not in data.CIFAR_C_CORRUPTIONS]
  if not names or unknown:
    raise ValueError(f'corruptions={spec!r}: unknown {unknown or spec!r}; use all19, '
                     f'standard15 or names from {data.CIFAR_C_CORRUPTIONS}.')
  return names


class Evaluator:
  """Jitted eval-mode functions of one restored model over sharded batches.

  Attributes:
    step: the evaluated checkpoint's step.
    model, variables, info: the restored model, its variables, the dataset info.
  """

  def __init__(self, config, workdir: str):
    self.config = config
    ckpt = checkpointing.Checkpointer(os.path.join(workdir, 'checkpoints'), async_save=False)
    self.step = ckpt.latest_step()
    ckpt.close()
    if self.step is None:
      raise ValueError(f'workdir={workdir!r} has no checkpoint to evaluate (train first).')
    self.model, self.variables, self.info = train.restore_for_eval(config, workdir)
    self.sharding = NamedSharding(train.make_mesh(), P('data'))
    self._logits = jax.jit(
        lambda v, img: self.model.apply(v, self._normalize(img), train=False))
    self._cams = jax.jit(self._logits_and_cams)
    self._attacks = {}

  def _normalize(self, images):
    return train.normalize(images, self.info.mean, self.info.std)

  def _logits_fn(self, variables):
    return adversarial.normalized_logits_fn(self.model, variables, mean=self.info.mean,
                                            std=self.info.std)

  def _batches(self, dataset: str, split: str | None, with_boxes: bool = False):
    it = train.eval_iterator(self.config, dataset=dataset, split=split, with_boxes=with_boxes)
    for batch in it:
      yield data.to_global(batch, self.sharding)

  def _logits_and_cams(self, variables, img):
    """uint8 images [B, H, W, C] -> (logits [B, N], predicted-class CAMs uint8 [B, H, W])."""
    logits, features = self.model.apply(variables, self._normalize(img), train=False,
                                        return_features=True)
    cams = wsol_lib.predicted_class_cams(logits, features, variables['params']['head']['kernel'],
                                         tuple(img.shape[1:3]))
    return logits, cams

  def predict(self, dataset: str, split: str | None = None):
    """Logits, labels of every valid example of the split (host numpy)."""
    logits, labels = [], []
    for batch in self._batches(dataset, split):
      out = self._logits(self.variables, batch['image'])
      mask = _host(batch['mask'])
      logits.append(_host(out)[mask])
      labels.append(_host(batch['label'])[mask])
    return np.concatenate(logits), np.concatenate(labels)

  def attack_error(self, dataset: str, split: str | None, attack: str, **kw) -> float:
    """Top-1 error (fraction) on adversarial examples of every valid example."""
    key = (attack, tuple(sorted(kw.items())))
    if key not in self._attacks:
      def fn(variables, img, label, rng):
        f = self._logits_fn(variables)
        x01 = img.astype(jnp.float32) / 255.0
        if attack == 'fgsm':
          x_adv = adversarial.fgsm(f, x01, label, **kw)
        else:
          x_adv = adversarial.pgd(f, x01, label, key=rng, **kw)
        return jnp.argmax(f(x_adv), -1) != label
      self._attacks[key] = jax.jit(fn)
    wrong, count = 0, 0
    rng = jax.random.key(self.config.seed)
    for i, batch in enumerate(self._batches(dataset, split)):
      miss = _host(self._attacks[key](self.variables, batch['image'], batch['label'],
                                      jax.random.fold_in(rng, i)))
      mask = _host(batch['mask'])
      wrong += int(miss[mask].sum())
      count += int(mask.sum())
    return wrong / count

  def wsol(self, dataset: str, split: str | None,
           cam_threshold: float = WSOL_CAM_THRESHOLD) -> tuple[float, float]:
    """(top-1 localisation accuracy, GT-known localisation accuracy), fractions.

    CAMs are computed on device (`wsol.predicted_class_cams`); the boxes and the IoU test on
    the host (`wsol.cam_boxes`, `wsol.localization_correct`).
    """
    loc, gt_known, count = 0, 0, 0
    for batch, out in self._one_ahead(self._batches(dataset, split, with_boxes=True)):
      logits, cams = (_host(a) for a in out)
      mask, labels = _host(batch['mask']), _host(batch['label'])
      boxes, box_mask = _host(batch['boxes']), _host(batch['box_mask'])
      top1 = np.argmax(logits, axis=-1) == labels
      valid = np.flatnonzero(mask)
      for i, box in zip(valid, wsol_lib.cam_boxes(cams[valid], threshold=cam_threshold)):
        hit = wsol_lib.localization_correct(box, boxes[i][box_mask[i]], top1_correct=True)
        gt_known += int(hit)
        loc += int(hit and top1[i])
        count += 1
    return loc / count, gt_known / count

  def _one_ahead(self, batches):
    """(batch, CAM outputs) pairs, dispatching the next batch's CAMs before yielding, so the
    device works while the host extracts boxes."""
    pending = None
    for batch in batches:
      out = self._cams(self.variables, batch['image'])  # asynchronous dispatch
      if pending is not None:
        yield pending
      pending = (batch, out)
    if pending is not None:
      yield pending


def evaluate_checkpoint(config, workdir: str, *, fgsm_eps: Sequence[float] = (4, 8),
                        pgd: bool = False, pgd_eps: float = 4.0, pgd_step: float = 2.0,
                        pgd_steps: int = 20, corruptions: str = '', ece_bins: int = 10,
                        split: str = '', wsol: bool = False,
                        wsol_cam_threshold: float = WSOL_CAM_THRESHOLD) -> dict[str, Any]:
  """Computes every metric for the latest checkpoint of `workdir` and writes them there.

  Args (beyond the `python -m storm_jax.evaluate` flags of the same names): `wsol` adds
  'wsol_loc_acc' and 'wsol_gt_known_loc_acc' (%) with CAM threshold `wsol_cam_threshold`
  (docs/DESIGN.md#metrics-wsol).

  Returns:
    The metrics dict (also merged into `workdir/eval_metrics.json`).

  Raises:
    ValueError: a bad argument or config (before anything is restored or compiled).
  """
  train.validate_config(config)
  check_flags(fgsm_eps, corruptions, config.dataset.name, ece_bins, wsol_cam_threshold)
  names = corruption_names(corruptions) if corruptions else ()
  if wsol:
    train.check_has_boxes(config)
  ev = Evaluator(config, workdir)
  dataset, split = config.dataset.name, (split or None)
  logits, labels = ev.predict(dataset, split)
  probs = jax.nn.softmax(jnp.asarray(logits, jnp.float32), axis=-1)
  ece_t, temperature = classification.temperature_scaled_ece(logits, labels, n_bins=ece_bins)
  top1 = float(classification.accuracy(logits, labels, k=1))
  top5 = float(classification.accuracy(logits, labels, k=min(5, logits.shape[-1])))
  metrics: dict[str, Any] = {
      'step': ev.step, 'num_examples': int(labels.shape[0]),
      'top1_acc': 100 * top1, 'top5_acc': 100 * top5,
      'top1_err': 100 * (1 - top1), 'top5_err': 100 * (1 - top5),
      'nll': float(classification.nll(logits, labels)),
      'ece': 100 * float(classification.ece(probs, labels, n_bins=ece_bins)),
      'ece_bins': ece_bins,
      'ece_temperature_scaled': 100 * float(ece_t), 'temperature': float(temperature),
  }
  logging.info('Clean: top-1 %.2f%%, top-5 %.2f%%, NLL %.4f, ECE %.2f%%.', metrics['top1_acc'],
               metrics['top5_acc'], metrics['nll'], metrics['ece'])
  if jax.process_index() == 0:
    classification.reliability_diagram(probs, labels, os.path.join(workdir, 'reliability.png'),
                                       n_bins=ece_bins, title=f'{config.mix.name} ({dataset})')
  for eps in fgsm_eps:
    err = ev.attack_error(dataset, split, 'fgsm', epsilon=eps / 255.0)
    metrics[f'fgsm_err_{eps:g}'] = 100 * err
    logging.info('FGSM eps=%g/255: error %.2f%%.', eps, 100 * err)
  if pgd:
    err = ev.attack_error(dataset, split, 'pgd', epsilon=pgd_eps / 255.0,
                          step_size=pgd_step / 255.0, num_steps=pgd_steps)
    metrics[f'pgd_err_{pgd_eps:g}'] = 100 * err
    logging.info('PGD eps=%g/255 (%d steps): error %.2f%%.', pgd_eps, pgd_steps, 100 * err)
  if wsol:
    loc, gt_known = ev.wsol(dataset, split, wsol_cam_threshold)
    metrics.update(wsol_loc_acc=100 * loc, wsol_gt_known_loc_acc=100 * gt_known,
                   wsol_cam_threshold=wsol_cam_threshold)
    logging.info('WSOL (CAM threshold %g, IoU >= %g): top-1 loc %.2f%%, GT-known loc %.2f%%.',
                 wsol_cam_threshold, wsol_lib.IOU_THRESHOLD, 100 * loc, 100 * gt_known)
  table = {}
  if names:
    errors = {}
    for c in names:
      errors[c] = []
      for name in data.corrupted_names(dataset, (c,)):
        c_logits, c_labels = ev.predict(name)
        errors[c].append(100 * float(classification.error(c_logits, c_labels, k=1)))
      logging.info('%s: errors %s', c, ' '.join(f'{e:.2f}' for e in errors[c]))
    metrics['mce'], table = corruption.mce(errors, corruptions=names)
    metrics['mce_corruptions'] = len(names)
    metrics.update({f'ce_{c}': v for c, v in table.items()})
    logging.info('mCE over %d corruptions: %.2f%%\n%s', len(names), metrics['mce'],
                 corruption.format_table(table, metrics['mce']))
  if jax.process_index() == 0:
    write_report(workdir, config, metrics, table)
  return metrics


def write_report(workdir: str, config, metrics: dict[str, Any],
                 table: dict[str, float]) -> None:
  """Merges `metrics` into workdir/eval_metrics.json and writes workdir/eval_summary.md."""
  path = os.path.join(workdir, 'eval_metrics.json')
  merged = {}
  if os.path.exists(path):
    with open(path) as f:
      merged = json.load(f)
  merged.update(metrics)
  with open(path, 'w') as f:
    json.dump(merged, f, indent=1, sort_keys=True)
  lines = [f'# Evaluation of {workdir}', '',
           f'method `{config.mix.name}` {dict(config.mix.hparams)}, model `{config.model.name}`, '
           f'dataset `{config.dataset.name}`', '', '| metric | value |', '|---|---|']
  for k, v in sorted(merged.items()):
    if not k.startswith('ce_'):
      lines.append(f'| {k} | {v:.4g} |' if isinstance(v, float) and math.isfinite(v)
                   else f'| {k} | {v} |')
  if table:
    lines += ['', '| corruption | CE % |', '|---|---|']
    lines += [f'| {c} | {v:.2f} |' for c, v in table.items()]
  with open(os.path.join(workdir, 'eval_summary.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
