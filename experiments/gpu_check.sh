#!/usr/bin/env bash
# The accelerator check (experiments/gpu_check.py): every op's GB/s, StoRM vs PyTorch, the
# PreActResNet-18 / ResNet-50 train steps (float32, bfloat16) vs PyTorch, StoRM's overhead.
#   experiments/gpu_check.sh                 # GPU machine with jax[cuda], torch, timm: <= 8 min
#   experiments/gpu_check.sh --smoke         # anywhere, tiny shapes (tests/test_gpu_check.py)
#   experiments/gpu_check.sh --torch-python /path/to/venv/bin/python   # torch elsewhere
# Needs no TensorFlow and no dataset (synthetic batches). PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" -m experiments.gpu_check "$@"
