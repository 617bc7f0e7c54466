r"""Throughput of every mixing op (sample + apply, jitted), against this machine's memcpy.

For each method and batch shape it reports the median wall time of one jitted mixer call
`(key, x, y) -> (x_mix, y_mix)` (a fresh key every call, as in training; compilation and
two warm-up calls excluded; the minimum is reported too, as `min_ms`, because a shared
machine inflates medians), and an effective bandwidth that counts only the minimum
traffic of any two-source mix: read two images and write one per output image,
`3 * B*H*W*C * itemsize` bytes (times K for multi-mix, which writes K outputs per input).
`--dtype` picks the images' dtype: float32 (default), bfloat16, or uint8 pixel values (the
input pipeline's; mixed in float32 and rounded back, see `mixing.base`); the PyTorch peers
stay float32, so `peer/ours` then also counts the smaller bytes.

Two references are measured in the same run, on an array of the same size:
  * `memcpy_gbps`: `numpy.copyto(dst, x)` into a preallocated buffer (a plain memcpy,
    2 * nbytes of traffic per call) — the ratio the target refers to;
  * `xla_stream_gbps`: a jitted `x + 1.0` (2 * nbytes), XLA's own streaming floor on this
    backend, which includes allocating a fresh output buffer (page faults for large
    arrays) exactly as every mixer call does.
Labels are one-hot over 100 classes; R-Mix gets a random saliency map as an argument; AugMix
(`needs_pixels`) gets integer pixel values in [0, 255], PixMix / IPMix a random batch of
mixing pictures (and pixel values in [0, 255] as images). Manifold Mixup's row is its input
half only (the hidden mix runs inside the model: see bench_train_step). SaliencyMix computes
the fine-grained saliency of random uint8 images inside the timed call, as the train step
does.
On an accelerator, `memcpy_gbps` is the jitted `x + 1.0` (the device's streaming rate).

Side by side with PyTorch (`--peer-python`: an interpreter with torch, and timm for its
Mixup/CutMix; the project never needs either): `experiments/torch_peers.py mixing` runs
first, in the same command, on the same shapes and device, and the table gets the peer's
time and `peer/ours` (> 1: storm_jax is faster) for StoRM (its per-tile loop at the same k;
Region Mixup: k=2), Mixup and CutMix (timm). `--warm-alloc` runs both under glibc settings
that never return freed memory to the OS (a training loop's caching allocator; on CPU a
fresh 38 MB output otherwise costs page faults on every call).

  python -m experiments.bench_mixing                                 # everything
  python -m experiments.bench_mixing --ops=all --sizes 64x224x224x3 --warm-alloc \
      --peer-python /path/to/torch-venv/bin/python                   # the README table
  python -m experiments.bench_mixing --methods storm:k=2,storm:k=3,storm:k=4,region_mixup \
      --sizes 128x32x32x3,100x64x64x3,64x224x224x3 --repeats 20 --out /tmp/bench.jsonl

Output: one JSON object per line (stdout, and appended to --out), then a table on stderr.
Timings are wall-clock on a possibly shared machine: the header line records the load.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # `python experiments/x.py`

from storm_jax import mixing  # pylint: disable=wrong-import-position

from experiments import torch_peers  # pylint: disable=wrong-import-position

DEFAULT_SIZES = '128x32x32x3,100x64x64x3,64x224x224x3'
NUM_CLASSES = 100
WARMUP = 2


def parse_method(spec: str) -> tuple[str, dict]:
  """'storm:k=3:beta=0.5' -> ('storm', {'k': 3, 'beta': 0.5})."""
  name, *assignments = spec.split(':')
  hparams = {}
  for item in assignments:
    key, _, value = item.partition('=')
    try:
      hparams[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      hparams[key] = value
  return name, hparams


def default_methods() -> list[str]:
  specs = []
  for name in mixing.names():
    if name == 'none':
      continue
    specs.append(name)
    if name == 'storm':
      specs += ['storm:k=3', 'storm:k=4']
  return specs


def timings(fn, repeats: int) -> tuple[float, float]:
  """(median, min) seconds of `fn(i)` over `repeats` calls after WARMUP calls."""
  times = []
  for i in range(WARMUP + repeats):
    start = time.perf_counter()
    fn(i)
    if i >= WARMUP:
      times.append(time.perf_counter() - start)
  return statistics.median(times), min(times)


def references(shape, repeats: int) -> dict:
  xj = jax.random.normal(jax.random.key(0), shape, jnp.float32)
  stream = jax.jit(lambda v: v + 1.0)
  stream(xj).block_until_ready()
  xla, _ = timings(lambda i: stream(xj).block_until_ready(), repeats)
  nbytes = xj.size * 4
  if jax.default_backend() == 'cpu':
    x = np.asarray(xj)
    dst = np.empty_like(x)
    memcpy, _ = timings(lambda i: np.copyto(dst, x), repeats)
  else:  # the device's own streaming rate
    memcpy = xla
  return {'memcpy_gbps': 2 * nbytes / memcpy / 1e9,
          'xla_stream_gbps': 2 * nbytes / xla / 1e9}


# Which PyTorch peer (experiments/torch_peers.py) each method is compared with.
def peer_of(spec: str) -> tuple[str, int | None] | None:
  name, hparams = parse_method(spec)
  if name == 'storm':
    return 'storm_tileloop', hparams.get('k', 2)
  if name == 'region_mixup':
    return 'storm_tileloop', hparams.get('k', 2)  # the same op on a fixed grid
  if name in ('mixup', 'cutmix') and not hparams:
    return f'timm_{name}', None
  return None


def run_peers(python: str, sizes: str, repeats: int, warm_alloc: bool,
              threads: int = 0) -> list[dict]:
  """`torch_peers.py mixing` in `python` (a torch interpreter): its JSON records."""
  script = pathlib.Path(__file__).resolve().parent / 'torch_peers.py'
  device = 'cpu' if jax.default_backend() == 'cpu' else 'cuda'
  cmd = [python, str(script), 'mixing', '--sizes', sizes, '--repeats', str(repeats),
         '--device', device, '--threads', str(threads)] + (['--warm-alloc'] if warm_alloc else [])
  out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
  return [json.loads(line) for line in out.splitlines() if line.startswith('{')]


def bench_method(spec: str, shape, repeats: int, refs: dict, dtype: str = 'float32') -> dict:
  """One row; `dtype` of the images: float32, bfloat16, or uint8 (pixel values)."""
  name, hparams = parse_method(spec)
  row = {'method': spec, 'shape': 'x'.join(map(str, shape))}
  if dtype != 'float32':
    row['dtype'] = dtype
  if name not in mixing.names():
    return {**row, 'skipped': f'{name!r} is not registered (yet): {", ".join(mixing.names())}'}
  try:
    mixer = mixing.get(name, **hparams)
  except ValueError as e:
    return {**row, 'skipped': f'bad spec: {e}'}
  b, h, w, c = shape
  kx, ky, ks, kc = jax.random.split(jax.random.key(1), 4)
  x = jax.random.normal(kx, shape, jnp.float32)
  if mixer.needs_pixels:  # AugMix works on un-normalised pixel values in [0, 255].
    x = jnp.round(jax.random.uniform(kx, shape, jnp.float32, 0.0, 255.0))
  y = jax.nn.one_hot(jax.random.randint(ky, (b,), 0, NUM_CLASSES), NUM_CLASSES)
  fine_grained = mixer.needs_saliency and mixer.saliency_kind == 'fine_grained'
  if fine_grained:
    extra = (jax.random.randint(ks, (b, h, w, 3), 0, 256).astype(jnp.uint8),)
  else:
    extra = (jax.random.uniform(ks, (b, h, w)),) if mixer.needs_saliency else ()
  if mixer.needs_mixing_pictures:  # PixMix / IPMix: pixel values, a batch of pictures
    x = jax.random.uniform(kx, shape, jnp.float32, 0.0, 255.0)
    extra = (jax.random.uniform(ks, shape, jnp.float32, 0.0, 255.0),)
  extra_name = 'mixing_pictures' if mixer.needs_mixing_pictures else 'saliency'
  if dtype == 'uint8':  # pixel values, as the input pipeline delivers them
    x = jax.random.randint(kx, shape, 0, 256).astype(jnp.uint8)
  else:
    x = x.astype(dtype)

  @jax.jit
  def call(key, x, y, *saliency):
    if fine_grained:
      saliency = (mixing.fine_grained_saliency(saliency[0]),)
    kw = {extra_name: saliency[0]} if saliency else {}
    return mixer(key, x, y, **kw)

  keys = jax.random.split(kc, WARMUP + repeats)
  start = time.perf_counter()
  try:
    compiled = call.lower(keys[0], x, y, *extra).compile()
  except Exception as e:  # pylint: disable=broad-except
    return {**row, 'skipped': f'{type(e).__name__}: {e}'[:300]}
  compile_s = time.perf_counter() - start
  seconds, best = timings(lambda i: jax.block_until_ready(compiled(keys[i], x, y, *extra)),
                          repeats)
  traffic = 3 * x.size * x.dtype.itemsize * mixer.multiplicity
  gbps = traffic / seconds / 1e9
  return {**row, 'ms': round(seconds * 1e3, 3), 'min_ms': round(best * 1e3, 3),
          'compile_s': round(compile_s, 2), 'gbps_at_min': round(traffic / best / 1e9, 3),
          'gbps': round(gbps, 3), 'traffic_mb': round(traffic / 1e6, 2),
          'ratio_memcpy': round(gbps / refs['memcpy_gbps'], 3),
          'ratio_xla_stream': round(gbps / refs['xla_stream_gbps'], 3),
          'memcpy_gbps': round(refs['memcpy_gbps'], 2),
          'xla_stream_gbps': round(refs['xla_stream_gbps'], 2)}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--methods', default=None,
                      help='comma-separated name[:hparam=value...]; default: every method')
  parser.add_argument('--sizes', default=DEFAULT_SIZES, help='comma-separated BxHxWxC')
  parser.add_argument('--repeats', type=int, default=20, help='timed calls per case')
  parser.add_argument('--out', default=None, help='also append the JSON lines to this file')
  parser.add_argument('--ops', default=None, choices=('all',),
                      help="'all': every registered method (as no --methods)")
  parser.add_argument('--warm-alloc', action='store_true',
                      help='glibc never returns freed memory to the OS (both sides)')
  parser.add_argument('--peer-python', default=None,
                      help='a Python with torch (and timm): run torch_peers.py first')
  parser.add_argument('--peer-threads', type=int, default=0,
                      help="the peer's CPU threads (0: torch's default)")
  parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16', 'uint8'),
                      help='our images (the PyTorch peers stay float32); traffic counts its bytes')
  args = parser.parse_args(argv)
  if args.ops and args.methods:
    raise ValueError(f'--ops={args.ops} and --methods={args.methods} are exclusive.')
  if args.warm_alloc:
    torch_peers.warm_alloc_exec(sys.argv, module='experiments.bench_mixing')
  if args.repeats < 1:
    raise ValueError(f'--repeats={args.repeats} must be >= 1.')
  methods = args.methods.split(',') if args.methods else default_methods()
  sizes = [tuple(int(d) for d in s.lower().split('x')) for s in args.sizes.split(',')]
  for s in sizes:
    if len(s) != 4:
      raise ValueError(f'--sizes entry {s} must be BxHxWxC.')
  out = open(args.out, 'a') if args.out else None  # pylint: disable=consider-using-with

  def emit(record):
    line = json.dumps(record)
    print(line, flush=True)
    if out:
      out.write(line + '\n')
      out.flush()

  peers = []
  if args.peer_python:
    peers = run_peers(args.peer_python, args.sizes, args.repeats, args.warm_alloc,
                      args.peer_threads)
    for record in peers:
      emit(record)
  emit({'header': True, 'jax': jax.__version__, 'alloc': torch_peers.alloc_mode(), 'devices': [str(d) for d in jax.devices()],
        'cpu_count': os.cpu_count(), 'loadavg_1m': round(os.getloadavg()[0], 2),
        'machine': platform.processor() or platform.machine(), 'repeats': args.repeats,
        'memcpy': 'numpy.copyto into a preallocated array, 2*nbytes per call',
        'xla_stream': 'jitted x + 1.0 (fresh output buffer), 2*nbytes per call',
        'dtype': args.dtype,
        'traffic': '3 * B*H*W*C * itemsize bytes per output image (read 2, write 1)'})
  rows = []
  for shape in sizes:
    refs = references(shape, args.repeats)
    emit({'reference': True, 'shape': 'x'.join(map(str, shape)),
          **{k: round(v, 2) for k, v in refs.items()}})
    for spec in methods:
      rows.append(bench_method(spec, shape, args.repeats, refs, args.dtype))
      emit(rows[-1])
  emit({'footer': True, 'loadavg_1m': round(os.getloadavg()[0], 2)})
  if out:
    out.close()

  print_table(rows, peers, file=sys.stderr)


def print_table(rows: list[dict], peers: list[dict], file) -> None:
  """The table: ours (median, min, GB/s, /memcpy) and, with peers, PyTorch's times and
  `peer/ours` at the median and at the minimum (> 1: storm_jax is faster)."""
  peer_ms = {(p['peer'], p['k'], p['shape']): p for p in peers if 'peer' in p and 'ms' in p}
  print(f'\n{"method":28s} {"shape":15s} {"ms":>9s} {"min ms":>9s} {"GB/s":>7s} {"/memcpy":>8s} '
        f'{"/xla x+1":>9s}' + (f' {"peer":>18s} {"peer ms":>9s} {"min ms":>9s} {"peer/ours":>9s} '
                               f'{"at min":>7s}' if peers else ''), file=file)
  for p in peers:
    if p.get('peer') == 'memcpy':
      print(f'{"(torch memcpy)":28s} {p["shape"]:15s} {p["ms"]:9.3f} {p["min_ms"]:9.3f} '
            f'{p["gbps"]:7.2f}', file=file)
  for r in rows:
    if 'skipped' in r:
      print(f'{r["method"]:28s} {r["shape"]:15s} skipped: {r["skipped"][:60]}', file=file)
      continue
    label = r['method'] + (f' [{r["dtype"]}]' if 'dtype' in r else '')
    line = (f'{label:28s} {r["shape"]:15s} {r["ms"]:9.3f} {r["min_ms"]:9.3f} '
            f'{r["gbps"]:7.2f} {r["ratio_memcpy"]:8.2f} {r["ratio_xla_stream"]:9.2f}')
    peer = peer_of(r['method'])
    if peers and peer and (peer + (r['shape'],)) in peer_ms:
      p = peer_ms[peer + (r['shape'],)]
      label = peer[0] + (f':k={peer[1]}' if peer[1] else '')
      line += (f' {label:>18s} {p["ms"]:9.3f} {p["min_ms"]:9.3f} {p["ms"] / r["ms"]:9.2f} '
               f'{p["min_ms"] / r["min_ms"]:7.2f}')
    print(line, file=file)


if __name__ == '__main__':
  main()
