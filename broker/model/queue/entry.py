"""A message's place in one queue."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from amqpd.broker.model.consumer import Consumer
    from amqpd.broker.model.message import Message
    from amqpd.broker.model.queue.queue import Queue


class Entry:
    """A message's place in one queue. ``seq`` orders requeues back into their original position."""

    __slots__ = ("consumer", "delivery_count", "expires", "msg", "prio", "queue", "redelivered", "seq")

    def __init__(self, msg: Message, seq: int, queue: Queue) -> None:
        self.consumer: Consumer | None = None  # who holds it unacked (None for basic.get)
        self.msg = msg
        self.seq = seq
        self.queue = queue
        self.redelivered = False
        self.delivery_count = 0
        self.expires: int | None = None  # wall-clock ms deadline (featured queues only)
        self.prio = 0  # effective priority (priority queues only)


def _seq(e: Entry) -> int:
    return e.seq
