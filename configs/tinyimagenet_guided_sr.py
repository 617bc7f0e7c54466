r"""Tiny-ImageNet, PreActResNet-18, PuzzleMix protocol: Guided-SR (prob 0.5).

  python -m storm_jax.main --config=configs/tinyimagenet_guided_sr.py --workdir=runs/tiny_guided_sr \
      --config.dataset.data_dir=~/tensorflow_datasets
"""

from __future__ import annotations

from configs import tinyimagenet


def get_config(variant: str = ''):
  return tinyimagenet.get_config(f'guided_sr,{variant}')
