"""User errors: `UserError` with the nearest valid names, and one-line CLI errors (exit 2)."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

from storm_jax import errors
from storm_jax import mixing

from _configs import load_config
from _configs import override

ROOT = pathlib.Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- library


def test_nearest_names():
  assert errors.nearest('stom', ['storm', 'mixup', 'cutmix']) == ['storm']
  assert errors.did_you_mean('cifar101', ['cifar10', 'cifar100', 'digits']) in (
      " Did you mean 'cifar100' or 'cifar10'?", " Did you mean 'cifar10' or 'cifar100'?")
  assert errors.did_you_mean('zzzz', ['storm', 'mixup']) == ''
  e = errors.unknown_name_error('mix.name', 'mixpu', ['mixup', 'cutmix'], 'mixing method')
  assert isinstance(e, ValueError)
  assert str(e) == ("mix.name='mixpu' is not a known mixing method. Did you mean 'mixup'? "
                    'Known: mixup, cutmix.')


def test_mixer_name_and_hyper_parameter_typos_name_the_nearest():
  with pytest.raises(errors.UserError, match="name='stom'.*Did you mean 'storm'"):
    mixing.get('stom')
  with pytest.raises(errors.UserError, match="'bta' for mixer 'storm'. Did you mean 'beta'"):
    mixing.get('storm', bta=1.0)
  with pytest.raises(errors.UserError, match=r'k=0 must be an integer >= '):
    mixing.get('storm', k=0)
  # A method's own checks (raised as ValueError inside its factory) arrive as UserError too.
  with pytest.raises(errors.UserError, match='mixup_alpha=0 and cutmix_alpha=0'):
    mixing.get('mixup_cutmix', mixup_alpha=0.0, cutmix_alpha=0.0)


def test_wrong_shapes_into_the_ops_are_user_errors():
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  m = mixing.get('cutmix')
  with pytest.raises(errors.UserError, match=r'shape=\(4, 8, 8\)'):
    m.sample(jax.random.key(0), (4, 8, 8))
  params = m.sample(jax.random.key(0), (4, 8, 8, 3))
  with pytest.raises(errors.UserError, match=r'x\.shape=\(4, 8, 8\)'):
    m.apply(params, jnp.zeros((4, 8, 8)), jnp.eye(4))
  with pytest.raises(errors.UserError, match=r'y\.shape=\(4,\)'):
    m.apply(params, jnp.zeros((4, 8, 8, 3)), jnp.zeros(4))
  with pytest.raises(errors.UserError, match='needs sample'):
    mixing.get('rmix').sample(jax.random.key(0), (4, 8, 8, 3))


def test_data_and_checkpoint_errors_are_user_errors():
  from storm_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from storm_jax import data  # pylint: disable=g-import-not-at-top
  with pytest.raises(errors.UserError, match="'cifar101'. Did you mean 'cifar100?' or"):
    data.get_info('cifar101')
  with pytest.raises(errors.UserError, match='image_size=-1'):
    data.get_info('cifar10', image_size=-1)
  for cls in (data.DatasetNotFoundError, data.UnreadableImageError,
              checkpointing.CheckpointMismatchError, checkpointing.NoCheckpointError,
              checkpointing.NoUsableCheckpointError):
    assert issubclass(cls, errors.UserError), cls
  assert issubclass(checkpointing.NoCheckpointError, FileNotFoundError)


def test_verbose_switches(monkeypatch):
  monkeypatch.delenv(errors.VERBOSE_ENV, raising=False)
  assert not errors.verbose_requested(['prog', '--config=x'])
  assert errors.verbose_requested(['prog', '--verbose'])
  monkeypatch.setenv(errors.VERBOSE_ENV, '1')
  assert errors.verbose_requested(['prog'])
  monkeypatch.setenv(errors.VERBOSE_ENV, '0')
  assert not errors.verbose_requested(['prog'])


def test_run_cli_prints_one_line_and_exits_2(capsys, monkeypatch):
  monkeypatch.delenv(errors.VERBOSE_ENV, raising=False)

  def bad():
    raise errors.UserError('mix.hparams.k=0 must be an integer >= 1.')

  with pytest.raises(SystemExit) as e:
    errors.run_cli(bad, argv=['prog'])
  assert e.value.code == errors.EXIT_USER_ERROR == 2
  err = capsys.readouterr().err
  assert err == 'error: mix.hparams.k=0 must be an integer >= 1.\n'
  with pytest.raises(SystemExit):
    errors.run_cli(bad, argv=['prog', '--verbose'])
  err = capsys.readouterr().err
  assert 'Traceback' in err and err.endswith('error: mix.hparams.k=0 must be an integer >= 1.\n')

  def bug():
    raise KeyError('not a user error')

  with pytest.raises(KeyError):  # unexpected exceptions keep their traceback
    errors.run_cli(bug, argv=['prog'])


# ----------------------------------------------------------------------------- command line


def _run(module, *args, env=None):
  full_env = {k: v for k, v in os.environ.items() if k != errors.VERBOSE_ENV}
  full_env.update(JAX_PLATFORMS='cpu', **(env or {}))
  return subprocess.run([sys.executable, '-m', module, *args], cwd=ROOT, env=full_env,
                        capture_output=True, text=True, timeout=600)


_MAIN_CASES = [
    (('--config.nonexistent=1',), "the config has no field 'nonexistent'"),
    (('--config.mix.hparams.gamma=3',), "mix.hparams has no field 'gamma'. .*Fields of "
                                        'mix.hparams: beta, k'),
    (('--config.mix.nme=storm',), "mix has no field 'nme'. Did you mean 'name'"),
    (('--config.optim.schedul=cosine',), "Did you mean 'schedule'"),
    (('--config.batch_size=abc',), "config.batch_size=abc: invalid literal"),
    (('extra_argument',), r"unexpected command-line arguments \['extra_argument'\]"),
    (('--no_such_flag=1',), 'no_such_flag'),
]


# Each case launches `python -m storm_jax.main` (~1.5 s): three in the fast tier.
@pytest.mark.parametrize('args,message', [
    pytest.param(*c, id=c[0][0], marks=[pytest.mark.slow] if i >= 3 else [])
    for i, c in enumerate(_MAIN_CASES)])
def test_main_flag_errors_are_one_line(tmp_path, args, message):
  workdir = tmp_path / 'run'
  proc = _run('storm_jax.main', '--config=configs/digits_storm.py', f'--workdir={workdir}', *args)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert 'Traceback' not in proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert lines[-1].startswith('error: ') and len(lines) <= 2, proc.stderr[-3000:]
  assert re.search(message, lines[-1]), lines[-1]
  assert not workdir.exists()  # nothing written (or compiled): stopped at the flags


# Config values that parse but fail validation: all stop before a model is built or a
# file is written (the workdir is not even created). The command line turns any UserError
# from `train_and_evaluate` into the one-line exit 2: two launches check that, one per place
# that raises (config validation, the dataset check); every case is checked in-process.
_MAIN_VALIDATION_CASES = [
    (('--config.mix.hparams.k=0',), r'mix.hparams.k=0 must be an integer >= 1'),
    (('--config.dataset.name=tiny_imagenet', '--config.dataset.data_dir={tmp}/tfds'),
     r'tiny_imagenet'),
]
_VALIDATION_CASES = [
    ({'mix.hparams.k': 0}, r'mix.hparams.k=0 must be an integer >= 1'),
    ({'model.name': 'cnn_smal'}, r"model.name='cnn_smal'.*Did you mean 'cnn_small'"),
    ({'mix.name': 'strom'}, r"'strom'.*Did you mean 'storm'"),
    ({'label_smoothing': 1.0}, r'label_smoothing=1.0 must be in \[0, 1\)'),
    ({'dataset.name': 'tiny_imagenet', 'dataset.data_dir': '{tmp}/tfds'}, r'tiny_imagenet'),
    ({'batch_size': 0}, r'batch_size=0 must be an integer >= 1'),
    ({'optim.schedule': 'cosin'}, r"optim.schedule='cosin'"),
    ({'mix.objective': 'average'}, r"mix.objective='average'"),
    ({'compute_dtype': 'float16'}, r"compute_dtype='float16' must be one of"),
]


@pytest.mark.slow  # one JAX + TensorFlow start-up per case
@pytest.mark.parametrize('args,message', _MAIN_VALIDATION_CASES,
                         ids=['+'.join(c[0]) for c in _MAIN_VALIDATION_CASES])
def test_main_validation_errors_are_one_line(tmp_path, args, message):
  workdir = tmp_path / 'run'
  args = [a.format(tmp=tmp_path) for a in args]
  proc = _run('storm_jax.main', '--config=configs/digits_storm.py', f'--workdir={workdir}', *args)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert 'Traceback' not in proc.stderr
  assert proc.stderr.strip().splitlines()[-1].startswith('error: ')
  assert re.search(message, proc.stderr.strip().splitlines()[-1]), proc.stderr[-2000:]
  assert not workdir.exists()


@pytest.mark.parametrize('fields,message', _VALIDATION_CASES,
                         ids=['+'.join(c[0]) for c in _VALIDATION_CASES])
def test_validation_errors_are_one_line_user_errors(tmp_path, fields, message):
  from storm_jax import train  # pylint: disable=g-import-not-at-top
  fields = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in fields.items()}
  config = override(load_config('digits_storm'), fields)
  workdir = tmp_path / 'run'
  with pytest.raises(errors.UserError) as e:
    train.train_and_evaluate(config, str(workdir))
  assert '\n' not in str(e.value) and re.search(message, str(e.value)), str(e.value)
  assert not workdir.exists()


@pytest.mark.slow
def test_workdir_that_is_a_file_and_evaluate_without_checkpoints(tmp_path):
  afile = tmp_path / 'afile'
  afile.write_text('not a directory')
  proc = _run('storm_jax.main', '--config=configs/digits_storm.py', f'--workdir={afile}')
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  assert re.search(r"workdir=.*afile.* is not a directory", proc.stderr.splitlines()[-1])
  assert afile.read_text() == 'not a directory'
  empty = tmp_path / 'empty_run'
  proc = _run('storm_jax.evaluate', '--config=configs/digits_storm.py', f'--workdir={empty}')
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  assert 'error: ' in proc.stderr.splitlines()[-1] and 'checkpoint' in proc.stderr.splitlines()[-1]
  proc = _run('storm_jax.evaluate', '--config=configs/digits_storm.py', f'--workdir={empty}',
              '--fgsm_eps=300')
  assert proc.returncode == 2 and 'fgsm_eps=300.0' in proc.stderr.splitlines()[-1]
  assert not empty.exists()


def test_main_config_file_errors(tmp_path):
  broken = tmp_path / 'broken.py'
  broken.write_text('def get_config(:\n')
  for spec, message in ((str(tmp_path / 'nope.py'), 'no such config file'),
                        (str(broken), 'does not load: SyntaxError')):
    proc = _run('storm_jax.main', f'--config={spec}', f'--workdir={tmp_path / "run"}')
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1].startswith('error: ') and message in proc.stderr
  proc = _run('storm_jax.main', '--config=configs/digits_storm.py')
  assert proc.returncode == 2 and 'error: ' in proc.stderr and '--workdir' in proc.stderr
  assert not (tmp_path / 'run').exists()


_CONFIG_FILE_TYPOS = [
    ('config.batch_sise = 32', "config field 'batch_sise'.*Did you mean 'batch_size'"),
    ('config.optim.warmup_epoch = 5.0', "'optim.warmup_epoch'.*Did you mean 'warmup_epochs'"),
    ('config.dataset.imagesize = 16', "'dataset.imagesize'.*Did you mean 'image_size'"),
]


@pytest.mark.parametrize('line,message', _CONFIG_FILE_TYPOS, ids=[c[0] for c in _CONFIG_FILE_TYPOS])
def test_config_file_typo_is_one_line_naming_the_nearest_field(tmp_path, line, message):
  """A config FILE that sets a field the defaults lack stops at the flags (nothing built)."""
  path = tmp_path / 'typo.py'
  path.write_text('from configs import digits_storm\n\n\ndef get_config():\n'
                  f'  config = digits_storm.get_config()\n  {line}\n  return config\n')
  workdir = tmp_path / 'run'
  proc = _run('storm_jax.main', f'--config={path}', f'--workdir={workdir}')
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert 'Traceback' not in proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert lines[-1].startswith(f'error: --config={path}: ') and len(lines) <= 2, proc.stderr
  assert re.search(message, lines[-1]), lines[-1]
  assert not workdir.exists()


@pytest.mark.slow  # two JAX + TensorFlow start-ups
def test_model_option_from_the_command_line_on_a_config_that_does_not_set_it(tmp_path):
  """`--config.model.kwargs.<option>` parses on any config; a wrong one names the model."""
  workdir = tmp_path / 'run'
  proc = _run('storm_jax.main', '--config=configs/cifar100_rmix_onecycle.py:mixup',
              f'--workdir={workdir}', '--config.model.kwargs.width=0')
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  assert proc.stderr.strip().splitlines()[-1] == (
      'error: model.kwargs.width=0 must be an integer >= 1.'), proc.stderr[-3000:]
  proc = _run('storm_jax.main', '--config=configs/digits_storm.py', f'--workdir={workdir}',
              '--config.model.kwargs.stem=tiny')
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  assert re.search(r"error: model.kwargs.stem='tiny' is not an option of "
                   r"model.name='cnn_small'. Its options: width=32",
                   proc.stderr.strip().splitlines()[-1]), proc.stderr[-3000:]
  assert not workdir.exists()


def test_verbose_shows_the_traceback(tmp_path):
  proc = _run('storm_jax.main', '--config=configs/digits_storm.py', f'--workdir={tmp_path}/r',
              '--config.nonexistent=1', env={errors.VERBOSE_ENV: '1'})
  assert proc.returncode == 2 and 'Traceback' in proc.stderr
  assert proc.stderr.strip().splitlines()[-1].startswith('error: ')


@pytest.mark.slow  # two TensorFlow start-ups (~45 s on the loaded 2-core machine)
def test_prepare_errors(tmp_path):
  proc = _run('storm_jax.data.prepare', f'--data_dir={tmp_path}')
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr
  assert proc.stderr.strip().splitlines()[-1].startswith('error: expected one dataset name')
  proc = _run('storm_jax.data.prepare', 'cifar1000', f'--data_dir={tmp_path}', '--nodownload')
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  assert re.search("Did you mean .*'cifar100'", proc.stderr.strip().splitlines()[-1])
  # Quiet by default: no TensorFlow start-up notices before the error line.
  assert 'oneDNN' not in proc.stderr and 'cpu_feature_guard' not in proc.stderr


def test_mixer_check_raises_shape_errors_without_compiling():
  for name in mixing.names():
    mixing.get(name).check((8, 32, 32, 3), 10)  # every method traces abstractly
  with pytest.raises(errors.UserError, match=r"points='distinct' needs k <= H.*k=9"):
    mixing.get('storm', k=9, points='distinct').check((8, 8, 8, 3), 10)
  with pytest.raises(errors.UserError, match=r'grid_sizes=\(3,\)'):
    mixing.get('rmix', grid_sizes=(3,)).check((8, 32, 32, 3), 10)


def test_config_file_fields_are_checked_against_the_defaults():
  import ml_collections  # pylint: disable=g-import-not-at-top
  from storm_jax import cli  # pylint: disable=g-import-not-at-top
  reference = ml_collections.ConfigDict(
      {'batch_size': 1, 'mix': {'name': 'x', 'hparams': {}}, 'model': {'kwargs': {}}})
  ok = ml_collections.ConfigDict(
      {'batch_size': 2, 'mix': {'name': 'storm', 'hparams': {'k': 2}}, 'model': {'kwargs': {
          'width': 16}}})
  cli.check_config_fields(ok, reference)  # free-form hparams / kwargs are not judged here
  bad = ml_collections.ConfigDict({'batch_sise': 2})
  with pytest.raises(errors.UserError, match="'batch_sise'.*Did you mean 'batch_size'"):
    cli.check_config_fields(bad, reference)
  bad = ml_collections.ConfigDict({'mix': {'nmae': 'storm'}})
  with pytest.raises(errors.UserError, match="'mix.nmae'.*'name'.*Fields of mix: hparams, name"):
    cli.check_config_fields(bad, reference)
