"""The shape of the code base: no import cycles, and every top-level module placed in the import-linter layers.

The contracts themselves (pyproject.toml, ``[tool.importlinter]``) run as ``lint-imports`` in ``make test``.
"""

from __future__ import annotations

import inspect
import pkgutil
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grimp
from fastapi.routing import APIRoute

import b24bridge
from b24bridge.app import ROUTERS, create_app
from b24bridge.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: groups of modules that reach each other through imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def _import_graph() -> dict[str, set[str]]:
    # Every import counts: at module level, inside functions (late imports) and under TYPE_CHECKING.
    graph = grimp.build_graph("b24bridge", cache_dir=None)
    return {module: graph.find_modules_directly_imported_by(module) for module in graph.modules}


def test_no_import_cycles() -> None:
    cycles = [group for group in _strongly_connected(_import_graph()) if len(group) > 1]
    assert cycles == [], f"modules importing each other: {cycles}"


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert [g for g in _strongly_connected(graph) if len(g) > 1] == [["a", "b", "c"]]


def test_every_top_level_module_is_in_the_layers() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    [layers] = [c for c in config["contracts"] if c["id"] == "layers"]
    placed = {name.strip() for layer in layers["layers"] for name in re.split(r"[|:]", layer)}
    top_level = {f"b24bridge.{m.name}" for m in pkgutil.iter_modules(b24bridge.__path__)}
    # The sandbox stands outside the layers: its own contract forbids it every other module.
    assert top_level - placed == {"b24bridge.sandbox"}


def test_no_service_locator() -> None:
    """What a function needs is in its signature: nothing reaches for a process-global context."""
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in (ROOT / "src" / "b24bridge").rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\bcurrent\(\)", line)
    ]
    assert offenders == []


def _dependencies(dependant: Any) -> Iterator[Any]:
    for sub in dependant.dependencies:
        yield sub
        yield from _dependencies(sub)


def test_every_handler_and_dependency_is_a_coroutine() -> None:
    """FastAPI runs a plain function (handler or dependency) in its thread pool: a thread hop per request, and the
    GIL fought over by twenty idle threads (py-spy, bench/ingest.py). Every one of ours is ``async def``."""
    app = create_app(Settings())
    plain = []
    routes = [*app.routes, *(route for router in ROUTERS for route in router.routes)]
    assert sum(isinstance(route, APIRoute) for route in routes) > 20
    for route in routes:
        if not isinstance(route, APIRoute):
            continue
        for dependant in [route.dependant, *_dependencies(route.dependant)]:
            call = dependant.call
            if call is None or isinstance(call, type) or not getattr(call, "__module__", "").startswith("b24bridge"):
                continue  # FastAPI's own security classes are coroutines already
            if not inspect.iscoroutinefunction(call):
                plain.append(f"{route.path}: {call.__module__}.{call.__qualname__}")
    assert plain == []
