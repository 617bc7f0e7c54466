r"""CIFAR-100, PreActResNet-18, 1200 epochs (PuzzleMix/Manifold protocol used by StoRM).

SGD momentum 0.9, lr 0.1 x0.1 at epochs 400 and 800, batch 100, weight decay 1e-4,
crop + flip. The argument after ':' picks the method (default storm), e.g.

  python -m storm_jax.main --config=configs/cifar100_preactresnet18.py:mixup \
      --workdir=runs/c100_prn18_mixup
"""

from __future__ import annotations

from configs import common


def get_config(arg: str = ''):
  method, smoke_run = common.parse_arg(arg)
  config = common.get_config()
  config.dataset.name = 'cifar100'
  common.set_model(config, 'preactresnet18', stem='cifar')
  common.set_method(config, method)
  config.optim.lr = 0.1
  config.optim.milestones = (400, 800)
  config.num_epochs = 1200.0
  config.batch_size = 100
  config.eval_every_steps = 5000
  config.checkpoint_every_steps = 5000
  if smoke_run:
    common.smoke(config)
  return config
