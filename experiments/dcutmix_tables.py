"""DCutMix Tables 2 and 3: top-1 (/ top-5) error of K-image mixing (docs/DESIGN.md#reproduction).

Table 2: CIFAR-100, PreActResNet-18 / WRN-16-8 / ResNeXt-29-4-24 (Co-Mixup protocol,
300 epochs). Table 3: ImageNet-1k ResNet-50, 300 epochs (CutMix protocol), K=3, alpha=1/3.
Table 1 (PyramidNet-110/200) is not reproduced: storm_jax has no PyramidNet.

  python -m experiments.dcutmix_tables commands   # or: run / aggregate
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # `python experiments/x.py`

from experiments import tablelib  # pylint: disable=wrong-import-position

C100 = 'configs/cifar100_comixup.py'
IN1K = 'configs/imagenet_resnet50_300ep.py'
ERR = tablelib.Column('top1_err', 'top-1 err %')
ERR5 = tablelib.Column('top5_err', 'top-5 err %')
T2 = {  # arch -> (Vanilla, Mixup, CutMix, DMixup, DCutMix)
    'preactresnet18': (23.59, 22.43, 21.29, 21.68, 20.50),
    'wrn16_8': (21.70, 20.08, 20.55, 19.13, 18.64),
    'resnext29_4_24': (21.79, 21.70, 22.28, 20.09, 20.48),
}
T2_COMIXUP = {'preactresnet18': 19.87, 'wrn16_8': 19.15, 'resnext29_4_24': 19.78}
METHODS = (('Vanilla', 'vanilla', {}), ('Mixup', 'mixup', {}), ('CutMix', 'cutmix', {}),
           ('DMixup', 'dmixup', {'mix.hparams.K': 3, 'mix.hparams.alpha': 1.0}),
           ('DCutMix', 'dcutmix', {'mix.hparams.K': 5, 'mix.hparams.alpha': 1.0,
                                   'mix.hparams.prob': 0.5}))


T2_PUZZLEMIX = {'preactresnet18': 20.62, 'wrn16_8': 19.24, 'resnext29_4_24': 21.12}


def _t2(arch):
  return tablelib.Table(
      name=f'dcutmix_t2_c100_{arch}', title=f'DCutMix Table 2: CIFAR-100, {arch} (300 ep)',
      columns=(ERR,), rows=tuple(
          tablelib.Row(label, f'{C100}:{m}', {'model.name': arch, **ov},
                       paper={'top1_err': T2[arch][i]})
          for i, (label, m, ov) in enumerate(METHODS)) + (
              tablelib.Row('Co-Mixup', f'{C100}:comixup',
                           {'model.name': arch, 'loss': 'softmax_bce'},
                           paper={'top1_err': T2_COMIXUP[arch]}),
              tablelib.Row('PuzzleMix', f'{C100}:puzzlemix', {'model.name': arch},
                           paper={'top1_err': T2_PUZZLEMIX[arch]}),))


T3 = tablelib.Table(
    name='dcutmix_t3_in1k', title='DCutMix Table 3: ImageNet-1k, ResNet-50 (300 ep)',
    columns=(ERR, ERR5), seeds=1, rows=(
        tablelib.Row('Baseline', f'{IN1K}:vanilla', paper={'top1_err': 23.68, 'top5_err': 7.05}),
        tablelib.Row('Mixup', f'{IN1K}:mixup', paper={'top1_err': 22.58, 'top5_err': 6.40}),
        tablelib.Row('CutMix', f'{IN1K}:cutmix', paper={'top1_err': 21.40, 'top5_err': 5.92}),
        tablelib.Row('Manifold Mixup', f'{IN1K}:manifold_mixup',
                     paper={'top1_err': 22.50, 'top5_err': 6.21}),
        tablelib.Row('DMixup (K3, α⅓)', f'{IN1K}:dmixup',
                     paper={'top1_err': 21.88, 'top5_err': 6.15}),
        tablelib.Row('DCutMix (K3, α⅓)', f'{IN1K}:dcutmix',
                     paper={'top1_err': 21.76, 'top5_err': 5.91}),
    ))

TABLES = [_t2(a) for a in T2] + [T3]

if __name__ == '__main__':
  raise SystemExit(tablelib.main(TABLES))
