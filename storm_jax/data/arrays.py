"""Host batches to global device arrays: the one part of the data path without TensorFlow."""

from __future__ import annotations

import jax


def to_global(batch, sharding: jax.sharding.Sharding):
  """Process-local numpy batch -> global jax.Arrays (`jax.make_array_from_process_local_data`).

  Args:
    batch: pytree of per-process arrays, leading dim b = global batch / process_count.
    sharding: sharding of the global batch, e.g. NamedSharding(mesh, P('data')).

  Returns:
    The same pytree of global arrays with leading dim global batch.
  """
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
