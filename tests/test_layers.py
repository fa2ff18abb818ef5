"""The import graph obeys the layers written down in broker/DESIGN.md: each layer imports only the layers below it.

Every import counts, including those under ``if TYPE_CHECKING:`` and inside functions: a cycle hidden from the
interpreter still ties the layers together for a reader and for mypy.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# layer -> the layers (package prefixes) it may import besides itself. Order: bottom to top.
ALLOWED: dict[str, set[str]] = {
    "protocol": set(),
    "storage": set(),
    "broker.model": {"protocol", "storage"},
    "broker.access": {"protocol", "storage"},
    "broker.durability": {"broker.model", "protocol", "storage"},
    "broker.features": {"broker.model", "broker.durability", "protocol", "storage"},
    "broker.session": {
        "broker.access",
        "broker.model",
        "broker.durability",
        "broker.features",
        "protocol",
        "storage",
    },
    "broker.server": {
        "broker.access",
        "broker.model",
        "broker.durability",
        "broker.features",
        "broker.session",
        "protocol",
        "storage",
    },
    # The embedded broker and pytest plugin for applications' tests: a client of the server, on top of it all.
    "broker.testing": {
        "broker.server",
        "broker.access",
        "broker.model",
        "broker.durability",
        "broker.features",
        "broker.session",
        "protocol",
        "storage",
    },
}
PROJECT = ("protocol", "storage", "broker")


def layer_of(module: str) -> str | None:
    for layer in sorted(ALLOWED, key=len, reverse=True):
        if module == layer or module.startswith(layer + "."):
            return layer
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_imports(path: Path) -> list[str]:
    out: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
    return out


def imports_of(path: Path) -> list[str]:
    # The project is imported under its one installed name, amqpd (amqpd.broker.model -> layer broker.model).
    return [name.removeprefix("amqpd.") for name in all_imports(path) if name.startswith("amqpd.")]


def bare_imports_of(path: Path) -> list[str]:
    return [name for name in all_imports(path) if name.split(".")[0] in (*PROJECT, "benchmarks")]


def project_files() -> list[Path]:
    return sorted(p for top in PROJECT for p in (ROOT / top).rglob("*.py"))


def test_the_project_is_imported_only_as_amqpd() -> None:
    # From a checkout the top-level folders are importable under their bare names too; importing one that way
    # would load a second copy of its modules (and their globals) beside the amqpd.* one.
    tops = (*PROJECT, "benchmarks", "tests", "examples")
    offenders = {
        str(p.relative_to(ROOT)): bare
        for top in tops
        for p in (ROOT / top).rglob("*.py")
        if (bare := bare_imports_of(p))
    }
    assert offenders == {}


def test_every_module_of_the_broker_lives_in_a_layer() -> None:
    # broker/__init__.py, broker/__main__.py and the broker/healthcheck.py entry point are the package's doors.
    doors = {"broker", "broker.__main__", "broker.healthcheck"}
    homeless = [module_name(p) for p in project_files() if layer_of(module_name(p)) is None]
    assert sorted(set(homeless) - doors) == []


@pytest.mark.parametrize("layer", list(ALLOWED))
def test_a_layer_imports_only_the_layers_below_it(layer: str) -> None:
    offenders = []
    for path in project_files():
        module = module_name(path)
        if layer_of(module) != layer:
            continue
        for imported in imports_of(path):
            target = layer_of(imported)
            if target == layer or target in ALLOWED[layer]:
                continue
            offenders.append(f"{module} imports {imported}")
    assert offenders == []

