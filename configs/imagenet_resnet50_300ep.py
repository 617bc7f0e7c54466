r"""ImageNet-1k, ResNet-50, CutMix protocol (docs/DESIGN.md#protocols): 300 epochs, HMix / DCutMix
tables.

configs/imagenet_resnet50.py with lr 0.1 x0.1 every 75 epochs instead of the cosine, for 300
epochs. Method after ':' (default storm); its settings for this protocol:
`common.PROTOCOL_HPARAMS['imagenet_300ep']` (HMix r=0.75 and Mixup alpha 0.8,
DCutMix/DMixup K=3, alpha=1/3; docs/DESIGN.md#method-hparams).

  python -m storm_jax.main --config=configs/imagenet_resnet50_300ep.py:hmix --workdir=...
"""

from __future__ import annotations

from configs import imagenet_resnet50


def get_config(arg: str = ''):
  config = imagenet_resnet50.get_config(arg, protocol='imagenet_300ep')
  config.optim.schedule = 'multistep'
  config.optim.milestones = (75, 150, 225)
  config.num_epochs = 300.0
  return config
