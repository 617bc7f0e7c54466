"""metrics.jsonl on resume (each step once, a cut-off line survives) and summary.json."""

import json
import os

import numpy as np
import pytest

from storm_jax.utils import metric_writers


def _write_rows(writer, steps, key='train_loss'):
  for s in steps:
    writer.write_scalars(s, {key: np.float32(s / 10)})


def test_resume_truncates_replayed_rows_so_each_step_is_once(tmp_path):
  """Run to 40 (rows 10..40, summary at 40), restore the checkpoint of 20, replay to 50."""
  writer = metric_writers.MetricWriter(str(tmp_path), tensorboard=False)
  _write_rows(writer, (10, 20, 30, 40))
  writer.write_scalars(20, {'eval_accuracy': 0.5})
  writer.write_scalars(40, {'summary_eval_accuracy': 0.6})
  dropped = metric_writers.truncate_after(writer.path, 20)
  assert dropped == 3  # 30, 40 and the summary row of the stopped run
  resumed = metric_writers.MetricWriter(str(tmp_path), tensorboard=False)
  _write_rows(resumed, (30, 40, 50))
  rows = metric_writers.read_jsonl(resumed.path)
  train_steps = [r['step'] for r in rows if 'train_loss' in r]
  assert train_steps == [10, 20, 30, 40, 50]
  assert [r['step'] for r in rows if 'eval_accuracy' in r] == [20]
  assert metric_writers.truncate_after(resumed.path, 50) == 0  # nothing to drop: untouched


def test_cut_off_last_line_is_skipped_with_a_warning_naming_the_file(tmp_path, caplog):
  path = tmp_path / 'metrics.jsonl'
  path.write_text('{"step": 10, "train_loss": 1.0}\n{"step": 20, "train_loss": 0.9}\n'
                  '{"step": 30, "train_lo')
  with caplog.at_level('WARNING'):
    rows = metric_writers.read_jsonl(str(path))
  assert [r['step'] for r in rows] == [10, 20]
  assert any(str(path) in r.getMessage() and '3' in r.getMessage() for r in caplog.records)
  # Truncating at the restored step removes the torn line, so appends start on a fresh line.
  assert metric_writers.truncate_after(str(path), 20) == 1
  writer = metric_writers.MetricWriter(str(tmp_path), tensorboard=False)
  writer.write_scalars(30, {'train_loss': 0.8})
  assert [json.loads(l)['step'] for l in path.read_text().splitlines()] == [10, 20, 30]


def test_truncate_without_a_file_is_a_no_op(tmp_path):
  assert metric_writers.truncate_after(str(tmp_path / 'metrics.jsonl'), 5) == 0
  assert not (tmp_path / 'metrics.jsonl').exists()


def test_summary_json_is_complete_and_atomic(tmp_path):
  path = metric_writers.write_summary(
      str(tmp_path), status='preempted', step=np.int64(120), num_steps=690,
      final={'eval_accuracy': np.float32(0.75), 'train_loss': float('nan')},
      best={'eval_accuracy': 0.8, 'step': 100}, wall_time_s=12.5, images_per_sec=3000.0)
  assert path == os.path.join(str(tmp_path), 'summary.json')
  summary = json.loads((tmp_path / 'summary.json').read_text())  # strict JSON: no NaN token
  assert summary['status'] == 'preempted' and summary['step'] == 120
  assert summary['num_steps'] == 690 and summary['best'] == {'eval_accuracy': 0.8, 'step': 100}
  assert summary['final']['eval_accuracy'] == pytest.approx(0.75)
  assert summary['final']['train_loss'] == 'nan'
  assert summary['images_per_sec'] == 3000.0 and 'written_at' in summary
  assert os.listdir(tmp_path) == ['summary.json']  # no temporary file left behind
  # Overwritten whole by the resumed run.
  metric_writers.write_summary(str(tmp_path), status='finished', step=690, num_steps=690,
                               final={}, best={}, wall_time_s=1.0)
  assert metric_writers.read_summary(str(tmp_path))['status'] == 'finished'
  with pytest.raises(ValueError, match='status'):
    metric_writers.write_summary(str(tmp_path), status='done', step=1, num_steps=1, final={},
                                 best={}, wall_time_s=0.0)


def test_disabled_writer_writes_no_summary(tmp_path):
  writer = metric_writers.MetricWriter(str(tmp_path / 'w'), enabled=False, tensorboard=False)
  assert writer.write_summary(status='finished', step=1, num_steps=1, final={}, best={},
                              wall_time_s=0.0) is None
  assert not (tmp_path / 'w').exists()
