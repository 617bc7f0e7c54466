r"""Tiny-ImageNet, PreActResNet-18, PuzzleMix protocol: gmix.

  python -m storm_jax.main --config=configs/tinyimagenet_gmix.py --workdir=runs/tiny_gmix \
      --config.dataset.data_dir=~/tensorflow_datasets
"""

from __future__ import annotations

from configs import tinyimagenet


def get_config(variant: str = ''):
  return tinyimagenet.get_config(f'gmix,{variant}')
