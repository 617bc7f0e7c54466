"""The shape of the codebase: every module imports on its own, no import cycles, and no module
reaches into another module's private (`_name`) names."""

from __future__ import annotations

import ast
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROJECT = ('storm_jax', 'experiments', 'configs')
SCANNED = ('storm_jax', 'experiments', 'tests', 'configs')


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _modules(package: str) -> dict[str, pathlib.Path]:
  return {_module_name(p): p for p in sorted((ROOT / package).rglob('*.py'))}


def _is_private(name: str) -> bool:
  return name.startswith('_') and not (name.startswith('__') and name.endswith('__'))


def _local_modules(directory: pathlib.Path) -> set[str]:
  """Sibling modules a file in `directory` can import by bare name (tests' helpers)."""
  return {p.stem for p in directory.glob('*.py')}


def _imports(tree: ast.AST, module: str, is_package: bool):
  """(node, imported module, names) for every import statement, relative ones resolved."""
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield node, alias.name, alias
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:
        parts = module.split('.')
        keep = len(parts) - node.level + (1 if is_package else 0)
        base = '.'.join(parts[:keep] + ([base] if base else []))
      for alias in node.names:
        yield node, base, alias


def _is_project(name: str, local: set[str]) -> bool:
  return name.split('.')[0] in PROJECT or name.split('.')[0] in local


def _private_uses(path: pathlib.Path) -> list[str]:
  """`from m import _x`, `m._x` and `pkg.m._x` where m is another project module."""
  module = _module_name(path)
  tree = ast.parse(path.read_text(), str(path))
  local = _local_modules(path.parent) - {path.stem}
  problems = []
  bound = set()  # local names bound to project modules
  for node, name, alias in _imports(tree, module, path.name == '__init__.py'):
    if not _is_project(name, local) or name == module:
      continue
    where = f'{path.relative_to(ROOT)}:{node.lineno}'
    if isinstance(node, ast.ImportFrom):
      if _is_private(alias.name):
        problems.append(f'{where} imports {name}.{alias.name}')
      bound.add(alias.asname or alias.name)
    else:
      bound.add(alias.asname or alias.name.split('.')[0])
  for node in ast.walk(tree):
    if isinstance(node, ast.Attribute) and _is_private(node.attr):
      value = node.value
      while isinstance(value, ast.Attribute):
        value = value.value
      if isinstance(value, ast.Name) and value.id in bound:
        problems.append(f'{path.relative_to(ROOT)}:{node.lineno} uses {ast.unparse(node)}')
  return problems


def test_no_module_uses_another_modules_private_names():
  problems = []
  for package in SCANNED:
    for path in _modules(package).values():
      problems += _private_uses(path)
  assert not problems, 'private names used across modules:\n' + '\n'.join(problems)


def test_the_lint_finds_private_uses(tmp_path, monkeypatch):
  """The lint above can fail: each form of a private use is reported."""
  monkeypatch.setattr(sys.modules[__name__], 'ROOT', tmp_path)
  (tmp_path / 'tests').mkdir()
  (tmp_path / 'tests' / '_helper.py').write_text('_x = 1\n')
  path = tmp_path / 'tests' / 'test_x.py'
  path.write_text('import storm_jax.train\nfrom storm_jax import train\n'
                  'from storm_jax.train import _opt\nimport _helper\n'
                  'train._opt(1)\nstorm_jax.train._opt(2)\n_helper._x\nself._fine = 1\n')
  found = _private_uses(path)
  assert len(found) == 4, found
  assert sorted(int(p.split(':')[1].split()[0]) for p in found) == [3, 5, 6, 7]


def _import_graph() -> dict[str, set[str]]:
  """storm_jax module -> the storm_jax modules it imports (lazy imports included)."""
  modules = _modules('storm_jax')
  graph = {}
  for module, path in modules.items():
    edges = set()
    tree = ast.parse(path.read_text(), str(path))
    for _, name, alias in _imports(tree, module, path.name == '__init__.py'):
      if name.split('.')[0] != 'storm_jax':
        continue
      target = f'{name}.{alias.name}' if f'{name}.{alias.name}' in modules else name
      if isinstance(alias, ast.alias) and target in modules and target != module:
        edges.add(target)
    graph[module] = edges
  return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
  state, stack = {}, []

  def visit(node):
    state[node] = 'open'
    stack.append(node)
    for nxt in sorted(graph[node]):
      if state.get(nxt) == 'open':
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state:
        found = visit(nxt)
        if found:
          return found
    stack.pop()
    state[node] = 'done'
    return None

  for node in sorted(graph):
    if node not in state:
      found = visit(node)
      if found:
        return found
  return None


def test_no_import_cycles_between_storm_jax_modules():
  graph = _import_graph()
  assert 'storm_jax.data.info' in graph and 'storm_jax.train.step' in graph
  assert graph['storm_jax.data.info'] == set()  # the table of facts is a leaf
  assert _cycle(graph) is None, ' -> '.join(_cycle(graph))
  assert _cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']


# Imports the third-party stack once, then each project module in a fork of that interpreter
# (copy-on-write: a module then costs its own import only, not JAX's and TensorFlow's again).
_IMPORT_EACH_IN_A_FORK = textwrap.dedent('''
    import os, sys, traceback
    import jax, numpy, flax, optax, orbax.checkpoint, tensorflow, tensorflow_datasets
    project = [m for m in sys.modules if m.split('.')[0] in ('storm_jax', 'experiments')]
    assert not project, project
    for module in sys.argv[1:]:
      pid = os.fork()
      if pid == 0:
        try:
          __import__(module)
        except BaseException:
          traceback.print_exc()
          print(f'FAILED {module}', file=sys.stderr)
          sys.stderr.flush()
          os._exit(1)
        os._exit(0)
      os.waitpid(pid, 0)
''')


@pytest.mark.slow
def test_every_module_imports_alone():
  """Each storm_jax module imported before any other (an import cycle or a missing import
  hidden by the usual import order fails here): in a fresh fork of an interpreter that holds
  only the third-party packages."""
  modules = sorted(m for m in _modules('storm_jax') if not m.endswith('__main__'))
  assert len(modules) > 40
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3')
  proc = subprocess.run([sys.executable, '-c', _IMPORT_EACH_IN_A_FORK, *modules], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=1200)
  assert proc.returncode == 0, proc.stderr[-5000:]
  assert 'FAILED' not in proc.stderr, proc.stderr[-20000:]
