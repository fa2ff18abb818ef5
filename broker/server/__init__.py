"""The process shell: settings, the command line, listeners, authentication, graceful shutdown.

``from broker.server import Server`` is resolved lazily, so that ``amqpd --help``, ``--version`` and ``--check``
(which import this package's settings and cli modules) do not import the whole broker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from amqpd.broker.server.server import Server

__all__ = ["Server"]


def __getattr__(name: str) -> Any:
    if name == "Server":
        from amqpd.broker.server.server import Server

        return Server
    raise AttributeError(f"module 'broker.server' has no attribute {name!r}")
