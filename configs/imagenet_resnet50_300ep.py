r"""ImageNet-1k, ResNet-50, CutMix protocol (docs/DESIGN.md#protocols): 300 epochs, HMix / DCutMix
tables.

SGD momentum 0.9, lr 0.1 x0.1 every 75 epochs, batch 256, weight decay 1e-4,
RandomResizedCrop 224 + flip. Method after ':' (default storm). HMix uses r=0.75 on
ImageNet and Mixup alpha 0.8 (docs/DESIGN.md#method-hparams); DCutMix/DMixup K=3, alpha=1/3.

  python -m storm_jax.main --config=configs/imagenet_resnet50_300ep.py:hmix --workdir=...
"""

from __future__ import annotations

from configs import common

_IMAGENET_HPARAMS = {
    'mixup': dict(alpha=0.8),
    'cutmix': dict(alpha=1.0),
    'mixup_cutmix': dict(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5),
    'hmix': dict(alpha=1.0, r=0.75),
    'gmix': dict(alpha=1.0),
    'dcutmix': dict(K=3, alpha=1 / 3),
    'dmixup': dict(K=3, alpha=1 / 3),
}


def get_config(arg: str = ''):
  method, smoke_run = common.parse_arg(arg)
  config = common.get_config()
  config.dataset.name = 'imagenet2012'
  config.model.name = 'resnet50'
  common.set_method(config, method)
  if method in _IMAGENET_HPARAMS:
    config.mix.hparams = dict(_IMAGENET_HPARAMS[method])
  config.optim.lr = 0.1
  config.optim.milestones = (75, 150, 225)
  config.num_epochs = 300.0
  config.batch_size = 256
  config.compute_dtype = 'bfloat16'  # Float32 params and loss (docs/DESIGN.md#compute-dtype).
  config.eval_batch_size = 250
  config.log_every_steps = 500
  config.eval_every_steps = 25000
  config.checkpoint_every_steps = 5000
  if smoke_run:
    common.smoke(config)
  return config
