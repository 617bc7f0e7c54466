"""`data.to_global` turns this process's numpy batch into a batch sharded over 8 devices."""

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from storm_jax import data


def test_to_global_shards_the_process_batch(tmp_path):
  mesh = jax.make_mesh((8,), ('data',))
  sharding = NamedSharding(mesh, P('data'))
  batch = next(data.train_iterator('digits', global_batch_size=16, seed=0,
                                   data_dir=str(tmp_path)))
  g = data.to_global(batch, sharding)
  assert g['image'].shape == (16, 8, 8, 1) and g['image'].dtype == np.uint8
  assert g['label'].dtype == np.int32 and g['image'].sharding == sharding
  assert len(g['image'].addressable_shards) == 8
  for shard in g['image'].addressable_shards:
    assert shard.data.shape == (2, 8, 8, 1)
  np.testing.assert_array_equal(np.asarray(g['image']), batch['image'])
  np.testing.assert_array_equal(np.asarray(g['label']), batch['label'])
