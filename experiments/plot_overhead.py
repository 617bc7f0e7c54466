"""Augmentation overhead vs accuracy (StoRM Figure 2) from finished runs.

Overhead (docs/DESIGN.md#metrics-overhead): `(T_method - T_vanilla) / T_vanilla x 100 %` with T the
steady-state training time per image (compilation excluded), read from each run's
`metrics.jsonl` (`summary_images_per_sec`, written by the trainer at the end of a run);
accuracy from `eval_metrics.json` (`top1_acc`, written by `storm_jax.evaluate`) or, when
that is missing, the trainer's final `summary_eval_accuracy`. Runs must share everything
but the method (same config, batch size and machine), as in the paper (CUB, batch 16).

  python -m experiments.plot_overhead --runs runs/cub_overhead --vanilla vanilla \
      --out overhead.png
where runs/cub_overhead/<method>/seed*/ are run directories.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # `python experiments/x.py`

from storm_jax import evaluation  # pylint: disable=wrong-import-position


def _last(path: pathlib.Path, key: str) -> float | None:
  value = None
  if path.exists():
    for line in path.read_text().splitlines():
      row = json.loads(line)
      if key in row:
        value = float(row[key])
  return value


def collect(runs: pathlib.Path) -> dict[str, dict[str, float]]:
  """{method: {'images_per_sec', 'top1_acc', 'n'}} averaged over the method's seeds."""
  out = {}
  for method_dir in sorted(p for p in runs.iterdir() if p.is_dir()):
    speeds, accs = [], []
    for run in sorted(p for p in method_dir.iterdir() if p.is_dir()):
      speed = _last(run / 'metrics.jsonl', 'summary_images_per_sec')
      acc = None
      if (run / 'eval_metrics.json').exists():
        acc = json.loads((run / 'eval_metrics.json').read_text()).get('top1_acc')
      if acc is None:
        acc_frac = _last(run / 'metrics.jsonl', 'summary_eval_accuracy')
        acc = None if acc_frac is None else 100.0 * acc_frac
      if speed and acc is not None:
        speeds.append(speed)
        accs.append(acc)
    if speeds:
      out[method_dir.name] = {'images_per_sec': statistics.mean(speeds),
                              'top1_acc': statistics.mean(accs), 'n': len(speeds)}
  return out


def overheads(results: dict[str, dict[str, float]], vanilla: str) -> dict[str, float]:
  """{method: overhead in %} with T = 1 / images_per_sec (`evaluation.augmentation_overhead`)."""
  if vanilla not in results:
    raise ValueError(f'--vanilla={vanilla!r}: no finished run; have {sorted(results)}.')
  t_vanilla = 1.0 / results[vanilla]['images_per_sec']
  return {m: 100.0 * evaluation.augmentation_overhead(1.0 / r['images_per_sec'], t_vanilla)
          for m, r in results.items()}


def plot(results, over, out: pathlib.Path) -> None:
  import matplotlib
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt
  fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
  for method, r in results.items():
    ax.scatter(over[method], r['top1_acc'], s=30)
    ax.annotate(method, (over[method], r['top1_acc']), textcoords='offset points',
                xytext=(4, 4), fontsize=8)
  ax.set_xlabel('augmentation overhead (+%)')
  ax.set_ylabel('top-1 accuracy (%)')
  ax.set_title('Overhead vs accuracy (upper left is better)')
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(out)
  plt.close(fig)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--runs', required=True, help='<runs>/<method>/<seed>/ run directories')
  parser.add_argument('--vanilla', default='vanilla', help='method directory of the baseline')
  parser.add_argument('--out', default='overhead.png')
  args = parser.parse_args(argv)
  results = collect(pathlib.Path(args.runs))
  over = overheads(results, args.vanilla)
  print('| method | images/s | overhead % | top-1 % | runs |\n|---|---|---|---|---|')
  for m, r in sorted(results.items(), key=lambda kv: over[kv[0]]):
    print(f'| {m} | {r["images_per_sec"]:.1f} | {over[m]:+.1f} | {r["top1_acc"]:.2f} | {r["n"]} |')
  plot(results, over, pathlib.Path(args.out))
  print(f'wrote {args.out}', file=sys.stderr)
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
