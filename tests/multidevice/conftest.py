"""Guards the 8-device tests: they must run in a process started with XLA_FLAGS set."""

import jax
import pytest


@pytest.fixture(autouse=True, scope='session')
def _eight_devices():
  if jax.device_count() != 8:
    pytest.fail('tests/multidevice needs XLA_FLAGS=--xla_force_host_platform_device_count=8 '
                f'set before JAX starts; got {jax.device_count()} devices. '
                'Run them through tests/test_multidevice.py.')
