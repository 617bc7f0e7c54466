r"""Tiny-ImageNet, PreActResNet-18, PuzzleMix protocol: dcutmix.

  python -m storm_jax.main --config=configs/tinyimagenet_dcutmix.py --workdir=runs/tiny_dcutmix \
      --config.dataset.data_dir=~/tensorflow_datasets
"""

from __future__ import annotations

from configs import tinyimagenet


def get_config(variant: str = ''):
  return tinyimagenet.get_config(f'dcutmix,{variant}')
