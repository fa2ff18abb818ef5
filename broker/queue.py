"""A queue: ready messages in order, and a ring of consumers that can take more.

Consumers that cannot take a message (prefetch full, channel flow off, socket not writable) are *parked*: taken out
of the ring and put back by :meth:`Queue.unpark` when their channel frees capacity, so dispatch never scans
consumers that cannot accept anything.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from broker.consumer import Consumer
    from broker.message import Message
    from storage import GroupCommitter


class Entry:
    """A message's place in one queue. ``seq`` orders requeues back into their original position."""

    __slots__ = ("consumer", "delivery_count", "msg", "queue", "redelivered", "seq")

    def __init__(self, msg: Message, seq: int, queue: Queue) -> None:
        self.consumer: Consumer | None = None  # who holds it unacked (None for basic.get)
        self.msg = msg
        self.seq = seq
        self.queue = queue
        self.redelivered = False
        self.delivery_count = 0


class Queue:
    def __init__(
        self,
        name: str,
        vhost: str = "/",
        durable: bool = False,
        exclusive_owner: object | None = None,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.vhost = vhost
        self.durable = durable
        self.exclusive_owner = exclusive_owner  # the owning connection, for exclusive queues
        self.exclusive = exclusive_owner is not None
        self.auto_delete = auto_delete
        self.arguments: dict[str, Any] = dict(arguments or {})
        self.ready: deque[Entry] = deque()
        self.consumers: list[Consumer] = []
        self.active: deque[Consumer] = deque()
        self.exclusive_consumer: Consumer | None = None
        self.had_consumer = False
        self.deleted = False
        self.seq = 0
        self.on_unused: Callable[[Queue], object] | None = None  # auto-delete hook, set by the vhost
        self.store: GroupCommitter | None = None  # set for durable, non-exclusive queues when a store is used

    def __repr__(self) -> str:
        return f"<Queue {self.name!r} ready={len(self.ready)} consumers={len(self.consumers)}>"

    @property
    def message_count(self) -> int:
        return len(self.ready)

    @property
    def consumer_count(self) -> int:
        return len(self.consumers)

    # ------------------------------------------------------------------ messages
    def put(self, msg: Message) -> None:
        self.seq += 1
        self.ready.append(Entry(msg, self.seq, self))
        if self.active:
            self.dispatch()

    def dispatch(self) -> None:
        ready = self.ready
        active = self.active
        while ready and active:
            consumer = active.popleft()
            if not consumer.has_capacity():
                consumer.parked = True
                continue
            consumer.deliver(ready.popleft())
            if consumer.has_capacity():
                active.append(consumer)
            else:
                consumer.parked = True

    def get(self) -> Entry | None:
        return self.ready.popleft() if self.ready else None

    def requeue(self, entries: Iterable[Entry]) -> None:
        """Put settled-without-ack entries back at their original positions, marked redelivered."""
        back = sorted(entries, key=_seq)
        if not back or self.deleted:
            return
        for e in back:
            e.redelivered = True
        ready = self.ready
        if not ready or back[-1].seq < ready[0].seq:
            ready.extendleft(reversed(back))
        else:
            merged = sorted([*ready, *back], key=_seq)
            ready.clear()
            ready.extend(merged)
        self.dispatch()

    def purge(self) -> int:
        n = len(self.ready)
        if self.store is not None:
            for e in self.ready:
                self.forget(e)
        self.ready.clear()
        return n

    def forget(self, entry: Entry) -> None:
        """The entry left this queue for good (acked, dropped, expired): remove it from the store."""
        store = self.store
        if store is not None and entry.msg.msg_id:
            store.add_remove(self.name, entry.msg.msg_id)

    # ------------------------------------------------------------------ consumers
    def add_consumer(self, consumer: Consumer) -> None:
        self.consumers.append(consumer)
        self.had_consumer = True
        if consumer.exclusive:
            self.exclusive_consumer = consumer
        consumer.parked = False
        self.active.append(consumer)
        self.dispatch()

    def remove_consumer(self, consumer: Consumer) -> None:
        try:
            self.consumers.remove(consumer)
        except ValueError:
            return
        if self.exclusive_consumer is consumer:
            self.exclusive_consumer = None
        with contextlib.suppress(ValueError):
            self.active.remove(consumer)
        consumer.parked = True
        if not self.consumers and self.auto_delete and self.had_consumer and self.on_unused is not None:
            self.on_unused(self)

    def unpark(self, consumer: Consumer) -> None:
        if consumer.parked and not self.deleted and consumer.has_capacity():
            consumer.parked = False
            self.active.append(consumer)
            if self.ready:
                self.dispatch()

    def delete(self) -> int:
        """Mark deleted, cancel consumers (server-sent basic.cancel), drop messages; returns the ready count."""
        self.deleted = True
        n = len(self.ready)
        self.ready.clear()
        consumers, self.consumers = self.consumers, []
        self.active.clear()
        self.exclusive_consumer = None
        for c in consumers:
            c.parked = True
            c.cancelled_by_server()
        return n


def _seq(e: Entry) -> int:
    return e.seq
