"""StoRM Table 1: CIFAR-10 test error, WRN-28-10, IPMix protocol, 3 seeds (SPECS §13.3).

Only StoRM's numbers survived the text extraction of the paper (3.02 ± 0.06 on WRN-28-10);
the baselines' paper column is therefore empty. The ResNet-18 column (3.86 ± 0.09) is not
reproduced: our ResNet-18 has the ImageNet stem.

  python -m experiments.storm_table1_cifar10 commands   # or: run / aggregate
"""

from experiments import tablelib

CONFIG = 'configs/cifar10_wrn28_10.py'
ERR = (tablelib.Column('top1_err', 'top-1 err %', higher_is_better=False),)

TABLES = [tablelib.Table(
    name='storm_t1_c10_wrn28_10', title='StoRM Table 1: CIFAR-10, WRN-28-10 (IPMix protocol)',
    columns=ERR, rows=(
        tablelib.Row('Vanilla', f'{CONFIG}:vanilla'),
        tablelib.Row('MixUp', f'{CONFIG}:mixup'),
        tablelib.Row('CutMix', f'{CONFIG}:cutmix'),
        tablelib.Row('StoRM', f'{CONFIG}:storm', paper={'top1_err': 3.02}),
    ))]

if __name__ == '__main__':
  raise SystemExit(tablelib.main(TABLES))
