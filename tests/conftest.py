"""Shared pytest setup.

Tests under tests/multidevice/ need 8 simulated CPU devices, which XLA only provides if
XLA_FLAGS is set before JAX starts. They are therefore not collected in the main run;
tests/test_multidevice.py runs them in one fresh process with the flag set.
"""

import importlib.metadata
import os

# The suite is compile-bound: most of its time is XLA compiling small programs (about 2,000 in
# the fast tier). Two XLA:CPU code-generation settings halve the compile time; XLA's HLO passes
# (fusion, simplification) still run, so the tested programs are the ones users run, and only
# the machine code differs:
#  * --xla_backend_optimization_level=0: LLVM's optimisation passes off;
#  * --xla_cpu_use_fusion_emitters=false: fused computations emitted by XLA's elemental IR
#    emitter instead of its newer MLIR fusion emitters (compiles ~45% faster here). The flag
#    exists in the pinned jaxlib 0.10 (XLA stops on an unknown flag), so only there.
# A result may differ from the users' in the last bit (a multiply-add fused or not); tests that
# compare two different programs therefore compare to float32 rounding, not bitwise. Set
# either flag yourself in XLA_FLAGS to override. Must precede JAX's backend start-up, hence
# before any test runs; subprocesses inherit it.
_xla_flags = os.environ.get('XLA_FLAGS', '')
if '--xla_backend_optimization_level' not in _xla_flags:
  _xla_flags += ' --xla_backend_optimization_level=0'
if ('--xla_cpu_use_fusion_emitters' not in _xla_flags and
    importlib.metadata.version('jaxlib').startswith('0.10.')):
  _xla_flags += ' --xla_cpu_use_fusion_emitters=false'
os.environ['XLA_FLAGS'] = _xla_flags.strip()

import jax

if os.environ.get('STORM_JAX_MULTIDEVICE') != '1':
  collect_ignore_glob = ['multidevice/*']

import pytest


# The suite runs on pytest-xdist workers (`-n auto --dist loadgroup` in pyproject.toml): one
# per CPU core, at most four (each holds JAX and TensorFlow, ~1.5 GB). `-n 0` runs in-process.
def pytest_xdist_auto_num_workers(config):
  del config
  cores = (len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity')  # Linux
           else os.cpu_count() or 1)
  return max(1, min(4, cores))


def pytest_collection_modifyitems(config, items):
  """Keeps a module on one worker when its tests share module-scoped set-up.

  A module fixture (a trained run, a prepared dataset, the compilation cache that lets a module
  compile each program once) is built once per worker that runs one of its tests: spreading
  the module over workers would build it on each.
  """
  del config
  for item in items:
    info = getattr(item, '_fixtureinfo', None)
    defs = info.name2fixturedefs.values() if info else ()
    if any(d.scope in ('module', 'package', 'session') for ds in defs for d in ds
           if d.baseid):  # baseid '' = a plugin's fixture (tmp_path_factory, ...)
      item.add_marker(pytest.mark.xdist_group(item.module.__name__))


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
