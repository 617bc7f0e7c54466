"""Base class of the tfds builders storm_jax ships (digits, tiny_imagenet, cifar100_corrupted)."""

from __future__ import annotations

import inspect

from etils import epath
import tensorflow_datasets as tfds


class Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """GeneratorBasedBuilder whose code path is resolved without `importlib_resources`.

  tfds 4.9.10 resolves a builder's code folder (for checksums and metadata files) through the
  `importlib_resources` backport, which it only declares as a dependency for Python < 3.9, so
  on 3.11 preparing any builder defined outside tfds fails with ModuleNotFoundError. The code
  path is simply the module file.
  """

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(inspect.getfile(cls))
