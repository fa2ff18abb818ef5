"""Recovery on start: rebuild a vhost's durable exchanges, queues, bindings and messages from a store snapshot."""

from __future__ import annotations

import logging

from broker.model.message import Message
from broker.model.queue import Entry
from broker.model.vhost import VHost
from storage import Snapshot

log = logging.getLogger("amqpd.recovery")


def recover(vhost: VHost, snapshot: Snapshot) -> int:
    """Rebuild durable definitions and messages into ``vhost``. Returns how many messages came back."""
    for rec in snapshot.exchanges.values():
        if rec.name in vhost.exchanges:
            continue
        if vhost.restore_exchange(rec.name, rec.type, rec.auto_delete, rec.internal, dict(rec.arguments)) is None:
            log.error("stored exchange %r has unknown type %r: skipped", rec.name, rec.type)
    for qrec in snapshot.queues.values():
        vhost.restore_queue(qrec.name, qrec.auto_delete, dict(qrec.arguments))
    for b in snapshot.bindings:
        vhost.restore_binding(b.source, b.destination, b.destination_is_exchange, b.routing_key, dict(b.arguments))
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
