"""The host loop: batches in, steps dispatched, metrics, evaluation, checkpoints, SIGTERM.

  summary = train.train_and_evaluate(config, workdir)

At most two steps are in flight: the host prepares step t+1 while the devices run step t,
and a SIGTERM stops the run within two steps, saving a checkpoint. The data order and the
mixing keys are functions of the step, so a resumed run continues bit-exactly.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
import ml_collections
import numpy as np

from storm_jax import checkpointing
from storm_jax import data
from storm_jax import errors
from storm_jax.train import config as config_lib
from storm_jax.train import optim
from storm_jax.train import step as step_lib
from storm_jax.utils import metric_writers
from storm_jax.utils import multihost
from storm_jax.utils import preview


def _prefetch(iterator: Iterator, sharding: NamedSharding, size: int = 2) -> Iterator:
  """Puts the next `size` batches on device while the current step runs."""
  queue = []
  for batch in iterator:
    queue.append(data.to_global(batch, sharding))
    if len(queue) > size:
      yield queue.pop(0)
  yield from queue


def evaluate_split(eval_fn, variables, config: ml_collections.ConfigDict,
                   sharding: NamedSharding, *, split: str | None = None) -> dict[str, float]:
  """Exact metrics of `eval_fn` (`Steps.eval`) over a whole eval split (padding masked out)."""
  totals = None
  for batch in config_lib.eval_iterator(config, split=split):
    sums = eval_fn(variables, data.to_global(batch, sharding))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  if totals is None:
    raise ValueError(f'dataset.name={config.dataset.name!r}: the eval split is empty.')
  totals = jax.device_get(totals)
  n = float(totals['count'])
  return {'accuracy': float(totals['correct_top1']) / n,
          'top5_accuracy': float(totals['correct_top5']) / n,
          'nll': float(totals['nll']) / n, 'loss': float(totals['loss']) / n,
          'num_examples': int(n)}


class MetricsWindow:
  """The train metrics of the steps since the last log line, and the steady-state speed.

  `add` keeps at most two steps in flight (it waits for the previous step's metrics);
  `flush` fetches the window, stops on a non-finite loss and writes the means.
  """

  def __init__(self, writer: metric_writers.MetricWriter, pbar=None):
    self.writer = writer
    self.pbar = pbar
    self.last: dict[str, float] = {}  # the means of the last flushed window
    self._pending: list[tuple[int, dict[str, jax.Array]]] = []
    self._t_steady: float | None = None
    self._images = 0

  def add(self, step: int, metrics: dict[str, jax.Array], *, images: int) -> None:
    """Records the (still running) metrics of the step that ends at `step`.

    Args:
      step: steps done once this one finishes.
      metrics: its device metrics.
      images: images it adds to the steady-state speed (0 for a step that compiles).
    """
    self._pending.append((step, metrics))
    if len(self._pending) > 1:
      jax.block_until_ready(self._pending[-2][1])
    self._images += images

  def start_clock(self) -> None:
    """Steady state begins now (after the first, compiling step finished)."""
    self._t_steady = time.time()

  def images_per_sec(self) -> float | None:
    """Images/s since `start_clock`, or None before any image was counted."""
    if self._t_steady is None or not self._images:
      return None
    return self._images / max(time.time() - self._t_steady, 1e-9)

  def __len__(self) -> int:
    return len(self._pending)

  def flush(self) -> dict[str, float]:
    """Fetches the window's metrics, stops on a non-finite loss, writes and returns the means.

    Raises:
      FloatingPointError: a step's loss is not finite (the message names the step).
    """
    pending, self._pending = self._pending, []
    fetched = jax.device_get([m for _, m in pending])
    means = {f'train_{k}': float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
    speed = self.images_per_sec()
    if speed is not None:
      means['images_per_sec'] = speed
    self.writer.write_scalars(pending[-1][0], means)  # Written first: the log shows the blow-up.
    for (s, _), m in zip(pending, fetched):
      if not np.isfinite(m['loss']):
        self.writer.flush()
        raise FloatingPointError(f'non-finite training loss {float(m["loss"])} at step {s} '
                                 '(after the update of that step was computed); stopping.')
    if self.pbar is not None:
      self.pbar.set_postfix(loss=f'{means["train_loss"]:.4f}',
                            img_s=f'{means.get("images_per_sec", 0.0):.0f}')
    self.last = means
    return means


class _SigtermFlag:
  """Sets a flag on SIGTERM so the loop can save a checkpoint and stop cleanly."""

  def __init__(self):
    self.set = False
    self._previous = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning('SIGTERM received: saving a checkpoint and stopping.')
    self.set = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def train_batches(config: ml_collections.ConfigDict, info: data.DatasetInfo, mixer,
                   start_step: int) -> Iterator:
  """This process's train batches from `start_step` on.

  For the mixers that mix with pictures of a second stream (PixMix, IPMix), each batch also
  holds the mixing pictures of its step (`'mixing_pictures'`, uint8 [b, H, W, C], sharded
  like `'image'` by `_prefetch`); both streams start at `start_step`, so a resume is exact.
  """
  batches = config_lib.train_iterator(config, start_step=start_step)
  if not mixer.needs_mixing_pictures:
    return batches
  pictures = config_lib.mixing_iterator(config, info, start_step=start_step)
  return ({**batch, 'mixing_pictures': p} for batch, p in zip(batches, pictures))


def _write_preview(workdir, steps: step_lib.Steps, state, batch, key, info, config) -> None:
  out = jax.device_get(steps.preview(state, batch, key))
  x_mix, y_mix = out['x_mix'], out['y_mix']
  if steps.ctx.mixer.consistency_weight:  # AugMix / IPMix with JSD: view 0 is the clean batch.
    x_mix, y_mix = (np.asarray(step_lib.view_rows(steps.ctx, a, 1)) for a in (x_mix, y_mix))
  pictures = batch.get('mixing_pictures')
  path = os.path.join(workdir, 'mixed_batch.png')
  preview.mixed_batch_grid(
      path, x_mix, y_mix, mean=info.mean, std=info.std,
      max_images=config.preview_images,
      title=f'{config.mix.name} {dict(config.mix.hparams)} (step {int(state.step)})',
      mixing_pictures=None if pictures is None else jax.device_get(pictures))
  logging.info('Wrote a grid of one mixed batch to %s', path)


def _best_eval(path: str, start_step: int) -> dict[str, Any]:
  """The best eval accuracy logged up to `start_step` (a resumed run keeps its best)."""
  best = {'eval_accuracy': -1.0, 'step': -1}
  for row in metric_writers.read_jsonl(path):
    if 'eval_accuracy' in row and row['step'] <= start_step and (
        row['eval_accuracy'] > best['eval_accuracy']):
      best = {'eval_accuracy': row['eval_accuracy'], 'step': row['step']}
  return best


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains, evaluates, checkpoints; resumes from the latest checkpoint in `workdir`.

  Returns:
    Final metrics: 'step', eval metrics (prefixed 'eval_'), best eval accuracy,
    'train_loss' (last logged window), 'wall_time_s', 'images_per_sec', and 'status':
    'finished', 'preempted' (SIGTERM: saved, to be resumed) or 'halted' (`halt_after_step`).
    The same is written atomically to `<workdir>/summary.json`.

  Raises:
    ValueError: bad config (before anything compiles).
    FloatingPointError: the training loss became non-finite (message names the step).
  """
  config_lib.validate_config(config)
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise errors.UserError(f'workdir={workdir!r} exists and is not a directory.')
  t_start = time.time()
  is_main = jax.process_index() == 0
  info = config_lib.dataset_info(config)
  config_lib.check_dataset(config, info)  # A missing dataset fails before the model is built.
  os.makedirs(workdir, exist_ok=True)
  mesh = step_lib.make_mesh()
  steps = step_lib.make_steps(config, mesh, info)
  spe, num_steps = config_lib.steps_per_epoch(config, info), config_lib.total_steps(config, info)
  tx, _ = optim.make_optimizer(config, spe, num_steps)
  seed_key = jax.random.key(config.seed)
  init_key, train_key = jax.random.split(seed_key)
  logging.info('Devices: %d (%s), processes: %d; %d steps (%d per epoch), global batch %d.',
               jax.device_count(), jax.devices()[0].platform, jax.process_count(), num_steps,
               spe, config.batch_size)

  state = step_lib.create_train_state(config, steps.ctx.model, init_key, mesh, tx=tx,
                                      input_shape=tuple(info.image_shape))
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, 'checkpoints'),
                                    every_steps=config.checkpoint_every_steps,
                                    keep=config.keep_checkpoints)
  if ckpt.latest_step() is not None:
    state = ckpt.restore(state)
    logging.info('Resumed from step %d.', int(state.step))
  start_step = int(jax.device_get(state.step))
  if is_main:  # The steps after the checkpoint are replayed: their rows are written again.
    metric_writers.truncate_after(os.path.join(workdir, metric_writers.METRICS_FILE), start_step)

  writer = metric_writers.MetricWriter(workdir, enabled=is_main,
                                       tensorboard=config.tensorboard)
  best = _best_eval(writer.path, start_step)
  train_iter = _prefetch(train_batches(config, info, steps.ctx.mixer, start_step),
                         steps.batch_sharding)

  def run_eval(step):
    variables = {'params': state.params, 'batch_stats': state.batch_stats}
    t0 = time.time()
    metrics = {f'eval_{k}': v for k, v in evaluate_split(steps.eval, variables, config,
                                                           steps.batch_sharding).items()}
    logging.info('Eval at step %d (%.1fs): %s', step, time.time() - t0,
                 ', '.join(f'{k}={v:.4f}' for k, v in metrics.items()))
    writer.write_scalars(step, metrics)
    if metrics['eval_accuracy'] > best['eval_accuracy']:
      best.update(eval_accuracy=metrics['eval_accuracy'], step=step)
    return metrics

  pbar = None
  if is_main and config.progress_bar:
    from tqdm import auto as tqdm  # pylint: disable=g-import-not-at-top
    pbar = tqdm.tqdm(total=num_steps, initial=start_step, desc='train', unit='step',
                     dynamic_ncols=True)
  window = MetricsWindow(writer, pbar)
  eval_metrics: dict[str, float] = {}
  status = 'finished'
  log_every = config.log_every_steps or num_steps

  def write_summary(status, step, **extra):  # summary.json, on the main process
    writer.write_summary(
        status=status, step=step, num_steps=num_steps,
        final={**eval_metrics, 'train_loss': window.last.get('train_loss', float('nan'))},
        best=best, wall_time_s=time.time() - t_start, **extra)

  with _SigtermFlag() as sigterm:
    for step in range(start_step, num_steps):
      batch = next(train_iter)
      first = step == start_step
      if first:
        if is_main and start_step == 0 and config.preview_images > 0:
          _write_preview(workdir, steps, state, batch, train_key, info, config)
        logging.info('Initial compilation, this might take some minutes...')
      state, metrics = steps.train(state, batch, train_key)
      done = step + 1
      window.add(done, metrics, images=0 if first else config.batch_size)
      if first:
        jax.block_until_ready(metrics)
        logging.info('Compiled and ran the first step in %.1fs.', time.time() - t_start)
        window.start_clock()
      if pbar is not None:
        pbar.update(1)
      if done % log_every == 0 or done == num_steps:
        try:
          window.flush()
        except FloatingPointError as e:
          write_summary('failed', done, error=str(e))
          raise
      if config.eval_every_steps and done % config.eval_every_steps == 0 and done < num_steps:
        eval_metrics = run_eval(done)
      ckpt.maybe_save(done, state)
      # Every process leaves at the same step (a lone process would leave the others
      # waiting in the next collective step): the SIGTERM decision is agreed.
      if multihost.agree_to_stop(sigterm.set):
        status = 'preempted'  # Save below and leave; the scheduler requeues the run.
        break
      if done == config.halt_after_step:
        status = 'halted'
        break
  jax.block_until_ready(state)
  images_per_sec = window.images_per_sec() or 0.0
  if len(window):
    window.flush()
  if pbar is not None:
    pbar.close()
  final_step = int(jax.device_get(state.step))
  ckpt.save(final_step, state)
  if status == 'finished':  # On SIGTERM: save and leave quickly, no final evaluation.
    eval_metrics = run_eval(final_step)
  ckpt.close()  # Waits for the asynchronous saves; raises if one failed.
  wall = time.time() - t_start
  summary = {
      'step': final_step, **eval_metrics, 'best_eval_accuracy': best['eval_accuracy'],
      'best_eval_step': best['step'],
      'train_loss': window.last.get('train_loss', float('nan')),
      'wall_time_s': wall, 'images_per_sec': images_per_sec, 'status': status,
      'stopped_early': status != 'finished',
  }
  writer.write_scalars(final_step, {f'summary_{k}': v for k, v in summary.items()
                                    if isinstance(v, (int, float)) and k != 'step'})
  writer.close()
  write_summary(status, final_step, images_per_sec=images_per_sec)
  if is_main:
    logging.info('Done: step %d, eval accuracy %.4f (best %.4f at step %d), top-5 %.4f, '
                 'wall time %.1fs, %.1f images/s.', final_step,
                 summary.get('eval_accuracy', float('nan')), summary['best_eval_accuracy'],
                 summary['best_eval_step'], summary.get('eval_top5_accuracy', float('nan')),
                 wall, summary['images_per_sec'])
  return summary


def restore_for_eval(config: ml_collections.ConfigDict, workdir: str):
  """Loads the latest checkpoint of `workdir` for evaluation.

  Returns:
    (model, variables {'params', 'batch_stats'}, dataset info).
  """
  info = config_lib.dataset_info(config)
  model = config_lib.build_model(config, info.num_classes)
  mesh = step_lib.make_mesh()
  state = step_lib.create_train_state(config, model, jax.random.key(config.seed), mesh,
                                      input_shape=tuple(info.image_shape))
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, 'checkpoints'), async_save=False)
  state = ckpt.restore(state)
  ckpt.close()
  return model, {'params': state.params, 'batch_stats': state.batch_stats}, info
