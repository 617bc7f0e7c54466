"""StoRM Table 1: CIFAR-10 test error, WRN-28-10, IPMix protocol, 3 seeds
(docs/DESIGN.md#reproduction).

Only StoRM's numbers survived the text extraction of the paper (3.02 ± 0.06 on WRN-28-10,
3.86 ± 0.09 on ResNet-18); the baselines' paper column is therefore empty. ResNet-18 uses
the CIFAR stem (3x3 conv, no max-pool) as IPMix's code.

  python -m experiments.storm_table1_cifar10 commands   # or: run / aggregate
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # `python experiments/x.py`

from experiments import tablelib  # pylint: disable=wrong-import-position

ERR = (tablelib.Column('top1_err', 'top-1 err %'),)


def _table(name, arch, config, storm_err):
  # One config file per architecture: a row that switched `model.name` by override would keep
  # the file's model options (docs/DESIGN.md#model-options).
  return tablelib.Table(
      name=name, title=f'StoRM Table 1: CIFAR-10, {arch} (IPMix protocol)', columns=ERR,
      rows=(tablelib.Row('Vanilla', f'{config}:vanilla'),
            tablelib.Row('MixUp', f'{config}:mixup'),
            tablelib.Row('CutMix', f'{config}:cutmix'),
            tablelib.Row('AugMix', f'{config}:augmix'),
            # PixMix / IPMix: mixing pictures from the generated 'fractals' set (the
            # references download fractals + feature visualisations); their paper cells are
            # among the lost ones.
            tablelib.Row('PixMix', f'{config}:pixmix'),
            tablelib.Row('IPMix', f'{config}:ipmix'),
            tablelib.Row('StoRM', f'{config}:storm', paper={'top1_err': storm_err})))


TABLES = [_table('storm_t1_c10_wrn28_10', 'WRN-28-10', 'configs/cifar10_wrn28_10.py', 3.02),
          _table('storm_t1_c10_resnet18', 'ResNet-18', 'configs/cifar10_resnet18.py', 3.86)]

if __name__ == '__main__':
  raise SystemExit(tablelib.main(TABLES))
