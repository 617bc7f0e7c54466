"""Checkpoint tests: resume equivalence in new processes, cross-device restore, mismatches."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from storm_jax import checkpointing
from storm_jax import errors
from storm_jax import train
from storm_jax.utils import metric_writers

from _configs import load_config

pytestmark = pytest.mark.usefixtures('key_reuse_checked', 'compilation_cache')

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _env(devices: int = 1) -> dict[str, str]:
  env = dict(os.environ)
  env['JAX_PLATFORMS'] = 'cpu'
  # The straight, halted and resumed runs compile the same programs: compile them once.
  env['JAX_COMPILATION_CACHE_DIR'] = jax.config.jax_compilation_cache_dir
  env['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  env['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '0'
  flags = [f for f in env.get('XLA_FLAGS', '').split() if 'device_count' not in f]
  if devices > 1:
    flags.append(f'--xla_force_host_platform_device_count={devices}')
  env['XLA_FLAGS'] = ' '.join(flags)
  return env


def _main(workdir, *overrides: str) -> dict:
  """Runs `python -m storm_jax.main` on the digits smoke config in a new process."""
  cmd = [sys.executable, '-m', 'storm_jax.main', '--config=configs/digits_storm.py:smoke',
         f'--workdir={workdir}', '--config.preview_images=0', '--config.tensorboard=False',
         '--config.num_train_steps=4', '--config.log_every_steps=1',
         '--config.checkpoint_every_steps=0', *overrides]
  proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-5000:]
  summary = proc.stdout[proc.stdout.index('Summary: ') + len('Summary: '):]
  return json.loads(summary)


@pytest.mark.slow
def test_resume_in_a_new_process_is_bit_exact(tmp_path):
  """4 steps straight == 2 steps, halt, resume in a new process to 4 (StoRM: mixing draws)."""
  straight = _main(tmp_path / 'straight')
  halted = _main(tmp_path / 'resumed', '--config.halt_after_step=2')
  assert halted['stopped_early'] and halted['step'] == 2
  resumed = _main(tmp_path / 'resumed')
  assert resumed['step'] == straight['step'] == 4
  for key in ('eval_accuracy', 'eval_top5_accuracy', 'eval_nll', 'train_loss'):
    assert resumed[key] == straight[key], key
  rows = {d: [r for r in metric_writers.read_jsonl(str(tmp_path / d / 'metrics.jsonl'))
              if 'train_loss' in r] for d in ('straight', 'resumed')}
  assert [r['step'] for r in rows['resumed']] == [r['step'] for r in rows['straight']] == [
      1, 2, 3, 4]
  train_metrics = lambda r: {k: v for k, v in r.items() if k.startswith('train_')}  # no speed
  for a, b in zip(rows['resumed'], rows['straight']):  # the mixing draws and the updates replay
    assert 'train_l2_grads' in a and train_metrics(a) == train_metrics(b), (a, b)
  config = load_config('digits_storm', 'smoke')
  _, v_straight, _ = train.restore_for_eval(config, str(tmp_path / 'straight'))
  _, v_resumed, _ = train.restore_for_eval(config, str(tmp_path / 'resumed'))
  for a, b in zip(jax.tree.leaves(v_straight), jax.tree.leaves(v_resumed)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


_SAVE_ON_8 = textwrap.dedent('''
    import sys, jax
    sys.path.insert(0, '.')
    from configs import digits_storm
    from storm_jax import checkpointing, train
    assert jax.device_count() == 8, jax.device_count()
    config = digits_storm.get_config('smoke')
    info = train.dataset_info(config)
    mesh = train.make_mesh()
    state = train.create_train_state(config, train.build_model(config, info.num_classes),
                                     jax.random.key(1), mesh)
    ckpt = checkpointing.Checkpointer(sys.argv[1] + '/checkpoints')
    ckpt.save(0, state)
    ckpt.close()
''')


@pytest.mark.slow
def test_checkpoint_saved_on_8_devices_restores_on_1(tmp_path):
  proc = subprocess.run([sys.executable, '-c', _SAVE_ON_8, str(tmp_path)], cwd=ROOT,
                        env=_env(devices=8), capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-5000:]
  assert jax.device_count() == 1
  config = load_config('digits_storm', 'smoke')
  _, variables, _ = train.restore_for_eval(config, str(tmp_path))
  # Same init key on one device: identical values.
  info = train.dataset_info(config)
  state = train.create_train_state(config, train.build_model(config, info.num_classes),
                                   jax.random.key(1), train.make_mesh())
  for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(
      {'params': state.params, 'batch_stats': state.batch_stats})):
    assert len(a.sharding.device_set) == 1
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_mismatched_dtype_or_structure_raises(tmp_path):
  ckpt = checkpointing.Checkpointer(str(tmp_path), async_save=False)
  tree = {'w': jnp.ones((2, 3), jnp.float32), 'opt': (jnp.zeros(3), {'n': jnp.int32(4)})}
  ckpt.save(5, tree)
  ckpt.wait()
  restored = ckpt.restore(tree)
  for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(restored)):
    np.testing.assert_array_equal(a, b)
    assert a.dtype == b.dtype
  with pytest.raises(ValueError, match=r'w.*float32.*bfloat16'):
    ckpt.restore({**tree, 'w': jnp.ones((2, 3), jnp.bfloat16)})
  with pytest.raises(ValueError, match=r'w.*\[2, 3\].*\[3, 2\]'):
    ckpt.restore({**tree, 'w': jnp.ones((3, 2), jnp.float32)})
  with pytest.raises(ValueError, match='structure'):
    ckpt.restore({**tree, 'extra': jnp.ones(2)})
  with pytest.raises(FileNotFoundError):
    checkpointing.Checkpointer(str(tmp_path / 'empty')).restore(tree)
  ckpt.close()


def test_async_save_is_complete_after_close(tmp_path):
  ckpt = checkpointing.Checkpointer(str(tmp_path), every_steps=2, keep=2)
  tree = {'w': jnp.arange(1000.0)}
  for step in range(1, 7):
    ckpt.maybe_save(step, jax.tree.map(lambda x, s=step: x + s, tree))
  ckpt.close()
  reopened = checkpointing.Checkpointer(str(tmp_path))
  assert reopened.all_steps() == [4, 6]  # keep=2
  np.testing.assert_array_equal(reopened.restore(tree)['w'], np.arange(1000.0) + 6)


# ----------------------------------------------------------------------------- damage


def _small_train_state(seed: int):
  """A flax TrainState (params, SGD momentum, step) big enough for several data chunks."""
  import optax  # pylint: disable=g-import-not-at-top
  from flax.training import train_state  # pylint: disable=g-import-not-at-top
  params = {'conv': {'kernel': jax.random.normal(jax.random.key(seed), (3, 3, 16, 32))},
            'dense': {'kernel': jnp.full((64, 10), float(seed)), 'bias': jnp.zeros(10)}}
  return train_state.TrainState.create(apply_fn=None, params=params,
                                       tx=optax.sgd(0.1, momentum=0.9))


def _saved_steps(directory, steps=(1, 2, 3)):
  """Checkpoints at `steps` whose state differs per step; returns {step: state}."""
  ckpt = checkpointing.Checkpointer(str(directory), async_save=False, keep=10)
  states = {}
  for s in steps:
    states[s] = _small_train_state(s).replace(step=s)
    ckpt.save(s, states[s])
  ckpt.close()
  return states


def _cut_short(step_dir: pathlib.Path):
  """Truncates every array data file of a step to half its length (a save cut off)."""
  files = [f for f in (step_dir / 'default').rglob('*') if f.is_file() and f.parent.name == 'd']
  assert files
  for f in files:
    f.write_bytes(f.read_bytes()[:f.stat().st_size // 2])


def _drop_metadata(step_dir: pathlib.Path):
  (step_dir / 'default' / '_METADATA').unlink()


def _empty(step_dir: pathlib.Path):
  import shutil  # pylint: disable=g-import-not-at-top
  shutil.rmtree(step_dir)
  step_dir.mkdir()


def _assert_same(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize('damage,reason', [(_cut_short, 'Error'), (_drop_metadata, 'no-METADATA'),
                                           (_empty, 'empty')], ids=['cut-short', 'no-METADATA',
                                                                    'emptied'])
def test_damaged_newest_step_is_moved_aside_and_the_previous_restores(tmp_path, damage, reason,
                                                                      caplog):
  states = _saved_steps(tmp_path)
  damage(tmp_path / '3')
  ckpt = checkpointing.Checkpointer(str(tmp_path), async_save=False)
  with caplog.at_level('WARNING'):
    restored = ckpt.restore(_small_train_state(0))
  assert int(restored.step) == 2
  _assert_same(restored, states[2])
  moved = os.listdir(tmp_path / 'corrupt')
  assert len(moved) == 1 and moved[0].startswith('3-') and reason in moved[0], moved
  assert not (tmp_path / '3').exists()
  assert ckpt.all_steps() == [1, 2]
  assert any('step 3' in r.getMessage() and 'does not restore' in r.getMessage()
             for r in caplog.records), [r.getMessage() for r in caplog.records]
  ckpt.close()
  # A new run in the same workdir resumes from step 2 silently and saves past the damage.
  again = checkpointing.Checkpointer(str(tmp_path), async_save=False)
  assert again.latest_step() == 2
  again.save(3, states[3])
  _assert_same(again.restore(_small_train_state(0)), states[3])
  again.close()


def test_every_step_damaged_is_a_clear_error_and_nothing_is_deleted(tmp_path):
  _saved_steps(tmp_path, (1, 2))
  _cut_short(tmp_path / '2')
  _drop_metadata(tmp_path / '1')
  ckpt = checkpointing.Checkpointer(str(tmp_path), async_save=False)
  with pytest.raises(checkpointing.NoUsableCheckpointError, match='no checkpoint .* restores'):
    ckpt.restore(_small_train_state(0))
  assert issubclass(checkpointing.NoUsableCheckpointError, errors.UserError)
  assert sorted(n.split('-')[0] for n in os.listdir(tmp_path / 'corrupt')) == ['1', '2']
  assert ckpt.all_steps() == []
  ckpt.close()


def test_mismatch_is_not_damage_nothing_is_moved(tmp_path):
  _saved_steps(tmp_path, (1,))
  ckpt = checkpointing.Checkpointer(str(tmp_path), async_save=False)
  other = _small_train_state(0).replace(params={'conv': {'kernel': jnp.zeros((3, 3, 16, 8))}})
  with pytest.raises(checkpointing.CheckpointMismatchError, match='structure'):
    ckpt.restore(other)
  assert ckpt.all_steps() == [1] and not (tmp_path / 'corrupt').exists()
  with pytest.raises(checkpointing.NoCheckpointError):
    checkpointing.Checkpointer(str(tmp_path / 'none')).restore(other)
  ckpt.close()


def test_orphaned_temporary_save_folders_are_reported(tmp_path, caplog):
  _saved_steps(tmp_path, (1,))
  (tmp_path / '2.orbax-checkpoint-tmp-1234').mkdir()
  with caplog.at_level('WARNING'):
    ckpt = checkpointing.Checkpointer(str(tmp_path), async_save=False)
  assert ckpt.temporary_folders() == ['2.orbax-checkpoint-tmp-1234']
  assert any('2.orbax-checkpoint-tmp-1234' in r.getMessage() for r in caplog.records)
  assert ckpt.latest_step() == 1
  assert (tmp_path / '2.orbax-checkpoint-tmp-1234').is_dir()  # reported, not deleted
  ckpt.close()
