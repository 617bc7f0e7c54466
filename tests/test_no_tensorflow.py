"""The ops, the models and the benchmarks import without TensorFlow.

Accelerator machines may have jax, flax, optax, orbax, chex, torch and timm but no TensorFlow
or tensorflow_datasets: only the data pipeline may import them. A fresh interpreter with a
meta-path finder that refuses both imports every module below.
"""

import pathlib
import subprocess
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Modules that must not need TensorFlow (add the train step's module here once it is free
# of the data pipeline).
TF_FREE = (
    'storm_jax.mixing',
    'storm_jax.models',
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


def test_the_blocker_blocks():
  """The check could fail: the data pipeline does need TensorFlow."""
  proc = _run('storm_jax.data')
  assert proc.returncode != 0
  assert 'blocked' in proc.stderr
