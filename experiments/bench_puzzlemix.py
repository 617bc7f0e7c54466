r"""PuzzleMix solvers: energy gaps, mask agreement and time per batch.

On random CIFAR-size batches (`--batch` images of 32x32x3: smooth random images, peaky
positive saliency maps, λ ~ U(0, 1), a random pairing), for each block count `bn` it builds
the PuzzleMix labelling energy (`puzzlemix.energy_terms`, reference hyper-parameters) and
solves it with every solver:

  * `exact`   the on-device min cut (the global minimum; the reference point of the gaps);
  * `chains`  exact moves on rows and columns (`--sweeps`);
  * `icm`     single-block coordinate descent (4 sweeps);
  * `gco`     the reference's α-β swap (gco-wrapper on the host), when it is importable.

Reported per solver and `bn`: the mean energy gap to `exact` (absolute, and relative to
`|E_exact|`), the fraction of instances where the solver is worse than `exact` by more than
1e-6, the mask agreement with `exact` (fraction of blocks with the same label), and the
median wall time of one jitted call on the batch (energy + solve; compilation excluded).
The reference's own float path would overflow int32 when `1000 bn² U > 21474`: the fraction
of such instances is reported too (this op never overflows). Then the time of one full
jitted mixer call (sample + apply with transport, `bn` drawn) per solver.

  python -m experiments.bench_puzzlemix --batch 64 --batches 4 --out /tmp/puzzlemix.json

Timings are wall-clock on a possibly shared machine (the header records the load average).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from storm_jax import mixing

pm = importlib.import_module('storm_jax.mixing.puzzlemix')  # `mixing.puzzlemix` is the function


def _images(rng, b, size):
  coarse = rng.uniform(size=(b, 4, 4, 3))
  smooth = jax.image.resize(jnp.asarray(coarse), (b, size, size, 3), 'linear')
  noise = 0.05 * rng.normal(size=(b, size, size, 3))
  x01 = np.clip(np.asarray(smooth) + noise, 0, 1).astype(np.float32)
  blobs = np.square(rng.normal(size=(b, 8, 8)))
  sal = np.asarray(jax.image.resize(jnp.asarray(blobs), (b, size, size), 'linear'))
  return x01, np.abs(sal).astype(np.float32) + 1e-6


def _time(fn, *args, repeats):
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--size', type=int, default=32)
  parser.add_argument('--batches', type=int, default=4, help='random batches per bn')
  parser.add_argument('--block_nums', default='2,4,8,16')
  parser.add_argument('--sweeps', type=int, default=2)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--skip_mixer', action='store_true')
  parser.add_argument('--out', default='')
  args = parser.parse_args(argv)
  try:
    import gco  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    have_gco = True
  except ImportError:
    have_gco = False
  print(f'# backend={jax.default_backend()} load={os.getloadavg()} gco={have_gco} '
        f'batch={args.batch} size={args.size}', file=sys.stderr)
  rng = np.random.default_rng(args.seed)
  solvers = {
      'exact': lambda t: jax.vmap(pm.solve_exact)(*t),
      'exact_chunk1': lambda t: jax.lax.map(lambda a: pm.solve_exact(*a), t, batch_size=1),
      'chains': lambda t: pm.solve_chains(*t, sweeps=args.sweeps),
      'icm': lambda t: pm.solve_icm(*t, sweeps=4),
  }
  if have_gco:
    solvers['gco'] = lambda t: pm.solve_gco(*t)
  rows = []
  for bn in (int(v) for v in args.block_nums.split(',')):
    terms_fn = jax.jit(functools.partial(pm.energy_terms, bn=bn))
    jitted = {name: jax.jit(lambda s, x, p, l, f=f: f(terms_fn(s, x, p, l)))
              for name, f in solvers.items()}
    energies = {name: [] for name in solvers}
    agree = {name: [] for name in solvers}
    times = {name: [] for name in solvers}
    overflow = []
    for i in range(args.batches):
      x01, sal = _images(rng, args.batch, args.size)
      perm = rng.permutation(args.batch).astype(np.int32)
      lam = np.float32(rng.uniform())
      inputs = (jnp.asarray(sal), jnp.asarray(x01), jnp.asarray(perm), lam)
      terms = terms_fn(*inputs)
      overflow.append(np.asarray(
          (1000 * bn * bn * np.asarray(terms[0], np.float64)).max(axis=(1, 2, 3)) > 21474))
      labels = {}
      for name, fn in jitted.items():
        labels[name] = np.asarray(fn(*inputs))
        if i == 0:
          times[name].append(_time(fn, *inputs, repeats=args.repeats))
        energies[name].append(np.asarray(pm.energy(jnp.asarray(labels[name]), *terms),
                                         np.float64))
        agree[name].append(np.mean(labels[name] == labels['exact'], axis=(1, 2)))
    e_exact = np.concatenate(energies['exact'])
    for name in solvers:
      e = np.concatenate(energies[name])
      row = {
          'bn': bn, 'solver': name, 'instances': int(e.size),
          'gap_mean': float(np.mean(e - e_exact)),
          'gap_rel_mean': float(np.mean((e - e_exact) / np.abs(e_exact))),
          'gap_rel_max': float(np.max((e - e_exact) / np.abs(e_exact))),
          'frac_worse': float(np.mean(e > e_exact + 1e-6)),
          'frac_better': float(np.mean(e < e_exact - 1e-6)),
          'agreement': float(np.mean(np.concatenate(agree[name]))),
          'ms_per_batch': 1e3 * times[name][0],
          'ref_overflow_frac': float(np.mean(np.concatenate(overflow))),
      }
      rows.append(row)
      print(json.dumps(row))
  if not args.skip_mixer:
    x01, sal = _images(rng, args.batch, args.size)
    y = jax.nn.one_hot(np.arange(args.batch) % 100, 100)
    for name in ('exact', 'chains') + (('gco',) if have_gco else ()):
      mixer = mixing.get('puzzlemix', solver=name)
      call = jax.jit(lambda k, x, y, s, m=mixer: m(k, x, y, saliency=s))
      key = jax.random.key(0)
      call(key, jnp.asarray(x01), y, jnp.asarray(sal))  # compile every branch once
      t = []
      for j in range(4 * args.repeats):  # bn is drawn: average over draws
        k = jax.random.fold_in(key, j)
        t0 = time.perf_counter()
        jax.block_until_ready(call(k, jnp.asarray(x01), y, jnp.asarray(sal)))
        t.append(time.perf_counter() - t0)
      row = {'mixer': name, 'ms_per_batch_mean': 1e3 * float(np.mean(t)),
             'ms_per_batch_median': 1e3 * statistics.median(t)}
      rows.append(row)
      print(json.dumps(row))
  print('\n| bn | solver | gap (mean) | rel. gap mean / max | worse | better | agreement | '
        'ms/batch |', file=sys.stderr)
  print('|---|---|---|---|---|---|---|---|', file=sys.stderr)
  for r in rows:
    if 'bn' in r:
      print(f"| {r['bn']} | {r['solver']} | {r['gap_mean']:.2e} | {r['gap_rel_mean']:.2%} / "
            f"{r['gap_rel_max']:.2%} | {r['frac_worse']:.2f} | {r['frac_better']:.2f} | "
            f"{r['agreement']:.3f} | {r['ms_per_batch']:.1f} |", file=sys.stderr)
    else:
      print(f"mixer {r['mixer']}: {r['ms_per_batch_mean']:.1f} ms/batch mean, "
            f"{r['ms_per_batch_median']:.1f} median", file=sys.stderr)
  if args.out:
    with open(args.out, 'w') as f:
      json.dump({'args': vars(args), 'load': os.getloadavg(), 'rows': rows}, f, indent=1)


if __name__ == '__main__':
  main()
