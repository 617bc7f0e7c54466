"""BatchNorm under data parallelism (8 simulated CPU devices).

Global-view jit with the batch sharded on 'data' computes statistics over the global batch
(identical to one device); inside shard_map, `axis_name='data'` gives the same global
statistics, while the default (None) gives per-shard ones.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from storm_jax import models


def _setup(**kwargs):
  model = models.get('cnn_small', num_classes=3, width=2, **kwargs)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(16, 8, 8, 1)) * 2 + 1, jnp.float32)
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  variables = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape) * 0.3 + 1, s.dtype),
                           shapes)
  return model, variables, x


def _train_apply(model):
  return lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats'])


def test_global_jit_uses_global_batch_statistics():
  model, variables, x = _setup()
  mesh = jax.make_mesh((8,), ('data',))
  want_logits, want_state = jax.jit(_train_apply(model))(variables, x)
  xs = jax.device_put(x, NamedSharding(mesh, P('data')))
  vs = jax.device_put(variables, NamedSharding(mesh, P()))
  got_logits, got_state = jax.jit(_train_apply(model))(vs, xs)
  assert len(xs.sharding.device_set) == 8
  np.testing.assert_allclose(got_logits, want_logits, rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves(got_state), jax.tree.leaves(want_state)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_shard_map_axis_name_synchronises_statistics():
  mesh = jax.make_mesh((8,), ('data',))
  model, variables, x = _setup()
  want_logits, want_state = jax.jit(_train_apply(model))(variables, x)
  synced, _, _ = _setup(axis_name='data')
  per_device = jax.shard_map(_train_apply(synced), mesh=mesh, in_specs=(P(), P('data')),
                             out_specs=(P('data'), P()))
  xs = jax.device_put(x, NamedSharding(mesh, P('data')))
  vs = jax.device_put(variables, NamedSharding(mesh, P()))
  got_logits, got_state = jax.jit(per_device)(vs, xs)
  np.testing.assert_allclose(got_logits, want_logits, rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves(got_state), jax.tree.leaves(want_state)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # Without axis_name each shard normalises with its own 2-example statistics.
  local = jax.shard_map(_train_apply(model), mesh=mesh, in_specs=(P(), P('data')),
                        out_specs=(P('data'), P('data')))
  local_logits, _ = jax.jit(local)(vs, xs)
  assert not np.allclose(local_logits, want_logits, atol=1e-3)
