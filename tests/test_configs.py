"""Tests of the experiment configs and of the config validation (before compiling)."""

from __future__ import annotations

import pathlib

import pytest

from storm_jax import train

from _configs import load_config
from _configs import override

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIG_FILES = sorted(p.stem for p in (ROOT / 'configs').glob('*.py')
                      if p.stem not in ('common', 'tinyimagenet', 'ipmix_protocol', '__init__'))
METHOD_CONFIGS = ('cifar100_preactresnet18', 'cifar100_wrn28_10', 'cifar10_wrn28_10',
                  'imagenet_resnet50', 'cifar100_rmix_onecycle', 'digits_storm')


def digits_config(**overrides):
  return override(load_config('digits_storm', 'smoke'), overrides)


@pytest.mark.parametrize('name', CONFIG_FILES)
def test_every_config_and_its_smoke_variant_validate(name):
  full = load_config(name)
  smoke = load_config(name, 'smoke')
  train.validate_config(full, device_count=1, process_count=1)
  train.validate_config(smoke, device_count=1, process_count=1)
  assert full.mix.name == smoke.mix.name
  assert 0 < smoke.num_train_steps <= 10 and smoke.batch_size <= 16


@pytest.mark.parametrize('name', METHOD_CONFIGS)
@pytest.mark.parametrize('method', ['vanilla', 'mixup', 'cutmix', 'storm', 'rmix', 'multimix',
                                    'augmix', 'manifold_mixup', 'cutout', 'saliencymix', 'fmix',
                                    'resizemix'])
def test_method_argument_selects_the_mixer(name, method):
  config = load_config(name, f'{method},smoke')
  train.validate_config(config, device_count=1, process_count=1)
  assert config.mix.name == ('none' if method == 'vanilla' else method)


def test_bad_method_argument():
  with pytest.raises(ValueError, match='nosuch'):
    load_config('cifar100_preactresnet18', 'nosuch')


def test_tinyimagenet_protocol():
  """PuzzleMix Tiny-ImageNet protocol (docs/DESIGN.md#protocols)."""
  config = load_config('tinyimagenet_storm')
  assert config.dataset.name == 'tiny_imagenet'
  assert config.model.name == 'preactresnet18' and config.model.kwargs.stem == 'tiny'
  assert (config.optim.lr, tuple(config.optim.milestones), config.num_epochs) == (
      0.2, (600, 900), 1200.0)
  assert (config.batch_size, config.optim.weight_decay, config.optim.momentum) == (
      100, 1e-4, 0.9)
  assert config.mix.name == 'storm'


@pytest.mark.parametrize('overrides,field,value', [
    ({'mix.name': 'nosuch'}, 'mix.name', 'nosuch'),
    ({'model.name': 'resnet9000'}, 'model.name', 'resnet9000'),
    ({'dataset.name': 'mnist_nope'}, 'dataset.name', 'mnist_nope'),
    ({'batch_size': 12}, 'batch_size', '12'),            # 8 devices
    ({'eval_batch_size': 100}, 'eval_batch_size', '100'),  # 8 devices
    ({'mix.name': 'rmix', 'mix.hparams': {'grid_sizes': (3,)}}, 'grid_sizes', '(3,)'),
    ({'mix.name': 'storm', 'mix.hparams': {'k': 0}}, 'k', '0'),
    ({'mix.name': 'mixup', 'mix.hparams': {'alpha': 0.0}}, 'alpha', '0.0'),
    ({'mix.name': 'mixup', 'mix.hparams': {'alpha': -1.0}}, 'alpha', '-1.0'),
    ({'mix.name': 'mixup', 'mix.hparams': {'alhpa': 1.0}}, 'alhpa', 'alhpa'),
    ({'mix.name': 'multimix', 'mix.hparams': {'K': 0}}, 'K', '0'),
    ({'mix.hparams': {'label_smoothing': 0.1}}, 'label_smoothing', '0.1'),
    ({'mix.scope': 'host'}, 'mix.scope', 'host'),
    ({'label_smoothing': 1.0}, 'label_smoothing', '1.0'),
    ({'optim.lr': 0.0}, 'optim.lr', '0.0'),
    ({'optim.schedule': 'poly'}, 'optim.schedule', 'poly'),
    ({'optim.schedule': 'multistep', 'optim.milestones': (5, 2)}, 'optim.milestones',
     '(5, 2)'),
    ({'num_train_steps': -1, 'num_epochs': 0.0}, 'num_epochs', '0.0'),
    ({'mix.saliency_batch_stats': 'maybe'}, 'mix.saliency_batch_stats', 'maybe'),
    ({'dataset.image_size': -4}, 'image_size', '-4'),
    ({'dataset.train_examples': -3}, 'dataset.train_examples', '-3'),
    ({'loss': 'mse'}, 'loss', "'mse'"),
    ({'mix.objective': 'average'}, 'mix.objective', 'average'),
    ({'dataset.train_examples': 8}, 'batch_size', '16'),   # 8 examples < a batch of 16
])
def test_bad_config_raises_naming_field_and_value(overrides, field, value):
  config = digits_config(**{'batch_size': 16, 'eval_batch_size': 64, **overrides})
  with pytest.raises(ValueError) as e:
    train.validate_config(config, device_count=8, process_count=1)
  assert field in str(e.value) and value in str(e.value), str(e.value)


def test_rmix_grid_must_divide_image_size():
  config = digits_config(**{'mix.name': 'rmix', 'mix.hparams': {'grid_sizes': (2, 4)}})
  train.validate_config(config, device_count=1, process_count=1)  # 8x8: fine.
  config.dataset.image_size = 6
  with pytest.raises(ValueError, match=r'grid_sizes.*6x6'):
    train.validate_config(config, device_count=1, process_count=1)


def test_validation_runs_before_anything_compiles(tmp_path):
  config = digits_config(**{'mix.name': 'storm', 'mix.hparams': {'k': 0}})
  with pytest.raises(ValueError, match='k'):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()  # Nothing was created.
