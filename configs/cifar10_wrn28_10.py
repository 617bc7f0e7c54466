r"""CIFAR-10, WRN-28-10, IPMix protocol (StoRM Table 1): SGD Nesterov, lr 0.1, cosine.

Batch 128, weight decay 5e-4, 200 epochs, crop + flip. Method after ':' (default storm).

  python -m storm_jax.main --config=configs/cifar10_wrn28_10.py --workdir=runs/c10_wrn
"""

from __future__ import annotations

from configs import common


def get_config(arg: str = ''):
  method, smoke_run = common.parse_arg(arg)
  config = common.get_config()
  config.dataset.name = 'cifar10'
  config.model.name = 'wrn28_10'
  common.set_method(config, method)
  if method == 'cutout':  # The Cutout reference's CIFAR-10 hole.
    config.mix.hparams = dict(length=16)
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
