"""storage/ knows nothing of AMQP sessions or sockets: it never imports `broker` or `protocol`."""

from __future__ import annotations

import ast
from pathlib import Path

import storage

FORBIDDEN = {"broker", "protocol"}


def test_storage_never_imports_broker_or_protocol() -> None:
    offenders = []
    for path in Path(storage.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []
