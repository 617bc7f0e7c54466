"""multi-mix Table I: test error on CIFAR-100 (PreActResNet-18 / WRN-16-8 / ResNeXt-29-4-24,
300 epochs, Co-Mixup protocol) and Tiny-ImageNet (PreActResNet-18), 3 seeds
(docs/DESIGN.md#reproduction).

The paper's multi-mix row uses PuzzleMix as the base method, which multi-mix here does not
take as a base; our rows are multi-mix over input mixup and over CutMix (K = 5), with the
paper's input-mixup / CutMix rows as the reference for K = 1.

  python -m experiments.multimix_table1 commands   # or: run / aggregate
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # `python experiments/x.py`

from experiments import tablelib  # pylint: disable=wrong-import-position

C100 = 'configs/cifar100_comixup.py'
ERR = (tablelib.Column('top1_err', 'top-1 err %'),)
PAPER = {  # arch -> (no mixup, Input, CutMix, Manifold Mixup, Cutout, FMix)
    'preactresnet18': (23.53, 22.49, 21.29, 21.62, 21.12, 21.52),
    'wrn16_8': (21.93, 20.18, 20.14, 20.49, 19.19, 19.75),
    'resnext29_4_24': (21.84, 21.78, 20.92, 21.45, 20.86, 21.87),
}
MULTI_CUTMIX = {'mix.hparams.base': 'cutmix'}
COMIXUP = {'preactresnet18': 19.89, 'wrn16_8': 19.24, 'resnext29_4_24': 19.43}  # mean of 3
PUZZLEMIX = {'preactresnet18': 20.61, 'wrn16_8': 19.27, 'resnext29_4_24': 19.74}  # mean of 3


def _c100(arch):
  p = PAPER[arch]
  return tablelib.Table(
      name=f'multimix_t1_c100_{arch}', title=f'multi-mix Table I: CIFAR-100, {arch}',
      columns=ERR, rows=(
          tablelib.Row('No mixup', f'{C100}:vanilla', {'model.name': arch},
                       paper={'top1_err': p[0]}),
          tablelib.Row('Input mixup', f'{C100}:mixup', {'model.name': arch},
                       paper={'top1_err': p[1]}),
          tablelib.Row('CutMix', f'{C100}:cutmix', {'model.name': arch, 'mix.hparams.prob': 1.0},
                       paper={'top1_err': p[2]}),
          tablelib.Row('Co-Mixup', f'{C100}:comixup', {'model.name': arch, 'loss': 'softmax_bce'},
                       paper={'top1_err': COMIXUP[arch]}),
          tablelib.Row('PuzzleMix', f'{C100}:puzzlemix', {'model.name': arch},
                       paper={'top1_err': PUZZLEMIX[arch]}),
          tablelib.Row('Manifold mixup', f'{C100}:manifold_mixup', {'model.name': arch},
                       paper={'top1_err': p[3]}),
          tablelib.Row('Cutout', f'{C100}:cutout', {'model.name': arch}, paper={'top1_err': p[4]}),
          tablelib.Row('FMix', f'{C100}:fmix', {'model.name': arch}, paper={'top1_err': p[5]}),
          tablelib.Row('Multi-mix (mixup, K5)', f'{C100}:multimix', {'model.name': arch}),
          tablelib.Row('Multi-mix (cutmix, K5)', f'{C100}:multimix',
                       {'model.name': arch, **MULTI_CUTMIX}),
      ))


TINY = tablelib.Table(
    name='multimix_t1_tiny', title='multi-mix Table I: Tiny-ImageNet, PreActResNet-18',
    columns=ERR, rows=(
        tablelib.Row('No mixup', 'configs/tinyimagenet_vanilla.py', paper={'top1_err': 43.54}),
        tablelib.Row('Input mixup', 'configs/tinyimagenet_mixup.py', paper={'top1_err': 43.35}),
        tablelib.Row('CutMix', 'configs/tinyimagenet_cutmix.py', paper={'top1_err': 43.11}),
        tablelib.Row('Co-Mixup', 'configs/tinyimagenet_comixup.py', paper={'top1_err': 35.94}),
        tablelib.Row('PuzzleMix', 'configs/tinyimagenet_puzzlemix.py', paper={'top1_err': 36.79}),
        tablelib.Row('Manifold mixup', 'configs/tinyimagenet_manifold_mixup.py',
                     paper={'top1_err': 41.21}),
        tablelib.Row('Cutout', 'configs/tinyimagenet_cutout.py', paper={'top1_err': 40.52}),
        tablelib.Row('FMix', 'configs/tinyimagenet_fmix.py', paper={'top1_err': 42.38}),
        tablelib.Row('Multi-mix (mixup, K5)', 'configs/tinyimagenet_multimix.py'),
    ))

TABLES = [_c100(a) for a in PAPER] + [TINY]

if __name__ == '__main__':
  raise SystemExit(tablelib.main(TABLES))
