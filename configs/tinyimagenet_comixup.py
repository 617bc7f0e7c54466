r"""Tiny-ImageNet, PreActResNet-18, PuzzleMix protocol: comixup (the reference's settings).

  python -m storm_jax.main --config=configs/tinyimagenet_comixup.py --workdir=runs/tiny_comixup \
      --config.dataset.data_dir=~/tensorflow_datasets
"""

from __future__ import annotations

from configs import tinyimagenet


def get_config(variant: str = ''):
  return tinyimagenet.get_config(f'comixup,{variant}')
