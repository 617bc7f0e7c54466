"""User errors and the command-line wrapper that prints them as one line.

A `UserError` is a mistake the user can fix (a config field, a missing dataset, a workdir, a
checkpoint that does not match): the command-line tools print `error: <message>` on stderr and
exit with status 2, without a traceback. Every other exception is a bug or a fault and keeps
its traceback. `UserError` subclasses `ValueError`, so `except ValueError` still catches it.

  python -m storm_jax.main ... --verbose      # or STORM_JAX_VERBOSE=1: tracebacks and library logs

This module imports only the standard library: the mixing ops (which need only jax and numpy)
raise its errors too.
"""

from __future__ import annotations

import difflib
import os
import sys
import traceback
from collections.abc import Callable, Iterable, Sequence
from typing import Any

EXIT_USER_ERROR = 2
# A run stopped by SIGTERM after saving its checkpoint: sysexits.h EX_TEMPFAIL ("temporary
# failure; the user is invited to retry"), distinct from 0 (finished), 1 (crash), 2 (user
# error) and 128+15 (killed before it could save). Schedulers requeue on it.
EXIT_PREEMPTED = 75
VERBOSE_ENV = 'STORM_JAX_VERBOSE'


class UserError(ValueError):
  """A mistake in the user's input (config, data, workdir, checkpoint); the message says which."""


def check(cond: bool, field: str, value: Any, why: str) -> None:
  """Raises `UserError('<field>=<value!r> <why>')` unless `cond`."""
  if not cond:
    raise UserError(f'{field}={value!r} {why}')


def nearest(name: str, valid: Iterable[str], n: int = 3) -> list[str]:
  """The valid names closest to `name` (difflib ratio >= 0.6, best first; empty if none)."""
  return difflib.get_close_matches(str(name), [str(v) for v in valid], n=n, cutoff=0.6)


def did_you_mean(name: str, valid: Iterable[str]) -> str:
  """' Did you mean 'a' or 'b'?' for the names closest to `name`, or '' if none is close."""
  close = nearest(name, valid)
  if not close:
    return ''
  return ' Did you mean ' + ' or '.join(repr(c) for c in close) + '?'


def unknown_name_error(field: str, name: str, valid: Sequence[str], what: str = 'name'
                       ) -> UserError:
  """`UserError` for `field=name` not in `valid`: nearest names first, then all of them."""
  return UserError(f'{field}={name!r} is not a known {what}.{did_you_mean(name, valid)} '
                   f'Known: {", ".join(str(v) for v in valid)}.')


def verbose_requested(argv: Sequence[str] | None = None) -> bool:
  """True when `--verbose` is on the command line or STORM_JAX_VERBOSE is set (not 0/empty)."""
  argv = sys.argv if argv is None else argv
  if any(a in ('--verbose', '--verbose=true', '--verbose=True', '--verbose=1') for a in argv):
    return True
  return os.environ.get(VERBOSE_ENV, '').strip().lower() not in ('', '0', 'false', 'no')


# TensorFlow (the input pipeline) prints start-up notices at import: its C++ INFO/WARNING
# log and the oneDNN notice, which only TF_ENABLE_ONEDNN_OPTS=0 turns off (oneDNN speeds up
# TF's matmuls and convolutions, which the input pipeline does not run). Set only where unset.
QUIET_TF_ENV = {'TF_CPP_MIN_LOG_LEVEL': '2', 'TF_ENABLE_ONEDNN_OPTS': '0'}


def quiet_tensorflow_env() -> None:
  """Sets `QUIET_TF_ENV` where the environment leaves it unset (before TensorFlow's import)."""
  for name, value in QUIET_TF_ENV.items():
    os.environ.setdefault(name, value)


def user_error_message(exc: BaseException) -> str | None:
  """The one-line message for a user error, or None for anything else.

  Besides `UserError`, absl's `app.UsageError` and `flags.Error` (bad command-line flags, a
  config file that does not load) are user errors.
  """
  if isinstance(exc, UserError):
    return str(exc)
  for module, names in (('absl.app', ('UsageError',)), ('absl.flags', ('Error',))):
    mod = sys.modules.get(module)
    for n in names:
      cls = getattr(mod, n, None) if mod is not None else None
      if cls is not None and isinstance(exc, cls):
        return str(exc)
  return None


def run_cli(main: Callable[[], object], *, argv: Sequence[str] | None = None) -> None:
  """Runs `main()`; a user error ends the process with `error: <msg>` on stderr and status 2.

  With `--verbose` / STORM_JAX_VERBOSE=1 the traceback is printed above the error line.
  Other exceptions propagate unchanged (with their traceback); `SystemExit` passes through.
  """
  try:
    main()
  except Exception as e:  # pylint: disable=broad-except
    message = user_error_message(e)
    if message is None:
      raise
    if verbose_requested(argv):
      traceback.print_exc()
    first, *rest = message.strip().splitlines() or ['']
    print(f'error: {first}', *rest, sep='\n', file=sys.stderr)
    sys.stderr.flush()
    sys.exit(EXIT_USER_ERROR)
