r"""Prepares a dataset for storm_jax (tfds ArrayRecord files in the tfds data_dir).

    python -m storm_jax.data.prepare tiny_imagenet --manual_dir=/path/holding/zip
    python -m storm_jax.data.prepare cifar100_corrupted --data_dir=/data/tfds
    python -m storm_jax.data.prepare cifar10      # needs network (tfds downloads it)

Datasets prepared earlier as TFRecord get an ArrayRecord copy next to them.
"""

from __future__ import annotations

from absl import flags
from absl import logging

from storm_jax import cli
from storm_jax import data
from storm_jax import errors

_DATA_DIR = flags.DEFINE_string('data_dir', None, 'tfds data_dir (default $TFDS_DATA_DIR or '
                                '~/tensorflow_datasets).')
_MANUAL_DIR = flags.DEFINE_string('manual_dir', None, 'Folder with manually downloaded files '
                                  '(default <data_dir>/downloads/manual).')
_DOWNLOAD = flags.DEFINE_bool('download', True, 'Let tfds download missing source files.')


def main(argv):
  if len(argv) != 2:
    raise errors.UserError('expected one dataset name: python -m storm_jax.data.prepare NAME '
                           '[--data_dir=...] [--manual_dir=...]')
  for path in data.prepare(argv[1], data_dir=_DATA_DIR.value, manual_dir=_MANUAL_DIR.value,
                           download=_DOWNLOAD.value):
    logging.info('Prepared %s', path)
    print(path)


if __name__ == '__main__':
  cli.run(main)
