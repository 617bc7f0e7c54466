r"""Prepares a dataset for storm_jax (tfds ArrayRecord files in the tfds data_dir).

    python -m storm_jax.data.prepare tiny_imagenet --manual_dir=/path/holding/zip
    python -m storm_jax.data.prepare cifar100_corrupted --data_dir=/data/tfds
    python -m storm_jax.data.prepare cifar10      # needs network (tfds downloads it)
    python -m storm_jax.data.prepare fractals --fractal_size=32 --fractal_count=10000

Datasets prepared earlier as TFRecord get an ArrayRecord copy next to them.
"""

from __future__ import annotations

from absl import flags
from absl import logging

from storm_jax import cli
from storm_jax import data
from storm_jax import errors
from storm_jax.data import fractals

_DATA_DIR = flags.DEFINE_string('data_dir', None, 'tfds data_dir (default $TFDS_DATA_DIR or '
                                '~/tensorflow_datasets).')
_MANUAL_DIR = flags.DEFINE_string('manual_dir', None, 'Folder with manually downloaded files '
                                  '(default <data_dir>/downloads/manual).')
_DOWNLOAD = flags.DEFINE_bool('download', True, 'Let tfds download missing source files.')
_FRACTAL_SIZE = flags.DEFINE_integer('fractal_size', None, 'fractals: picture side in pixels '
                                     '(default 32; the training resolution).')
_FRACTAL_COUNT = flags.DEFINE_integer('fractal_count', None, 'fractals: number of pictures '
                                      '(default 10000).')
_FRACTAL_SEED = flags.DEFINE_integer('fractal_seed', None, 'fractals: seed of the set '
                                     '(default 0).')


def _name_with_flags(name: str) -> str:
  """`fractals` + the --fractal_* flags -> `fractals/<H>x<W>_<count>_seed<seed>`."""
  flagged = (_FRACTAL_SIZE.value, _FRACTAL_COUNT.value, _FRACTAL_SEED.value)
  if all(v is None for v in flagged):
    return name
  if name != 'fractals':
    raise errors.UserError(f'--fractal_* flags only apply to the fractals dataset, not {name!r}.')
  size, count, seed = (d if v is None else v for v, d in zip(
      flagged, (fractals.DEFAULT_SIZE, fractals.DEFAULT_COUNT, fractals.DEFAULT_SEED)))
  return f'fractals/{fractals.config_name(size, count, seed)}'


def main(argv):
  if len(argv) != 2:
    raise errors.UserError('expected one dataset name: python -m storm_jax.data.prepare NAME '
                           '[--data_dir=...] [--manual_dir=...]')
  name = _name_with_flags(argv[1])
  for path in data.prepare(name, data_dir=_DATA_DIR.value, manual_dir=_MANUAL_DIR.value,
                           download=_DOWNLOAD.value):
    logging.info('Prepared %s', path)
    print(path)


if __name__ == '__main__':
  cli.run(main)
