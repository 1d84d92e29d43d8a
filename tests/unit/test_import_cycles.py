"""No import cycle between any two modules of bai, counting every kind of import.

The ``acyclic_siblings`` contract in ``pyproject.toml`` (``lint-imports``)
finds cycles between the modules and subpackages of each package, but not
one through a package's own ``__init__`` (``bai.x`` importing ``bai.x.y``,
which imports ``bai.x``).  This test checks the module graph itself, as
grimp (import-linter's graph library) builds it: imports inside functions
and under ``TYPE_CHECKING`` included.
"""

from __future__ import annotations

import grimp


def _strongly_connected(graph: grimp.ImportGraph) -> list[list[str]]:
    """The groups of two or more modules that import each other, directly or not (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return groups


def _a_cycle(graph: grimp.ImportGraph, group: list[str]) -> str:
    """One import cycle through the first module of *group*, as ``a -> b -> ... -> a``."""
    start = group[0]
    step = min(m for m in graph.find_modules_directly_imported_by(start) if m in group)
    chain = graph.find_shortest_chain(importer=step, imported=start)
    assert chain is not None
    return " -> ".join((start, *chain))


def test_bai_has_no_import_cycle() -> None:
    graph = grimp.build_graph("bai", cache_dir=None)
    cycles = [_a_cycle(graph, group) for group in _strongly_connected(graph)]
    assert not cycles, "import cycles in bai:\n" + "\n".join(cycles)
