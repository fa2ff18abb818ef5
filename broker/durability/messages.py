"""Persistent messages: a message is stored when it is persistent (delivery_mode 2) and reaches a durable queue,
once however many durable queues it reaches."""

from __future__ import annotations

import time
from collections.abc import Iterable

from amqpd.broker.model.message import Message
from amqpd.broker.model.queue import Queue
from amqpd.storage import GroupCommitter, MessageRecord


def store_message(committer: GroupCommitter, msg: Message, queues: Iterable[Queue], msg_id: int) -> None:
    """Persist one message and its enqueues (before the queues see it, so a no-ack delivery's removal follows)."""
    msg.msg_id = msg_id
    msg.persistent = True
    msg.timestamp_ms = int(time.time() * 1000)
    props = msg.header[12:]  # the content header minus class id, weight and body size
    committer.add_message(MessageRecord(msg_id, msg.exchange, msg.routing_key, props, msg.body, msg.timestamp_ms))
    for q in queues:
        committer.add_enqueue(q.vhost, q.name, msg_id)
