r"""CIFAR-100, PreActResNet-18, R-Mix protocol (docs/DESIGN.md#protocols): 300 epochs.

SGD Nesterov, OneCycle (max lr 0.3, div 100, final_div 1e4 as the code, pct_start 0.3,
momentum cycled 0.85-0.95), batch 100, weight decay 1e-4. Method after ':' (default rmix).

  python -m storm_jax.main --config=configs/cifar100_rmix_onecycle.py --workdir=runs/c100_rmix
"""

from __future__ import annotations

from configs import common


def get_config(arg: str = ''):
  method, smoke_run = common.parse_arg(arg, default_method='rmix')
  config = common.get_config()
  config.dataset.name = 'cifar100'
  common.set_model(config, 'preactresnet18')
  common.set_method(config, method)
  # Max lr: the R-Mix code's `--max_lr` default, which the paper rounds to 0.3.
  config.optim.lr = 0.29947526988779305
  config.optim.nesterov = True
  config.optim.schedule = 'onecycle'
  config.optim.cycle_momentum = True
  config.num_epochs = 300.0
  config.batch_size = 100
  config.eval_every_steps = 5000
  config.checkpoint_every_steps = 5000
  if smoke_run:
    common.smoke(config)
  return config
