"""The small interface a queue needs from whoever consumes it, so queue.py never imports channel.py."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from broker.model.queue.queue import Entry, Queue


class Consumer(Protocol):
    tag: str
    queue: Queue
    no_ack: bool
    exclusive: bool
    priority: int
    arguments: dict[str, Any]
    parked: bool
    unacked: int

    def has_capacity(self) -> bool: ...
    def deliver(self, entry: Entry) -> None: ...
    def cancelled_by_server(self) -> None: ...
