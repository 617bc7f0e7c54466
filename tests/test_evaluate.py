"""`python -m storm_jax.evaluate` end to end on a smoke checkpoint, and its input checks."""

import json
import os
import subprocess
import sys

import pytest

from configs import digits_storm
from storm_jax import train
from storm_jax.evaluation import runner

ROOT = os.path.dirname(os.path.dirname(__file__))


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('run'))
  train.train_and_evaluate(digits_storm.get_config('smoke'), workdir)
  return workdir


@pytest.mark.slow  # trains the smoke run, then FGSM and PGD
def test_evaluate_writes_every_metric(run_dir):
  config = digits_storm.get_config('smoke')
  metrics = runner.evaluate_checkpoint(config, run_dir, fgsm_eps=(4, 8), pgd=True, pgd_steps=3)
  assert metrics['step'] == config.num_train_steps
  assert metrics['num_examples'] == 296  # the whole digits test split, padding excluded
  assert metrics['top1_acc'] + metrics['top1_err'] == pytest.approx(100.0)
  assert 0 <= metrics['top1_acc'] <= metrics['top5_acc'] <= 100
  assert 0 <= metrics['ece'] <= 100 and metrics['temperature'] > 0
  # An attack cannot make the model right more often than on clean data by much; a
  # stronger FGSM is at least as harmful here on average (checked loosely: same model).
  for key in ('fgsm_err_4', 'fgsm_err_8', 'pgd_err_4'):
    assert 0 <= metrics[key] <= 100
  assert metrics['fgsm_err_8'] >= metrics['top1_err'] - 1e-6
  saved = json.loads(open(os.path.join(run_dir, 'eval_metrics.json')).read())
  assert saved['top1_acc'] == pytest.approx(metrics['top1_acc'])
  assert os.path.getsize(os.path.join(run_dir, 'reliability.png')) > 1000
  assert '| top1_acc |' in open(os.path.join(run_dir, 'eval_summary.md')).read()
  # A second evaluation with other flags merges into the same file.
  runner.evaluate_checkpoint(config, run_dir, fgsm_eps=(2,))
  saved = json.loads(open(os.path.join(run_dir, 'eval_metrics.json')).read())
  assert {'fgsm_err_2', 'fgsm_err_8', 'pgd_err_4'} <= set(saved)


@pytest.mark.slow
def test_evaluate_accuracy_matches_trainer(run_dir):
  """The evaluator and the trainer's own final eval agree (same checkpoint, whole split)."""
  rows = [json.loads(l) for l in open(os.path.join(run_dir, 'metrics.jsonl'))]
  trainer_acc = [r['eval_accuracy'] for r in rows if 'eval_accuracy' in r][-1]
  metrics = runner.evaluate_checkpoint(digits_storm.get_config('smoke'), run_dir, fgsm_eps=())
  assert metrics['top1_acc'] == pytest.approx(100 * trainer_acc, abs=1e-4)


def test_bad_inputs_raise_before_restoring(tmp_path):
  config = digits_storm.get_config('smoke')
  with pytest.raises(ValueError, match='fgsm_eps=0'):
    runner.evaluate_checkpoint(config, str(tmp_path), fgsm_eps=(0,))
  with pytest.raises(ValueError, match='corruptions'):
    runner.evaluate_checkpoint(config, str(tmp_path), corruptions='all19')  # digits has no -C set
  with pytest.raises(ValueError, match='no checkpoint'):
    runner.evaluate_checkpoint(config, str(tmp_path), fgsm_eps=())
  assert runner.corruption_names('standard15')[0] == 'gaussian_noise'
  assert len(runner.corruption_names('all19')) == 19
  assert runner.corruption_names('fog, snow') == ('fog', 'snow')
  with pytest.raises(ValueError, match='fogg'):
    runner.corruption_names('fogg')


def test_cli_requires_workdir():
  proc = subprocess.run([sys.executable, '-m', 'storm_jax.evaluate',
                         '--config=configs/digits_storm.py:smoke'], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0 and '--workdir' in proc.stderr
