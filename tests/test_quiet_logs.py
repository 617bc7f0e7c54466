"""Quiet logs: storm_jax's own records and other libraries' real warnings only."""

import logging
import os

from storm_jax import cli
from storm_jax import errors


def _record(path, level, message):
  return logging.LogRecord('absl', level, path, 1, message, (), None)


def test_library_filter():
  keep = cli.LibraryFilter().filter
  ours = os.path.join(os.path.dirname(cli.__file__), 'train.py')
  theirs = '/venv/site-packages/tensorflow_datasets/core/dataset_info.py'
  assert keep(_record(ours, logging.INFO, 'Eval at step 200'))
  assert not keep(_record(theirs, logging.INFO, 'Load dataset info from /x'))
  assert keep(_record(theirs, logging.WARNING, 'something the user should see'))
  assert not keep(_record(theirs, logging.WARNING,
                          'Variant folder /root/tensorflow_datasets/digits/1.0.0 has no '
                          'dataset_info.json'))
  assert not keep(_record('/venv/jax/_src/xla_bridge.py', logging.INFO,
                          "Unable to initialize backend 'tpu': INTERNAL: Failed to open"))


def test_quiet_tensorflow_env_only_where_unset(monkeypatch):
  monkeypatch.setenv('TF_CPP_MIN_LOG_LEVEL', '0')
  monkeypatch.delenv('TF_ENABLE_ONEDNN_OPTS', raising=False)
  errors.quiet_tensorflow_env()
  assert os.environ['TF_CPP_MIN_LOG_LEVEL'] == '0'  # the user's choice stands
  assert os.environ['TF_ENABLE_ONEDNN_OPTS'] == '0'


def test_format_config_is_a_few_lines():
  import ml_collections  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict({
      'seed': 0, 'loss': 'softmax_ce',
      'mix': {'name': 'storm', 'hparams': {'k': 2, 'beta': 1.0}},
      'model': {'name': 'cnn_small', 'kwargs': {}}})
  assert cli.format_config(config).splitlines() == [
      "loss='softmax_ce' seed=0",
      "mix: hparams.beta=1.0 hparams.k=2 name='storm'",
      "model: kwargs={} name='cnn_small'"]
