r"""Entry point: train and evaluate one config.

  python -m storm_jax.main --config=configs/digits_storm.py --workdir=runs/digits_storm
  python -m storm_jax.main --config=configs/tinyimagenet_storm.py --workdir=runs/tiny_storm \
      --config.mix.hparams.k=3

This file is intentionally kept short: everything else lives in `storm_jax.train`.
Multi-process (multi-host GPU / TPU pod): run the same command on every process; set
`--distributed` (or the JAX_COORDINATOR_ADDRESS environment variables) so that
`jax.distributed.initialize()` joins them.
"""

from __future__ import annotations

import json
import os
import sys

from absl import flags
from absl import logging
from ml_collections import config_flags

from storm_jax import cli
from storm_jax import errors

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and the preview.')
flags.DEFINE_bool('distributed', None, 'Call jax.distributed.initialize() (default: when '
                  'JAX_COORDINATOR_ADDRESS or a cluster environment is detected).')
config_flags.DEFINE_config_file('config', None, 'Config file (python, with get_config()).',
                                lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])

_CLUSTER_ENV = ('JAX_COORDINATOR_ADDRESS', 'SLURM_NTASKS', 'OMPI_COMM_WORLD_SIZE',
                'TPU_WORKER_HOSTNAMES', 'MEGASCALE_COORDINATOR_ADDRESS')


def use_compilation_cache(path: str) -> str | None:
  """Turns on JAX's persistent compilation cache in `path` (~ expanded); returns the folder.

  `$JAX_COMPILATION_CACHE_DIR`, when set, takes precedence; '' (and no variable) leaves the
  cache off. Programs that compile in under a second are not worth a disk entry.
  """
  import jax  # pylint: disable=g-import-not-at-top
  path = os.environ.get('JAX_COMPILATION_CACHE_DIR') or os.path.expanduser(path or '')
  if not path:
    return None
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)
  return path


def main(argv):
  if len(argv) > 1:
    raise errors.UserError(f'unexpected command-line arguments {argv[1:]} (flags are '
                           '--name=value).')
  # TensorFlow (input pipeline only) must not grab the accelerators JAX trains on.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')
  import jax  # pylint: disable=g-import-not-at-top
  distributed = FLAGS.distributed
  if distributed is None:
    distributed = any(os.environ.get(k) for k in _CLUSTER_ENV)
  if distributed:
    jax.distributed.initialize()
  from storm_jax import train  # pylint: disable=g-import-not-at-top
  cache = use_compilation_cache(FLAGS.config.compilation_cache_dir)
  if cache:
    logging.info('Compilation cache: %s', cache)
  logging.info('JAX process %d / %d, local devices: %s', jax.process_index(),
               jax.process_count(), jax.local_devices())
  logging.info('Config:\n%s', FLAGS.config if FLAGS.verbose else cli.format_config(FLAGS.config))
  summary = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  if jax.process_index() == 0:
    print('Summary: ' + json.dumps(summary, indent=1, default=str))
  if summary.get('status') == 'preempted':  # saved after SIGTERM: tell the scheduler to requeue
    sys.exit(errors.EXIT_PREEMPTED)


if __name__ == '__main__':
  cli.run(main)
