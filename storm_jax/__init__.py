"""storm_jax: mixed-sample data augmentation in JAX.

`from storm_jax import mixing` needs only jax and numpy; the training stack (models, data,
train, evaluation) needs the `train` extra (flax, optax, orbax, tensorflow-datasets, ...).
"""

import sys as _sys

from storm_jax import errors as _errors

__version__ = '0.1.0'

# `python -m storm_jax.<tool>` imports this package (and storm_jax.data, which imports
# TensorFlow) before the tool's own code runs; `sys.argv[0]` is '-m' only then. TensorFlow
# reads its log settings once, at import: keep its start-up notices out of the tools' output
# unless --verbose / STORM_JAX_VERBOSE=1 (storm_jax.cli does the rest). Library imports
# (argv[0] is the user's script) are left alone.
if _sys.argv[:1] == ['-m'] and not _errors.verbose_requested():
  _errors.quiet_tensorflow_env()
