"""experiments/gpu_check.sh --smoke runs end to end on CPU and prints every part.

The PyTorch parts run when torch is importable here, or in `$STORM_JAX_TORCH_PYTHON`
(an interpreter with torch); otherwise the script must say it skipped them.
"""

import importlib.util
import os
import pathlib
import re
import subprocess

import pytest

from storm_jax import mixing

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_check_smoke():
  torch_python = os.environ.get('STORM_JAX_TORCH_PYTHON')
  has_torch = bool(torch_python) or importlib.util.find_spec('torch') is not None
  cmd = ['bash', str(ROOT / 'experiments' / 'gpu_check.sh'), '--smoke']
  if torch_python:
    cmd += ['--torch-python', torch_python]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, cwd=ROOT)
  out = proc.stdout
  assert proc.returncode == 0, proc.stderr[-3000:]
  for part in ('(a) every op', '(c) train steps', '(d) StoRM (k=2) step overhead',
               'gpu_check done'):
    assert part in out, (part, out[-3000:])
  # (a): one timed row per registered method (GB/s and the memcpy fraction are numbers).
  for name in mixing.names():
    if name != 'none':
      assert re.search(rf'^{name}\s+8x32x32x3\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+', out,
                       re.M), name
  # (c): both models (ResNet-18 stands in for ResNet-50 in the smoke run), both dtypes;
  # (d): both objectives, for both models.
  for model in ('preactresnet18', 'resnet18'):
    for dtype in ('float32', 'bfloat16'):
      assert re.search(rf'^{model}\s+{dtype}\s+b\d+\s+jax\s+[\d.]+ img/s', out, re.M), model
    for objective in ('two passes', 'single_pass'):
      assert re.search(rf'^{model}\s+{objective}\s+step .* [+-][\d.]+ %$', out, re.M), objective
  if has_torch:
    assert re.search(r'^storm\s+8x32x32x3 .*storm_tileloop:k=2(\s+[\d.]+){4}$', out, re.M)
    assert '(b) StoRM vs the PyTorch per-tile loop' in out
    assert re.search(r'^resnet18\s+bfloat16 .* torch\s+[\d.]+ img/s', out, re.M)
  else:
    assert '(b) skipped: no torch' in out
