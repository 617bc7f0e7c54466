"""StoRM Table 4: ImageNet-1k, ResNet-50, 100 epochs (AutoMix/OpenMixup protocol).

  python -m experiments.storm_table4_imagenet commands   # or: run / aggregate
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # `python experiments/x.py`

from experiments import tablelib  # pylint: disable=wrong-import-position

CONFIG = 'configs/imagenet_resnet50.py'
ACC = (tablelib.Column('top1_acc', 'top-1 %'), tablelib.Column('top5_acc', 'top-5 %'))

TABLES = [tablelib.Table(
    name='storm_t4_in1k', title='StoRM Table 4: ImageNet-1k, ResNet-50 (100 ep)', columns=ACC,
    seeds=1, rows=(
        tablelib.Row('Vanilla', f'{CONFIG}:vanilla', paper={'top1_acc': 76.83, 'top5_acc': 92.66}),
        tablelib.Row('Mixup', f'{CONFIG}:mixup', paper={'top1_acc': 77.12, 'top5_acc': 93.52}),
        tablelib.Row('CutMix', f'{CONFIG}:cutmix', paper={'top1_acc': 77.17, 'top5_acc': 93.45}),
        tablelib.Row('Co-Mixup', f'{CONFIG}:comixup', paper={'top1_acc': 77.63, 'top5_acc': 93.84}),
        tablelib.Row('Guided-SR', f'{CONFIG}:guided_sr',
                     paper={'top1_acc': 77.20, 'top5_acc': 93.66}),
        # The paper's "GuidedMixup" row: Guided-AP.
        tablelib.Row('GuidedMixup', f'{CONFIG}:guided_ap',
                     paper={'top1_acc': 77.53, 'top5_acc': 93.86}),
        tablelib.Row('Manifold Mixup', f'{CONFIG}:manifold_mixup',
                     paper={'top1_acc': 77.01, 'top5_acc': 93.50}),
        tablelib.Row('AugMix', f'{CONFIG}:augmix', paper={'top1_acc': 76.75, 'top5_acc': 93.30}),
        tablelib.Row('SaliencyMix', f'{CONFIG}:saliencymix', paper={'top1_acc': 77.14}),
        tablelib.Row('StoRM', f'{CONFIG}:storm', paper={'top1_acc': 78.30, 'top5_acc': 94.16}),
    ))]

if __name__ == '__main__':
  raise SystemExit(tablelib.main(TABLES))
