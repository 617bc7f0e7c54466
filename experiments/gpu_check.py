r"""One prepared accelerator check: the ops, StoRM vs PyTorch, the train steps, StoRM's overhead.

  experiments/gpu_check.sh            # on a GPU machine (jax[cuda], torch, timm): <= 8 min
  experiments/gpu_check.sh --smoke    # anywhere, tiny shapes (its test: tests/test_gpu_check.py)

Prints, on whatever `jax.devices()[0]` is:
  (a) every mixing op (sample + apply, jitted): ms, GB/s and the fraction of the device's
      streaming rate (`bench_mixing.py`; on CPU the memcpy of a preallocated buffer);
  (b) StoRM (k = 2, 3, 4) and Region Mixup against a per-tile PyTorch StoRM on the same
      device, and Mixup / CutMix against timm's (`torch_peers.py mixing`);
  (c) the PreActResNet-18 (Tiny-ImageNet, 64x64) and ResNet-50 (ImageNet, 224x224) train
      steps, vanilla, `config.compute_dtype` float32 and bfloat16, in images/s, next to a
      PyTorch step of the same model (channels_last; bfloat16 autocast);
  (d) StoRM's step overhead vs vanilla, `(T_storm - T_vanilla) / T_vanilla`, with the two-pass
      objective (`CE(f(x), y) + CE(f(x_mix), y_mix)`) and `config.mix.single_pass`.
Data are synthetic (no TensorFlow, no dataset). The PyTorch parts run in `--torch-python`
(default: this interpreter when it can import torch) and are skipped, saying so, without it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

from experiments import bench_mixing  # pylint: disable=g-import-not-at-top,wrong-import-position

# (model, bench_train_step config, batch size, image size override, width override).
FULL = dict(mix_sizes='128x32x32x3,64x224x224x3', mix_repeats=20, steps=20,
            models=(('preactresnet18', 'tinyimagenet', 100, 0, 0),
                    ('resnet50', 'imagenet', 128, 0, 0)))
# The smoke run checks the plumbing: ResNet-18 stands in for ResNet-50 (same class and
# config; a CPU compile of ResNet-50's step takes minutes).
SMOKE = dict(mix_sizes='8x32x32x3', mix_repeats=2, steps=1,
             models=(('preactresnet18', 'tinyimagenet', 4, 32, 8),
                     ('resnet18', 'imagenet', 2, 32, 8)))


def section(title: str) -> None:
  print(f'\n=== {title} ===', flush=True)


def torch_python(arg: str | None) -> str | None:
  if arg:
    return arg
  return sys.executable if importlib.util.find_spec('torch') else None


def peer(python: str, *args: str) -> list[dict]:
  cmd = [python, str(ROOT / 'experiments' / 'torch_peers.py'), *args]
  out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
  return [json.loads(line) for line in out.splitlines() if line.startswith('{')]


def ops(plan: dict, torch_py: str | None) -> None:
  section('(a) every op: GB/s vs the device streaming rate; (b) vs PyTorch on this device')
  peers = []
  if torch_py:
    peers = bench_mixing.run_peers(torch_py, plan['mix_sizes'], plan['mix_repeats'], False)
  else:
    print('(b) skipped: no torch (pass --torch-python)')
  rows = []
  for size in plan['mix_sizes'].split(','):
    shape = tuple(int(d) for d in size.split('x'))
    refs = bench_mixing.references(shape, plan['mix_repeats'])
    print(f'{size}: memcpy {refs["memcpy_gbps"]:.2f} GB/s, jitted x+1 '
          f'{refs["xla_stream_gbps"]:.2f} GB/s', flush=True)
    for spec in bench_mixing.default_methods():
      rows.append(bench_mixing.bench_method(spec, shape, plan['mix_repeats'], refs))
  bench_mixing.print_table(rows, peers, file=sys.stdout)
  if peers:
    section('(b) StoRM vs the PyTorch per-tile loop (peer ms / ours ms; > 1: ours faster)')
    by_key = {(p['peer'], p['k'], p['shape']): p for p in peers if 'ms' in p}
    for r in rows:
      key = bench_mixing.peer_of(r['method'])
      if 'ms' in r and key and key[0] == 'storm_tileloop' and key + (r['shape'],) in by_key:
        p = by_key[key + (r['shape'],)]
        print(f'{r["method"]:14s} {r["shape"]:14s} ours {r["ms"]:8.3f} ms  torch {p["ms"]:8.3f} ms'
              f'  ratio {p["ms"] / r["ms"]:6.2f}', flush=True)


def steps(plan: dict, torch_py: str | None) -> None:
  section('(c) train steps (vanilla, synthetic batch): images/s, storm_jax vs PyTorch')
  try:
    from experiments import bench_train_step  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    print(f'(c), (d) skipped: the train step does not import here ({type(e).__name__}: {e})')
    return
  vanilla = {}
  for model, config, batch, image_size, width in plan['models']:
    common = dict(config=config, model=model, image_size=image_size)
    for dtype in ('float32', 'bfloat16'):
      r = bench_train_step.bench('vanilla', batch, plan['steps'], width, dtype=dtype, **common)
      vanilla[model] = vanilla.get(model, r)  # float32 first
      line = (f'{model:15s} {dtype:9s} b{batch:<4d} jax {r["images_per_s"]:9.1f} img/s '
              f'(compile {r["compile_s"]:5.1f} s)')
      if torch_py:
        image = image_size or (64 if config == 'tinyimagenet' else 224)
        t = peer(torch_py, 'step', '--model', model, '--dtype', dtype, '--batch-size',
                 str(batch), '--image-size', str(image), '--steps', str(plan['steps']),
                 '--num-classes', '200' if config == 'tinyimagenet' else '1000',
                 '--width', str(width or 64))[-1]
        line += (f'  torch {t["images_per_s"]:9.1f} img/s  jax/torch '
                 f'{r["images_per_s"] / t["images_per_s"]:5.2f}')
      print(line, flush=True)

  section('(d) StoRM (k=2) step overhead vs vanilla, float32: two passes and single_pass')
  for model, config, batch, image_size, width in plan['models']:
    t_van = vanilla[model]['step_s']
    for single_pass in (False, True):
      r = bench_train_step.bench('storm_k2', batch, plan['steps'], width, config=config,
                                 model=model, image_size=image_size, single_pass=single_pass,
                                 dtype='float32')
      print(f'{model:15s} {"single_pass" if single_pass else "two passes":12s} '
            f'step {r["step_s"] * 1e3:9.2f} ms vs vanilla {t_van * 1e3:9.2f} ms: '
            f'{100 * (r["step_s"] - t_van) / t_van:+7.1f} %', flush=True)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--smoke', action='store_true', help='tiny shapes, one step (CPU test)')
  parser.add_argument('--torch-python', default=None, help='an interpreter with torch')
  parser.add_argument('--skip', default='', help="comma-separated sections to skip: 'ops,steps'")
  args = parser.parse_args(argv)
  plan = SMOKE if args.smoke else FULL
  torch_py = torch_python(args.torch_python)
  start = time.perf_counter()
  print(f'jax {jax.__version__} on {jax.devices()[0].device_kind} x {jax.device_count()}; '
        f'torch peers: {torch_py or "none"}; load {os.getloadavg()[0]:.1f}; '
        f'{"smoke" if args.smoke else "full"}', flush=True)
  skip = set(filter(None, args.skip.split(',')))
  if 'ops' not in skip:
    ops(plan, torch_py)
  if 'steps' not in skip:
    steps(plan, torch_py)
  print(f'\ngpu_check done in {time.perf_counter() - start:.0f} s', flush=True)


if __name__ == '__main__':
  main()
