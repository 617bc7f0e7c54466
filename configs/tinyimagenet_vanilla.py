r"""Tiny-ImageNet, PreActResNet-18, PuzzleMix protocol: vanilla.

  python -m storm_jax.main --config=configs/tinyimagenet_vanilla.py --workdir=runs/tiny_vanilla \
      --config.dataset.data_dir=~/tensorflow_datasets
"""

from __future__ import annotations

from configs import tinyimagenet


def get_config(variant: str = ''):
  return tinyimagenet.get_config(f'vanilla,{variant}')
