r"""Tiny-ImageNet, PreActResNet-18, PuzzleMix protocol: Manifold Mixup (alpha 0.2, the
PuzzleMix README's Tiny-ImageNet value; points: input, stage 1, stage 2).

  python -m storm_jax.main --config=configs/tinyimagenet_manifold_mixup.py \
      --workdir=runs/tiny_manifold --config.dataset.data_dir=~/tensorflow_datasets
"""

from __future__ import annotations

from configs import tinyimagenet


def get_config(variant: str = ''):
  return tinyimagenet.get_config(f'manifold_mixup,{variant}')
