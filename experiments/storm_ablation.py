"""StoRM ablation: grid order k in {1, 2, 3, 4} x Beta concentration in {0.2, 0.5, 1.0}, and
the partition granularity (one partition per batch, Algorithm 1, vs one per example, §3.2).

k = 1 is Mixup with the clean CE term (SPECS §7). The StoRM paper's own ablation (its
Appendix C) is not in our text, so there is no paper column. Two protocols: CIFAR-100
PreActResNet-18 (Co-Mixup, 300 epochs) and Tiny-ImageNet (PuzzleMix, 1200 epochs).

  python -m experiments.storm_ablation commands --table=storm_ablation_c100   # run / aggregate
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # `python experiments/x.py`

from experiments import tablelib  # pylint: disable=wrong-import-position

COLUMNS = (tablelib.Column('top1_acc', 'top-1 %'), tablelib.Column('top5_acc', 'top-5 %'))
KS = (1, 2, 3, 4)
BETAS = (0.2, 0.5, 1.0)


def _rows(config):
  rows = []
  for k in KS:
    for beta in BETAS:
      rows.append(tablelib.Row(f'k={k} beta={beta} batch', config,
                               {'mix.hparams.k': k, 'mix.hparams.beta': beta}))
  for k in KS[1:]:
    rows.append(tablelib.Row(f'k={k} beta=1.0 example', config,
                             {'mix.hparams.k': k, 'mix.hparams.beta': 1.0,
                              'mix.hparams.granularity': 'example'}))
  return tuple(rows)


TABLES = [
    tablelib.Table(name='storm_ablation_c100', columns=COLUMNS, seeds=1,
                   title='StoRM ablation: CIFAR-100, PreActResNet-18 (Co-Mixup protocol)',
                   rows=_rows('configs/cifar100_comixup.py:storm')),
    tablelib.Table(name='storm_ablation_tiny', columns=COLUMNS, seeds=1,
                   title='StoRM ablation: Tiny-ImageNet, PreActResNet-18 (PuzzleMix protocol)',
                   rows=_rows('configs/tinyimagenet_storm.py')),
]

if __name__ == '__main__':
  raise SystemExit(tablelib.main(TABLES))
