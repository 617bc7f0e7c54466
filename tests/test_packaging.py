"""The ops install and import without the training stack; the research set is pinned."""

import pathlib
import subprocess
import sys
import tomllib

ROOT = pathlib.Path(__file__).parent.parent


def test_mixing_imports_without_training_dependencies():
  code = ('import sys, storm_jax.mixing as m; assert len(m.names()) > 1; '
          'heavy = [k for k in ("tensorflow", "flax", "optax", "orbax", "tensorflow_datasets", '
          '"ml_collections", "chex") if k in sys.modules]; '
          'assert not heavy, heavy')
  proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr


def test_pyproject_core_dependencies_are_jax_and_numpy_only():
  meta = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']
  names = sorted(d.split('>')[0].split('=')[0].split('[')[0] for d in meta['dependencies'])
  assert names == ['jax', 'numpy']
  assert {'train', 'test'} <= set(meta['optional-dependencies'])


def test_requirements_are_pinned():
  lines = [l.strip() for l in (ROOT / 'requirements.txt').read_text().splitlines()]
  reqs = [l for l in lines if l and not l.startswith('#')]
  assert len(reqs) > 20
  unpinned = [r for r in reqs if '==' not in r]
  assert not unpinned, unpinned
  pinned = {r.split('==')[0].lower().replace('_', '-') for r in reqs}
  for needed in ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'tensorflow-cpu',
                 'tensorflow-datasets', 'ml-collections', 'chex', 'pytest', 'scikit-learn'):
    assert needed in pinned, needed
