"""The definitions journal over the store: which definition changes are durable, and their records.

RabbitMQ's rules: durable exchanges and queues are stored, exclusive queues never are; a binding is stored when
both of its ends are durable (and stored).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from amqpd.broker.model.exchange import Exchange
from amqpd.broker.model.queue import Queue
from amqpd.storage import (
    BindingDelete,
    BindingRecord,
    ExchangeDelete,
    ExchangeRecord,
    GroupCommitter,
    QueueDelete,
    QueueRecord,
)
from amqpd.storage.base import FieldTable


def field_table(arguments: Mapping[str, object]) -> FieldTable:
    """Declare arguments as the store's field table: they came off the wire as AMQP field values."""
    return cast("FieldTable", dict(arguments))


def is_stored_queue(q: Queue) -> bool:
    return q.durable and not q.exclusive


def is_stored_dest(dest: Exchange | Queue) -> bool:
    return is_stored_queue(dest) if isinstance(dest, Queue) else dest.durable


def binding_record(
    vhost: str, source: Exchange, dest: Exchange | Queue, routing_key: str, arguments: dict[str, Any]
) -> BindingRecord:
    return BindingRecord(vhost, source.name, dest.name, isinstance(dest, Exchange), routing_key, dict(arguments))


class StoreJournal:
    """Implements the model's DefinitionsJournal: hands durable definition changes to the group committer."""

    __slots__ = ("committer", "vhost")

    def __init__(self, committer: GroupCommitter, vhost: str) -> None:
        self.committer = committer
        self.vhost = vhost

    def exchange_declared(self, ex: Exchange) -> bool:
        if not ex.durable:
            return False
        record = ExchangeRecord(
            self.vhost, ex.name, ex.type_name, ex.durable, ex.auto_delete, ex.internal, field_table(ex.arguments)
        )
        self.committer.add_definition(record)
        return True

    def exchange_deleted(self, ex: Exchange) -> bool:
        if not ex.durable:
            return False
        self.committer.add_definition(ExchangeDelete(self.vhost, ex.name))  # the store drops its bindings too
        return True

    def queue_declared(self, q: Queue) -> bool:
        if not is_stored_queue(q):
            return False
        q.store = self.committer
        self.committer.add_definition(QueueRecord(self.vhost, q.name, q.durable, q.auto_delete, dict(q.arguments)))  # type: ignore[arg-type]
        return True

    def queue_deleted(self, q: Queue) -> bool:
        if q.store is None:
            return False
        self.committer.add_definition(QueueDelete(self.vhost, q.name))  # the store drops its messages and bindings
        return True

    def bound(self, source: Exchange, dest: Exchange | Queue, routing_key: str, arguments: dict[str, Any]) -> bool:
        if not (source.durable and is_stored_dest(dest)):
            return False
        self.committer.add_definition(binding_record(self.vhost, source, dest, routing_key, arguments))
        return True

    def unbound(self, source: Exchange, dest: Exchange | Queue, routing_key: str, arguments: dict[str, Any]) -> bool:
        if not (source.durable and is_stored_dest(dest)):
            return False
        r = binding_record(self.vhost, source, dest, routing_key, arguments)
        self.committer.add_definition(
            BindingDelete(r.vhost, r.source, r.destination, r.destination_is_exchange, r.routing_key, r.arguments)
        )
        return True
