"""Tests of the experiment configs and of the config validation (before compiling)."""

from __future__ import annotations

import pathlib
import sys

import pytest

from storm_jax import train

from _configs import load_config
from _configs import override

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIG_FILES = sorted(p.stem for p in (ROOT / 'configs').glob('*.py')
                      if p.stem not in ('common', 'ipmix_protocol', '__init__'))
TINY_METHOD_FILES = sorted(n for n in CONFIG_FILES
                           if n.startswith('tinyimagenet_') and n != 'tinyimagenet_reduced')
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
    ({'num_train_steps': None, 'num_epochs': 0.0}, 'num_epochs', '0.0'),
    ({'num_train_steps': 0}, 'num_train_steps', '0'),
    ({'halt_after_step': 0}, 'halt_after_step', '0'),
    ({'mix.off_after_step': -1}, 'mix.off_after_step', '-1'),
    ({'dataset.train_examples': 0}, 'dataset.train_examples', '0'),
    ({'dataset.image_size': 0}, 'image_size', '0'),
    ({'model.kwargs.width': 0}, 'model.kwargs.width', '0'),
    ({'model.kwargs.stem': 'cifar', 'model.name': 'wrn16_8'}, 'model.kwargs.stem', 'wrn16_8'),
    ({'model.kwargs.stem': 'tiny'}, "model.kwargs.stem='tiny'", "model.name='cnn_small'"),
    ({'model.kwargs.widht': 8}, 'model.kwargs.widht', "Did you mean 'width'"),
    ({'model.kwargs.dtype': 'int8'}, 'model.kwargs.dtype', 'int8'),
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


def parse_config_flags(*args: str):
  """The config as `python -m storm_jax.main <args>` parses it (config_flags, locked)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
  flag_values = flags.FlagValues()
  argv = ['prog', *args]
  holder = config_flags.DEFINE_config_file('config', flag_values=flag_values, lock_config=True,
                                           sys_argv=argv)
  flag_values(argv)
  return holder.value


def common_module():
  if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
  from configs import common  # pylint: disable=g-import-not-at-top
  return common


def _option_value(model, option):
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  value = getattr(model, option)
  return jnp.dtype(value).name if option == 'dtype' else value


@pytest.mark.parametrize('name', CONFIG_FILES)
def test_every_model_option_is_settable_from_the_command_line(name):
  """`--config.model.kwargs.<option>` for every option of every model, on every config."""
  from storm_jax import models  # pylint: disable=g-import-not-at-top
  path = str(ROOT / 'configs' / f'{name}.py')
  base = load_config(name)
  assert set(base.model.kwargs) == set(models.option_types()) - {'dtype'}  # compute_dtype
  own = models.defaults(base.model.name)
  values = {'width': 16, 'axis_name': 'batch', 'stem': 'cifar'}
  assert set(values) == set(base.model.kwargs)  # a new option needs a value here
  for option, value in values.items():
    config = parse_config_flags(f'--config={path}', f'--config.model.kwargs.{option}={value}')
    assert config.model.kwargs[option] == value
    if option in own:
      model = train.build_model(config, num_classes=10)
      assert _option_value(model, option) == value
      unset = sorted(set(own) - {option, 'dtype'} - {k for k, v in base.model.kwargs.items() if v})
      for other in unset:  # the options left unset keep the model's own defaults
        assert _option_value(model, other) == own[other], other
      assert _option_value(model, 'dtype') == base.compute_dtype
    else:
      with pytest.raises(ValueError, match=rf"model.kwargs.{option}='?{value}'? is not an "
                                           rf"option of model.name='{base.model.name}'"):
        train.build_model(config, num_classes=10)


def test_switching_the_model_keeps_no_option_of_the_previous_one():
  """Unset options are None, so each model gets its own defaults (WRN's width is 16, not 64)."""
  path = str(ROOT / 'configs' / 'cifar100_comixup.py')
  config = parse_config_flags(f'--config={path}:mixup', '--config.model.name=wrn16_8')
  model = train.build_model(config, num_classes=100)
  assert (type(model).__name__, model.width, model.widen_factor) == ('WideResNet', 16, 8)
  config = parse_config_flags(f'--config={path}:mixup', '--config.model.name=resnet18',
                              '--config.model.kwargs.stem=cifar')
  assert train.build_model(config, num_classes=100).stem == 'cifar'


def test_set_model_fills_options_and_rejects_foreign_ones():
  common = common_module()
  config = common.get_config()
  common.set_model(config, 'preactresnet18', stem='tiny', width=16)
  assert (config.model.name, config.model.kwargs.stem, config.model.kwargs.width) == (
      'preactresnet18', 'tiny', 16)
  assert 'dtype' not in config.model.kwargs and config.model.kwargs.axis_name is None
  common.set_model(config, 'wrn28_10')  # forgets the previous model's options
  assert all(v is None for v in config.model.kwargs.values())
  with pytest.raises(ValueError, match=r"model 'wrn28_10' has no option stem='tiny'; its "
                                       r'options: width, axis_name'):
    common.set_model(config, 'wrn28_10', stem='tiny')
  with pytest.raises(TypeError):  # placeholders are typed
    config.model.kwargs.width = 1.5


def test_unset_fields_are_typed_placeholders():
  """Nothing uses ''/0/-1 for "not set": unset is None, and the command line still parses."""
  common = common_module()
  config = common.get_config()
  unset = ('dataset.data_dir', 'dataset.image_size', 'dataset.augment',
           'dataset.train_examples', 'dataset.mixing_set', 'mix.off_after_step',
           'num_train_steps', 'halt_after_step')
  for field in unset:
    group, _, leaf = field.rpartition('.')
    assert (config[group] if group else config)[leaf] is None, field
  path = str(ROOT / 'configs' / 'digits_storm.py')
  config = parse_config_flags(f'--config={path}', '--config.dataset.image_size=16',
                              '--config.num_train_steps=7', '--config.dataset.data_dir=/tmp/x',
                              '--config.mix.off_after_step=3')
  assert (config.dataset.image_size, config.num_train_steps, config.dataset.data_dir,
          config.mix.off_after_step) == (16, 7, '/tmp/x', 3)
  assert train.total_steps(config, train.dataset_info(config)) == 7


@pytest.mark.parametrize('name', TINY_METHOD_FILES)
def test_tinyimagenet_method_files_are_the_protocol_with_their_method(name):
  method = name[len('tinyimagenet_'):]
  for variant in ('', 'smoke'):
    arg = f'{method},{variant}' if variant else method
    assert load_config(name, variant).to_dict() == load_config('tinyimagenet', arg).to_dict()


def test_protocol_hparams_are_one_table_per_protocol():
  """Each protocol's settings build their mixer and reach the config of that protocol."""
  from storm_jax import mixing  # pylint: disable=g-import-not-at-top
  common = common_module()
  files = {'cifar10': 'cifar10_wrn28_10', 'tiny_imagenet': 'tinyimagenet',
           'imagenet_100ep': 'imagenet_resnet50', 'imagenet_300ep': 'imagenet_resnet50_300ep'}
  assert set(common.PROTOCOL_HPARAMS) == set(files)
  for protocol, table in common.PROTOCOL_HPARAMS.items():
    for method, hparams in table.items():
      name = common.METHODS[method][0]
      mixing.get(name, **hparams)
      config = load_config(files[protocol], method)
      assert (config.mix.name, dict(config.mix.hparams)) == (name, hparams), (protocol, method)
  # Methods a protocol does not set differently take METHODS' settings.
  assert dict(load_config('tinyimagenet', 'storm').mix.hparams) == common.METHODS['storm'][1]
  assert dict(load_config('cifar100_wrn28_10', 'cutout').mix.hparams) == dict(length=8)


@pytest.mark.parametrize('name', CONFIG_FILES)
def test_config_files_set_only_fields_of_the_defaults(name):
  from storm_jax import cli  # pylint: disable=g-import-not-at-top
  reference = common_module().get_config()
  for arg in (None, 'smoke'):
    cli.check_config_fields(load_config(name, arg), reference)


@pytest.mark.parametrize('field,value,message', [
    ('batch_sise', 32, "'batch_sise'.*Did you mean 'batch_size'"),
    ('optim.warmup_epoch', 5.0, "'optim.warmup_epoch'.*Did you mean 'warmup_epochs'"),
    ('dataset.imagesize', 16, "'dataset.imagesize'.*Did you mean 'image_size'"),
    ('mix.objectve', 'mean', "'mix.objectve'.*Did you mean 'objective'"),
    ('eval_every_step', 10, "'eval_every_step'.*Did you mean 'eval_every_steps'"),
])
def test_config_file_typo_names_the_nearest_field(field, value, message):
  """A config file that adds a field the defaults lack (the CLI runs this check at parsing)."""
  from storm_jax import cli  # pylint: disable=g-import-not-at-top
  from storm_jax import errors  # pylint: disable=g-import-not-at-top
  config = load_config('digits_storm')
  group, _, leaf = field.rpartition('.')
  (config[group] if group else config)[leaf] = value
  with pytest.raises(errors.UserError, match=message):
    cli.check_config_fields(config, common_module().get_config())
