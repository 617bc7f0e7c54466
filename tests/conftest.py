"""Shared pytest setup.

Tests under tests/multidevice/ need 8 simulated CPU devices, which XLA only provides if
XLA_FLAGS is set before JAX starts. They are therefore not collected in the main run;
tests/test_multidevice.py runs each of those files in a fresh process with the flag set.
"""

import os

import jax

if os.environ.get('STORM_JAX_MULTIDEVICE') != '1':
  collect_ignore_glob = ['multidevice/*']

# Catch PRNG key reuse everywhere in the test suite (PITFALLS: no key reuse in the step).
jax.config.update('jax_debug_key_reuse', True)
