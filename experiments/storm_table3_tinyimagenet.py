"""StoRM Table 3: Tiny-ImageNet, PreActResNet-18 (stride-2 stem), PuzzleMix protocol.

Top-1 / top-5 accuracy and FGSM error at eps = 4/255 (docs/DESIGN.md#reproduction; the paper's table
is partly garbled in extraction, the values are the reconstructed ones). The rows without a
paper number are the other methods of storm_jax on the same protocol.

  python -m experiments.storm_table3_tinyimagenet commands   # or: run / aggregate
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # `python experiments/x.py`

from experiments import tablelib  # pylint: disable=wrong-import-position

COLUMNS = (tablelib.Column('top1_acc', 'top-1 %'), tablelib.Column('top5_acc', 'top-5 %'),
           tablelib.Column('fgsm_err_4', 'FGSM err % (4/255)'))
EVAL = {'fgsm_eps': '4'}


def _row(label, method, top1=None, top5=None, fgsm=None, overrides=None):
  return tablelib.Row(label, f'configs/tinyimagenet_{method}.py', overrides or {},
                      eval_flags=EVAL, paper={'top1_acc': top1, 'top5_acc': top5,
                                              'fgsm_err_4': fgsm})


TABLES = [tablelib.Table(
    name='storm_t3_tiny', title='StoRM Table 3: Tiny-ImageNet, PreActResNet-18 (1200 ep)',
    columns=COLUMNS, rows=(
        _row('Vanilla', 'vanilla', 57.23, 73.65, 90.60),
        _row('MixUp', 'mixup', 56.99, 73.02, 89.85),
        _row('CutMix', 'cutmix', 56.67, 73.59, 87.10),
        _row('PuzzleMix', 'puzzlemix', 63.48, 75.52, 89.87),
        _row('Manifold Mixup', 'manifold_mixup', 58.01, 74.12, 89.00),
        _row('AugMix', 'augmix', 55.97, 74.68, 90.00),
        _row('SaliencyMix', 'saliencymix', 56.54, 76.14, 93.75),
        _row('SaliencyMix (uniform centre, as released)', 'saliencymix', 56.54, 76.14, 93.75,
             {'mix.hparams.centre': 'uniform'}),
        _row('HMix', 'hmix'),
        _row('GMix', 'gmix'),
        _row('Region Mixup', 'region_mixup'),
        _row('R-Mix', 'rmix'),
        _row('DCutMix', 'dcutmix'),
        _row('Multi-mix (mixup)', 'multimix'),
        _row('Co-Mixup', 'comixup', 64.15, None, 91.11),
        _row('Guided-SR', 'guided_sr', 59.44, 75.54),
        _row('Guided-AP', 'guided_ap', 64.63, 82.49),
        _row('StoRM', 'storm', 69.49, 87.23, 82.84),
    ))]

if __name__ == '__main__':
  raise SystemExit(tablelib.main(TABLES))
