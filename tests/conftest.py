"""Shared pytest setup.

Tests under tests/multidevice/ need 8 simulated CPU devices, which XLA only provides if
XLA_FLAGS is set before JAX starts. They are therefore not collected in the main run;
tests/test_multidevice.py runs each of those files in a fresh process with the flag set.
"""

import os
import pathlib
import sys
from typing import Any

# The suite is compile-bound (XLA on CPU compiles each mixer in 1-3 s). Tests compile with
# LLVM's backend optimisation off: XLA's HLO passes (fusion, simplification) still run, so the
# programs are the ones users run; only machine-code optimisation is skipped (a result may
# differ in the last bit where LLVM would have fused a multiply-add; no test compares across
# the two settings), which cuts compile time by about a quarter. Set
# --xla_backend_optimization_level yourself in XLA_FLAGS to override. Must precede JAX's
# backend start-up, hence before any test runs; subprocesses inherit it.
if '--xla_backend_optimization_level' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             ' --xla_backend_optimization_level=0').strip()

import jax

if os.environ.get('STORM_JAX_MULTIDEVICE') != '1':
  collect_ignore_glob = ['multidevice/*']

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))  # the config files import `configs.common`

# Fields whose keys are the method's or the model's own (free-form, not in the defaults).
_FREE_FORM = ('mix.hparams.', 'model.kwargs.')


def load_config(name: str, arg: str | None = None):
  """configs/<name>.py's `get_config(arg)`, as `--config=configs/<name>.py:<arg>` loads it."""
  from storm_jax import cli  # pylint: disable=g-import-not-at-top
  return cli.load_config_file(f'{ROOT}/configs/{name}.py' + (f':{arg}' if arg else ''))


def override(config, fields: dict[str, Any]):
  """Sets dotted `fields` ('mix.off_after_step': 2) of `config` in place and returns it.

  A field the config lacks is a KeyError (a typo would otherwise test the default), except
  under the free-form mix.hparams / model.kwargs.
  """
  for key, value in fields.items():
    node = config
    *path, last = key.split('.')
    for p in path:
      node = node[p]
    if last not in node and not key.startswith(_FREE_FORM):
      raise KeyError(f'the config has no field {key!r}')
    node[last] = value
  return config


@pytest.fixture
def key_reuse_checked():
  """Runs a test with jax's PRNG key-reuse checker on (docs/DESIGN.md#pitfalls: no key reuse in the
  step).

  Used by the trainer's tests and the mixers' determinism test. Not on for the whole suite:
  the checker adds about a fifth to every compilation, and the suite is compile-bound.
  """
  with jax.debug_key_reuse(True):
    yield


@pytest.fixture(scope='module')
def compilation_cache(tmp_path_factory):
  """JAX's persistent compilation cache on for a module, every program kept.

  One folder for the session: modules that compile the same programs in new jit objects or in
  subprocesses (given JAX_COMPILATION_CACHE_DIR) compile each once. Off again after the module.
  """
  names = ('jax_compilation_cache_dir', 'jax_persistent_cache_min_compile_time_secs',
           'jax_persistent_cache_min_entry_size_bytes')
  old = {n: getattr(jax.config, n) for n in names}
  jax.config.update(names[0], str(tmp_path_factory.getbasetemp() / 'jax_cache'))
  jax.config.update(names[1], 0)
  jax.config.update(names[2], 0)
  yield
  for n, v in old.items():
    jax.config.update(n, v)
