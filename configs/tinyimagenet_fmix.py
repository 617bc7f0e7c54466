r"""Tiny-ImageNet, PreActResNet-18, PuzzleMix protocol: FMix (multi-mix Table I).

The reference defaults (alpha 1, decay power 3, binary masks): multi-mix states none.

  python -m storm_jax.main --config=configs/tinyimagenet_fmix.py --workdir=runs/tiny_fmix \
      --config.dataset.data_dir=~/tensorflow_datasets
"""

from __future__ import annotations

from configs import tinyimagenet


def get_config(variant: str = ''):
  return tinyimagenet.get_config(f'fmix,{variant}')
