"""Runs each tests/multidevice/test_*.py in its own process with 8 simulated CPU devices."""

import os
import pathlib
import subprocess
import sys

import pytest

_DIR = pathlib.Path(__file__).parent / 'multidevice'
_FILES = sorted(p.name for p in _DIR.glob('test_*.py'))


@pytest.mark.parametrize('filename', _FILES)
def test_multidevice_file(filename):
  env = dict(os.environ)
  env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8').strip()
  env['STORM_JAX_MULTIDEVICE'] = '1'
  env['JAX_PLATFORMS'] = 'cpu'
  root = pathlib.Path(__file__).parent.parent
  proc = subprocess.run(
      [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', str(_DIR / filename)],
      cwd=root, env=env, capture_output=True, text=True, timeout=1800)
  print(proc.stdout[-20000:])
  print(proc.stderr[-5000:], file=sys.stderr)
  assert proc.returncode == 0, f'{filename} failed in its 8-device process:\n{proc.stdout[-8000:]}'
