r"""CIFAR-100, ResNet-18 (CIFAR stem), IPMix protocol: SGD Nesterov, lr 0.1, cosine.

Batch 128, weight decay 5e-4, 200 epochs, crop + flip; the same recipe as
cifar100_wrn28_10.py with IPMix's CIFAR ResNet-18 (3x3 stem, no max-pool). Method after ':'
(default storm); pixmix / ipmix also read the generated 'fractals' mixing pictures.

  python -m storm_jax.main --config=configs/cifar100_resnet18.py:ipmix --workdir=runs/cifar100_rn18
"""

from __future__ import annotations

from configs import common


def get_config(arg: str = ''):
  method, smoke_run = common.parse_arg(arg)
  config = common.get_config()
  config.dataset.name = 'cifar100'
  config.model.name = 'resnet18'
  config.model.kwargs.stem = 'cifar'
  common.set_method(config, method)
  config.optim.lr = 0.1
  config.optim.nesterov = True
  config.optim.schedule = 'cosine'
  config.optim.weight_decay = 5e-4
  config.num_epochs = 200.0
  config.batch_size = 128
  config.eval_every_steps = 5000
  config.checkpoint_every_steps = 5000
  if smoke_run:
    common.smoke(config)
  return config
