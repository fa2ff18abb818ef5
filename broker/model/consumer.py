"""What a queue needs from the sessions around it, so the model never imports the session layer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from amqpd.broker.model.queue import Entry, Queue


class Session(Protocol):
    """A client connection as the model sees it: an identity (who owns an exclusive queue, whose consumer this
    is) and a publisher that a queue's backlog may pause and later resume."""

    def unthrottle(self, queue: Queue) -> None:
        """``queue``, which paused this publisher, has drained (or lost its consumers, or gone)."""
        ...


class Consumer(Protocol):
    tag: str
    queue: Queue
    no_ack: bool
    exclusive: bool
    priority: int
    arguments: dict[str, Any]
    parked: bool
    unacked: int

    @property
    def session(self) -> Session:
        """The connection this consumer delivers through."""
        ...

    def has_capacity(self) -> bool: ...
    def deliver(self, entry: Entry) -> bool:
        """Send ``entry``; returns whether this consumer can take another one now (``has_capacity()``)."""
        ...

    def cancelled_by_server(self) -> None: ...
