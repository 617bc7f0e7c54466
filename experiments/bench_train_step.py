r"""Images/s of the full train step per method, and the mixing overhead vs vanilla.

  python experiments/bench_train_step.py                      # Tiny-ImageNet PreActResNet-18
  python experiments/bench_train_step.py --methods=vanilla,storm_k2 --steps=5
  python experiments/bench_train_step.py --config=imagenet --dtype=bfloat16 --batch_size=128
  python experiments/bench_train_step.py --methods=vanilla,comixup --rounds=5   # loaded machine

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
import time

from absl import app
from absl import flags
import jax
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from configs import imagenet_resnet50  # pylint: disable=g-import-not-at-top,wrong-import-position
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
    'comixup': ('comixup', dict(block_num=4, part=20)),
    'guided_sr': ('guided_mixup', dict(saliency='sr', prob=1.0)),
    'guided_ap': ('guided_mixup', dict(saliency='ap', prob=1.0)),
    'puzzlemix': ('puzzlemix', dict(solver='chains')),
    # The Tiny-ImageNet protocols' settings: clean_lam 1 (the saliency pass's parameter gradient
    # kept), PuzzleMix on the block grid with the default exact solver, its adversarial option.
    'puzzlemix_exact': ('puzzlemix', dict(t_size=-1, clean_lam=1.0)),
    'puzzlemix_adv': ('puzzlemix', dict(solver='chains', t_size=-1, clean_lam=1.0, adv_p=1.0)),
    'guided_ap_clean': ('guided_mixup', dict(saliency='ap', prob=1.0, clean_lam=1.0)),
    'cutout': ('cutout', dict(length=16)),
    'saliencymix': ('saliencymix', dict(alpha=1.0, prob=1.0)),
    'fmix': ('fmix', dict(alpha=1.0, decay_power=3.0)),
    'resizemix': ('resizemix', dict(scope=(0.1, 0.8))),
    'augmix': ('augmix', dict(width=3, depth=-1, severity=3.0, jsd=True, jsd_weight=12.0)),
    'manifold_mixup': ('manifold_mixup', dict(alpha=2.0)),
    'pixmix': ('pixmix', dict(k=4, beta=3.0, severity=3.0, all_ops=True)),
    'ipmix': ('ipmix', dict(jsd=True, jsd_weight=12.0)),
}
# Model and batch of each --config: Tiny-ImageNet PreActResNet-18, ImageNet ResNet-50.
CONFIGS = ('tinyimagenet', 'imagenet')

_METHODS = flags.DEFINE_list('methods', 'vanilla,mixup,cutmix,storm_k2,storm_k4',
                             f'Comma-separated, from {sorted(METHODS)}.')
_STEPS = flags.DEFINE_integer('steps', 5, 'Timed steps per method (after compilation and one '
                             'warm-up step; the median is reported).')
_BATCH = flags.DEFINE_integer('batch_size', 100, 'Global batch size.')
_WIDTH = flags.DEFINE_integer('width', 0, 'Model width override (0 = the paper model).')
_OUT = flags.DEFINE_string('out', '', 'Optional JSON output path.')
_CONFIG = flags.DEFINE_enum('config', 'tinyimagenet', CONFIGS, 'Model and image size.')
_DTYPE = flags.DEFINE_enum('dtype', '', ('', *train.COMPUTE_DTYPES),
                           "config.compute_dtype ('' = the config's own: float32 for "
                           'tinyimagenet, bfloat16 for imagenet).')
_SINGLE_PASS = flags.DEFINE_bool('single_pass', False,
                                 'config.mix.single_pass: clean + mixed in one pass.')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 0, 'Image size override (0 = the dataset).')
_ROUNDS = flags.DEFINE_integer(
    'rounds', 0, 'On a loaded machine: compile every method first, then time them in turn, '
    'one step each per round, for this many rounds; the overhead is the median over rounds of '
    'the per-round ratio to vanilla (0 = time each method on its own, `--steps` calls).')


def make_config(method: str, *, config: str = 'tinyimagenet', batch_size: int = 100,
                width: int = 0, dtype: str = '', single_pass: bool = False,
                image_size: int = 0, model: str = ''):
  """The `--config` experiment config with `method`'s mixer and the overrides."""
  name, hparams = METHODS[method]
  if config == 'tinyimagenet':
    cfg = tinyimagenet.get_config()
  elif config == 'imagenet':
    cfg = imagenet_resnet50.get_config()
  else:
    raise ValueError(f'config={config!r} is not one of {CONFIGS}.')
  cfg.mix.name, cfg.mix.hparams = name, dict(hparams)
  cfg.batch_size = batch_size
  if model:
    cfg.model.name = model
  if width:
    cfg.model.kwargs.width = width
  if dtype:
    cfg.compute_dtype = dtype
  cfg.mix.single_pass = single_pass
  if name in ('pixmix', 'ipmix'):  # fed a synthetic picture batch below, never read
    cfg.dataset.mixing_set = 'fractals'
  if image_size:
    cfg.dataset.image_size = image_size
  return cfg


def prepare(method: str, batch_size: int, width: int, **overrides):
  """`(train step, [state, batch, key])` of `method` on a fixed synthetic batch."""
  config = make_config(method, batch_size=batch_size, width=width, **overrides)
  # Synthetic batches: the dataset's facts come from the table (no disk, no TensorFlow).
  info = data.info.with_image_size(data.info.lookup(config.dataset.name),
                                   config.dataset.image_size)
  train.validate_config(config, info=info)
  mesh = train.make_mesh()
  fns = train.make_steps(config, mesh, info)
  key = jax.random.key(0)
  tx, _ = train.make_optimizer(config, train.steps_per_epoch(config, info),
                               train.total_steps(config, info))
  state = train.create_train_state(config, fns.ctx.model, key, mesh, tx=tx,
                                   input_shape=info.image_shape)
  rng = np.random.default_rng(0)
  batch = {'image': rng.integers(0, 256, (batch_size, *info.image_shape), dtype=np.uint8),
           'label': rng.integers(0, info.num_classes, (batch_size,), dtype=np.int32)}
  if fns.ctx.mixer.needs_mixing_pictures:  # PixMix / IPMix: the second stream's batch
    batch['mixing_pictures'] = rng.integers(0, 256, batch['image'].shape, dtype=np.uint8)
  return fns.train, [state, data.to_global(batch, fns.batch_sharding), key]


def bench(method: str, batch_size: int, steps: int, width: int,
          **overrides) -> dict[str, float]:
  """Steady-state step time of `method` (`overrides`: `make_config`'s keywords)."""
  step, args = prepare(method, batch_size, width, **overrides)
  stats = evaluation.time_step(step, args, warmup=1, repeats=steps, carry=True)
  dt = stats['median_s']
  dtype = make_config(method, batch_size=batch_size, width=width, **overrides).compute_dtype
  return {'step_s': dt, 'images_per_s': batch_size / dt, 'compile_s': stats['compile_s'],
          'step_std_s': stats['std_s'], 'compute_dtype': dtype}


def bench_rounds(methods, rounds: int, batch_size: int, width: int,
                 **overrides) -> dict[str, dict[str, float]]:
  """Every method compiled (and run once), then timed in turn, one step each per round.

  On a machine shared with other jobs the load drifts over minutes: steps timed next to each
  other see about the same load, so the per-round ratio to vanilla is steadier than the
  ratio of two separately timed medians.
  """
  runs = {}
  for method in methods:
    step, args = prepare(method, batch_size, width, **overrides)
    start = time.perf_counter()
    run = step.lower(*args).compile()
    compile_s = time.perf_counter() - start
    args[0] = jax.block_until_ready(run(*args))[0]  # warm-up; the state is donated
    runs[method] = (run, args, compile_s)
    print(f'compiled {method:16s} {compile_s:6.1f} s', flush=True)
  times = {m: [] for m in methods}
  for _ in range(rounds):
    for method, (run, args, _) in runs.items():
      start = time.perf_counter()
      args[0] = jax.block_until_ready(run(*args))[0]
      times[method].append(time.perf_counter() - start)
  results = {}
  for method in methods:
    dt = float(np.median(times[method]))
    results[method] = {'step_s': dt, 'images_per_s': batch_size / dt,
                       'compile_s': runs[method][2], 'step_times_s': times[method]}
    if 'vanilla' in times:
      ratios = np.asarray(times[method]) / np.asarray(times['vanilla'])
      results[method]['overhead'] = float(np.median(ratios)) - 1.0
  return results


def main(argv):
  del argv
  if _ROUNDS.value:
    print(f'devices: {jax.device_count()} x {jax.devices()[0].device_kind}; batch '
          f'{_BATCH.value}; {_ROUNDS.value} rounds; {_CONFIG.value} {_DTYPE.value}', flush=True)
    results = bench_rounds(_METHODS.value, _ROUNDS.value, _BATCH.value, _WIDTH.value,
                           config=_CONFIG.value, dtype=_DTYPE.value,
                           single_pass=_SINGLE_PASS.value, image_size=_IMAGE_SIZE.value)
    print('median step; overhead = median over rounds of T_method / T_vanilla - 1:')
    for method, r in results.items():
      overhead = f'{100 * r["overhead"]:+8.1f} %' if 'overhead' in r else ''
      print(f'  {method:16s} step {r["step_s"] * 1e3:9.1f} ms  {overhead}', flush=True)
    if _OUT.value:
      pathlib.Path(_OUT.value).write_text(json.dumps(results, indent=1))
    return
  results = {}
  print(f'devices: {jax.device_count()} x {jax.devices()[0].device_kind}; batch '
        f'{_BATCH.value}; {_STEPS.value} timed steps; {_CONFIG.value} '
        f'compute_dtype={_DTYPE.value or "as configured"}'
        f'{" single_pass" if _SINGLE_PASS.value else ""}', flush=True)
  for method in _METHODS.value:
    results[method] = bench(method, _BATCH.value, _STEPS.value, _WIDTH.value,
                            config=_CONFIG.value, dtype=_DTYPE.value,
                            single_pass=_SINGLE_PASS.value, image_size=_IMAGE_SIZE.value)
    print(f'{method:14s} {results[method]["compute_dtype"]:9s} '
          f'{results[method]["images_per_s"]:9.1f} img/s  '
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
