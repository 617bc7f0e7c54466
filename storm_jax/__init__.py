"""storm_jax: mixed-sample data augmentation in JAX.

`from storm_jax import mixing` needs only jax and numpy; the training stack (models, data,
train, evaluation) needs the `train` extra (flax, optax, orbax, tensorflow-datasets, ...).
"""

__version__ = '0.1.0'
