"""Shared machinery of the paper-table scripts: commands for every row and seed, and the
aggregation of finished runs into a markdown/CSV table next to the paper's numbers.

A table script (e.g. experiments/storm_table2_cifar100.py) only declares its rows:

  TABLE = tablelib.Table(
      name='storm_t2_parn18', title='StoRM Table 2: CIFAR-100, PreActResNet-18 (1200 ep)',
      columns=(tablelib.Column('top1_acc', 'top-1 %'), tablelib.Column('top5_acc', 'top-5 %')),
      rows=(tablelib.Row('StoRM', 'configs/cifar100_preactresnet18.py',
                         {'mix.name': 'storm'}, paper={'top1_acc': 82.06, 'top5_acc': 95.55}),
            ...))
  if __name__ == '__main__':
    tablelib.main(TABLE)

and gets a CLI:

  python experiments/<script>.py commands  [--runs=runs] [--seeds=3] [--smoke] [--table=NAME]
  python experiments/<script>.py run       [--runs=runs] [--seeds=3] [--smoke] [--table=NAME]
  python experiments/<script>.py aggregate [--runs=runs] [--csv=out.csv] [--table=NAME]

Each run lives in `<runs>/<table name>/<row slug>/seed<s>/`; `python -m storm_jax.evaluate` writes its
metrics to `eval_metrics.json` there (percentages for accuracies/errors/ECE). A missing run
shows as `–` with the number of finished seeds, so partial sweeps aggregate too.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import pathlib
import re
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

METRICS_FILE = 'eval_metrics.json'


@dataclasses.dataclass(frozen=True)
class Column:
  key: str                  # key in eval_metrics.json
  header: str               # column header


@dataclasses.dataclass(frozen=True)
class Row:
  label: str                                  # method label as printed in the paper
  config: str                                 # config file
  overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  paper: Mapping[str, float | None] = dataclasses.field(default_factory=dict)
  eval_flags: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # evaluate's flags

  @property
  def slug(self) -> str:
    return re.sub(r'[^a-z0-9]+', '_', self.label.lower()).strip('_')


@dataclasses.dataclass(frozen=True)
class Table:
  name: str
  title: str
  columns: Sequence[Column]
  rows: Sequence[Row]
  seeds: int = 3
  note: str = ''
  baseline: str = ''  # a row label: adds paired per-seed differences against that row


def _flag(key: str, value: Any) -> str:
  if isinstance(value, str):
    return f'--config.{key}={value}'
  return f'--config.{key}={json.dumps(value)}'


def run_dir(runs: pathlib.Path, row: Row, seed: int) -> pathlib.Path:
  return runs / row.slug / f'seed{seed}'


def commands(table: Table, runs: pathlib.Path, seeds: int | None = None,
             smoke: bool = False) -> list[str]:
  """Shell commands that train and evaluate every (row, seed) of the table."""
  out = []
  for row in table.rows:
    for seed in range(seeds or table.seeds):
      workdir = run_dir(runs, row, seed)
      config = row.config
      if smoke:  # 'file.py' -> 'file.py:smoke'; 'file.py:mixup' -> 'file.py:mixup,smoke'.
        config += ',smoke' if ':' in config else ':smoke'
      flags = [f'--config={config}', f'--workdir={workdir}', _flag('seed', seed)] + [
          _flag(k, v) for k, v in row.overrides.items()]
      train = [sys.executable, '-m', 'storm_jax.main'] + flags
      evaluate = [sys.executable, '-m', 'storm_jax.evaluate'] + flags + [
          f'--{k}={v}' for k, v in row.eval_flags.items()]
      out.append(' '.join(shlex.quote(a) for a in train))
      out.append(' '.join(shlex.quote(a) for a in evaluate))
  return out


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
  mean = sum(values) / len(values)
  if len(values) < 2:
    return mean, 0.0
  var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)  # sample std, as papers
  return mean, math.sqrt(var)


def collect_by_seed(table: Table, runs: pathlib.Path) -> dict[str, dict[int, dict[str, Any]]]:
  """{row label: {seed: eval metrics}} from `<runs>/<slug>/seed<s>/`."""
  return {row.label: {int(path.parent.name[len('seed'):]): json.loads(path.read_text())
                      for path in sorted((runs / row.slug).glob(f'seed*/{METRICS_FILE}'))}
          for row in table.rows}


def _finite(value: Any) -> bool:
  return value is not None and math.isfinite(float(value))


def collect(table: Table, runs: pathlib.Path) -> dict[str, dict[str, list[float]]]:
  """{row label: {metric: [value per finished seed]}} from `<runs>/<slug>/seed*/`."""
  by_seed = collect_by_seed(table, runs)
  return {label: {c.key: [float(m[c.key]) for m in per_seed.values() if _finite(m.get(c.key))]
                  for c in table.columns}
          for label, per_seed in by_seed.items()}


def paired_differences(by_seed: Mapping[str, Mapping[int, Mapping[str, Any]]], label: str,
                       baseline: str, key: str) -> list[float]:
  """`label - baseline` of metric `key`, seed by seed, over the seeds both finished."""
  ours, base = by_seed.get(label, {}), by_seed.get(baseline, {})
  return [float(ours[s][key]) - float(base[s][key]) for s in sorted(ours.keys() & base.keys())
          if _finite(ours[s].get(key)) and _finite(base[s].get(key))]


def _fmt(values: Sequence[float]) -> str:
  if not values:
    return '–'
  mean, std = _mean_std(values)
  return f'{mean:.2f} ± {std:.2f} (n={len(values)})' if len(values) > 1 else f'{mean:.2f} (n=1)'


def markdown(table: Table, results: Mapping[str, Mapping[str, Sequence[float]]],
             by_seed: Mapping[str, Mapping[int, Mapping[str, Any]]] | None = None) -> str:
  """A markdown table: ours (mean ± std over seeds) and the paper's number, per column; with
  `table.baseline` and `by_seed`, also each row minus the baseline row, paired by seed. A table
  whose rows have no paper numbers (an ablation of our own) has no paper and Δ columns."""
  paired = bool(table.baseline and by_seed is not None)
  has_paper = any(row.paper for row in table.rows)
  header = ['method']
  for c in table.columns:
    header += [f'{c.header} (ours)', f'{c.header} (paper)', 'Δ'] if has_paper else [c.header]
    if paired:
      header.append(f'{c.header} − {table.baseline} (paired)')
  lines = [f'### {table.title}', '']
  if table.note:
    lines += [table.note, '']
  lines += ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for row in table.rows:
    cells = [row.label]
    for c in table.columns:
      ours = results.get(row.label, {}).get(c.key, [])
      paper = row.paper.get(c.key)
      delta = '–'
      if ours and paper is not None:
        delta = f'{_mean_std(ours)[0] - paper:+.2f}'
      cells += [_fmt(ours), '–' if paper is None else f'{paper:.2f}', delta] if has_paper else [
          _fmt(ours)]
      if paired:
        cells.append(_fmt(paired_differences(by_seed, row.label, table.baseline, c.key)))
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def csv_rows(table: Table, results) -> list[list[str]]:
  rows = [['method', 'metric', 'mean', 'std', 'n', 'paper']]
  for row in table.rows:
    for c in table.columns:
      ours = results.get(row.label, {}).get(c.key, [])
      mean, std = _mean_std(ours) if ours else (float('nan'), float('nan'))
      paper = row.paper.get(c.key)
      rows.append([row.label, c.key, f'{mean:.4f}', f'{std:.4f}', str(len(ours)),
                   '' if paper is None else str(paper)])
  return rows


def main(tables: Table | Sequence[Table], argv: Sequence[str] | None = None) -> int:
  """CLI of a table script; a script may declare several tables (one per architecture)."""
  tables = [tables] if isinstance(tables, Table) else list(tables)
  parser = argparse.ArgumentParser(description='; '.join(t.title for t in tables))
  parser.add_argument('action', choices=('commands', 'run', 'aggregate'))
  parser.add_argument('--table', default=None, choices=[t.name for t in tables],
                      help='only this table (default: all of the script\'s tables)')
  parser.add_argument('--runs', default='runs', help='root; runs go to <runs>/<table name>/')
  parser.add_argument('--seeds', type=int, default=None, help='default: the table\'s own')
  parser.add_argument('--smoke', action='store_true', help='use the configs\' smoke variants')
  parser.add_argument('--csv', default=None, help='also write the aggregate as CSV here')
  args = parser.parse_args(argv)
  all_csv = []
  for table in tables:
    if args.table and table.name != args.table:
      continue
    runs = pathlib.Path(args.runs) / table.name
    if args.action == 'commands':
      print('\n'.join(commands(table, runs, args.seeds, args.smoke)))
    elif args.action == 'run':
      for cmd in commands(table, runs, args.seeds, args.smoke):
        print('+', cmd, flush=True)
        subprocess.run(cmd, shell=True, check=True)
    else:
      results = collect(table, runs)
      print(markdown(table, results, collect_by_seed(table, runs)))
      all_csv += [[table.name] + r for r in csv_rows(table, results)[1:]]
  if args.csv and all_csv:
    with open(args.csv, 'w', newline='') as f:
      csv.writer(f).writerows([['table', 'method', 'metric', 'mean', 'std', 'n', 'paper']] + all_csv)
  return 0
