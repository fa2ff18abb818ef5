"""Fakes for driving ``broker.model`` without sockets or an event loop.

- `FakeSession`: a publisher a queue's backlog may pause; counts `unthrottle` calls.
- `FakeConsumer`: implements the model's Consumer protocol with a settable capacity (``limit``: how many
  deliveries it may hold unsettled, None for no limit) and settles like a channel does (`ack`, `requeue`).
- `FakeHost`: a QueueHost recording dead-letters and deletions.
- `message()`: a Message with real encoded properties (priority, expiration, headers).
- `make_queue()`: a Queue on a `ManualClock`, attached to a `FakeHost`.
"""

from __future__ import annotations

from typing import Any

from pamqp import commands

from amqpd.broker.model.clock import ManualClock
from amqpd.broker.model.message import Message
from amqpd.broker.model.queue import Entry, Queue
from amqpd.protocol import fastcodec

Delivery = tuple[str, bytes, bool]  # (consumer tag, body, redelivered)


class FakeSession:
    def __init__(self, name: str = "session") -> None:
        self.name = name
        self.unthrottled = 0
        self.released_by: list[Queue] = []  # the queue named by each unthrottle

    def unthrottle(self, queue: Queue) -> None:
        self.unthrottled += 1
        self.released_by.append(queue)

    def __repr__(self) -> str:
        return f"<FakeSession {self.name}>"


class FakeConsumer:
    """A consumer that records what it is given; ``limit`` plays the part of prefetch."""

    def __init__(
        self,
        queue: Queue,
        tag: str,
        *,
        limit: int | None = None,
        priority: int = 0,
        session: FakeSession | None = None,
        log: list[Delivery] | None = None,
    ) -> None:
        self.tag = tag
        self.queue = queue
        self.session = session if session is not None else FakeSession(tag)
        self.no_ack = False
        self.exclusive = False
        self.priority = priority
        self.arguments: dict[str, Any] = {"x-priority": priority} if priority else {}
        self.parked = True
        self.unacked = 0
        self.limit = limit
        self.held: list[Entry] = []  # delivered, not settled yet, in delivery order
        self.log: list[Delivery] = log if log is not None else []
        self.cancelled = False

    def __repr__(self) -> str:
        return f"<FakeConsumer {self.tag} limit={self.limit} unacked={self.unacked}>"

    # -- the Consumer protocol
    def has_capacity(self) -> bool:
        return self.limit is None or self.unacked < self.limit

    def deliver(self, entry: Entry) -> bool:
        entry.delivery_count += 1
        entry.consumer = self
        self.unacked += 1
        self.held.append(entry)
        self.log.append((self.tag, entry.msg.body, entry.redelivered))
        return self.has_capacity()

    def cancelled_by_server(self) -> None:
        self.cancelled = True

    # -- what a channel does around it
    def bodies(self) -> list[bytes]:
        return [body for _tag, body, _red in self.log if _tag == self.tag]

    def _unpark(self) -> None:
        # As a channel does: only its live consumers (a cancelled one may still hold deliveries to settle).
        if self in self.queue.consumers:
            self.queue.unpark(self)

    def set_limit(self, limit: int | None) -> None:
        self.limit = limit
        self._unpark()

    def ack(self, index: int = 0) -> Entry:
        """Settle the ``index``-th held delivery for good (basic.ack), then unpark as a channel does."""
        entry = self.held.pop(index)
        entry.consumer = None
        self.unacked -= 1
        self.queue.forget(entry)
        self._unpark()
        return entry

    def requeue(self, indexes: list[int] | None = None) -> list[Entry]:
        """Give held deliveries back (basic.nack requeue=true): all of them, or those at ``indexes``."""
        chosen = sorted(set(range(len(self.held)) if indexes is None else indexes))
        entries = [self.held[i] for i in chosen]
        for i in reversed(chosen):
            del self.held[i]
        for e in entries:
            e.consumer = None
        self.unacked -= len(entries)
        self.queue.requeue(entries)
        self._unpark()
        return entries


class FakeHost:
    """A QueueHost: records dead-letters as (queue name, bodies, reason) and deletions."""

    def __init__(self) -> None:
        self.dead: list[tuple[str, list[bytes], str]] = []
        self.deleted: list[Queue] = []

    def delete_queue(self, q: Queue) -> int:
        self.deleted.append(q)
        return q.delete()

    def dead_letter(self, source: Queue, msgs: list[Message], reason: str) -> None:
        self.dead.append((source.name, [m.body for m in msgs], reason))

    def dead_bodies(self, reason: str | None = None) -> list[bytes]:
        return [b for _q, bodies, r in self.dead if reason is None or r == reason for b in bodies]


def message(
    body: bytes,
    *,
    priority: int | None = None,
    expiration: int | None = None,
    headers: dict[str, Any] | None = None,
    routing_key: str = "rk",
    exchange: str = "",
    delivery_mode: int | None = None,
) -> Message:
    props = commands.Basic.Properties(
        priority=priority,
        expiration=None if expiration is None else str(expiration),
        headers=headers,
        delivery_mode=delivery_mode,
    )
    msg = Message(exchange, routing_key, fastcodec.encode_header_payload(len(body), props), body)
    msg.expiration = expiration  # what the channel sets after validating the property
    return msg


def make_queue(
    arguments: dict[str, Any] | None = None, name: str = "q", clock: ManualClock | None = None
) -> tuple[Queue, ManualClock, FakeHost]:
    q = Queue(name, arguments=arguments)
    clk = clock if clock is not None else ManualClock()
    q.clock = clk  # before attach(): x-expires arms its timer there
    host = FakeHost()
    q.attach(host)
    return q, clk, host


def ready_bodies(q: Queue) -> list[bytes]:
    return [e.msg.body for e in q.ready]


def assert_bytes_consistent(q: Queue) -> None:
    assert q.ready_bytes == sum(len(e.msg.body) for e in q.ready), (q.ready_bytes, ready_bodies(q))
    assert q.message_count == len(list(q.ready))
