r"""Tiny-ImageNet, PreActResNet-18, PuzzleMix protocol: comixup (the reference's settings).

  python -m storm_jax.main --config=configs/tinyimagenet_comixup.py --workdir=runs/tiny_comixup \
      --config.dataset.data_dir=~/tensorflow_datasets
"""

from __future__ import annotations

from configs import tinyimagenet


def get_config(variant: str = ''):
  return tinyimagenet.get_config(
      'comixup', dict(block_num=4, part=20, alpha=2.0, beta=0.32, gamma=1.0, thres=0.83,
                      eta=0.05, omega=0.001, niter=4, clean_lam=1.0), variant)
