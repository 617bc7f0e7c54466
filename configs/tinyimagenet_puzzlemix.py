r"""Tiny-ImageNet, PreActResNet-18, PuzzleMix protocol: puzzlemix (reference README for Tiny).

Transport on the block grid (`t_size=-1`) and `clean_lam=1` (the saliency pass's clean loss
`2 clean_lam / N CE` whose parameter gradient the reference keeps).

  python -m storm_jax.main --config=configs/tinyimagenet_puzzlemix.py \
      --workdir=runs/tiny_puzzlemix \
      --config.dataset.data_dir=~/tensorflow_datasets
"""

from __future__ import annotations

from configs import tinyimagenet


def get_config(variant: str = ''):
  return tinyimagenet.get_config(f'puzzlemix,{variant}')
