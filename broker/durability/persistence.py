"""The bridge between the broker's model and the store: which changes are durable, and recovery on start.

RabbitMQ's rules: durable exchanges and queues are stored, exclusive queues never are; a binding is stored when both
of its ends are durable; a message is stored when it is persistent (delivery_mode 2) and reaches a durable queue,
once however many durable queues it reaches.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from broker.model.exchange import EXCHANGE_TYPES, Exchange
from broker.model.message import Message
from broker.model.queue.queue import Entry, Queue
from storage import (
    BindingDelete,
    BindingRecord,
    ExchangeDelete,
    ExchangeRecord,
    GroupCommitter,
    MessageRecord,
    QueueDelete,
    QueueRecord,
    Snapshot,
)

if TYPE_CHECKING:
    from broker.model.vhost import VHost

log = logging.getLogger("amqpd.persistence")


def is_stored_queue(q: Queue) -> bool:
    return q.durable and not q.exclusive


def is_stored_dest(dest: object) -> bool:
    if isinstance(dest, Queue):
        return is_stored_queue(dest)
    return isinstance(dest, Exchange) and dest.durable


def exchange_record(ex: Exchange) -> ExchangeRecord:
    return ExchangeRecord(
        ex.name,
        ex.type_name,
        ex.durable,
        ex.auto_delete,
        ex.internal,
        dict(ex.arguments),  # type: ignore[arg-type]
    )


def queue_record(q: Queue) -> QueueRecord:
    return QueueRecord(q.name, q.durable, q.auto_delete, dict(q.arguments))


def binding_record(source: Exchange, dest: object, routing_key: str, arguments: dict[str, Any]) -> BindingRecord:
    name = dest.name if isinstance(dest, Queue | Exchange) else str(dest)
    return BindingRecord(source.name, name, isinstance(dest, Exchange), routing_key, dict(arguments))


def binding_delete(source: Exchange, dest: object, routing_key: str, arguments: dict[str, Any]) -> BindingDelete:
    r = binding_record(source, dest, routing_key, arguments)
    return BindingDelete(r.source, r.destination, r.destination_is_exchange, r.routing_key, r.arguments)


def store_message(committer: GroupCommitter, msg: Message, queues: list[Queue], msg_id: int) -> None:
    """Persist one message and its enqueues (before the queues see it, so a no-ack delivery's removal follows)."""
    msg.msg_id = msg_id
    msg.persistent = True
    msg.timestamp_ms = int(time.time() * 1000)
    props = msg.header[12:]  # the content header minus class id, weight and body size
    committer.add_message(MessageRecord(msg_id, msg.exchange, msg.routing_key, props, msg.body, msg.timestamp_ms))
    for q in queues:
        committer.add_enqueue(q.name, msg_id)


def recover(vhost: VHost, snapshot: Snapshot, committer: GroupCommitter) -> int:
    """Rebuild durable exchanges, queues, bindings and messages. Returns how many messages came back."""
    for rec in snapshot.exchanges.values():
        if rec.name in vhost.exchanges:
            continue
        cls = EXCHANGE_TYPES.get(rec.type)
        if cls is None:
            log.error("stored exchange %r has unknown type %r: skipped", rec.name, rec.type)
            continue
        vhost.exchanges[rec.name] = cls(
            rec.name, durable=True, auto_delete=rec.auto_delete, internal=rec.internal, arguments=dict(rec.arguments)
        )
    for qrec in snapshot.queues.values():
        q = Queue(qrec.name, vhost.name, durable=True, auto_delete=qrec.auto_delete, arguments=dict(qrec.arguments))
        q.on_unused = vhost.delete_queue
        q.attach(vhost)
        q.store = committer
        vhost.queues[qrec.name] = q
    for b in snapshot.bindings:
        src = vhost.exchanges.get(b.source)
        dest: object | None = (
            vhost.exchanges.get(b.destination) if b.destination_is_exchange else vhost.queues.get(b.destination)
        )
        if src is None or dest is None:
            continue
        if src.bind(dest, b.routing_key, dict(b.arguments)) and b.destination_is_exchange:
            vhost.e2e_bindings += 1
    count = 0
    shared: dict[int, Message] = {}
    for qname, records in snapshot.messages.items():
        target = vhost.queues.get(qname)
        if target is None:
            continue
        delivered = snapshot.delivered.get(qname, set())
        for mrec in records:
            msg = shared.get(mrec.msg_id)
            if msg is None:
                header = (60).to_bytes(2, "big") + b"\x00\x00" + len(mrec.body).to_bytes(8, "big") + mrec.properties
                msg = Message(mrec.exchange, mrec.routing_key, header, mrec.body, persistent=True)
                msg.msg_id = mrec.msg_id
                msg.timestamp_ms = mrec.timestamp_ms
                shared[mrec.msg_id] = msg
            target.seq += 1
            entry = Entry(msg, target.seq, target)
            if mrec.msg_id in delivered:
                entry.redelivered = True
            target.restore(entry)  # TTL counted from the stored publish time; priority queues sort it
            count += 1
    return count


__all__ = [
    "ExchangeDelete",
    "QueueDelete",
    "binding_delete",
    "binding_record",
    "exchange_record",
    "is_stored_dest",
    "is_stored_queue",
    "queue_record",
    "recover",
    "store_message",
]
