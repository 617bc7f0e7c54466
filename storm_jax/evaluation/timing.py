"""Step timing for the augmentation-overhead measure (docs/DESIGN.md#metrics-overhead).

Overhead = (T_method - T_vanilla) / T_vanilla, from *steady-state* step times measured with
`block_until_ready`, same input pipeline and settings; compilation is timed and reported
separately (the papers' wall-clock numbers would otherwise be dominated by XLA compiles on
short runs).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np


def time_step(fn: Callable[..., Any], args: Sequence[Any], *, warmup: int = 2,
              repeats: int = 10, carry: bool = False) -> dict[str, float]:
  """Times `fn(*args)`: compilation once, then `repeats` steady-state calls.

  Args:
    fn: the step; a `jax.jit`-ed function is lowered and compiled explicitly (timed as
      'compile_s') and its compiled executable is timed; any other callable's first call is
      reported as 'compile_s' (compile + one run).
    args: positional arguments.
    warmup: untimed calls after compilation (caches, allocator, thread pools).
    repeats: timed calls; each waits for its outputs with `jax.block_until_ready`.
    carry: for steps `(state, *rest) -> (state, ...)` that donate their state: feed the
      returned state back as the next call's first argument, so donated buffers are never
      reused.

  Returns:
    {'compile_s', 'mean_s', 'median_s', 'std_s', 'min_s'}; step statistics in seconds.
  """
  if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
    raise ValueError(f'repeats={repeats!r} must be an integer >= 1.')
  if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
    raise ValueError(f'warmup={warmup!r} must be an integer >= 0.')
  args = list(args)

  def call(run):
    out = jax.block_until_ready(run(*args))
    if carry:
      args[0] = out[0]
    return out

  start = time.perf_counter()
  if hasattr(fn, 'lower'):
    run = fn.lower(*args).compile()
    compile_s = time.perf_counter() - start
  else:
    run = fn
    call(run)
    compile_s = time.perf_counter() - start
  for _ in range(warmup):
    call(run)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    call(run)
    times.append(time.perf_counter() - start)
  times = np.asarray(times)
  return {'compile_s': float(compile_s), 'mean_s': float(times.mean()),
          'median_s': float(np.median(times)), 'std_s': float(times.std()),
          'min_s': float(times.min())}


def augmentation_overhead(t_method: float, t_vanilla: float) -> float:
  """(T_method - T_vanilla) / T_vanilla as a fraction (x100 for the papers' %)."""
  if not t_vanilla > 0:
    raise ValueError(f't_vanilla={t_vanilla!r} must be > 0.')
  return (t_method - t_vanilla) / t_vanilla
