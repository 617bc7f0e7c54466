r"""Tiny-ImageNet, PreActResNet-18, PuzzleMix protocol: storm.

  python -m storm_jax.main --config=configs/tinyimagenet_storm.py --workdir=runs/tiny_storm \
      --config.dataset.data_dir=~/tensorflow_datasets
"""

from __future__ import annotations

from configs import tinyimagenet


def get_config(variant: str = ''):
  return tinyimagenet.get_config(f'storm,{variant}')
