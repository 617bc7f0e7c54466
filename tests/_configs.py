"""Config helpers shared by the tests: load a config file, set dotted fields."""

from __future__ import annotations

import pathlib
import sys
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))  # the config files import `configs.common`

# Fields whose keys are the method's or the model's own (free-form, not in the defaults).
_FREE_FORM = ('mix.hparams.', 'model.kwargs.')


def load_config(name: str, arg: str | None = None):
  """configs/<name>.py's `get_config(arg)`, as `--config=configs/<name>.py:<arg>` loads it."""
  from storm_jax import cli  # pylint: disable=g-import-not-at-top
  return cli.load_config_file(f'{ROOT}/configs/{name}.py' + (f':{arg}' if arg else ''))


def override(config, fields: dict[str, Any]):
  """Sets dotted `fields` ('mix.off_after_step': 2) of `config` in place and returns it.

  A field the config lacks is a KeyError (a typo would otherwise test the default), except
  under the free-form mix.hparams / model.kwargs.
  """
  for key, value in fields.items():
    node = config
    *path, last = key.split('.')
    for p in path:
      node = node[p]
    if last not in node and not key.startswith(_FREE_FORM):
      raise KeyError(f'the config has no field {key!r}')
    node[last] = value
  return config
