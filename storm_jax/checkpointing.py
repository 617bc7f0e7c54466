"""Checkpoints of the train state with orbax `CheckpointManager`.

A checkpoint holds the whole `TrainState` (step, params, batch_stats, optimiser state). Keys
are not stored: the step key is `fold_in(seed_key, step)` and the data iterator is
positioned by the step, so the step alone makes a resumed run replay exactly.

Restoring uses a target built on the *current* mesh (`jax.ShapeDtypeStruct` with the live
state's shardings), so a checkpoint written on 8 devices restores on 1 and vice versa.
Shapes, dtypes and the tree structure are checked against the checkpoint's metadata first:
a mismatch raises `CheckpointMismatchError` (a `UserError`) instead of being cast silently.

Damaged checkpoints (docs/DESIGN.md#damaged-checkpoints). `restore()` of the latest step
falls back: a step whose files are damaged (a data file cut short, `_METADATA` missing or
unreadable, an emptied step folder) is reported in one warning line (step and reason), moved
aside into `<directory>/corrupt/<step>-<reason>` (never deleted: the user may still rescue
it), and the next newer step is tried. If no step restores, `NoUsableCheckpointError` says so.
A structure/shape/dtype mismatch is not damage (the config changed): it stops the run and
nothing is moved. Orphaned temporary save folders (`*.orbax-checkpoint-tmp*`, left by a
process killed mid-save) are reported, not deleted.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from typing import Any

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp

from storm_jax import errors

PyTree = Any

CORRUPT_DIR = 'corrupt'
_TMP_MARK = '.orbax-checkpoint-tmp'
_ITEM = 'default'  # the item folder of `StandardCheckpointHandler` inside a step folder


class CheckpointMismatchError(errors.UserError):
  """The checkpoint does not fit the train state (structure, shape or dtype): config changed."""


class NoCheckpointError(errors.UserError, FileNotFoundError):
  """The directory holds no checkpoint (e.g. evaluating a run that never saved one)."""


class NoUsableCheckpointError(errors.UserError):
  """Every checkpoint in the directory is damaged (each was moved aside)."""


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
    orphans = self.temporary_folders()
    if orphans:
      logging.warning('%d unfinished checkpoint save(s) in %s (a process stopped mid-save; '
                      'safe to delete): %s', len(orphans), self.directory, ', '.join(orphans))

  def temporary_folders(self) -> list[str]:
    """Names of orbax's temporary save folders in the directory (orphans unless saving now)."""
    if not os.path.isdir(self.directory):
      return []
    return sorted(n for n in os.listdir(self.directory) if _TMP_MARK in n)

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
    """Restores checkpoint `step` (default: the newest that restores) onto `target`.

    With `step=None`, a damaged newest checkpoint is reported, moved aside to
    `<directory>/corrupt/` and the next older one is tried (see the module docstring). An
    explicit `step` is restored as asked or raises.

    Args:
      target: a pytree of arrays (or `jax.ShapeDtypeStruct` with shardings) giving the
        structure, shapes, dtypes and shardings to restore onto.
      step: which checkpoint; None = the newest usable one.

    Returns:
      The restored pytree, laid out with `target`'s shardings.

    Raises:
      NoCheckpointError: no checkpoint in the directory (a `FileNotFoundError`).
      CheckpointMismatchError: the checkpoint's structure, a shape or a dtype differs from
        `target` (a `ValueError`).
      NoUsableCheckpointError: every checkpoint is damaged (all moved aside).
    """
    abstract = jax.tree.map(_abstract, target)
    if step is not None:
      reason = self.damage(step)
      if reason:
        raise errors.UserError(f'checkpoint {self.directory} step {step} is damaged: {reason}.')
      return self._restore_step(step, abstract)
    steps = sorted(self.all_steps(), reverse=True)
    if not steps:
      raise NoCheckpointError(f'no checkpoint in {self.directory} (has this run saved one?).')
    moved = []
    for s in steps:
      reason = self.damage(s)
      if reason is None:
        try:
          out = self._restore_step(s, abstract)
        except (CheckpointMismatchError, MemoryError):
          raise  # a mismatch is the config's, not the files': nothing is moved
        except Exception as e:  # pylint: disable=broad-except
          reason = _one_line(e)
        else:
          if moved:
            logging.warning('Resuming from checkpoint step %d (newer damaged ones moved to %s).',
                            s, os.path.join(self.directory, CORRUPT_DIR))
          return out
      moved.append(self._move_aside(s, reason))
    raise NoUsableCheckpointError(
        f'no checkpoint in {self.directory} restores: every step was damaged and has been '
        f'moved to {os.path.join(self.directory, CORRUPT_DIR)} ({", ".join(moved)}). Start '
        'afresh with another --workdir, or move a rescued step folder back.')

  def damage(self, step: int) -> str | None:
    """Why checkpoint `step` cannot be restored, judged from its files; None if it looks whole.

    Data files cut short are only found by reading them (`restore`).
    """
    path = os.path.join(self.directory, str(step))
    if not os.path.isdir(path):
      return 'missing'
    if not os.listdir(path):
      return 'empty'
    item = os.path.join(path, _ITEM)
    if not os.path.isdir(item) or not os.listdir(item):
      return 'no-data'
    metadata = os.path.join(item, '_METADATA')
    if not os.path.isfile(metadata):
      return 'no-METADATA'
    try:
      with open(metadata) as f:
        json.load(f)
    except (OSError, ValueError):
      return 'unreadable-METADATA'
    return None

  def _restore_step(self, step: int, abstract: PyTree) -> PyTree:
    self._check_compatible(step, abstract)
    logging.info('Restoring checkpoint of step %d from %s', step, self.directory)
    return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

  def _move_aside(self, step: int, reason: str) -> str:
    """Renames step folder `step` into `corrupt/<step>-<reason>`; returns the new name."""
    slug = re.sub(r'[^A-Za-z0-9_.]+', '-', reason).strip('-')[:60] or 'unknown'
    corrupt = os.path.join(self.directory, CORRUPT_DIR)
    name = f'{step}-{slug}'
    dest = os.path.join(corrupt, name)
    n = 1
    while os.path.exists(dest):  # the same step damaged again in a later run
      n += 1
      dest = os.path.join(corrupt, f'{name}.{n}')
    logging.warning('Checkpoint step %d in %s does not restore (%s); moved to %s.', step,
                    self.directory, reason, dest)
    if jax.process_index() == 0:
      os.makedirs(corrupt, exist_ok=True)
      shutil.move(os.path.join(self.directory, str(step)), dest)
    if jax.process_count() > 1:  # every process sees the move before it lists steps again
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices(f'storm_jax_checkpoint_moved_{step}')
    self._manager.reload()
    return os.path.basename(dest)

  def _check_compatible(self, step: int, abstract: PyTree) -> None:
    metadata = self._manager.item_metadata(step)
    tree = getattr(metadata, 'tree', metadata)
    saved = _flatten_with_paths(tree)
    wanted = _flatten_with_paths(abstract)
    if set(saved) != set(wanted):
      missing = sorted(set(wanted) - set(saved))[:5]
      extra = sorted(set(saved) - set(wanted))[:5]
      raise CheckpointMismatchError(
          f'checkpoint {self.directory} step {step} has a different structure than the train '
          f'state (was the config changed?): missing {missing}, unexpected {extra}.')
    for path, want in wanted.items():
      have = saved[path]
      have_shape = tuple(getattr(have, 'shape', ()))
      have_dtype = getattr(have, 'dtype', None)
      if have_shape != tuple(want.shape) or (
          have_dtype is not None and np.dtype(have_dtype) != np.dtype(want.dtype)):
        raise CheckpointMismatchError(
            f'checkpoint {self.directory} step {step}: {path} is {have_dtype}'
            f'{list(have_shape)} but the train state expects {want.dtype}{list(want.shape)} '
            '(was the config changed?).')

  def close(self) -> None:
    """Waits for pending saves (raising if one failed) and releases the manager."""
    self.wait()
    self._manager.close()


def _one_line(e: BaseException) -> str:
  """`Type: first line of the message`, at most 200 characters."""
  first = (str(e).strip().splitlines() or [''])[0]
  return f'{type(e).__name__}: {first}'[:200]


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
