"""R-Mix Table 6: CIFAR-100 PreActResNet-18 calibration and robustness — ECE (10 bins) and
FGSM error at eps = 8/255 (docs/DESIGN.md#reproduction, #metrics-adversarial, #metrics-ece).
Evaluates the Table 4 PreActResNet-18 runs.

  python -m experiments.rmix_table6_calibration commands   # or: run / aggregate
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # `python experiments/x.py`

from experiments import tablelib  # pylint: disable=wrong-import-position

CONFIG = 'configs/cifar100_rmix_onecycle.py'
COLUMNS = (tablelib.Column('ece', 'ECE %'),
           tablelib.Column('fgsm_err_8', 'FGSM err % (8/255)'))
EVAL = {'fgsm_eps': '8'}

TABLES = [tablelib.Table(
    name='rmix_t4_c100_preactresnet18', title='R-Mix Table 6: CIFAR-100, PreActResNet-18',
    columns=COLUMNS, rows=(
        tablelib.Row('Vanilla', f'{CONFIG}:vanilla', {'model.name': 'preactresnet18'},
                     paper={'ece': 10.25, 'fgsm_err_8': 87.12}, eval_flags=EVAL),
        tablelib.Row('Input Mixup', f'{CONFIG}:mixup', {'model.name': 'preactresnet18'},
                     paper={'ece': 18.50, 'fgsm_err_8': 81.30}, eval_flags=EVAL),
        tablelib.Row('CutMix+', f'{CONFIG}:cutmix',
                     {'model.name': 'preactresnet18', 'mix.hparams.prob': 1.0},
                     paper={'ece': 18.41, 'fgsm_err_8': 86.96}, eval_flags=EVAL),
        # The same run as R-Mix Table 4's Co-Mixup row (its own 300-epoch protocol).
        tablelib.Row('Co-Mixup', 'configs/cifar100_comixup.py:comixup',
                     {'model.name': 'preactresnet18', 'loss': 'softmax_bce'},
                     paper={'ece': 5.83, 'fgsm_err_8': 77.61}, eval_flags=EVAL),
        tablelib.Row('R-Mix', f'{CONFIG}:rmix', {'model.name': 'preactresnet18'},
                     paper={'ece': 3.73, 'fgsm_err_8': 77.08}, eval_flags=EVAL),
        tablelib.Row('Manifold Mixup', f'{CONFIG}:manifold_mixup', {'model.name': 'preactresnet18'},
                     paper={'ece': 7.60, 'fgsm_err_8': 80.29}, eval_flags=EVAL),
    ))]

if __name__ == '__main__':
  raise SystemExit(tablelib.main(TABLES))
