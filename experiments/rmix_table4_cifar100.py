"""R-Mix Table 4: CIFAR-100 top-1 accuracy with the OneCycle schedule (docs/DESIGN.md#protocols,
#reproduction).

PreActResNet-18, WRN-16-8, WRN-28-10 (400 epochs) and ResNeXt-29-4-24, 300 epochs.
"Input" is input Mixup (alpha 1), "CutMix+" is CutMix (prob 1) trained with OneCycle.
The OneCycle ends at lr 3e-7 as the reference code (the paper says 3e-5).

  python -m experiments.rmix_table4_cifar100 commands   # or: run / aggregate
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # `python experiments/x.py`

from experiments import tablelib  # pylint: disable=wrong-import-position

CONFIG = 'configs/cifar100_rmix_onecycle.py'
ACC = (tablelib.Column('top1_acc', 'top-1 %'),)
PAPER = {  # arch -> (Vanilla, Input, CutMix+, R-Mix, Manifold Mixup)
    'preactresnet18': (76.41, 77.57, 80.60, 81.49, 78.36),
    'wrn16_8': (78.30, 79.92, 81.79, 82.32, 79.45),
    'wrn28_10': (78.86, 81.73, 83.97, 85.00, 82.60),
    'resnext29_4_24': (78.21, 78.30, 82.30, 83.02, 77.72),
}
METHODS = (('Vanilla', 'vanilla', {}), ('Input Mixup', 'mixup', {}),
           ('CutMix+', 'cutmix', {'mix.hparams.prob': 1.0}), ('R-Mix', 'rmix', {}),
           ('Manifold Mixup', 'manifold_mixup', {}))
# Co-Mixup's numbers in this table are its own paper's (Co-Mixup protocol: 300 epochs,
# multistep, BCE(softmax)); '–' where the paper has none.
COMIXUP = 'configs/cifar100_comixup.py:comixup'
PAPER_COMIXUP = {'preactresnet18': 80.13, 'wrn16_8': 80.85, 'wrn28_10': None,
                 'resnext29_4_24': 80.22}


def _table(arch):
  extra = {'num_epochs': 400.0} if arch == 'wrn28_10' else {}
  return tablelib.Table(
      name=f'rmix_t4_c100_{arch}', title=f'R-Mix Table 4: CIFAR-100, {arch} (OneCycle)',
      columns=ACC, seeds=3, rows=tuple(
          tablelib.Row(label, f'{CONFIG}:{m}', {'model.name': arch, **extra, **ov},
                       paper={'top1_acc': PAPER[arch][i]})
          for i, (label, m, ov) in enumerate(METHODS)) + (
              tablelib.Row('Co-Mixup', COMIXUP, {'model.name': arch, 'loss': 'softmax_bce'},
                           paper={'top1_acc': PAPER_COMIXUP[arch]}),))


TABLES = [_table(a) for a in PAPER]

if __name__ == '__main__':
  raise SystemExit(tablelib.main(TABLES))
