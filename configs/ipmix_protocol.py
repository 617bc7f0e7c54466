r"""IPMix's CIFAR protocol (StoRM Tables 1 and 2), shared by the cifar*_wrn28_10 / cifar*_resnet18
configs: SGD Nesterov, lr 0.1, cosine, batch 128, weight decay 5e-4, 200 epochs, crop + flip.

ResNet-18 is IPMix's CIFAR variant (3x3 stem, no max-pool). The method comes after ':' in the
config argument (default storm); pixmix / ipmix also read the generated 'fractals' mixing
pictures (docs/DESIGN.md#protocols).
"""

from __future__ import annotations

from configs import common


def get_config(dataset: str, model: str, arg: str = '', **model_kwargs):
  method, smoke_run = common.parse_arg(arg)
  config = common.get_config()
  config.dataset.name = dataset
  common.set_model(config, model, **model_kwargs)
  common.set_method(config, method, 'cifar10' if dataset == 'cifar10' else None)
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
