"""Corruption robustness: mCE over CIFAR-10-C / CIFAR-100-C (docs/DESIGN.md#metrics-mce).

CE_c = mean over severities of the top-1 error on corruption c; mCE = mean over corruptions,
*unnormalised* (the ImageNet-C AlexNet normalisation is not used for CIFAR). PuzzleMix's
`test_robust.py` prints the mean *accuracy* under the label "mCE": mCE = 100 - that number.

The canonical corruption lists live in `storm_jax.data.info` (one place, used by the loaders
too): `CIFAR_C_CORRUPTIONS` (all 19 of the releases; StoRM's mCE) and `CIFAR_C_STANDARD_15`
(AugMix / IPMix-style evaluation). `corruption_list(name)` returns them by name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

CORRUPTION_SETS = ('all19', 'standard15')


def corruption_list(name: str = 'all19') -> tuple[str, ...]:
  """The corruption names of a set: 'all19' (default; StoRM) or 'standard15' (AugMix)."""
  # Imported here: storm_jax.data imports TensorFlow, which the pure metrics do not need.
  from storm_jax.data import info  # pylint: disable=g-import-not-at-top
  sets = {'all19': info.CIFAR_C_CORRUPTIONS, 'standard15': info.CIFAR_C_STANDARD_15}
  if name not in sets:
    raise ValueError(f'corruptions={name!r} is not one of {CORRUPTION_SETS}.')
  return tuple(sets[name])


def corruption_errors(errors: np.ndarray) -> np.ndarray:
  """CE_c = mean over severities. errors: [num_corruptions, num_severities] -> [C]."""
  errors = np.asarray(errors, np.float64)
  if errors.ndim != 2 or errors.shape[1] < 1:
    raise ValueError(f'errors.shape={errors.shape} must be [num_corruptions, num_severities].')
  return errors.mean(axis=1)


def mce(errors: Mapping[str, Sequence[float]], *,
        corruptions: str | Sequence[str] = 'all19',
        num_severities: int = 5) -> tuple[float, dict[str, float]]:
  """Mean corruption error and the per-corruption table.

  Args:
    errors: {corruption: [error at severity 1, ..., 5]}, top-1 errors (fractions or %; the
      result is in the same unit).
    corruptions: a set name from `CORRUPTION_SETS` or an explicit list; exactly these
      corruptions are averaged (extra entries in `errors` are ignored, missing ones raise).
    num_severities: severities expected per corruption.

  Returns:
    (mCE, {corruption: CE_c}) with CE_c the mean over severities.

  Raises:
    ValueError: a corruption of the list is missing, or has the wrong number of severities.
  """
  names = corruption_list(corruptions) if isinstance(corruptions, str) else tuple(corruptions)
  if not names:
    raise ValueError('corruptions=() is empty.')
  missing = [c for c in names if c not in errors]
  if missing:
    raise ValueError(f'errors is missing corruptions {missing} (needed: {names}).')
  for c in names:
    if len(errors[c]) != num_severities:
      raise ValueError(f'errors[{c!r}] has {len(errors[c])} severities, expected '
                       f'{num_severities}.')
  per = corruption_errors(np.stack([np.asarray(errors[c], np.float64) for c in names]))
  table = {c: float(v) for c, v in zip(names, per)}
  return float(per.mean()), table


def format_table(table: Mapping[str, float], mean: float, *, scale: float = 1.0) -> str:
  """A plain-text per-corruption table (for logs and reports)."""
  width = max(len(c) for c in [*table, 'mCE'])
  lines = [f'{c:<{width}}  {scale * v:7.2f}' for c, v in table.items()]
  lines.append(f'{"mCE":<{width}}  {scale * mean:7.2f}')
  return '\n'.join(lines)
