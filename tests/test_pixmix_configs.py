"""The IPMix-protocol configs with PixMix / IPMix and the Table 1-2 rows that use them."""

from __future__ import annotations

import pytest

from storm_jax import errors
from storm_jax import train

from _configs import load_config

IPMIX_PROTOCOL = ('cifar10_wrn28_10', 'cifar100_wrn28_10', 'cifar10_resnet18',
                  'cifar100_resnet18')


@pytest.mark.parametrize('name', IPMIX_PROTOCOL)
@pytest.mark.parametrize('method', ['pixmix', 'ipmix', 'storm', 'vanilla'])
def test_methods_with_mixing_pictures_select_the_fractal_set(name, method):
  config = load_config(name, f'{method},smoke')
  train.validate_config(config, device_count=1, process_count=1)
  assert config.mix.name == ('none' if method == 'vanilla' else method)
  # Smoke runs read a small generated set (the full runs: 'fractals', 10,000 pictures).
  assert config.dataset.mixing_set == (
      'fractals/32x32_256_seed0' if method in ('pixmix', 'ipmix') else None)
  full = load_config(name, method)
  assert full.dataset.mixing_set == ('fractals' if method in ('pixmix', 'ipmix') else None)


@pytest.mark.parametrize('method', ['pixmix', 'ipmix'])
def test_a_mixing_set_is_required(method):
  config = load_config('cifar10_wrn28_10', f'{method},smoke')
  config.dataset.mixing_set = ''
  with pytest.raises(errors.UserError, match=r"^dataset.mixing_set='' must name the mixing "
                     f"pictures that mix.name='{method}' mixes with"):
    train.validate_config(config, device_count=1, process_count=1)


def test_ipmix_patch_sizes_must_fit_the_images():
  config = load_config('digits_storm', 'ipmix,smoke')
  train.validate_config(config, device_count=1, process_count=1)  # (2, 4, 8) on 8x8 digits
  config.mix.hparams.patch_sizes = (4, 8, 16)
  with pytest.raises(errors.UserError, match=r'^mix.hparams.patch_sizes=\(4, 8, 16\) must all '
                     r"fit the 8x8 images of dataset.name='digits'"):
    train.validate_config(config, device_count=1, process_count=1)


@pytest.mark.parametrize('name', IPMIX_PROTOCOL)
def test_ipmix_protocol(name):
  config = load_config(name, 'ipmix')
  assert (config.optim.lr, config.optim.nesterov, config.optim.schedule) == (0.1, True, 'cosine')
  assert (config.batch_size, config.optim.weight_decay, config.num_epochs) == (128, 5e-4, 200.0)
  assert config.model.name == ('resnet18' if 'resnet18' in name else 'wrn28_10')
  if 'resnet18' in name:
    assert config.model.kwargs.stem == 'cifar'
  hp = config.mix.hparams
  assert (hp['width'], hp['max_steps'], tuple(hp['patch_sizes'])) == (3, 3, (4, 8, 16, 32))
  assert (hp['beta'], hp['severity'], hp['jsd'], hp['jsd_weight']) == (3.0, 3.0, True, 12.0)
  assert dict(load_config(name, 'pixmix').mix.hparams) == dict(k=4, beta=3.0, severity=3.0,
                                                                all_ops=True)


def test_table_rows():
  from experiments import storm_table1_cifar10, storm_table2_cifar100
  for table in storm_table1_cifar10.TABLES:
    labels = [r.label for r in table.rows]
    assert labels[-3:] == ['PixMix', 'IPMix', 'StoRM']
    assert not table.rows[-3].paper and not table.rows[-2].paper  # lost in the paper's text
  wrn = {r.label: r for r in storm_table2_cifar100.TABLES[1].rows}
  assert wrn['PixMix'].paper == {'top1_acc': 81.7} and wrn['IPMix'].paper == {'top1_acc': 82.6}
  assert wrn['IPMix'].config.endswith(':ipmix')
