"""The experiment-table machinery on fabricated run directories (no training)."""

import json
import pathlib
import shlex
import subprocess
import sys

import pytest

from experiments import tablelib

from _configs import ROOT
from _configs import override

TABLE = tablelib.Table(
    name='toy', title='Toy table',
    columns=(tablelib.Column('top1_acc', 'top-1 %'), tablelib.Column('fgsm_err_4', 'FGSM err %')),
    rows=(tablelib.Row('Vanilla', 'configs/x.py', {'mix.name': 'none'},
                       paper={'top1_acc': 76.33, 'fgsm_err_4': 84.93}),
          tablelib.Row('StoRM (k=2)', 'configs/x.py', {'mix.name': 'storm', 'mix.hparams.k': 2},
                       paper={'top1_acc': 82.06, 'fgsm_err_4': None})),
    seeds=3)


def _fabricate(root: pathlib.Path, row, seed, metrics):
  d = tablelib.run_dir(root / TABLE.name, row, seed)
  d.mkdir(parents=True)
  (d / tablelib.METRICS_FILE).write_text(json.dumps(metrics))


def test_commands_cover_every_row_and_seed(tmp_path):
  cmds = tablelib.commands(TABLE, tmp_path, seeds=2)
  assert len(cmds) == 2 * 2 * 2  # rows x seeds x (train, evaluate)
  train = shlex.split(cmds[4])  # rows are outer, seeds inner: storm seed 0
  assert train[1:3] == ['-m', 'storm_jax.main']
  assert f'--workdir={tmp_path}/storm_k_2/seed0' in train
  assert '--config.mix.name=storm' in train and '--config.mix.hparams.k=2' in train
  assert '--config.seed=0' in train
  assert shlex.split(cmds[5])[2] == 'storm_jax.evaluate'
  smoke = tablelib.commands(TABLE, tmp_path, seeds=1, smoke=True)
  assert all('--config=configs/x.py:smoke ' in c for c in smoke)
  row = tablelib.Row('M', 'configs/y.py:mixup', eval_flags={'fgsm_eps': '4,8'})
  table = tablelib.Table('t', 't', TABLE.columns, (row,), seeds=1)
  train, evaluate = tablelib.commands(table, tmp_path, smoke=True)
  assert '--config=configs/y.py:mixup,smoke' in shlex.split(train)
  assert shlex.split(evaluate)[-1] == '--fgsm_eps=4,8'


def test_aggregate_mean_std_and_paper_columns(tmp_path, capsys):
  vanilla, storm = TABLE.rows
  _fabricate(tmp_path, vanilla, 0, {'top1_acc': 76.0, 'fgsm_err_4': 85.0})
  _fabricate(tmp_path, vanilla, 1, {'top1_acc': 78.0, 'fgsm_err_4': 83.0})
  _fabricate(tmp_path, storm, 2, {'top1_acc': 81.5})  # one finished seed, metric missing
  results = tablelib.collect(TABLE, tmp_path / TABLE.name)
  assert results['Vanilla']['top1_acc'] == [76.0, 78.0]
  assert results['StoRM (k=2)']['fgsm_err_4'] == []
  md = tablelib.markdown(TABLE, results)
  # mean 77, sample std sqrt(2) = 1.41; delta vs paper 77 - 76.33.
  assert '| Vanilla | 77.00 ± 1.41 (n=2) | 76.33 | +0.67 | 84.00 ± 1.41 (n=2) | 84.93 | -0.93 |' in md
  assert '| StoRM (k=2) | 81.50 (n=1) | 82.06 | -0.56 | – | – | – |' in md
  csv_path = tmp_path / 'out.csv'
  assert tablelib.main([TABLE], ['aggregate', f'--runs={tmp_path}', f'--csv={csv_path}']) == 0
  assert '77.00 ± 1.41' in capsys.readouterr().out
  lines = csv_path.read_text().splitlines()
  assert lines[0] == 'table,method,metric,mean,std,n,paper'
  assert lines[1] == 'toy,Vanilla,top1_acc,77.0000,1.4142,2,76.33'


def test_paired_differences_against_the_baseline_row(tmp_path):
  """Ablations: row - baseline per seed, only over seeds both rows finished."""
  table = tablelib.Table(name='toy', title='Toy', columns=TABLE.columns[:1], rows=TABLE.rows,
                         seeds=3, baseline='Vanilla')
  vanilla, storm = TABLE.rows
  for seed, acc in ((0, 76.0), (1, 78.0), (2, 70.0)):
    _fabricate(tmp_path, vanilla, seed, {'top1_acc': acc})
  for seed, acc in ((0, 77.0), (1, 81.0), (3, 99.0)):  # seed 3 has no vanilla partner
    _fabricate(tmp_path, storm, seed, {'top1_acc': acc})
  by_seed = tablelib.collect_by_seed(table, tmp_path / table.name)
  assert tablelib.paired_differences(by_seed, 'StoRM (k=2)', 'Vanilla', 'top1_acc') == [1.0, 3.0]
  assert tablelib.paired_differences(by_seed, 'Vanilla', 'Vanilla', 'top1_acc') == [0.0] * 3
  md = tablelib.markdown(table, tablelib.collect(table, tmp_path / table.name), by_seed)
  assert 'top-1 % − Vanilla (paired)' in md
  assert md.splitlines()[-1].endswith('| 2.00 ± 1.41 (n=2) |'), md  # mean of (1, 3), std sqrt 2


def test_table_without_paper_numbers_has_no_paper_columns(tmp_path):
  """Our own ablations: one column per metric, no empty '(paper)' and 'Δ' columns."""
  rows = tuple(tablelib.Row(r.label, r.config) for r in TABLE.rows)
  table = tablelib.Table(name='own', title='Own', columns=TABLE.columns, rows=rows, seeds=1)
  _fabricate(tmp_path, rows[0], 0, {'top1_acc': 76.0, 'fgsm_err_4': 80.0})
  md = tablelib.markdown(table, tablelib.collect(table, tmp_path / TABLE.name))
  header = md.splitlines()[2]
  assert '(paper)' not in md and 'Δ' not in md, md
  assert header == '| method | ' + ' | '.join(c.header for c in TABLE.columns) + ' |', header
  assert md.splitlines()[4] == '| Vanilla | 76.00 (n=1) | 80.00 (n=1) |', md


def test_unknown_table_rejected(tmp_path):
  with pytest.raises(SystemExit):
    tablelib.main([TABLE], ['aggregate', '--table=nope', f'--runs={tmp_path}'])


TABLE_SCRIPTS = ('storm_table1_cifar10', 'storm_table2_cifar100', 'storm_table3_tinyimagenet',
                 'storm_table4_imagenet', 'storm_table5_robustness', 'hmix_table2_cifar100',
                 'hmix_table3_imagenet', 'rmix_table4_cifar100', 'rmix_table6_calibration',
                 'dcutmix_tables', 'multimix_table1', 'storm_ablation', 'reduced_protocol')


@pytest.mark.parametrize('script', TABLE_SCRIPTS)
def test_table_rows_resolve_to_valid_configs(script):
  """Every row's config (and its smoke variant) loads, every override names a field, and the
  method and the model (with the row's model options) build."""
  import importlib
  from storm_jax import cli
  from storm_jax import mixing
  from storm_jax import train
  tables = importlib.import_module(f'experiments.{script}').TABLES
  assert tables and all(t.rows for t in tables)
  for table in tables:
    for row in table.rows:
      for spec in (row.config, row.config + (',smoke' if ':' in row.config else ':smoke')):
        # Every override names a field (KeyError otherwise); the method, its
        # hyper-parameters and the model are valid (ValueError otherwise).
        config = override(cli.load_config_file(f'{ROOT}/{spec}'), row.overrides)
        mixing.get(config.mix.name, **dict(config.mix.hparams))
        train.build_model(config, num_classes=10)


def test_plot_overhead_on_fabricated_runs(tmp_path, capsys):
  from experiments import plot_overhead
  def run(method, seed, speed, acc=None, acc_frac=None):
    d = tmp_path / method / f'seed{seed}'
    d.mkdir(parents=True)
    rows = [{'step': 10, 'train_loss': 1.0}, {'step': 20, 'summary_images_per_sec': speed}]
    if acc_frac is not None:
      rows[-1]['summary_eval_accuracy'] = acc_frac
    (d / 'metrics.jsonl').write_text('\n'.join(json.dumps(r) for r in rows) + '\n')
    if acc is not None:
      (d / 'eval_metrics.json').write_text(json.dumps({'top1_acc': acc}))
  run('vanilla', 0, 100.0, acc=70.0)
  run('vanilla', 1, 100.0, acc=72.0)
  run('storm', 0, 80.0, acc_frac=0.75)   # accuracy from the trainer's summary
  results = plot_overhead.collect(tmp_path)
  assert results['vanilla'] == {'images_per_sec': 100.0, 'top1_acc': 71.0, 'n': 2}
  over = plot_overhead.overheads(results, 'vanilla')
  # T ∝ 1 / speed: (1/80 - 1/100) / (1/100) = +25 %.
  assert over == pytest.approx({'vanilla': 0.0, 'storm': 25.0})
  out = tmp_path / 'fig.png'
  assert plot_overhead.main(['--runs', str(tmp_path), '--out', str(out)]) == 0
  assert out.stat().st_size > 1000
  assert '| storm | 80.0 | +25.0 | 75.00 | 1 |' in capsys.readouterr().out
  with pytest.raises(ValueError, match='--vanilla'):
    plot_overhead.overheads(results, 'none')


@pytest.mark.parametrize('argv', [
    ['experiments/storm_table2_cifar100.py', 'commands', '--seeds=1'],
    ['experiments/plot_overhead.py', '--help'],
])
def test_scripts_run_as_files_and_as_modules(argv):
  """`python experiments/<script>.py` works as well as `python -m experiments.<script>`."""
  root = pathlib.Path(__file__).resolve().parent.parent
  module = argv[0][:-len('.py')].replace('/', '.')
  outputs = []
  for cmd in ([sys.executable] + argv, [sys.executable, '-m', module] + argv[1:]):
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    outputs.append(proc.stdout)
  assert outputs[0] == outputs[1] and outputs[0]
