"""Runs tests/multidevice/ in one process with 8 simulated CPU devices.

One file alone: `STORM_JAX_MULTIDEVICE=1 XLA_FLAGS=--xla_force_host_platform_device_count=8
python -m pytest tests/multidevice/<file>.py`.
"""

import os
import pathlib
import subprocess
import sys

import pytest

_DIR = pathlib.Path(__file__).parent / 'multidevice'


@pytest.mark.slow  # minutes of 8-device compiles
def test_multidevice():
  env = dict(os.environ)
  env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8').strip()
  env['STORM_JAX_MULTIDEVICE'] = '1'
  env['JAX_PLATFORMS'] = 'cpu'
  root = pathlib.Path(__file__).parent.parent
  proc = subprocess.run(
      [sys.executable, '-m', 'pytest', '-q', '-rf', '-p', 'no:cacheprovider', '-n', '0', str(_DIR)],
      cwd=root, env=env, capture_output=True, text=True, timeout=3600)
  print(proc.stdout[-20000:])
  print(proc.stderr[-5000:], file=sys.stderr)
  assert proc.returncode == 0, (
      f'tests/multidevice failed in its 8-device process:\n{proc.stdout[-8000:]}')
