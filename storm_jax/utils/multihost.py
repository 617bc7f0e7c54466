"""Decisions every process must take together (multi-host runs).

A process that leaves the training loop alone leaves the others waiting in the next
collective step forever. `agree_to_stop` turns each process's own reason to stop (its SIGTERM
flag) into one decision: stop if any process wants to (docs/DESIGN.md#preemption).
"""

from __future__ import annotations

import jax
import numpy as np


def agree_to_stop(local_stop: bool) -> bool:
  """True on every process if `local_stop` is True on any process.

  Every process must call it at the same points (e.g. after every step, or every N steps with
  the same N everywhere): it is a collective (`process_allgather` of one int32) when there are
  several processes, and free with one.
  """
  if jax.process_count() == 1:
    return bool(local_stop)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  flags = multihost_utils.process_allgather(np.array(int(bool(local_stop)), np.int32))
  return bool(np.max(flags))
