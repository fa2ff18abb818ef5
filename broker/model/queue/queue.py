"""A queue: ready messages in order, a ring of consumers that can take more, and one dispatch loop between them.

Consumers that cannot take a message (prefetch full, channel flow off, socket not writable) are *parked*: taken out
of the ring and put back by :meth:`Queue.unpark` when their channel frees capacity, so dispatch never scans
consumers that cannot accept anything.

Plain and featured queues share every method. A plain queue has ``fx = None``: each method tests that once and
skips the feature work (TTL, limits, dead-lettering, delivery limit). A queue declared with a feature argument, or
one that receives its first message with an ``expiration`` property, gets a :class:`QueueFeatures`. Expiry looks
only at the head (per-queue TTL expires in order; per-message expiration, like RabbitMQ, is honoured when the
message reaches the head), with one timer armed for the head's deadline, so expiring costs O(expired).
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Final, Protocol

from amqpd.broker.model.clock import LOOP_CLOCK, Clock, TimerHandle
from amqpd.broker.model.message import with_headers
from amqpd.broker.model.queue.entry import Entry
from amqpd.broker.model.queue.features import (
    DELIVERY_LIMIT,
    DROP_HEAD,
    EXPIRED,
    FEATURE_ARGS,
    MAXLEN,
    REJECT_PUBLISH_DLX,
    QueueFeatures,
)
from amqpd.broker.model.queue.ready import FifoReady, PriorityReady, ReadyStore
from amqpd.broker.model.queue.ring import PriorityRing
from amqpd.protocol import fastcodec

if TYPE_CHECKING:
    from amqpd.broker.model.consumer import Consumer, Session
    from amqpd.broker.model.message import Message
    from amqpd.storage import GroupCommitter

# Publisher flow control: a queue with consumers and more than ``flow_high`` ready messages stops reading from the
# connections publishing into it until it is back at ``flow_low`` (the session sets both from the settings).
FLOW_HIGH: Final = 20000
FLOW_LOW: Final = 10000


class QueueHost(Protocol):
    """What a queue asks of the vhost that holds it."""

    def delete_queue(self, q: Queue) -> int:
        """x-expires ran out, or an auto-delete queue lost its last consumer."""
        ...

    def dead_letter(self, source: Queue, msgs: list[Message], reason: str) -> None:
        """Republish ``msgs`` through ``source``'s dead-letter exchange."""
        ...


def _seq(e: Entry) -> int:
    return e.seq


class Queue:
    clock: Clock = LOOP_CLOCK  # replaced on an instance by benchmarks and unit tests

    def __init__(
        self,
        name: str,
        vhost: str = "/",
        durable: bool = False,
        exclusive_owner: Session | None = None,
        auto_delete: bool = False,
        arguments: dict[str, object] | None = None,
    ) -> None:
        self.name = name
        self.vhost = vhost
        self.durable = durable
        self.exclusive_owner = exclusive_owner  # the owning connection, for exclusive queues
        self.exclusive = exclusive_owner is not None
        self.auto_delete = auto_delete
        self.arguments: dict[str, object] = dict(arguments or {})
        self.consumers: list[Consumer] = []
        self.active: deque[Consumer] | PriorityRing = deque()  # a PriorityRing once a consumer has x-priority
        self.exclusive_consumer: Consumer | None = None
        self.had_consumer = False
        self.deleted = False
        self.seq = 0
        self.ready_bytes = 0  # body bytes of ready messages
        # The auto-delete hook: the vhost's delete_queue, or the direct reply-to registry's release.
        self.on_unused: Callable[[Queue], object] | None = None
        self.store: GroupCommitter | None = None  # set for durable, non-exclusive queues when a store is used
        self.host: QueueHost | None = None  # set by attach()
        self.flow_blocked: set[Session] | None = None  # publishing connections paused by this queue's backlog
        self.flow_low = FLOW_LOW
        self.fx: QueueFeatures | None = None
        self.sac_active: Consumer | None = None  # x-single-active-consumer: the one consumer served
        self._expiry_timer: TimerHandle | None = None
        self._expiry_at = 0
        self._unused_timer: TimerHandle | None = None
        fx = None if FEATURE_ARGS.isdisjoint(self.arguments) else QueueFeatures(self.arguments)
        self.ready: ReadyStore = (
            PriorityReady(fx.max_priority) if fx is not None and fx.max_priority is not None else FifoReady()
        )
        self.fx = fx

    def __repr__(self) -> str:
        return f"<Queue {self.name!r} ready={len(self.ready)} consumers={len(self.consumers)}>"

    @property
    def message_count(self) -> int:
        return len(self.ready)

    @property
    def consumer_count(self) -> int:
        return len(self.consumers)

    @property
    def dlx(self) -> str | None:
        return self.fx.dlx if self.fx is not None else None

    @property
    def consumer_timeout(self) -> int | None:
        return self.fx.consumer_timeout if self.fx is not None else None

    def attach(self, host: QueueHost) -> None:
        """Called by the vhost once the queue is registered: dead-letters route through ``host``, and the
        x-expires countdown starts."""
        self.host = host
        if self.fx is not None and self.fx.expires_ms is not None:
            self._arm_unused_timer()

    def _timed(self) -> QueueFeatures:
        """The features of a queue that just received a message with an ``expiration``: deadlines from now on."""
        fx = self.fx
        if fx is None:
            fx = self.fx = QueueFeatures({})
        fx.timed = True
        return fx

    # ------------------------------------------------------------------ messages (hot)
    def put(self, msg: Message) -> bool:
        """Enqueue (and deliver, when a consumer can take it). True when the queue refused the message
        (``x-overflow`` reject-publish*): the publisher is then nacked in confirm mode."""
        fx = self.fx
        if fx is None and msg.expiration is None:
            self.seq += 1
            self.ready.append(Entry(msg, self.seq, self))
            self.ready_bytes += len(msg.body)
            if self.active:
                self.dispatch()
            return False
        return self._put_featured(msg, fx if fx is not None and msg.expiration is None else self._timed())

    def _put_featured(self, msg: Message, fx: QueueFeatures) -> bool:
        size = len(msg.body)
        ready = self.ready
        if fx.limited and fx.overflow != DROP_HEAD and fx.over_limit(len(ready) + 1, self.ready_bytes + size):
            refused = Entry(msg, 0, self)
            self.forget(refused)  # the channel stored it for this queue before asking
            if fx.overflow == REJECT_PUBLISH_DLX:
                self.dead_letter([refused], MAXLEN)
            return True
        self.seq += 1
        entry = Entry(msg, self.seq, self)
        ttl = fx.ttl_for(msg) if fx.timed else None
        if ttl:
            entry.expires = self.clock.now_ms() + ttl
        if fx.max_priority is not None:
            entry.prio = fx.priority_of(msg)
        ready.append(entry)
        self.ready_bytes += size
        if self.active:
            self.dispatch()
        if ttl == 0 and not entry.delivery_count:
            # TTL 0: a consumer that could take it right now got it above; otherwise it expires at once.
            if ready[0] is entry:
                ready.popleft()
                self.ready_bytes -= size
                self._discard([entry], EXPIRED)
                return False
            entry.expires = self.clock.now_ms()  # behind a higher priority: expires when it reaches the head
        if fx.limited and fx.over_limit(len(ready), self.ready_bytes):
            self._drop_head(fx)
        exp = entry.expires
        if exp is not None and (self._expiry_timer is None or exp < self._expiry_at):
            self._arm_expiry()
        return False

    def dispatch(self) -> None:
        """Hand ready messages to consumers with capacity, round-robin (highest priority group first)."""
        ready = self.ready
        active = self.active
        fx = self.fx
        timed = fx is not None and fx.timed
        now = self.clock.now_ms() if timed and ready and active else 0
        while ready and active:
            if timed:
                exp = ready[0].expires
                if exp is not None and exp <= now:
                    self._expire(now)
                    continue
            consumer = active.popleft()
            if not consumer.has_capacity():
                consumer.parked = True
                continue
            e = ready.popleft()
            self.ready_bytes -= len(e.msg.body)
            if consumer.deliver(e):
                active.append(consumer)
            else:
                consumer.parked = True
        if self.flow_blocked is not None and len(ready) <= self.flow_low:
            self.release_publishers()
        if timed and ready and self._expiry_timer is None:
            self._arm_expiry()

    def release_publishers(self) -> None:
        """Resume the publishers this queue's backlog paused (drained, no consumers left, or deleted)."""
        blocked, self.flow_blocked = self.flow_blocked, None
        for session in blocked or ():
            session.unthrottle(self)

    def get(self) -> Entry | None:
        """basic.get: the head, if any (expired messages at the head are dropped first)."""
        ready = self.ready
        fx = self.fx
        if fx is not None:
            if self._unused_timer is not None:
                self._arm_unused_timer()
            if ready and fx.timed:
                exp = ready[0].expires
                if exp is not None:
                    now = self.clock.now_ms()
                    if exp <= now:
                        self._expire(now)
        if not ready:
            return None
        e = ready.popleft()
        self.ready_bytes -= len(e.msg.body)
        if fx is not None and fx.timed and ready and self._expiry_timer is None:
            self._arm_expiry()
        if self.flow_blocked is not None and len(ready) <= self.flow_low:
            self.release_publishers()
        return e

    def requeue(self, entries: Iterable[Entry]) -> None:
        """Put settled-without-ack entries back at their original positions, marked redelivered (or dead-letter
        those past ``x-delivery-limit``)."""
        back = sorted(entries, key=_seq)
        if not back or self.deleted:
            return
        fx = self.fx
        if fx is not None and fx.delivery_limit is not None:
            limit = fx.delivery_limit
            over = [e for e in back if e.delivery_count > limit]
            if over:
                back = [e for e in back if e.delivery_count <= limit]
                self._discard(over, DELIVERY_LIMIT)
            for e in back:
                # Its own copy carrying x-delivery-count: the original may be shared with other queues.
                e.msg = with_headers(e.msg, {"x-delivery-count": e.delivery_count})
            if not back:
                return
        for e in back:
            e.redelivered = True
            self.ready_bytes += len(e.msg.body)
        self.ready.requeue(back)
        if fx is not None and fx.timed:
            head = self.ready[0].expires
            if head is not None and (self._expiry_timer is None or head < self._expiry_at):
                self._arm_expiry()
        self.dispatch()

    def purge(self) -> int:
        n = len(self.ready)
        if self.store is not None:
            for e in self.ready:
                self.forget(e)
        self.ready.clear()
        self.ready_bytes = 0
        if self.flow_blocked is not None:
            self.release_publishers()
        return n

    def forget(self, entry: Entry) -> None:
        """The entry left this queue for good (acked, dropped, expired): remove it from the store."""
        store = self.store
        if store is not None and entry.msg.msg_id:
            store.add_remove(self.vhost, self.name, entry.msg.msg_id)

    def restore(self, entry: Entry) -> None:
        """Append an entry recovered from the store (its TTL counts from the stored publish time)."""
        msg = entry.msg
        if msg.expiration is None and fastcodec.property_flags(msg.header) & fastcodec.HAS_EXPIRATION:
            raw = fastcodec.short_property(msg.header, fastcodec.HAS_EXPIRATION)
            with contextlib.suppress(ValueError):
                msg.expiration = int(raw or b"")
        fx = self._timed() if msg.expiration is not None else self.fx
        if fx is not None:
            ttl = fx.ttl_for(msg) if fx.timed else None
            if ttl is not None:
                entry.expires = (msg.timestamp_ms or self.clock.now_ms()) + ttl
            if fx.max_priority is not None:
                entry.prio = fx.priority_of(msg)
        self.ready.append(entry)
        self.ready_bytes += len(msg.body)
        if entry.expires is not None:
            self._arm_expiry()

    # ------------------------------------------------------------------ consumers
    def add_consumer(self, consumer: Consumer) -> None:
        self.consumers.append(consumer)
        self.had_consumer = True
        if consumer.exclusive:
            self.exclusive_consumer = consumer
        if self._unused_timer is not None:
            self._unused_timer.cancel()
            self._unused_timer = None
        active = self.active
        if consumer.priority and isinstance(active, deque):
            ring = PriorityRing()
            for c in active:
                ring.append(c)
            self.active = ring
        if self.fx is not None and self.fx.sac:
            if self.sac_active is not None:
                consumer.parked = True  # waits its turn
                return
            self.sac_active = consumer
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
        if self.sac_active is consumer:
            self._next_single_active()
        if not self.consumers:
            if self.flow_blocked is not None:
                self.release_publishers()
            if self.auto_delete and self.had_consumer and self.on_unused is not None:
                self.on_unused(self)
            elif self.fx is not None and self.fx.expires_ms is not None and not self.deleted:
                self._arm_unused_timer()

    def unpark(self, consumer: Consumer) -> None:
        if consumer.parked and not self.deleted and consumer.has_capacity():
            if self.sac_active is not None and consumer is not self.sac_active:
                return
            consumer.parked = False
            self.active.append(consumer)
            if self.ready:
                self.dispatch()

    def _next_single_active(self) -> None:
        self.sac_active = nxt = self.consumers[0] if self.consumers else None
        if nxt is not None:
            nxt.parked = True
            self.unpark(nxt)

    def delete(self) -> int:
        """Mark deleted, cancel consumers (server-sent basic.cancel), drop messages; returns the ready count."""
        self.deleted = True
        n = len(self.ready)
        self.ready.clear()
        if self.flow_blocked is not None:
            self.release_publishers()
        self.ready_bytes = 0
        self._cancel_timers()
        consumers, self.consumers = self.consumers, []
        self.active.clear()
        self.exclusive_consumer = None
        self.sac_active = None
        for c in consumers:
            c.parked = True
            c.cancelled_by_server()
        return n

    def touch(self) -> None:
        """The queue was used (redeclared, polled with basic.get): restart its x-expires countdown."""
        if self._unused_timer is not None:
            self._arm_unused_timer()

    # ------------------------------------------------------------------ limits and expiry (featured queues)
    def _drop_head(self, fx: QueueFeatures) -> None:
        dropped: list[Entry] = []
        ready = self.ready
        while ready and fx.over_limit(len(ready), self.ready_bytes):
            e = ready.popleft()
            self.ready_bytes -= len(e.msg.body)
            dropped.append(e)
        self._discard(dropped, MAXLEN)

    def _discard(self, entries: list[Entry], reason: str) -> None:
        if not entries:
            return
        if self.store is not None:
            for e in entries:
                self.forget(e)
        self.dead_letter(entries, reason)

    def _expire(self, now: int) -> int:
        """Drop (dead-letter) expired messages at the head; O(expired)."""
        expired: list[Entry] = []
        self.ready.pop_expired(now, expired)
        for e in expired:
            self.ready_bytes -= len(e.msg.body)
        self._discard(expired, EXPIRED)
        if self.flow_blocked is not None and len(self.ready) <= self.flow_low:
            self.release_publishers()
        return len(expired)

    def _arm_expiry(self) -> None:
        at = self.ready.next_expiry()
        timer = self._expiry_timer
        if at is None:
            return
        if timer is not None:
            if self._expiry_at <= at:
                return
            timer.cancel()
        self._expiry_at = at
        delay = max(0, at - self.clock.now_ms()) + 1
        self._expiry_timer = self.clock.call_later(delay / 1000, self._on_expiry_timer)

    def _on_expiry_timer(self) -> None:
        self._expiry_timer = None
        if self.deleted:
            return
        self._expire(self.clock.now_ms())
        self._arm_expiry()

    def _arm_unused_timer(self) -> None:
        if self._unused_timer is not None:
            self._unused_timer.cancel()
        assert self.fx is not None and self.fx.expires_ms is not None
        self._unused_timer = self.clock.call_later(self.fx.expires_ms / 1000, self._on_unused_timer)

    def _on_unused_timer(self) -> None:
        self._unused_timer = None
        if self.deleted or self.consumers or self.host is None:
            return
        self.host.delete_queue(self)

    def _cancel_timers(self) -> None:
        for timer in (self._expiry_timer, self._unused_timer):
            if timer is not None:
                timer.cancel()
        self._expiry_timer = self._unused_timer = None

    # ------------------------------------------------------------------ dead-lettering
    def dead_letter(self, entries: list[Entry], reason: str) -> None:
        """Republish ``entries`` through this queue's dead-letter exchange (the caller forgot them already)."""
        if self.fx is None or self.fx.dlx is None or self.host is None:
            return
        self.host.dead_letter(self, [e.msg for e in entries], reason)
