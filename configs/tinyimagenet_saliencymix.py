r"""Tiny-ImageNet, PreActResNet-18, PuzzleMix protocol: SaliencyMix (StoRM Table 3).

SaliencyMix's CIFAR settings (beta 1, mixing probability 0.5): the released code has no
Tiny-ImageNet script. `--config.mix.hparams.centre=uniform` gives the released code's
effective behaviour (docs/DESIGN.md#saliencymix).

  python -m storm_jax.main --config=configs/tinyimagenet_saliencymix.py \
      --workdir=runs/tiny_saliencymix --config.dataset.data_dir=~/tensorflow_datasets
"""

from __future__ import annotations

from configs import tinyimagenet


def get_config(variant: str = ''):
  return tinyimagenet.get_config(f'saliencymix,{variant}')
