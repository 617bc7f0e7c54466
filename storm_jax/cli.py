"""What every `python -m storm_jax...` command shares: flag parsing, one-line errors, quiet logs.

  if __name__ == '__main__':
    cli.run(main)        # instead of absl's app.run(main)

`run` parses the flags (a bad flag, an unknown `--config.<field>` or a config file that does
not load is a `UserError` naming the nearest valid fields), silences library noise unless
`--verbose` / STORM_JAX_VERBOSE=1, and turns a `UserError` into `error: <msg>` with exit
status 2 (`errors.run_cli`).
"""

from __future__ import annotations

import importlib.util
import logging as std_logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from absl import app
from absl import flags
from absl import logging

from storm_jax import errors

FLAGS = flags.FLAGS
if 'verbose' not in FLAGS:
  flags.DEFINE_bool('verbose', False, 'Show tracebacks of user errors and all library logs '
                    f'(also: {errors.VERBOSE_ENV}=1).')
# TensorFlow reads its C++ log level once, when it is imported, and entry points such as
# `storm_jax.data.prepare` import it at module level: set it as soon as this module loads.
if not errors.verbose_requested():
  errors.quiet_tensorflow_env()
_STORM_JAX_DIR = os.path.dirname(os.path.abspath(__file__))
# The module holding the defaults that config files start from (one place for the defaults).
DEFAULTS_MODULE = 'configs.common'

# Library messages that a default run drops even at WARNING level: they describe tfds' and
# JAX's probing of the environment, not the run. They come back with --verbose.
_NOISE = (
    re.compile(r'Variant folder .* has no dataset_info\.json'),
    re.compile(r"Unable to initialize backend '(tpu|cuda|rocm)'"),
    re.compile(r'An NVIDIA GPU may be present on this machine, but a CUDA-enabled jaxlib'),
)


# ----------------------------------------------------------------------------- logs


class LibraryFilter(std_logging.Filter):
  """Keeps storm_jax's own INFO records and other libraries' warnings (minus known noise)."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    if os.path.abspath(record.pathname).startswith(_STORM_JAX_DIR):
      return True
    if record.levelno < std_logging.WARNING:
      return False
    message = record.getMessage()
    return not any(p.search(message) for p in _NOISE)


def quiet_library_logs(verbose: bool) -> None:
  """Silences TensorFlow's C++ log, absl/tfds/orbax/JAX INFO chatter and known warnings.

  Must run before TensorFlow is imported (its C++ log level is read once, at import). With
  `verbose`, everything is shown (TF's C++ level is left as the environment sets it).
  """
  if verbose:
    logging.set_verbosity(logging.INFO)
    return
  errors.quiet_tensorflow_env()
  handler = logging.get_absl_handler()
  # The absl handler sits on the root logger: it also sees the standard-logging records of
  # JAX ('jax._src.xla_bridge' reports the backends it could not start) and tfds.
  if not any(isinstance(f, LibraryFilter) for f in handler.filters):
    handler.addFilter(LibraryFilter())


def format_config(config: Any, width: int = 100) -> str:
  """A config as a few lines: one per top-level group, `group: key=value ...` (wrapped).

  Top-level scalars come first, on one line; nested groups are flattened to dotted keys
  (`mix: name=storm hparams.k=2 ...`). `--verbose` prints the full YAML instead.
  """
  import textwrap  # pylint: disable=g-import-not-at-top

  def flat(node, prefix=''):
    for key in sorted(node.keys()):
      value = node[key]
      if hasattr(value, 'keys') and len(value.keys()):
        yield from flat(value, f'{prefix}{key}.')
      else:
        shown = '{}' if hasattr(value, 'keys') else repr(value) if isinstance(value, str) else (
            value)
        yield f'{prefix}{key}={shown}'

  scalars = [f'{k}={config[k]!r}' if isinstance(config[k], str) else f'{k}={config[k]}'
             for k in sorted(config.keys()) if not hasattr(config[k], 'keys')]
  lines = textwrap.wrap(' '.join(scalars), width, subsequent_indent='  ')
  for key in sorted(config.keys()):
    if hasattr(config[key], 'keys'):
      lines += textwrap.wrap(f'{key}: ' + ' '.join(flat(config[key])), width,
                             subsequent_indent='  ')
  return '\n'.join(lines)


def _quiet_tfds_progress_bars() -> None:
  """tfds' preparation progress bars and banners (a first run prepares its dataset)."""
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError:
    return
  tfds.disable_progress_bar()


# ----------------------------------------------------------------------------- flags


def _config_flag_args(argv: Sequence[str], flag: str) -> tuple[str | None, list[str]]:
  """(`--flag=` value, dotted override paths `--flag.a.b=`) on the command line."""
  spec, paths = None, []
  for a in argv[1:]:
    name = a.lstrip('-').split('=', 1)[0]
    if name == flag and '=' in a:
      spec = a.split('=', 1)[1]
    elif name.startswith(flag + '.'):
      paths.append(name[len(flag) + 1:])
  return spec, paths


def load_config_file(spec: str) -> Any:
  """Loads `path[:arg]` as config_flags does (`get_config(arg)`); errors are `UserError`s."""
  path, _, arg = spec.partition(':')
  if not os.path.isfile(path):
    raise errors.UserError(f'--config={spec}: no such config file {path!r}.')
  if os.getcwd() not in sys.path:  # config files import `configs.common` from the repository
    sys.path.insert(0, os.getcwd())
  try:
    module_spec = importlib.util.spec_from_file_location('_storm_jax_config', path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()
  except Exception as e:  # pylint: disable=broad-except
    raise errors.UserError(f'--config={spec}: the config file does not load: '
                           f'{type(e).__name__}: {e}') from e


def unknown_config_field(config: Any, dotted: str) -> str | None:
  """A message naming the first part of `dotted` that `config` lacks (None if all exist)."""
  node, prefix = config, []
  for part in re.sub(r'\[[^\]]*\]', '', dotted).split('.'):
    keys = list(node.keys()) if hasattr(node, 'keys') else None
    if keys is None:
      return None  # below a leaf (e.g. a tuple index): config_flags judges
    if part not in keys:
      where = '.'.join(prefix) or 'the config'
      have = ', '.join(sorted(keys)) if keys else 'no fields'
      return (f'--config.{dotted}: {where} has no field {part!r}.'
              f'{errors.did_you_mean(part, keys)} Fields of {where}: {have}.')
    node, prefix = node[part], prefix + [part]
  return None


def check_config_fields(config: Any, reference: Any,
                        free: Sequence[str] = ('mix.hparams', 'model.kwargs')) -> None:
  """Raises a UserError for a field of `config` that `reference` (the defaults) lacks.

  For fields a config *file* adds by mistake (`--config.<field>` typos are caught at
  parsing); the message names the nearest valid fields. Subtrees in `free` are free-form
  (their keys are checked by the mixer / the model).
  """
  def walk(node, ref, prefix):
    ref_keys = list(ref.keys())
    for key in node.keys():
      path = f'{prefix}{key}'
      if path in free:
        continue
      if key not in ref_keys:
        where = prefix[:-1] or 'the config'
        raise errors.UserError(
            f'config field {path!r} is not a known field.{errors.did_you_mean(key, ref_keys)} '
            f'Fields of {where}: {", ".join(sorted(ref_keys))}.')
      if hasattr(node[key], 'keys') and hasattr(ref[key], 'keys'):
        walk(node[key], ref[key], f'{path}.')

  walk(config, reference, '')


def default_config() -> Any | None:
  """The defaults of every config file (`configs/common.py`'s `get_config()`), or None.

  Taken from the `configs.common` module that the loaded config file imported (config files
  start from it); a standalone config file that does not is not checked against it.
  """
  module = sys.modules.get(DEFAULTS_MODULE)
  return module.get_config() if module is not None else None


def parse_flags(argv: Sequence[str], *, config_flag: str = 'config') -> list[str]:
  """absl flag parsing with every failure as a `UserError` (for `app.run(flags_parser=)`).

  The config file's fields are then checked against the defaults (`check_config_fields`), so
  a typo in a config file stops here, naming the nearest field.
  """
  rest = _parse_flags(argv, config_flag)
  config = FLAGS[config_flag].value if config_flag in FLAGS else None
  reference = default_config() if config is not None else None
  if reference is not None:
    try:
      check_config_fields(config, reference)
    except errors.UserError as e:
      spec = _config_flag_args(argv, config_flag)[0]
      raise errors.UserError(f'--{config_flag}={spec}: {e}') from None
  return rest


def _parse_flags(argv: Sequence[str], config_flag: str) -> list[str]:
  try:
    rest = FLAGS(list(argv))
    if config_flag in FLAGS and type(FLAGS[config_flag].value).__name__ == '_ErrorConfig':
      # config_flags defers a load failure to the first use of the config: report it now.
      spec = _config_flag_args(argv, config_flag)[0] or ''
      load_config_file(spec)  # raises the UserError
      raise errors.UserError(f'--{config_flag}={spec}: the config file does not load.')
    return rest
  except flags.Error as e:
    raise errors.UserError(str(e).splitlines()[0]) from e
  except (AttributeError, KeyError, TypeError, ValueError, OSError, SyntaxError,
          ImportError) as e:
    spec, paths = _config_flag_args(argv, config_flag)
    if spec is None:
      raise
    config = load_config_file(spec)  # raises UserError if the file itself is the problem
    for path in paths:
      message = unknown_config_field(config, path)
      if message:
        raise errors.UserError(message) from e
    raise errors.UserError(f'--{config_flag}={spec}: {type(e).__name__}: {e}') from e


def run(main: Callable[[list[str]], Any], *, argv: Sequence[str] | None = None) -> None:
  """`app.run(main)` with `parse_flags`, quiet library logs and one-line user errors."""
  argv = list(sys.argv if argv is None else argv)
  verbose = errors.verbose_requested(argv)
  quiet_library_logs(verbose)

  def quiet_main(args):
    if not verbose:
      _quiet_tfds_progress_bars()
    return main(args)

  errors.run_cli(lambda: app.run(quiet_main, argv=argv, flags_parser=parse_flags), argv=argv)
