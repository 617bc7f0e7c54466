"""Checkpoints of the train state with orbax `CheckpointManager`.

A checkpoint holds the whole `TrainState` (step, params, batch_stats, optimiser state). Keys
are not stored: the step key is `fold_in(seed_key, step)` and the data iterator is
positioned by the step, so the step alone makes a resumed run replay exactly.

Restoring uses a target built on the *current* mesh (`jax.ShapeDtypeStruct` with the live
state's shardings), so a checkpoint written on 8 devices restores on 1 and vice versa.
Shapes, dtypes and the tree structure are checked against the checkpoint's metadata first:
a mismatch raises `ValueError` instead of being cast silently.
"""

from __future__ import annotations

import os
from typing import Any

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp

PyTree = Any


class Checkpointer:
  """Saves every `every_steps` steps (asynchronously), keeps the last `keep`, restores.

  Args:
    directory: where the step folders live (created if missing).
    every_steps: `maybe_save(step, state)` saves when `step % every_steps == 0`; 0 = never
      (only explicit `save` calls).
    keep: number of checkpoints kept (older ones are deleted).
    async_save: write in a background thread; `wait` (or `close`) blocks until done and
      raises if the save failed.
  """

  def __init__(self, directory: str, *, every_steps: int = 0, keep: int = 3,
               async_save: bool = True):
    self.directory = os.path.abspath(directory)
    self.every_steps = int(every_steps)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=async_save)
    # The handler is named up front so that a fresh process can read a checkpoint's metadata
    # (for the structure/dtype check) before its first save or restore.
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_handlers=ocp.StandardCheckpointHandler())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: PyTree) -> None:
    """Saves `state` as checkpoint `step` (no-op if that step is already saved)."""
    if step in self._manager.all_steps():
      return
    logging.info('Saving checkpoint at step %d to %s', step, self.directory)
    self._manager.save(step, args=ocp.args.StandardSave(state), force=True)

  def maybe_save(self, step: int, state: PyTree) -> bool:
    """Saves if `step` is a multiple of `every_steps`. Returns whether it saved."""
    if self.every_steps > 0 and step % self.every_steps == 0:
      self.save(step, state)
      return True
    return False

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are on disk; raises if one failed."""
    self._manager.wait_until_finished()
    self._manager.check_for_errors()

  def restore(self, target: PyTree, step: int | None = None) -> PyTree:
    """Restores checkpoint `step` (default: the latest) into the structure of `target`.

    Args:
      target: a pytree of arrays (or `jax.ShapeDtypeStruct` with shardings) giving the
        structure, shapes, dtypes and shardings to restore onto.
      step: which checkpoint; None = the latest.

    Returns:
      The restored pytree, laid out with `target`'s shardings.

    Raises:
      FileNotFoundError: no checkpoint in the directory.
      ValueError: the checkpoint's structure, a shape or a dtype differs from `target`.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'no checkpoint in {self.directory}')
    abstract = jax.tree.map(_abstract, target)
    self._check_compatible(step, abstract)
    logging.info('Restoring checkpoint of step %d from %s', step, self.directory)
    return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

  def _check_compatible(self, step: int, abstract: PyTree) -> None:
    metadata = self._manager.item_metadata(step)
    tree = getattr(metadata, 'tree', metadata)
    saved = _flatten_with_paths(tree)
    wanted = _flatten_with_paths(abstract)
    if set(saved) != set(wanted):
      missing = sorted(set(wanted) - set(saved))[:5]
      extra = sorted(set(saved) - set(wanted))[:5]
      raise ValueError(f'checkpoint {self.directory} step {step} has a different structure '
                       f'than the train state: missing {missing}, unexpected {extra}.')
    for path, want in wanted.items():
      have = saved[path]
      have_shape = tuple(getattr(have, 'shape', ()))
      have_dtype = getattr(have, 'dtype', None)
      if have_shape != tuple(want.shape) or (
          have_dtype is not None and np.dtype(have_dtype) != np.dtype(want.dtype)):
        raise ValueError(f'checkpoint {self.directory} step {step}: {path} is '
                         f'{have_dtype}{list(have_shape)} but the train state expects '
                         f'{want.dtype}{list(want.shape)}.')

  def close(self) -> None:
    """Waits for pending saves (raising if one failed) and releases the manager."""
    self.wait()
    self._manager.close()


def _abstract(x: Any) -> Any:
  if isinstance(x, jax.ShapeDtypeStruct):
    return x
  if isinstance(x, jax.Array):
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
  x = np.asarray(x)
  return jax.ShapeDtypeStruct(x.shape, x.dtype)


def _flatten_with_paths(tree: PyTree) -> dict[str, Any]:
  """`{'a/b/0': leaf}` for every leaf; the same keys for a state and its saved metadata."""
  leaves = jax.tree_util.tree_flatten_with_path(
      tree, is_leaf=lambda x: hasattr(x, 'shape') and hasattr(x, 'dtype'))[0]
  out = {}
  for path, leaf in leaves:
    out['/'.join(_key_name(k) for k in path)] = leaf
  return out


def _key_name(k: Any) -> str:
  for attr in ('key', 'name', 'idx'):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)
