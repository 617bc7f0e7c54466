r"""Images/s of the full train step per method, and the mixing overhead vs vanilla.

  python experiments/bench_train_step.py                      # Tiny-ImageNet PreActResNet-18
  python experiments/bench_train_step.py --methods=vanilla,storm_k2 --steps=5

The step is the real `train.train_step` (normalisation, mixing, the method's objective,
the SGD update) on the `configs/tinyimagenet_*.py` model and batch, fed with a fixed
synthetic uint8 batch so that the input pipeline is not measured. Steady-state time per
step (`evaluation.time_step`: the median of `--steps` calls, each waited for), compilation
excluded and reported separately (docs/DESIGN.md#metrics-overhead): overhead = (T_method -
T_vanilla) / T_vanilla (`evaluation.augmentation_overhead`).
"""

from __future__ import annotations

import json
import pathlib
import sys

from absl import app
from absl import flags
import jax
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from configs import tinyimagenet  # pylint: disable=g-import-not-at-top,wrong-import-position
from storm_jax import data  # pylint: disable=g-import-not-at-top,wrong-import-position
from storm_jax import evaluation  # pylint: disable=g-import-not-at-top,wrong-import-position
from storm_jax import train  # pylint: disable=g-import-not-at-top,wrong-import-position

METHODS = {
    'vanilla': ('none', {}),
    'mixup': ('mixup', dict(alpha=0.2)),
    'cutmix': ('cutmix', dict(alpha=1.0)),
    'storm_k2': ('storm', dict(k=2, beta=1.0)),
    'storm_k4': ('storm', dict(k=4, beta=1.0)),
    'region_mixup': ('region_mixup', dict(k=2, alpha=1.0)),
    'rmix': ('rmix', dict(alpha=1.0, grid_sizes=(2, 4))),
    'multimix': ('multimix', dict(base='mixup', K=5, alpha=1.0)),
}

_METHODS = flags.DEFINE_list('methods', 'vanilla,mixup,cutmix,storm_k2,storm_k4',
                             f'Comma-separated, from {sorted(METHODS)}.')
_STEPS = flags.DEFINE_integer('steps', 5, 'Timed steps per method (after compilation and one '
                             'warm-up step; the median is reported).')
_BATCH = flags.DEFINE_integer('batch_size', 100, 'Global batch size.')
_WIDTH = flags.DEFINE_integer('width', 0, 'Model width override (0 = the paper model).')
_OUT = flags.DEFINE_string('out', '', 'Optional JSON output path.')


def bench(method: str, batch_size: int, steps: int, width: int) -> dict[str, float]:
  name, hparams = METHODS[method]
  config = tinyimagenet.get_config(name, dict(hparams))
  config.batch_size = batch_size
  if width:
    config.model.kwargs.width = width
  train.validate_config(config)
  info = train.dataset_info(config)
  mesh = train.make_mesh()
  fns = train.make_steps(config, mesh, info)
  key = jax.random.key(0)
  state = train.create_train_state(config, fns.ctx.model, key, mesh,
                                   input_shape=info.image_shape)
  rng = np.random.default_rng(0)
  batch = data.to_global({
      'image': rng.integers(0, 256, (batch_size, *info.image_shape), dtype=np.uint8),
      'label': rng.integers(0, info.num_classes, (batch_size,), dtype=np.int32)},
                         fns.batch_sharding)
  stats = evaluation.time_step(fns.train, (state, batch, key), warmup=1, repeats=steps,
                                carry=True)
  dt = stats['median_s']
  return {'step_s': dt, 'images_per_s': batch_size / dt, 'compile_s': stats['compile_s'],
          'step_std_s': stats['std_s']}


def main(argv):
  del argv
  results = {}
  print(f'devices: {jax.device_count()} x {jax.devices()[0].device_kind}; batch '
        f'{_BATCH.value}; {_STEPS.value} timed steps', flush=True)
  for method in _METHODS.value:
    results[method] = bench(method, _BATCH.value, _STEPS.value, _WIDTH.value)
    print(f'{method:14s} {results[method]["images_per_s"]:9.1f} img/s  '
          f'step {results[method]["step_s"] * 1e3:8.1f} ms  compile '
          f'{results[method]["compile_s"]:6.1f} s', flush=True)
  if 'vanilla' in results:
    t_van = results['vanilla']['step_s']
    print('overhead vs vanilla = (T_method - T_vanilla) / T_vanilla:')
    for method, r in results.items():
      r['overhead'] = evaluation.augmentation_overhead(r['step_s'], t_van)
      print(f'  {method:14s} {100 * r["overhead"]:+7.1f} %')
  if _OUT.value:
    pathlib.Path(_OUT.value).write_text(json.dumps(results, indent=1))


if __name__ == '__main__':
  app.run(main)
