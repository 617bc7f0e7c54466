r"""Tiny-ImageNet, PreActResNet-18, PuzzleMix protocol: Cutout (multi-mix Table I).

multi-mix does not state the hole size; 16 on 64x64 images is the reference's CIFAR-100 hole
(8 on 32x32) at the same fraction of the image side (docs/DESIGN.md#cutout).

  python -m storm_jax.main --config=configs/tinyimagenet_cutout.py --workdir=runs/tiny_cutout \
      --config.dataset.data_dir=~/tensorflow_datasets
"""

from __future__ import annotations

from configs import tinyimagenet


def get_config(variant: str = ''):
  return tinyimagenet.get_config(f'cutout,{variant}')
