"""The package's shape, kept honest: no import cycle among its modules, and every backend behind the one protocol.

Why a test: a cycle hidden by a function-level import (``runner`` -> ``workers`` -> ``runner``) works until the
day an import order changes, and a newcomer cannot tell which module is below which. The graph is read from the
source (every ``import`` and ``from ... import`` at any level: module level, inside functions, under
``TYPE_CHECKING``), so nothing is imported to build it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "mteb_vllm"


def _modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the package (a package is its ``__init__.py``)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imported(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``module`` imports, at any level of its source."""
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # ``from a import b`` imports the module a.b when there is one, else the name b of module a
            submodules = [f"{source}.{alias.name}" for alias in node.names if f"{source}.{alias.name}" in modules]
            targets = submodules + ([source] if len(submodules) < len(node.names) else [])
        for target in targets:
            if target.split(".")[0] != "mteb_vllm":
                continue
            while target not in modules and "." in target:
                target = target.rpartition(".")[0]
            if target in modules and target != module:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imported(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path that returns to its start) per strongly connected group of modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
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
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    cycles = []
    for group in groups:  # a shortest way back to the group's first module, for the message
        start, members = group[0], set(group)
        paths = {start: [start]}
        frontier = [start]
        cycle = None
        while frontier and cycle is None:
            nxt_frontier = []
            for node in frontier:
                for nxt in sorted(graph[node] & members):
                    if nxt == start:
                        cycle = paths[node] + [start]
                        break
                    if nxt not in paths:
                        paths[nxt] = paths[node] + [nxt]
                        nxt_frontier.append(nxt)
                if cycle:
                    break
            frontier = nxt_frontier
        cycles.append(cycle or group)
    return cycles


def test_no_import_cycle_among_the_packages_modules():
    cycles = _cycles(import_graph())
    assert not cycles, "import cycles (move the shared piece down into a module of its own): " + "; ".join(
        " -> ".join(c) for c in cycles)


def test_the_cycle_check_finds_a_cycle_hidden_in_a_function(tmp_path, monkeypatch):
    """The negative control: the check sees a function-level import that closes a loop, and names it."""
    package = tmp_path / "mteb_vllm"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "low.py").write_text("def f():\n    from .sub import high\n")
    (package / "sub" / "high.py").write_text("from ..low import f\n")
    (package / "leaf.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import low\n")
    monkeypatch.setitem(globals(), "PACKAGE", package)
    graph = import_graph()
    assert graph["mteb_vllm.leaf"] == {"mteb_vllm.low"}
    assert _cycles(graph) == [["mteb_vllm.low", "mteb_vllm.sub.high", "mteb_vllm.low"]]


# --- the backend protocol -----------------------------------------------------------------------------------------
def _backend_classes() -> list[tuple[str, str]]:
    """(module, class) of every class named ``*Backend`` in the backends and testing packages."""
    out = []
    for name, path in _modules().items():
        if not name.startswith(("mteb_vllm.backends", "mteb_vllm.testing")):
            continue
        for node in ast.parse(path.read_text()).body:
            if not isinstance(node, ast.ClassDef):
                continue
            protocol = any(isinstance(base, ast.Name) and base.id == "Protocol" for base in node.bases)
            if node.name.endswith("Backend") and not protocol and node.name != "BaseBackend":
                out.append((name, node.name))
    return out


@pytest.mark.parametrize(("module", "cls"), _backend_classes())
def test_every_backend_inherits_the_protocols_defaults(module, cls):
    import importlib

    from mteb_vllm.backends import BaseBackend

    assert issubclass(getattr(importlib.import_module(module), cls), BaseBackend)


def test_a_backend_object_outside_the_protocol_is_refused_with_what_to_do():
    from mteb_vllm.backends import create_backend
    from mteb_vllm.config import EngineConfig
    from mteb_vllm.errors import EngineArgumentError

    class DuckTyped:
        model, max_model_len, dtype, tokenizer = "m", 8, "float32", None

        def pool(self, inputs, task, *, desc=""):
            raise AssertionError("never called")

    with pytest.raises(EngineArgumentError, match="mteb_vllm.backends.BaseBackend"):
        create_backend(DuckTyped(), EngineConfig(model="m"))


# --- ARCHITECTURE.md ------------------------------------------------------------------------------------------------
ROOT = PACKAGE.parent.parent
#: Paths named in the document relative to the repository rather than to the package.
_REPO_FOLDERS = ("benchmarks/", "tests/", "scripts/")


def _named_paths(text: str) -> set[str]:
    """Every `...py` path the document names in backticks."""
    import re

    return set(re.findall(r"`([\w./]+\.py)`", text))


def test_architecture_md_names_every_module_and_only_modules_that_exist():
    named = _named_paths((ROOT / "ARCHITECTURE.md").read_text())
    modules = {path.relative_to(PACKAGE).as_posix() for path in _modules().values()}
    missing = sorted(modules - named)
    assert not missing, f"ARCHITECTURE.md has no paragraph for {missing}: add one (what it holds, why it is separate)"
    stale = sorted(p for p in named if not ((ROOT / p) if p.startswith(_REPO_FOLDERS) else (PACKAGE / p)).is_file())
    assert not stale, f"ARCHITECTURE.md names modules that do not exist: {stale}"


def test_the_architecture_check_sees_a_missing_and_a_stale_module():
    """The negative control: the path extraction is what the test above relies on."""
    text = "- `wrapper.py`: ...\n- `backends/local.py` and `old_module.py`; `benchmarks/harness.py`, `the x.py file`"
    assert _named_paths(text) == {"wrapper.py", "backends/local.py", "old_module.py", "benchmarks/harness.py"}
