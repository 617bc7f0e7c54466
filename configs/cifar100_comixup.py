r"""CIFAR-100, Co-Mixup protocol (docs/DESIGN.md#protocols): 300 epochs, the HMix / DCutMix /
multi-mix tables.

SGD momentum 0.9, lr 0.2 x0.1 at epochs 100 and 200, batch 100, weight decay 1e-4, crop +
flip. PreActResNet-18 by default; the papers' other architectures by override. Method after
':' (default storm), e.g.

  python -m storm_jax.main --config=configs/cifar100_comixup.py:hmix \
      --config.model.name=wrn16_8 --workdir=runs/c100_comixup_wrn16_8_hmix
"""

from __future__ import annotations

from configs import common


def get_config(arg: str = ''):
  method, smoke_run = common.parse_arg(arg)
  config = common.get_config()
  config.dataset.name = 'cifar100'
  common.set_model(config, 'preactresnet18')
  common.set_method(config, method)
  config.optim.lr = 0.2
  config.optim.milestones = (100, 200)
  config.num_epochs = 300.0
  config.batch_size = 100
  config.eval_every_steps = 5000
  config.checkpoint_every_steps = 5000
  if smoke_run:
    common.smoke(config)
  return config
