"""HMix/GMix Table 3: ImageNet-1k, ResNet-50, 300 epochs (CutMix protocol), top-1 accuracy.

alpha 1 for all methods but Mixup (0.8); HMix r = 0.75 (docs/DESIGN.md#method-hparams).

  python -m experiments.hmix_table3_imagenet commands   # or: run / aggregate
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # `python experiments/x.py`

from experiments import tablelib  # pylint: disable=wrong-import-position

CONFIG = 'configs/imagenet_resnet50_300ep.py'
PAPER = {'vanilla': ('Vanilla', 75.68), 'mixup': ('Mixup', 77.78), 'cutmix': ('CutMix', 78.04),
         'mixup_cutmix': ('Stochastic Mixup & CutMix', 78.13), 'hmix': ('HMix', 78.38),
         'gmix': ('GMix', 78.13)}

TABLES = [tablelib.Table(
    name='hmix_t3_in1k', title='HMix Table 3: ImageNet-1k, ResNet-50 (300 ep)', seeds=1,
    columns=(tablelib.Column('top1_acc', 'top-1 %'),), rows=tuple(
        tablelib.Row(label, f'{CONFIG}:{m}', paper={'top1_acc': acc})
        for m, (label, acc) in PAPER.items()))]

if __name__ == '__main__':
  raise SystemExit(tablelib.main(TABLES))
