r"""Command line of `storm_jax.evaluation.runner`: the papers' metrics of a run's checkpoint.

  python -m storm_jax.evaluate --config=configs/cifar100_preactresnet18.py:storm \
      --workdir=runs/c100_storm --fgsm_eps=4,8 --corruptions=all19
  python -m storm_jax.evaluate --config=configs/tinyimagenet_storm.py --workdir=runs/tin_storm \
      --wsol --fgsm_eps=

Writes eval_metrics.json, eval_summary.md and reliability.png to the workdir and prints the
metrics; see `storm_jax.evaluation.runner` for what each metric is.
"""

from __future__ import annotations

import json

from absl import flags
from ml_collections import config_flags

from storm_jax import cli
from storm_jax import errors
from storm_jax.evaluation import runner

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Training config of the run.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory (holds checkpoints/).')
_FGSM_EPS = flags.DEFINE_list('fgsm_eps', ['4', '8'],
                              'FGSM epsilons in 1/255 pixel units; empty for none.')
_PGD = flags.DEFINE_bool('pgd', False, 'Also PGD (l-inf, random start).')
_PGD_EPS = flags.DEFINE_float('pgd_eps', 4.0, 'PGD epsilon in 1/255 units (PuzzleMix: 4).')
_PGD_STEP = flags.DEFINE_float('pgd_step', 2.0, 'PGD step size in 1/255 units (PuzzleMix: 2).')
_PGD_STEPS = flags.DEFINE_integer('pgd_steps', 20, 'PGD iterations (PuzzleMix: 20).')
_CORRUPTIONS = flags.DEFINE_string(
    'corruptions', '', "mCE over '<dataset>_corrupted': 'all19', 'standard15', a comma list of "
    "corruption names, or '' for none.")
_ECE_BINS = flags.DEFINE_integer('ece_bins', 10, 'ECE bins (10 as Co-Mixup; 15 as Guo et al.).')
_SPLIT = flags.DEFINE_string('split', '', "Eval split ('' = the dataset's eval split).")
_WSOL = flags.DEFINE_bool('wsol', False, 'Also CAM weakly-supervised localisation accuracy '
                          '(needs a dataset with boxes, e.g. tiny_imagenet, caltech_birds2011).')
_WSOL_CAM_THRESHOLD = flags.DEFINE_float(
    'wsol_cam_threshold', runner.WSOL_CAM_THRESHOLD, 'CAM binarisation threshold, a fraction '
    'of the max (0.25; multi-mix Tab. VI fine-tuning uses 0.75).')


def main(argv):
  if len(argv) > 1:
    raise errors.UserError(f'unexpected command-line arguments {argv[1:]} (flags are '
                           '--name=value).')
  if _WORKDIR.value is None or _CONFIG.value is None:
    raise errors.UserError('--config and --workdir are required.')
  metrics = runner.evaluate_checkpoint(
      _CONFIG.value, _WORKDIR.value, fgsm_eps=[float(e) for e in _FGSM_EPS.value],
      pgd=_PGD.value, pgd_eps=_PGD_EPS.value, pgd_step=_PGD_STEP.value,
      pgd_steps=_PGD_STEPS.value, corruptions=_CORRUPTIONS.value, ece_bins=_ECE_BINS.value,
      split=_SPLIT.value, wsol=_WSOL.value, wsol_cam_threshold=_WSOL_CAM_THRESHOLD.value)
  print(json.dumps(metrics, indent=1, sort_keys=True))


if __name__ == '__main__':
  cli.run(main)
