"""The ops, the models, the train step and the benchmarks work without TensorFlow.

Accelerator machines may have jax, flax, optax, orbax, chex, torch and timm but no TensorFlow
or tensorflow_datasets: only the data pipeline may import them. A fresh interpreter with a
meta-path finder that refuses both imports every module below.
"""

import pathlib
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Modules that must not need TensorFlow (`storm_jax.data` loads it on first use of the
# pipeline, not on import).
TF_FREE = (
    'storm_jax.mixing',
    'storm_jax.models',
    'storm_jax.data',
    'storm_jax.train',
    'storm_jax.evaluation',
    'experiments.bench_train_step',
    'experiments.bench_mixing',
    'experiments.torch_peers',
    'experiments.gpu_check',
)

_PROGRAM = textwrap.dedent('''
    import importlib, importlib.abc, sys

    class BlockTensorFlow(importlib.abc.MetaPathFinder):
      def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('tensorflow', 'tensorflow_datasets'):
          raise ImportError(f'{name} is blocked: this module must not need TensorFlow')
        return None

    sys.meta_path.insert(0, BlockTensorFlow())
    for module in sys.argv[1:]:
      if module.startswith('run:'):
        exec(module[4:])
      else:
        importlib.import_module(module)
    assert not {'tensorflow', 'tensorflow_datasets'} & set(sys.modules)
    print('imported', len(sys.argv) - 1)
''')


def _run(*modules):
  return subprocess.run([sys.executable, '-c', _PROGRAM, *modules], capture_output=True,
                        text=True, cwd=ROOT, timeout=600)


def test_ops_models_and_benchmarks_import_without_tensorflow():
  proc = _run(*TF_FREE)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f'imported {len(TF_FREE)}' in proc.stdout


@pytest.mark.slow  # compiles a PreActResNet step in a new process
def test_the_train_step_runs_without_tensorflow():
  """One synthetic PreActResNet step through the public step builder, TensorFlow blocked."""
  proc = _run('run:from experiments import bench_train_step as b; '
              "print(b.bench('storm_k2', 4, 1, 4, image_size=16))")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "'images_per_s'" in proc.stdout


def test_the_blocker_blocks():
  """The check could fail: the data pipeline does need TensorFlow."""
  proc = _run('storm_jax.data.input_pipeline')
  assert proc.returncode != 0
  assert 'blocked' in proc.stderr
