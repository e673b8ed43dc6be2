"""The package's imports run one way: down the layers of docs/architecture.md, with no cycle.

Every `import` and `from ... import` in logq is read from the source (those under
`if TYPE_CHECKING:` and inside functions included), so a type-only import that runs
upward fails here as a real one would.
"""

from __future__ import annotations

import ast
import pathlib


import logq

PACKAGE = pathlib.Path(logq.__file__).parent

# Each layer, and the layers it may import (leaves shared by all: errors, clock, tuples, closing).
LEAVES = {"errors", "clock", "tuples", "closing"}
MAY_IMPORT: dict[str, set[str]] = {
    "core": {"core"},
    "log": {"log"},
    "backends": {"backends", "core", "log"},
    "runtime": {"runtime", "core"},
    "queue": {"queue", "backends", "runtime", "core", "log"},
    "cli": {"cli", "queue", "backends", "runtime", "core", "log"},
    "package": {"package", "queue", "backends", "runtime", "core", "log", "cli"},
}


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["logq", *parts])


def layer_of(module: str) -> str:
    """The layer of `logq.x.y`: its first part below logq (a top-level module is its own)."""
    parts = module.split(".")
    if len(parts) == 1:
        return "package"
    head = parts[1]
    if head in LEAVES:
        return "leaf"
    if head in MAY_IMPORT:
        return head
    return "package"  # __main__, testing, prometheus: the package's own top, above everything


def imports_of(path: pathlib.Path) -> set[str]:
    """The logq modules `path` imports (absolute names), wherever the import statement is."""
    me = module_name(path)
    return imports_in(path.read_text(), me, path.name == "__init__.py") - {me}


def imports_in(source: str, me: str, is_package: bool) -> set[str]:
    package = me.split(".") if is_package else me.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "logq")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                target = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "logq":
                target = node.module
            else:
                continue
            # `from pkg import mod` imports a module, `from mod import name` a name of it.
            for a in node.names:
                sub = f"{target}.{a.name}"
                found.add(sub if _is_module(sub) else target)
    return found


def _is_module(name: str) -> bool:
    rel = pathlib.Path(*name.split(".")[1:])
    return (PACKAGE / rel).with_suffix(".py").exists() or (PACKAGE / rel / "__init__.py").exists()


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def test_imports_run_only_down_the_layers() -> None:
    upward = []
    for module, targets in graph().items():
        mine = layer_of(module)
        for target in targets:
            theirs = layer_of(target)
            if theirs == "leaf" or (mine == "leaf" and target in ("logq.errors",)):
                continue
            if mine == "leaf" or theirs not in MAY_IMPORT[mine]:
                upward.append(f"{module} ({mine}) imports {target} ({theirs})")
    assert not upward, "imports that run upward:\n" + "\n".join(sorted(upward))


def test_imports_have_no_cycle() -> None:
    edges = graph()
    done: set[str] = set()
    cycles: list[str] = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(edges.get(node, ())):
            if nxt in path:
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in done:
                visit(nxt, path + [nxt])
        done.add(node)

    for module in sorted(edges):
        if module not in done:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_check_sees_type_only_relative_and_function_level_imports() -> None:
    source = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..queue import Queue\n"
              "def f():\n    from ..runtime import worker\n    import logq.errors\n")
    assert imports_in(source, "logq.core.x", False) == {"logq.queue", "logq.runtime.worker", "logq.errors"}


def test_no_class_is_over_about_400_lines() -> None:
    """A class that passes ~400 lines usually does two jobs: split it along its seam."""
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                lines = node.end_lineno - node.lineno + 1
                if lines > 420:
                    long.append(f"{module_name(path)}.{node.name}: {lines} lines")
    assert not long, "classes over about 400 lines:\n" + "\n".join(long)
