"""The import rules between the layers, checked over every module's imports (also those inside
functions): a change to the tools cannot break the service, and the domain stays pure."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import payments

ROOT = Path(payments.__file__).parent
IO_MODULES = frozenset(
    {
        "asyncio",
        "http",
        "io",
        "os",
        "pathlib",
        "shutil",
        "signal",
        "socket",
        "subprocess",
        "tempfile",
        "urllib",
    }
)
"""Standard modules that talk to the outside world: the domain imports none of them."""
FORBIDDEN = {
    "payments.domain": (
        "payments.service",
        "payments.runtime",
        "payments.tools",
        "payments.client",
        "payments.cli",
        "payments.config",
    ),
    "payments.service": (
        "payments.runtime",
        "payments.console",
        "payments.tools",
        "payments.client",
        "payments.cli",
    ),
    "payments.runtime": (
        "payments.service",
        "payments.console",
        "payments.tools",
        "payments.client",
        "payments.cli",
    ),
    "payments.config": (
        "payments.service",
        "payments.runtime",
        "payments.tools",
        "payments.client",
        "payments.cli",
    ),
    "payments.client": ("payments.runtime", "payments.tools", "payments.cli"),
    # The console reads: it may use the ledger's reads and the id rule, never the handlers or the
    # service process, nor start or stop processes.
    "payments.console": (
        "payments.service.handlers",
        "payments.service.serve",
        "payments.runtime.supervisor",
        "payments.runtime.processes",
        "payments.tools",
        "payments.cli",
    ),
    "payments.serving": (
        "payments.service",
        "payments.runtime",
        "payments.console",
        "payments.tools",
        "payments.client",
        "payments.cli",
    ),
}
"""Prefixes each layer may not import: ``payments.tools`` may import anything, and ``payments.cli``
imports the tools only inside the commands that need them (checked on its own below)."""


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, *, top_level_only: bool = False) -> Iterator[str]:
    """Every module ``path`` imports, relative imports resolved."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def layer_of(name: str) -> str | None:
    return next((layer for layer in FORBIDDEN if name == layer or name.startswith(layer + ".")), None)


def edges() -> Iterator[tuple[str, str]]:
    for path in sorted(ROOT.rglob("*.py")):
        importer = module_name(path)
        for imported in imports(path):
            yield importer, imported


def forbidden(importer: str, imported: str) -> bool:
    layer = layer_of(importer)
    if layer is None:
        return False
    if any(imported == p or imported.startswith(p + ".") for p in FORBIDDEN[layer]):
        return True
    if layer == "payments.domain":
        top = imported.partition(".")[0]
        return top != "payments" and (top not in sys.stdlib_module_names or top in IO_MODULES)
    return False


def test_no_module_imports_across_a_forbidden_edge() -> None:
    assert [edge for edge in edges() if forbidden(*edge)] == []


def test_the_cli_imports_the_tools_only_inside_the_commands() -> None:
    top_level = list(imports(ROOT / "cli.py", top_level_only=True))

    assert [name for name in top_level if name.startswith("payments.tools")] == []


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("payments.domain.state_machine", "payments.service.answers"),
        ("payments.domain.state_machine", "restate"),
        ("payments.domain.state_machine", "httpx"),
        ("payments.domain.state_machine", "socket"),
        ("payments.service.handlers", "payments.runtime.supervisor"),
        ("payments.service.handlers", "payments.tools.chaos"),
        ("payments.runtime.supervisor", "payments.service.handlers"),
        ("payments.runtime.supervisor", "payments.tools.launcher"),
        ("payments.console.app", "payments.service.handlers"),
        ("payments.console.app", "payments.runtime.processes"),
        ("payments.runtime.reconcile", "payments.console.books"),
    ],
)
def test_the_rules_see_a_forbidden_edge(importer: str, imported: str) -> None:
    assert forbidden(importer, imported)


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("payments.domain.state_machine", "enum"),
        ("payments.service.handlers", "payments.domain.state_machine"),
        ("payments.service.handlers", "restate"),
        ("payments.runtime.supervisor", "payments.config"),
        ("payments.tools.chaos.storm", "payments.service.answers"),
        ("payments.client", "payments.service.answers"),
        ("payments.console.books", "payments.service.ledger"),
        ("payments.console.app", "payments.runtime.reconcile"),
    ],
)
def test_the_rules_allow_the_layering(importer: str, imported: str) -> None:
    assert not forbidden(importer, imported)
