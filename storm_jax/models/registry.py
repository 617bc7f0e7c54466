"""Model registry: config strings -> flax.linen Modules.

  model = models.get('preactresnet18', num_classes=100, stem='tiny', width=16)

Each entry is a Module class plus the fixed hyper-parameters that define the name (depth,
widen factor, ...). `get` checks the caller's keyword arguments against the class's fields
before building anything, so a typo fails with a ValueError instead of a dataclass TypeError.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

_REGISTRY: dict[str, tuple[type[nn.Module], Mapping[str, Any]]] = {}
# Fields every flax Module has that are not model hyper-parameters.
_MODULE_FIELDS = ('parent', 'name')


def register(name: str, cls: type[nn.Module], **fixed: Any) -> None:
  """Registers `cls(**fixed, **user_kwargs)` under `name`."""
  if name in _REGISTRY:
    raise ValueError(f'model name={name!r} is already registered.')
  _REGISTRY[name] = (cls, dict(fixed))


def names() -> tuple[str, ...]:
  """The registered model names, sorted."""
  return tuple(sorted(_REGISTRY))


def kwarg_names(name: str) -> tuple[str, ...]:
  """The keyword arguments `get(name, num_classes=..., **kwargs)` accepts besides num_classes."""
  cls, fixed = _lookup(name)
  return tuple(f.name for f in dataclasses.fields(cls)
               if f.name not in _MODULE_FIELDS and f.name not in fixed
               and f.name != 'num_classes')


def defaults(name: str) -> dict[str, Any]:
  """{option: default} of `get(name, ...)`'s keyword arguments (dtypes by name, 'float32')."""
  cls, _ = _lookup(name)
  fields = {f.name: f for f in dataclasses.fields(cls)}
  out = {}
  for option in kwarg_names(name):
    default = fields[option].default
    out[option] = jnp.dtype(default).name if option == 'dtype' else default
  return out


def option_types() -> dict[str, type]:
  """Every option of every registered model, with the type a config or command line gives it.

  Configs spell dtypes by name (str). Read from the Module dataclasses, so the list follows
  the models (configs/common.py makes a command-line field of each).

  Raises:
    TypeError: two models give one option different types, or an option has no such type.
  """
  types: dict[str, type] = {}
  for name in names():
    cls, _ = _lookup(name)
    hints = typing.get_type_hints(cls)
    for option in kwarg_names(name):
      hint = hints[option]
      args = [a for a in typing.get_args(hint) if a is not type(None)]
      if len(args) == 1:  # `str | None` -> str
        hint = args[0]
      if option == 'dtype':
        hint = str
      if hint not in (bool, int, float, str):
        raise TypeError(f'model {name!r} option {option!r}: type {hint} has no command-line '
                        'spelling (bool, int, float, str).')
      if types.setdefault(option, hint) is not hint:
        raise TypeError(f'model {name!r} option {option!r} is {hint.__name__}, another '
                        f'model\'s is {types[option].__name__}.')
  return types


def get(name: str, *, num_classes: int, **kwargs: Any) -> nn.Module:
  """Builds the model registered as `name`.

  Args:
    name: one of `names()`.
    num_classes: number of logits (>= 1).
    **kwargs: model options (all models take `width`, `dtype` and `axis_name`; see the class).

  Returns:
    An unbound flax.linen Module; call it as `model.apply(variables, x, train=..., ...)`.

  Raises:
    ValueError: unknown name, unknown or fixed keyword, or a bad num_classes / width.
  """
  cls, fixed = _lookup(name)
  allowed = kwarg_names(name)
  for key in kwargs:
    if key not in allowed:
      raise ValueError(f'model {name!r} got unknown kwarg {key}={kwargs[key]!r}; '
                       f'it accepts {allowed} (and num_classes).')
  if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
    raise ValueError(f'num_classes={num_classes!r} must be an integer >= 1.')
  width = kwargs.get('width', 1)
  if isinstance(width, bool) or not isinstance(width, int) or width < 1:
    raise ValueError(f'width={width!r} must be an integer >= 1.')
  if 'dtype' in kwargs:
    # Configs spell dtypes as strings ('bfloat16'); accept those and dtype objects alike.
    given = kwargs['dtype']
    try:
      kwargs['dtype'] = jnp.dtype(given)
    except TypeError as e:
      raise ValueError(f'dtype={given!r} is not a dtype.') from e
    if not jnp.issubdtype(kwargs['dtype'], jnp.floating):
      raise ValueError(f'dtype={given!r} must be a floating dtype.')
  return cls(num_classes=num_classes, **fixed, **kwargs)


def _lookup(name: str) -> tuple[type[nn.Module], Mapping[str, Any]]:
  if name not in _REGISTRY:
    raise ValueError(f'Unknown model name={name!r}; known models: {names()}.')
  return _REGISTRY[name]
