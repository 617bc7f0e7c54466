r"""Tiny-ImageNet, PreActResNet-18, PuzzleMix protocol: Guided-AP (prob 0.8, clean_lam 1).

  python -m storm_jax.main --config=configs/tinyimagenet_guided_ap.py --workdir=runs/tiny_guided_ap \
      --config.dataset.data_dir=~/tensorflow_datasets
"""

from __future__ import annotations

from configs import tinyimagenet


def get_config(variant: str = ''):
  return tinyimagenet.get_config(f'guided_ap,{variant}')
