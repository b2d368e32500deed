"""The import direction: no library module imports the command line, and no modules import each other in a circle.

Every module of the installed ``trt_restore`` package is read (not run): the folders that
setuptools maps into it (``export``, ``engine``, ``train``) too. Each ``import`` statement
counts, at module level and inside functions, with relative imports resolved.
"""

from __future__ import annotations

import ast
import importlib.util
import pkgutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import trt_restore

PACKAGE = "trt_restore"
CLI = "trt_restore.cli"
MAPPED_PACKAGES = ("trt_restore.export", "trt_restore.engine", "trt_restore.train")
"""Packages that live outside ``python/trt_restore`` (setuptools ``package-dir``); each is read when installed."""


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    is_package: bool


def package_modules() -> dict[str, Module]:
    """Every module of the package, by name, found without importing any of them."""
    roots = [(PACKAGE, list(trt_restore.__path__))]
    for name in MAPPED_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            roots.append((name, list(spec.submodule_search_locations)))
    modules: dict[str, Module] = {}
    for name, paths in roots:
        modules[name] = Module(name, Path(paths[0]) / "__init__.py", True)
        modules.update((module.name, module) for module in _walk(name, paths))
    return modules


def _walk(package: str, paths: list[str]) -> Iterator[Module]:
    for info in pkgutil.iter_modules(paths, prefix=package + "."):
        folder = Path(info.module_finder.path)
        leaf = info.name.rpartition(".")[2]
        if info.ispkg:
            yield Module(info.name, folder / leaf / "__init__.py", True)
            yield from _walk(info.name, [str(folder / leaf)])
        elif (folder / f"{leaf}.py").is_file():  # an extension module has no imports to read
            yield Module(info.name, folder / f"{leaf}.py", False)


def imported_modules(module: Module, known: set[str]) -> set[str]:
    """The package's modules that ``module`` imports anywhere in its source."""
    tree = ast.parse(module.path.read_text(), filename=str(module.path))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module)
            for alias in node.names:
                imported.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {_known_ancestor(name, known) for name in imported if name.split(".")[0] == PACKAGE} - {None, module.name}


def _absolute(node: ast.ImportFrom, module: Module) -> str:
    if not node.level:
        return node.module
    parts = module.name.split(".")
    anchor = parts[: len(parts) - node.level + (1 if module.is_package else 0)]
    return ".".join([*anchor, *([node.module] if node.module else [])])


def _known_ancestor(name: str, known: set[str]) -> str | None:
    """``name`` itself, or the nearest package above it that is a module of the package (an attribute's owner)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    known = set(modules)
    return {name: imported_modules(module, known) for name, module in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            successor = next(successors, None)
            if successor is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(frozenset(component))
            elif successor not in index:
                index[successor] = low[successor] = len(index)
                stack.append(successor)
                on_stack.add(successor)
                work.append((successor, iter(sorted(graph[successor]))))
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
    return found


def test_the_walk_finds_the_library_and_the_mapped_packages():
    modules = package_modules()
    for name in ("trt_restore.api", "trt_restore.jobs.request", "trt_restore.cli", "trt_restore.distributed.batch"):
        assert name in modules
    for name in MAPPED_PACKAGES:
        if importlib.util.find_spec(name) is not None:
            assert any(module.startswith(name + ".") for module in modules), name


def _in_cli(name: str) -> bool:
    return name == CLI or name.startswith(CLI + ".")


def test_no_library_module_imports_the_command_line():
    graph = import_graph()
    offenders = sorted(
        f"{name} imports {target}"
        for name, targets in graph.items()
        if not _in_cli(name)
        for target in targets
        if _in_cli(target)
    )
    assert not offenders, "the command line is imported by library modules:\n" + "\n".join(offenders)


def test_no_import_cycles():
    found = cycles(import_graph())
    listed = "\n".join(" <-> ".join(sorted(cycle)) for cycle in sorted(found, key=sorted))
    assert not found, f"modules that import each other in a circle:\n{listed}"


def test_the_cycle_finder_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "e"}, "e": {"d"}, "f": set()}
    assert sorted(map(sorted, cycles(graph))) == [["a", "b", "c"], ["d", "e"]]
