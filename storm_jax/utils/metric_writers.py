"""Metric writers: JSON lines + TensorBoard event files, written by process 0 only.

`tf.summary.write` writes the event files with the metadata of TensorBoard's scalars
plugin, which is what `tf.summary.scalar` does without requiring the `tensorboard` package
(needed only to view them). TensorFlow is imported lazily: a disabled writer costs nothing.

Resuming (docs/DESIGN.md#metrics-on-resume): `truncate_after(path, step)` drops the rows a
resumed run will write again, so `metrics.jsonl` holds each step once; `read_jsonl` skips a
line cut off by a process killed mid-write (with a warning naming the file). At the end of a
run `write_summary` writes `summary.json` atomically (temporary file + `os.replace`): the
final and best metrics and whether the run finished or was preempted.
"""

from __future__ import annotations

import datetime
import json
import math
import os
from collections.abc import Mapping
from typing import Any

from absl import logging

METRICS_FILE = 'metrics.jsonl'
SUMMARY_FILE = 'summary.json'
STATUSES = ('finished', 'preempted', 'halted', 'failed')


def _to_python(value: Any) -> Any:
  """Converts numpy / jax scalars to JSON-serialisable python numbers."""
  if hasattr(value, 'item'):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)  # JSON has no NaN/Inf; keep them readable.
  return value


class MetricWriter:
  """Writes scalars to `workdir/metrics.jsonl` and TensorBoard events under `workdir/tb`.

  Args:
    workdir: run directory (created if missing).
    enabled: False on processes other than 0: every call is then a no-op.
    tensorboard: also write TensorBoard event files.
  """

  def __init__(self, workdir: str, *, enabled: bool = True, tensorboard: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, METRICS_FILE)
    self._tb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    if tensorboard:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      self._tb = tf.summary.create_file_writer(os.path.join(workdir, 'tb'))

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Appends one JSON line `{"step": step, **scalars}` and the TensorBoard scalars."""
    if not self.enabled:
      return
    row = {'step': int(step), **{k: _to_python(v) for k, v in scalars.items()}}
    with open(self.path, 'a') as f:
      f.write(json.dumps(row) + '\n')
    if self._tb is not None:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      from tensorflow.core.framework import summary_pb2  # pylint: disable=g-import-not-at-top
      metadata = summary_pb2.SummaryMetadata(
          plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name='scalars'))
      with self._tb.as_default(step=int(step)):
        for name, value in row.items():
          if name != 'step' and isinstance(value, (int, float)) and not isinstance(value, bool):
            tf.summary.write(name, tf.constant(value, tf.float32), metadata=metadata)

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None


  def write_summary(self, **kw) -> str | None:
    """`write_summary(workdir, **kw)` next to metrics.jsonl on the writing process."""
    if not self.enabled:
      return None
    return write_summary(os.path.dirname(self.path), **kw)


def _parse_lines(path: str) -> tuple[list[dict[str, Any]], list[int]]:
  """(rows, 1-based numbers of the lines that are not a JSON object) of a .jsonl file."""
  rows, bad = [], []
  with open(path) as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        row = None
      if isinstance(row, dict) and isinstance(row.get('step'), int):
        rows.append(row)
      else:
        bad.append(number)
  return rows, bad


def read_jsonl(path: str) -> list[dict[str, Any]]:
  """Reads back the rows of a metrics.jsonl file (empty list if it does not exist).

  A line that is not a JSON object with an integer 'step' (typically the last one, cut off
  when the process died mid-write) is skipped with a warning naming the file and line.
  """
  if not os.path.exists(path):
    return []
  rows, bad = _parse_lines(path)
  if bad:
    logging.warning('%s: skipped %d unreadable line(s) (number %s; a write cut off by a '
                    'stopped process?).', path, len(bad), ', '.join(map(str, bad[:5])))
  return rows


def _is_summary_row(row: Mapping[str, Any]) -> bool:
  keys = [k for k in row if k != 'step']
  return bool(keys) and all(k.startswith('summary_') for k in keys)


def truncate_after(path: str, step: int) -> int:
  """Keeps the rows of `path` up to `step` (the restored step); returns how many were dropped.

  A resumed run replays the steps after its checkpoint and writes their rows again: without
  this they would appear twice. Dropped too: unreadable lines (a write cut off) and the
  `summary_*` rows of the stopped run (the resumed run writes its own). The file is
  rewritten atomically; nothing happens when there is nothing to drop or no file.
  """
  if not os.path.exists(path):
    return 0
  rows, bad = _parse_lines(path)
  keep = [r for r in rows if r['step'] <= step and not _is_summary_row(r)]
  dropped = len(rows) - len(keep) + len(bad)
  if dropped:
    logging.info('%s: dropped %d row(s) past the restored step %d (they are replayed)%s.',
                 path, dropped, step, f' and {len(bad)} unreadable line(s)' if bad else '')
    _atomic_write(path, ''.join(json.dumps(r) + '\n' for r in keep))
  return dropped


def _atomic_write(path: str, text: str) -> None:
  tmp = f'{path}.tmp-{os.getpid()}'
  with open(tmp, 'w') as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def write_summary(workdir: str, *, status: str, step: int, num_steps: int,
                  final: Mapping[str, Any], best: Mapping[str, Any], wall_time_s: float,
                  **extra: Any) -> str:
  """Writes `<workdir>/summary.json` atomically; returns its path.

  Args:
    workdir: the run directory.
    status: one of `STATUSES`: 'finished' (all steps and the final evaluation), 'preempted'
      (SIGTERM: saved, to be resumed), 'halted' (`halt_after_step`), 'failed'.
    step: the last step trained (== the checkpoint step).
    num_steps: the steps the run is configured for.
    final: the final metrics (e.g. the last evaluation, the last train loss).
    best: the best metrics and the step they were reached at.
    wall_time_s: wall time of this process's segment of the run.
    **extra: further JSON-serialisable entries (e.g. images_per_sec, error).

  Raises:
    ValueError: unknown status.
  """
  if status not in STATUSES:
    raise ValueError(f'status={status!r} is not one of {STATUSES}.')
  summary = {
      'status': status, 'step': int(step), 'num_steps': int(num_steps),
      'final': {k: _to_python(v) for k, v in final.items()},
      'best': {k: _to_python(v) for k, v in best.items()},
      'wall_time_s': _to_python(float(wall_time_s)),
      **{k: _to_python(v) for k, v in extra.items()},
      'written_at': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
  }
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, SUMMARY_FILE)
  _atomic_write(path, json.dumps(summary, indent=1, allow_nan=False) + '\n')
  return path


def read_summary(workdir: str) -> dict[str, Any] | None:
  """The run's summary.json, or None if the run has not written one."""
  path = os.path.join(workdir, SUMMARY_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)
