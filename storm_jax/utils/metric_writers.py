"""Metric writers: JSON lines + TensorBoard event files, written by process 0 only.

`tf.summary.write` writes the event files with the metadata of TensorBoard's scalars
plugin, which is what `tf.summary.scalar` does without requiring the `tensorboard` package
(needed only to view them). TensorFlow is imported lazily: a disabled writer costs nothing.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any


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
    self.path = os.path.join(workdir, 'metrics.jsonl')
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


def read_jsonl(path: str) -> list[dict[str, Any]]:
  """Reads back the rows of a metrics.jsonl file (empty list if it does not exist)."""
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
