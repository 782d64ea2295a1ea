"""The import graph between the project's files: no circles, and each room imports only what docs/DESIGN.md
"Rooms" allows. Every import counts, a lazy one inside a function too (a circle hidden in a function is still
a circle)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("simclr", "jobs", "analysis", "benchmarks")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # "from pkg import mod" imports the file pkg/mod.py when there is one
                names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module
                         for a in node.names]
            for name in names:
                while name and name not in files:
                    name = name.rpartition(".")[0]
                if name and name != mod and not files[name].name == "__init__.py":
                    graph[mod].add(name)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one file (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circle_between_files() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_one() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# room -> rooms it must not import (prefix match on module names)
FORBIDDEN = {
    "jobs.config": ("jobs.stages", "jobs.sweep", "jobs.cli", "simclr.train", "simclr.models", "torch"),
    "jobs.stages": ("jobs.sweep", "jobs.cli"),
    "jobs.sweep": ("jobs.cli",),
    "simclr.runfolder": ("simclr.train", "simclr.models", "simclr.data", "simclr.losses", "simclr.optim", "jobs",
                         "analysis"),
    "simclr": ("jobs", "analysis"),
    "analysis": ("jobs.stages", "jobs.sweep", "jobs.cli", "simclr.train", "simclr.models", "simclr.losses",
                 "simclr.optim"),
}


# Deliberate exceptions, each with its reason.
ALLOWED = {
    # the raw-pixel baseline must be the pretraining monitor's own kNN (imported lazily, only to compute it)
    "analysis.baselines -> simclr.train.evaluate",
}


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_rooms_import_only_what_they_may(room: str) -> None:
    graph = _graph()
    bad = sorted(f"{m} -> {d}" for m, deps in graph.items() if m == room or m.startswith(room + ".")
                 for d in deps if any(d == f or d.startswith(f + ".") for f in FORBIDDEN[room]))
    assert [b for b in bad if b not in ALLOWED] == []
