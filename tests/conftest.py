"""Shared pytest setup.

Tests under tests/multidevice/ need 8 simulated CPU devices, which XLA only provides if
XLA_FLAGS is set before JAX starts. They are therefore not collected in the main run;
tests/test_multidevice.py runs each of those files in a fresh process with the flag set.
"""

import os

import jax

if os.environ.get('STORM_JAX_MULTIDEVICE') != '1':
  collect_ignore_glob = ['multidevice/*']

import pytest


@pytest.fixture
def key_reuse_checked():
  """Runs a test with jax's PRNG key-reuse checker on (PITFALLS: no key reuse in the step).

  Used by the trainer's tests and the mixers' determinism test. Not on for the whole suite:
  the checker adds about a fifth to every compilation, and the suite is compile-bound.
  """
  with jax.debug_key_reuse(True):
    yield
