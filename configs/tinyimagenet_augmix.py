r"""Tiny-ImageNet, PreActResNet-18, PuzzleMix protocol: AugMix with the JSD objective.

The AugMix setting behind StoRM's Tiny-ImageNet row is not stated (JSD or not, severity);
this uses the CIFAR recipe (severity 3, JSD weight 12). Each step trains on 3x the batch.

  python -m storm_jax.main --config=configs/tinyimagenet_augmix.py --workdir=runs/tiny_augmix \
      --config.dataset.data_dir=~/tensorflow_datasets
"""

from __future__ import annotations

from configs import tinyimagenet


def get_config(variant: str = ''):
  return tinyimagenet.get_config(f'augmix,{variant}')
