"""Where the vhost reports definition changes, so that the model never imports the durability layer.

broker/durability/journal.py implements it over the store (and decides which changes are durable); with no store,
:data:`NO_JOURNAL` records nothing. Each method returns whether it handed something to the store: the channel
then holds its reply until that is on disk.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from amqpd.broker.model.exchange import Exchange
    from amqpd.broker.model.queue import Queue


class DefinitionsJournal(Protocol):
    def exchange_declared(self, ex: Exchange) -> bool: ...
    def exchange_deleted(self, ex: Exchange) -> bool: ...
    def queue_declared(self, q: Queue) -> bool:
        """Also gives a stored queue its store (``q.store``), so its messages are persisted."""
        ...

    def queue_deleted(self, q: Queue) -> bool: ...
    def bound(self, source: Exchange, dest: Exchange | Queue, routing_key: str, arguments: dict[str, Any]) -> bool: ...
    def unbound(
        self, source: Exchange, dest: Exchange | Queue, routing_key: str, arguments: dict[str, Any]
    ) -> bool: ...


class _NoJournal:
    """Nothing is durable (the memory store, or a vhost built by a test)."""

    __slots__ = ()

    def exchange_declared(self, ex: Exchange) -> bool:
        return False

    def exchange_deleted(self, ex: Exchange) -> bool:
        return False

    def queue_declared(self, q: Queue) -> bool:
        return False

    def queue_deleted(self, q: Queue) -> bool:
        return False

    def bound(self, source: Exchange, dest: Exchange | Queue, routing_key: str, arguments: dict[str, Any]) -> bool:
        return False

    def unbound(self, source: Exchange, dest: Exchange | Queue, routing_key: str, arguments: dict[str, Any]) -> bool:
        return False


NO_JOURNAL: DefinitionsJournal = _NoJournal()
