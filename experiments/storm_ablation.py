"""StoRM ablations.

Paper protocols: grid order k in {1, 2, 3, 4} x Beta concentration in {0.2, 0.5, 1.0}, and
the partition granularity (one partition per batch, Algorithm 1, vs one per example, §3.2).

Reduced protocol (`storm_ablation_reduced`, configs/tinyimagenet_reduced.py, a CPU can run it):
StoRM's objective ('sum' of the clean and mixed terms as Algorithm 1, or their 'mean') x the
learning rate (the CIFAR configs' 0.1 and half of it) for k=2, beta=1, then k=4 and beta=0.5 at
`BEST` (set it to the best of those four after they ran), with vanilla and mixup as references;
2 seeds, differences paired by seed against vanilla (docs/DESIGN.md#storm-loss).

  TFDS_DATA_DIR=/path/to/tfds python -m experiments.storm_ablation run \
      --table=storm_ablation_reduced --runs=runs        # Tiny-ImageNet prepared there
  python -m experiments.storm_ablation aggregate --table=storm_ablation_reduced --runs=runs

k = 1 is Mixup with the clean CE term (docs/DESIGN.md#storm). The StoRM paper's own ablation (its
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


REDUCED = 'configs/tinyimagenet_reduced.py'
BASE_LR = 0.1
# (objective, lr) at which k=4 and beta=0.5 are run: the best of the 2 x 2 block for k=2,
# beta=1 (top-1, mean of 2 seeds: sum/0.1 8.02, sum/0.05 9.20, mean/0.1 8.98, mean/0.05 9.85;
# README "Choosing StoRM's objective and learning rate").
BEST = ('mean', BASE_LR / 2)


def _storm_row(k: float, beta: float, objective: str, lr: float) -> tablelib.Row:
  return tablelib.Row(f'StoRM k={k} beta={beta} {objective} lr={lr:g}', f'{REDUCED}:storm',
                      {'mix.hparams.k': k, 'mix.hparams.beta': beta,
                       'mix.objective': objective, 'optim.lr': lr})


def _reduced_rows() -> tuple[tablelib.Row, ...]:
  rows = [tablelib.Row('Vanilla', f'{REDUCED}:vanilla'),
          # Does vanilla gain from the halved lr too? Separates "StoRM's two terms double the
          # step" from "this short schedule prefers a smaller lr for every method".
          tablelib.Row(f'Vanilla lr={BASE_LR / 2:g}', f'{REDUCED}:vanilla',
                       {'optim.lr': BASE_LR / 2}),
          tablelib.Row('Mixup', f'{REDUCED}:mixup')]
  rows += [_storm_row(2, 1.0, objective, lr)
           for objective in ('sum', 'mean') for lr in (BASE_LR, BASE_LR / 2)]
  rows += [_storm_row(4, 1.0, *BEST), _storm_row(2, 0.5, *BEST)]
  return tuple(rows)


TABLES = [
    tablelib.Table(name='storm_ablation_c100', columns=COLUMNS, seeds=1,
                   title='StoRM ablation: CIFAR-100, PreActResNet-18 (Co-Mixup protocol)',
                   rows=_rows('configs/cifar100_comixup.py:storm')),
    tablelib.Table(name='storm_ablation_tiny', columns=COLUMNS, seeds=1,
                   title='StoRM ablation: Tiny-ImageNet, PreActResNet-18 (PuzzleMix protocol)',
                   rows=_rows('configs/tinyimagenet_storm.py')),
    tablelib.Table(name='storm_ablation_reduced', seeds=2, baseline='Vanilla',
                   columns=COLUMNS + (tablelib.Column('nll', 'NLL'),),
                   title='StoRM objective and learning rate: reduced Tiny-ImageNet protocol '
                         '(PreActResNet-18 width 16, 20k images at 32x32, 6 epochs)',
                   note='Not a paper protocol: a CPU-sized comparison of settings.',
                   rows=_reduced_rows()),
]

if __name__ == '__main__':
  raise SystemExit(tablelib.main(TABLES))
