r"""Co-Mixup solvers compared on the objective, and the per-op cost of Co-Mixup / GuidedMixup.

Solver comparison (docs/DESIGN.md#comixup). For random partition problems, each solver
starts from the same random labelling (the reference's initialisation) and is scored on the
reported objective E(z) (reference `obj_fn`): the on-device `'icm'` solver against the
reference algorithm with gco's α-β swap (`'gco'`, host). The figure of merit is the
reference's own sanity metric in the form `(E_rand − E_solver) / (E_rand − E_gco)`: 1 means
as good as the reference, > 1 better (both are heuristics of the same thresholded,
non-submodular problem), with `E_rand` the objective of the random initial labelling.

Problem families:
  * `saliency-g4` / `saliency-g8`: what the mixer builds on CIFAR (n = 20 images per
    partition, grid 4×4 or 8×8): cubed-uniform saliency pooled to blocks, a Dir(2) prior,
    β 0.32, γ 1, η 0.05, τ 0.83 (hard), A = I;
  * `reference`: `match.py`'s own sanity test: |N(0, 1)| costs, n = 20, grid 4×4, β 0.8,
    γ 1, η 0, τ 0.82.

Op timings: one jitted mixer call (sample + apply) at batch 64, 32×32×3, CIFAR defaults,
median of `--repeats` calls, and its pieces (spectral residual, greedy pairing, Co-Mixup's
labelling of the 4 partitions); the trainer's extra saliency pass is not included.

  python -m experiments.bench_comixup --instances 20 --plot comixup_solvers.png

Needs gco-wrapper for the reference solver (`pip install gco-wrapper`, not a requirement of
storm_jax); without it only the ICM figures and the op timings are printed.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from storm_jax import mixing

cm = importlib.import_module('storm_jax.mixing.comixup')

FAMILIES = {
    'saliency-g4': dict(n=20, g=4, beta=0.32, gamma=1.0, eta=0.05, thres=0.83, kind='saliency'),
    'saliency-g8': dict(n=20, g=8, beta=0.32, gamma=1.0, eta=0.05, thres=0.83, kind='saliency'),
    'reference': dict(n=20, g=4, beta=0.8, gamma=1.0, eta=0.0, thres=0.82, kind='abs_normal'),
}


def instances(family: dict, count: int, seed: int):
  rng = np.random.default_rng(seed)
  n, g = family['n'], family['g']
  out = []
  for _ in range(count):
    if family['kind'] == 'saliency':
      pooled = rng.random((n, g, g)).astype(np.float32) ** 3
      prior = rng.dirichlet(np.full(n, 2.0)).astype(np.float32)
      cost = np.asarray(cm.unary_cost(jnp.asarray(pooled), jnp.asarray(prior),
                                      family['eta'] / g ** 2))
    else:
      cost = np.abs(rng.normal(size=(n, g, g))).astype(np.float32)
    out.append((cost, rng.integers(0, n, (n, g, g)).astype(np.int32)))
  return out


def compare(name: str, family: dict, count: int, seed: int, have_gco: bool) -> dict:
  n, g = family['n'], family['g']
  k = g * g
  kw = dict(beta=family['beta'] / k, gamma=family['gamma'] / k, thres=family['thres'] * k)
  probs = instances(family, count, seed)
  costs = np.stack([c for c, _ in probs])
  inits = np.stack([i for _, i in probs])
  a = np.broadcast_to(np.eye(n, dtype=np.float32), (count, n, n))

  def obj(c, z):
    return float(cm.objective_numpy(c, z, kw['beta'], kw['gamma']))

  e_rand = np.array([obj(c, np.eye(n, dtype=np.float32)[i]) for c, i in probs])
  icm = jax.jit(jax.vmap(functools.partial(cm.solve_icm, **kw)))
  jax.block_until_ready(icm(costs, a, inits))  # compile
  t = time.perf_counter()
  z_icm = np.asarray(jax.block_until_ready(icm(costs, a, inits)))
  icm_ms = (time.perf_counter() - t) * 1e3 / count
  e_icm = np.array([obj(c, z) for (c, _), z in zip(probs, z_icm)])
  row = dict(family=name, n=n, grid=g, instances=count, e_rand=float(e_rand.mean()),
             e_icm=float(e_icm.mean()), icm_ms_per_partition=icm_ms)
  if have_gco:
    t = time.perf_counter()
    z_gco = [cm.solve_gco_numpy(c, np.eye(n, dtype=np.float32), i, **kw) for c, i in probs]
    gco_ms = (time.perf_counter() - t) * 1e3 / count
    e_gco = np.array([obj(c, z) for (c, _), z in zip(probs, z_gco)])
    ratio = (e_rand - e_icm) / (e_rand - e_gco)
    row.update(e_gco=float(e_gco.mean()), gco_ms_per_partition=gco_ms,
               ratio_mean=float(ratio.mean()), ratio_median=float(np.median(ratio)),
               ratio_min=float(ratio.min()), ratio_max=float(ratio.max()),
               icm_le_gco=float((e_icm <= e_gco).mean()),
               gap_mean_pct=float(((e_icm - e_gco) / np.abs(e_gco)).mean() * 100),
               _e_icm=e_icm.tolist(), _e_gco=e_gco.tolist(), _e_rand=e_rand.tolist())
  return row


def time_ops(repeats: int, have_gco: bool) -> list[dict]:
  shape, num_classes = (64, 32, 32, 3), 100
  x = jax.random.normal(jax.random.key(0), shape)
  y = jax.nn.one_hot(jnp.arange(64) % num_classes, num_classes)
  sal = jax.random.uniform(jax.random.key(1), shape[:3]) ** 3
  specs = [('mixup', {}, False), ('comixup', {}, True),
           ('guided_mixup', dict(saliency='sr'), False),
           ('guided_mixup', dict(saliency='ap'), True)]
  if have_gco:
    specs.append(('comixup', dict(solver='gco'), True))
  rows = []
  gm = importlib.import_module('storm_jax.mixing.guided_mixup')
  maps = gm.normalize_maps(gm.gaussian_blur(sal))
  pieces = {
      'spectral_residual': (jax.jit(gm.spectral_residual), (x,)),
      'greedy_pairing': (jax.jit(gm.pair), (maps,)),
      'comixup_labelling': (jax.jit(lambda p: cm.labelling(p, 4)),
                            (mixing.get('comixup').sample(jax.random.key(2), shape,
                                                          saliency=sal),)),
  }
  for name, (fn, args) in pieces.items():
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
      t = time.perf_counter()
      jax.block_until_ready(fn(*args))
      times.append((time.perf_counter() - t) * 1e3)
    rows.append(dict(op=name, shape=list(shape), median_ms=statistics.median(times),
                     min_ms=min(times)))
  for name, hp, needs in specs:
    m = mixing.get(name, **hp)
    fn = jax.jit(lambda k, x, y, s, m=m, needs=needs: m(k, x, y, **({'saliency': s}
                                                                    if needs else {})))
    t = time.perf_counter()
    jax.block_until_ready(fn(jax.random.key(0), x, y, sal))
    compile_s = time.perf_counter() - t
    times = []
    for i in range(repeats):
      t = time.perf_counter()
      jax.block_until_ready(fn(jax.random.key(i + 1), x, y, sal))
      times.append((time.perf_counter() - t) * 1e3)
    rows.append(dict(op=name, hparams=hp, shape=list(shape), median_ms=statistics.median(times),
                     min_ms=min(times), compile_s=compile_s))
  return rows


def plot(rows: list[dict], path: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  rows = [r for r in rows if '_e_gco' in r]
  fig, axes = plt.subplots(1, len(rows), figsize=(4 * len(rows), 3.6), squeeze=False)
  for ax, r in zip(axes[0], rows):
    e_rand, e_gco, e_icm = (np.array(r[k]) for k in ('_e_rand', '_e_gco', '_e_icm'))
    gain_gco, gain_icm = e_rand - e_gco, e_rand - e_icm
    ax.scatter(gain_gco, gain_icm, s=12)
    lim = [0, 1.05 * max(gain_gco.max(), gain_icm.max())]
    ax.plot(lim, lim, 'k--', lw=0.8)
    ax.set_xlabel('E_rand − E (gco, reference)')
    ax.set_ylabel('E_rand − E (icm, on device)')
    ax.set_title(f"{r['family']}: ratio {r['ratio_mean']:.3f}")
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--instances', type=int, default=20)
  parser.add_argument('--families', default=','.join(FAMILIES))
  parser.add_argument('--repeats', type=int, default=10)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--plot', default='comixup_solvers.png')
  parser.add_argument('--no-ops', action='store_true', help='skip the op timings')
  args = parser.parse_args()
  try:
    import gco  # pylint: disable=import-outside-toplevel,unused-import
    have_gco = True
  except ImportError:
    have_gco = False
  print(json.dumps(dict(backend=jax.default_backend(), devices=str(jax.devices()),
                        loadavg=os.getloadavg(), have_gco=have_gco)))
  rows = []
  for name in args.families.split(','):
    row = compare(name, FAMILIES[name], args.instances, args.seed, have_gco)
    rows.append(row)
    print(json.dumps({k: v for k, v in row.items() if not k.startswith('_')}))
  if have_gco and args.plot:
    plot(rows, args.plot)
    print(json.dumps(dict(plot=args.plot)))
  if not args.no_ops:
    for row in time_ops(args.repeats, have_gco):
      print(json.dumps(row))


if __name__ == '__main__':
  main()
