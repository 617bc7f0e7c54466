r"""Tiny-ImageNet, PreActResNet-18, PuzzleMix protocol: rmix.

  python -m storm_jax.main --config=configs/tinyimagenet_rmix.py --workdir=runs/tiny_rmix \
      --config.dataset.data_dir=~/tensorflow_datasets
"""

from __future__ import annotations

from configs import tinyimagenet


def get_config(variant: str = ''):
  return tinyimagenet.get_config(f'rmix,{variant}')
