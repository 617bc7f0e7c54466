r"""Tiny-ImageNet, PreActResNet-18, PuzzleMix protocol: region_mixup.

  python -m storm_jax.main --config=configs/tinyimagenet_region_mixup.py --workdir=runs/tiny_region_mixup \
      --config.dataset.data_dir=~/tensorflow_datasets
"""

from __future__ import annotations

from configs import tinyimagenet


def get_config(variant: str = ''):
  return tinyimagenet.get_config(f'region_mixup,{variant}')
