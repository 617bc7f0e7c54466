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
  return tinyimagenet.get_config('puzzlemix', dict(
      alpha=1.0, beta=1.2, gamma=0.5, eta=0.2, neigh_size=4, n_labels=3, transport=True,
      t_eps=0.8, t_size=-1, clean_lam=1.0), variant)
