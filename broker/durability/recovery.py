"""Recovery on start: rebuild the vhosts' durable exchanges, queues, bindings and messages from a store snapshot."""

from __future__ import annotations

import logging
from collections.abc import Callable

from amqpd.broker.model.message import Message
from amqpd.broker.model.queue import Entry
from amqpd.broker.model.vhost import VHost
from amqpd.storage import Snapshot

log = logging.getLogger("amqpd.recovery")


def stored_vhosts(snapshot: Snapshot) -> set[str]:
    """Every vhost the snapshot holds something for (data from before vhost records has none of its own)."""
    names = set(snapshot.vhosts)
    names.update(v for v, _name in snapshot.exchanges)
    names.update(v for v, _name in snapshot.queues)
    names.update(b.vhost for b in snapshot.bindings)
    names.update(v for v, _name in snapshot.messages)
    return names


def recover(snapshot: Snapshot, vhost_for: Callable[[str], VHost]) -> int:
    """Rebuild durable definitions and messages, each into ``vhost_for(its vhost)``. Returns how many messages
    came back."""
    for (vname, name), rec in snapshot.exchanges.items():
        vhost = vhost_for(vname)
        if name in vhost.exchanges:
            continue
        if vhost.restore_exchange(name, rec.type, rec.auto_delete, rec.internal, dict(rec.arguments)) is None:
            log.error("stored exchange %r in vhost %r has unknown type %r: skipped", name, vname, rec.type)
    for (vname, name), qrec in snapshot.queues.items():
        vhost_for(vname).restore_queue(name, qrec.auto_delete, dict(qrec.arguments))
    for b in snapshot.bindings:
        vhost_for(b.vhost).restore_binding(
            b.source, b.destination, b.destination_is_exchange, b.routing_key, dict(b.arguments)
        )
    count = 0
    shared: dict[int, Message] = {}
    for key, records in snapshot.messages.items():
        target = vhost_for(key[0]).queues.get(key[1])
        if target is None:
            continue
        delivered = snapshot.delivered.get(key, set())
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
