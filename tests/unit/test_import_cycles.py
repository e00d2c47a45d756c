"""No module of resizedriver imports itself back, through any chain of
imports: at run time, inside ``if TYPE_CHECKING:`` or in a function.

A cycle that only the type checker follows still couples the modules in
it (a plan module that names the operations that run it, which import
the plan module), so it is counted: the plans take the operations as
``operations.protocols`` describe them, and the operations find the
plans in the registry (``operations.plans``), which nothing imports
back.  Read with ``ast``: nothing is imported to find out.
"""

from __future__ import annotations

import ast
import os
from typing import Iterator

import resizedriver

PACKAGE = os.path.dirname(resizedriver.__file__)


def modules() -> dict[str, str]:
    """Every module of the package: dotted name -> file."""
    found = {}
    root = os.path.dirname(PACKAGE)
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if not name.endswith('.py'):
                continue
            path = os.path.join(folder, name)
            dotted = os.path.relpath(path, root)[:-3].replace(os.sep, '.')
            found[dotted.removesuffix('.__init__')] = path
    return found


def imported(path: str, known: dict[str, str]) -> Iterator[str]:
    """The package's modules ``path`` imports, wherever the import is."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and \
                not node.level:
            names = [f'{node.module}.{alias.name}' if
                     f'{node.module}.{alias.name}' in known else node.module
                     for alias in node.names]
        else:
            continue
        yield from (name for name in names if name in known)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module, or of
    one that imports itself (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: set(imported(path, known)) for name, path in known.items()}


def test_no_import_cycle_in_resizedriver():
    assert cycles(import_graph()) == []


def test_the_check_sees_imports_under_type_checking_and_in_functions(
        tmp_path):
    known = {'resizedriver.operations.finish': '', 'resizedriver.chooser': '',
             'resizedriver.operations': ''}
    source = tmp_path / 'mod.py'
    source.write_text(
        'from typing import TYPE_CHECKING\n'
        'if TYPE_CHECKING:\n'
        '    from resizedriver.operations.finish import FinishMigration\n'
        'def f():\n'
        '    from resizedriver import chooser\n')
    assert sorted(imported(str(source), known)) == [
        'resizedriver.chooser', 'resizedriver.operations.finish']


def test_the_cycle_finder_finds_cycles():
    assert cycles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == [
        ['a', 'b', 'c']]
    assert cycles({'a': {'a'}}) == [['a']]
    assert cycles({'a': {'b'}, 'b': set()}) == []
