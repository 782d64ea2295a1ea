"""The import graph between the project's files: no circles, and each room imports only what docs/DESIGN.md
"Rooms" allows. Every import counts, a lazy one inside a function too (a circle hidden in a function is still
a circle)."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("simclr", "jobs", "analysis", "benchmarks")


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """File -> the project files it imports (a package's ``__init__`` included) and the top-level names of
    the outside packages it imports (``torch``, ``PIL``)."""
    files = {_module_name(p, root): p for pkg in packages for p in (root / pkg).rglob("*.py")}
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
            for full in names:
                name = full
                while name and name not in files:
                    name = name.rpartition(".")[0]
                if name and name != mod:
                    graph[mod].add(name)
                elif not name and full.split(".")[0] not in packages:
                    graph[mod].add(full.split(".")[0])  # an outside package: a leaf
    return graph


@functools.lru_cache(maxsize=1)
def _project_graph() -> dict[str, set[str]]:
    return _graph()


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
    graph = _project_graph()
    assert _cycles({m: {d for d in deps if d in graph} for m, deps in graph.items()}) == []


def test_a_circle_through_a_package_init_is_found(tmp_path: Path) -> None:
    """``from pkg import x`` imports pkg/__init__.py, which may import back the file that asked."""
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "__init__.py").write_text("from pkg.sub.b import thing\n")
    (tmp_path / "pkg" / "sub" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "sub" / "b.py").write_text("import torch\nfrom pkg import other\nthing = 1\n")
    graph = _graph(tmp_path, ("pkg",))
    assert graph["pkg.sub.b"] == {"pkg", "torch"}
    assert _cycles({m: {d for d in deps if d in graph} for m, deps in graph.items()}) == [["pkg", "pkg.sub.b"]]


def test_the_cycle_finder_finds_one() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# room -> rooms it must not import (prefix match on module names)
FORBIDDEN = {
    "jobs.config": ("jobs.stages", "jobs.sweep", "jobs.cli", "simclr.train", "simclr.models", "torch"),
    "jobs.stages": ("jobs.sweep", "jobs.cli"),
    "jobs.sweep": ("jobs.cli",),
    "simclr.runfolder": ("simclr.train", "simclr.models", "simclr.data", "simclr.losses", "simclr.optim", "jobs",
                         "analysis", "torch"),
    "simclr.data.shards": ("torch", "torchvision", "simclr.data.loading", "simclr.data.augment", "simclr.train",
                           "simclr.models", "simclr.runfolder"),
    "simclr.data.augment": ("simclr.data.loading", "simclr.data.shards", "simclr.train", "simclr.models"),
    "simclr.atomic": ("simclr.data", "simclr.train", "simclr.models", "simclr.runfolder", "simclr.losses",
                      "simclr.optim", "simclr.dist", "torch"),
    "simclr": ("jobs", "analysis"),
    "analysis": ("jobs.stages", "jobs.sweep", "jobs.cli", "simclr.train", "simclr.models", "simclr.losses",
                 "simclr.optim"),
}


# Deliberate exceptions, each with its reason.
ALLOWED = {
    # the raw-pixel baseline must be the pretraining monitor's own kNN (imported lazily, only to compute it)
    "analysis.baselines -> simclr.train.evaluate",
    # the loader's tensor decoder lives beside the PIL one; torch is imported inside it, on first use only
    # (tests/simclr/data/shards/test_torch_free.py: importing and writing shards never imports torch)
    "simclr.data.shards.codec -> torch",
    "simclr.data.shards.codec -> torchvision",
}


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_rooms_import_only_what_they_may(room: str) -> None:
    graph = _project_graph()
    bad = sorted(f"{m} -> {d}" for m, deps in graph.items() if m == room or m.startswith(room + ".")
                 for d in deps if any(d == f or d.startswith(f + ".") for f in FORBIDDEN[room]))
    assert [b for b in bad if b not in ALLOWED] == []
