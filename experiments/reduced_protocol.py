"""Reduced protocol: vanilla / mixup / cutmix / storm on a CPU in well under an hour.

Not a paper protocol (see configs/reduced_digits.py): a 300-image subset of the bundled 8x8
digits, the small CNN, 60 epochs, 5 seeds. It checks that the methods train and lets one see
their ranking without a GPU; with 296 test images one image is 0.34 points, so differences
below ~1 point are noise. There is no paper column.

  python -m experiments.reduced_protocol run --runs=runs/reduced        # ~15 min on 2 cores
  python -m experiments.reduced_protocol aggregate --runs=runs/reduced
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # `python experiments/x.py`

from experiments import tablelib  # pylint: disable=wrong-import-position

CONFIG = 'configs/reduced_digits.py'
COLUMNS = (tablelib.Column('top1_acc', 'top-1 %'), tablelib.Column('nll', 'NLL'),
           tablelib.Column('ece', 'ECE %'))

TABLES = [
    tablelib.Table(
        name='reduced_digits', columns=COLUMNS, seeds=5,
        title='Reduced protocol (not a paper protocol): 300 digits, small CNN, 60 epochs',
        note='CPU check of the ranking only; 296 test images (1 image = 0.34 points).',
        rows=tuple(tablelib.Row(label, f'{CONFIG}:{method}') for label, method in (
            ('Vanilla', 'vanilla'), ('Mixup', 'mixup'), ('CutMix', 'cutmix'),
            ('StoRM', 'storm')))),
]

if __name__ == '__main__':
  raise SystemExit(tablelib.main(TABLES))
