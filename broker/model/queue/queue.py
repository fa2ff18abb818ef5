"""A queue: ready messages in order, and a ring of consumers that can take more.

Consumers that cannot take a message (prefetch full, channel flow off, socket not writable) are *parked*: taken out
of the ring and put back by :meth:`Queue.unpark` when their channel frees capacity, so dispatch never scans
consumers that cannot accept anything.

Plain queues and featured queues. A queue declared without any of the feature arguments (TTL, expiry, length
limits, dead-lettering, priorities, single active consumer, delivery limit) runs the plain methods below, which
know nothing of those features. A queue with any of them, or a plain queue that receives its first message with an
``expiration`` property, switches to the featured methods (``_put_fx``, ``_dispatch_fx``, ...) by binding them over
the plain ones on the instance, so the choice costs nothing per message. Expiry looks only at the head (per-queue
TTL expires in order; per-message expiration, like RabbitMQ, is honoured when the message reaches the head), with
one timer armed for the head's deadline, so expiring messages costs O(expired), never a scan of the queue.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from broker.model.clock import LOOP_CLOCK, Clock, TimerHandle
from protocol import fastcodec

# Publisher flow control: a queue with consumers and more than FLOW_HIGH ready messages stops reading from the
# connections publishing into it until it is back at FLOW_LOW (see BrokerConnection.throttle).
FLOW_HIGH = 20000
FLOW_LOW = 10000

if TYPE_CHECKING:
    from broker.model.consumer import Consumer
    from broker.model.message import Message
    from storage import GroupCommitter

DROP_HEAD = "drop-head"
REJECT_PUBLISH = "reject-publish"
REJECT_PUBLISH_DLX = "reject-publish-dlx"

# Dead-letter reasons, as RabbitMQ writes them into x-death.
REJECTED = "rejected"
EXPIRED = "expired"
MAXLEN = "maxlen"
DELIVERY_LIMIT = "delivery_limit"

_FEATURE_ARGS = frozenset(
    {
        "x-message-ttl",
        "x-expires",
        "x-max-length",
        "x-max-length-bytes",
        "x-dead-letter-exchange",
        "x-max-priority",
        "x-single-active-consumer",
        "x-delivery-limit",
        "x-consumer-timeout",
    }
)


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


def _merge_back(ready: deque[Entry], back: list[Entry]) -> None:
    """Put entries (sorted by seq) back into ``ready`` at their original positions."""
    if not ready or back[-1].seq < ready[0].seq:
        ready.extendleft(reversed(back))
    else:
        merged = sorted([*ready, *back], key=_seq)
        ready.clear()
        ready.extend(merged)


def _pop_expired(ready: deque[Entry], now: int, out: list[Entry]) -> None:
    while ready:
        exp = ready[0].expires
        if exp is None or exp > now:
            return
        out.append(ready.popleft())


class FifoReady(deque[Entry]):
    """The ready list of a featured queue without priorities: a deque plus the expiry helpers."""

    def requeue(self, back: list[Entry]) -> None:
        _merge_back(self, back)

    def pop_expired(self, now: int, out: list[Entry]) -> None:
        _pop_expired(self, now, out)

    def next_expiry(self) -> int | None:
        return self[0].expires if self else None

    def drop_tail(self, entry: Entry) -> None:
        if self and self[-1] is entry:
            self.pop()
        else:
            self.remove(entry)


class PriorityReady:
    """Ready messages of an ``x-max-priority`` queue: one FIFO per priority, highest served first."""

    __slots__ = ("levels", "n")

    def __init__(self, max_priority: int) -> None:
        self.levels: list[deque[Entry]] = [deque() for _ in range(max_priority + 1)]
        self.n = 0

    def __len__(self) -> int:
        return self.n

    def __bool__(self) -> bool:
        return self.n > 0

    def __iter__(self) -> Iterator[Entry]:
        for level in reversed(self.levels):
            yield from level

    def __getitem__(self, index: int) -> Entry:
        if index != 0:
            raise IndexError("only the head of a priority queue can be read")
        for level in reversed(self.levels):
            if level:
                return level[0]
        raise IndexError("empty queue")

    def append(self, entry: Entry) -> None:
        self.levels[entry.prio].append(entry)
        self.n += 1

    def popleft(self) -> Entry:
        for level in reversed(self.levels):
            if level:
                self.n -= 1
                return level.popleft()
        raise IndexError("pop from an empty queue")

    def clear(self) -> None:
        for level in self.levels:
            level.clear()
        self.n = 0

    def requeue(self, back: list[Entry]) -> None:
        by_level: dict[int, list[Entry]] = {}
        for e in back:
            by_level.setdefault(e.prio, []).append(e)
        for prio, entries in by_level.items():
            _merge_back(self.levels[prio], entries)
        self.n += len(back)

    def pop_expired(self, now: int, out: list[Entry]) -> None:
        # Every level's head: each level is its own FIFO, in expiry order when the TTL is per queue.
        before = len(out)
        for level in reversed(self.levels):
            if level:
                _pop_expired(level, now, out)
        self.n -= len(out) - before

    def next_expiry(self) -> int | None:
        best: int | None = None
        for level in self.levels:
            if level:
                exp = level[0].expires
                if exp is not None and (best is None or exp < best):
                    best = exp
        return best

    def drop_tail(self, entry: Entry) -> None:
        level = self.levels[entry.prio]
        if level and level[-1] is entry:
            level.pop()
        else:
            level.remove(entry)
        self.n -= 1


class PriorityRing:
    """Consumers with capacity, grouped by ``x-priority``: the highest group is served first, round-robin within.

    It offers the slice of the deque API that dispatch uses, so one dispatch loop serves both kinds of ring.
    """

    __slots__ = ("groups", "n", "order")

    def __init__(self) -> None:
        self.groups: dict[int, deque[Consumer]] = {}
        self.order: list[int] = []  # priorities, highest first
        self.n = 0

    def __len__(self) -> int:
        return self.n

    def __bool__(self) -> bool:
        return self.n > 0

    def append(self, consumer: Consumer) -> None:
        group = self.groups.get(consumer.priority)
        if group is None:
            group = self.groups[consumer.priority] = deque()
            self.order = sorted(self.groups, reverse=True)
        group.append(consumer)
        self.n += 1

    def popleft(self) -> Consumer:
        groups = self.groups
        for prio in self.order:
            group = groups[prio]
            if group:
                self.n -= 1
                return group.popleft()
        raise IndexError("pop from an empty ring")

    def remove(self, consumer: Consumer) -> None:
        group = self.groups.get(consumer.priority)
        if group is None:
            raise ValueError("consumer not in ring")
        group.remove(consumer)
        self.n -= 1

    def clear(self) -> None:
        for group in self.groups.values():
            group.clear()
        self.n = 0


def _int_arg(args: dict[str, Any], key: str) -> int | None:
    value = args.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text_arg(args: dict[str, Any], key: str) -> str | None:
    value = args.get(key)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


class Queue:
    clock: Clock = LOOP_CLOCK  # replaced on an instance by benchmarks and unit tests

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
        self.ready: Any = deque()  # deque[Entry], or FifoReady / PriorityReady once featured
        self.consumers: list[Consumer] = []
        self.active: Any = deque()  # deque[Consumer], or PriorityRing once a consumer has an x-priority
        self.exclusive_consumer: Consumer | None = None
        self.had_consumer = False
        self.deleted = False
        self.seq = 0
        self.on_unused: Callable[[Queue], object] | None = None  # auto-delete hook, set by the vhost
        self.store: GroupCommitter | None = None  # set for durable, non-exclusive queues when a store is used
        self.host: Any = None  # the VHost (see attach): dead-lettering routes through it
        self.flow_blocked: set[Any] | None = None  # publishing connections paused by this queue's backlog
        # Features (read only by the featured methods; see _enable_features)
        self.featured = False
        self.ttl: int | None = None  # x-message-ttl
        self.expires_ms: int | None = None  # x-expires
        self.max_length: int | None = None
        self.max_bytes: int | None = None
        self.overflow = DROP_HEAD
        self.dlx: str | None = None  # x-dead-letter-exchange ("" = the default exchange)
        self.dlrk: str | None = None  # x-dead-letter-routing-key
        self.max_priority: int | None = None
        self.sac = False  # x-single-active-consumer
        self.sac_active: Consumer | None = None
        self.delivery_limit: int | None = None
        self.consumer_timeout: int | None = None  # x-consumer-timeout (ms), read by channels
        self.ready_bytes = 0  # body bytes of ready messages (featured queues)
        self._expiry_timer: TimerHandle | None = None
        self._expiry_at = 0
        self._unused_timer: TimerHandle | None = None
        if not _FEATURE_ARGS.isdisjoint(self.arguments):
            self._configure(self.arguments)
            self._enable_features()

    def __repr__(self) -> str:
        return f"<Queue {self.name!r} ready={len(self.ready)} consumers={len(self.consumers)}>"

    @property
    def message_count(self) -> int:
        return len(self.ready)

    @property
    def consumer_count(self) -> int:
        return len(self.consumers)

    def attach(self, host: Any) -> None:
        """Called by the vhost once the queue is registered: dead-letters route through ``host``, and the
        x-expires countdown starts."""
        self.host = host
        if self.expires_ms is not None:
            self._arm_unused_timer()

    # ------------------------------------------------------------------ messages (plain, hot)
    def put(self, msg: Message) -> bool:
        """Enqueue (and deliver, when a consumer can take it). True when the queue refused the message
        (``x-overflow`` reject-publish*): the publisher is then nacked in confirm mode."""
        if msg.expiration is not None:
            self._enable_features()
            return self._put_fx(msg)
        self.seq += 1
        self.ready.append(Entry(msg, self.seq, self))
        if self.active:
            self.dispatch()
        return False

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
        if self.flow_blocked is not None and len(ready) <= FLOW_LOW:
            self.release_publishers()

    def release_publishers(self) -> None:
        """Resume the publishers this queue's backlog paused (drained, no consumers left, or deleted)."""
        blocked, self.flow_blocked = self.flow_blocked, None
        for conn in blocked or ():
            conn.unthrottle()

    def get(self) -> Entry | None:
        return self.ready.popleft() if self.ready else None

    def requeue(self, entries: Iterable[Entry]) -> None:
        """Put settled-without-ack entries back at their original positions, marked redelivered."""
        back = sorted(entries, key=_seq)
        if not back or self.deleted:
            return
        for e in back:
            e.redelivered = True
        _merge_back(self.ready, back)
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
            store.add_remove(self.name, entry.msg.msg_id)

    def restore(self, entry: Entry) -> None:
        """Append an entry recovered from the store (its TTL counts from the stored publish time)."""
        msg = entry.msg
        if msg.expiration is None and fastcodec.property_flags(msg.header) & fastcodec.HAS_EXPIRATION:
            raw = fastcodec.short_property(msg.header, fastcodec.HAS_EXPIRATION)
            with contextlib.suppress(ValueError):
                msg.expiration = int(raw or b"")
        if msg.expiration is not None:
            self._enable_features()
        if not self.featured:
            self.ready.append(entry)
            return
        ttl = self._ttl_for(msg)
        if ttl is not None:
            entry.expires = (msg.timestamp_ms or self.clock.now_ms()) + ttl
        if self.max_priority is not None:
            entry.prio = self._priority_of(msg)
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
        if consumer.priority and type(self.active) is deque:
            ring = PriorityRing()
            for c in self.active:
                ring.append(c)
            self.active = ring
        if self.sac:
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
        if self.sac and self.sac_active is consumer:
            self._next_single_active()
        if not self.consumers:
            if self.flow_blocked is not None:
                self.release_publishers()
            if self.auto_delete and self.had_consumer and self.on_unused is not None:
                self.on_unused(self)
            elif self.expires_ms is not None and not self.deleted:
                self._arm_unused_timer()

    def unpark(self, consumer: Consumer) -> None:
        if consumer.parked and not self.deleted and consumer.has_capacity():
            if self.sac and consumer is not self.sac_active:
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

    # ------------------------------------------------------------------ featured queues
    def _configure(self, args: dict[str, Any]) -> None:
        self.ttl = _int_arg(args, "x-message-ttl")
        self.expires_ms = _int_arg(args, "x-expires")
        self.max_length = _int_arg(args, "x-max-length")
        self.max_bytes = _int_arg(args, "x-max-length-bytes")
        self.overflow = _text_arg(args, "x-overflow") or DROP_HEAD
        self.dlx = _text_arg(args, "x-dead-letter-exchange")
        self.dlrk = _text_arg(args, "x-dead-letter-routing-key") if self.dlx is not None else None
        self.max_priority = _int_arg(args, "x-max-priority")
        self.sac = args.get("x-single-active-consumer") is True
        self.delivery_limit = _int_arg(args, "x-delivery-limit")
        self.consumer_timeout = _int_arg(args, "x-consumer-timeout")

    def _enable_features(self) -> None:
        if self.featured:
            return
        self.featured = True
        old = self.ready
        self.ready = PriorityReady(self.max_priority) if self.max_priority is not None else FifoReady()
        for e in old:
            self.ready.append(e)
            self.ready_bytes += len(e.msg.body)
        # Bound over the plain methods on this instance only: plain queues never pay for the checks below.
        self.put = self._put_fx  # type: ignore[method-assign]
        self.dispatch = self._dispatch_fx  # type: ignore[method-assign]
        self.get = self._get_fx  # type: ignore[method-assign]
        self.requeue = self._requeue_fx  # type: ignore[method-assign]

    def _ttl_for(self, msg: Message) -> int | None:
        ttl = self.ttl
        exp = msg.expiration
        if exp is not None and (ttl is None or exp < ttl):
            return exp
        return ttl

    def _priority_of(self, msg: Message) -> int:
        assert self.max_priority is not None
        flags = fastcodec.property_flags(msg.header)
        if not flags & fastcodec.HAS_PRIORITY:
            return 0
        p = fastcodec.priority(msg.header) or 0
        return p if p < self.max_priority else self.max_priority

    def _over_limit(self, extra_len: int, extra_bytes: int) -> bool:
        ml, mb = self.max_length, self.max_bytes
        return (ml is not None and len(self.ready) + extra_len > ml) or (
            mb is not None and self.ready_bytes + extra_bytes > mb
        )

    def _put_fx(self, msg: Message) -> bool:
        size = len(msg.body)
        if self.overflow != DROP_HEAD and self._over_limit(1, size):
            refused = Entry(msg, 0, self)
            self.forget(refused)  # the channel stored it for this queue before asking
            if self.overflow == REJECT_PUBLISH_DLX and self.dlx is not None:
                self.dead_letter([refused], MAXLEN)
            return True
        self.seq += 1
        entry = Entry(msg, self.seq, self)
        ttl = self._ttl_for(msg)
        if ttl is not None:
            if ttl == 0:
                self._deliver_now_or_expire(entry)
                return False
            entry.expires = self.clock.now_ms() + ttl
        if self.max_priority is not None:
            entry.prio = self._priority_of(msg)
        ready = self.ready
        ready.append(entry)
        self.ready_bytes += size
        if self.active:
            self.dispatch()
        if (self.max_length is not None or self.max_bytes is not None) and self._over_limit(0, 0):
            self._drop_head()
        exp = entry.expires
        if exp is not None and (self._expiry_timer is None or exp < self._expiry_at):
            self._arm_expiry()
        return False

    def _deliver_now_or_expire(self, entry: Entry) -> None:
        """TTL 0: hand the message to a consumer that can take it right now, else it expires at once."""
        active = self.active
        if not self.ready:
            while active:
                consumer = active.popleft()
                if not consumer.has_capacity():
                    consumer.parked = True
                    continue
                consumer.deliver(entry)
                if consumer.has_capacity():
                    active.append(consumer)
                else:
                    consumer.parked = True
                return
        self.forget(entry)
        if self.dlx is not None:
            self.dead_letter([entry], EXPIRED)

    def _drop_head(self) -> None:
        dropped: list[Entry] = []
        ready = self.ready
        while ready and self._over_limit(0, 0):
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
        if self.dlx is not None:
            self.dead_letter(entries, reason)

    def _dispatch_fx(self) -> None:
        ready = self.ready
        active = self.active
        if not (ready and active):
            return
        now = self.clock.now_ms()
        while ready and active:
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
            consumer.deliver(e)
            if consumer.has_capacity():
                active.append(consumer)
            else:
                consumer.parked = True
        if ready and self._expiry_timer is None:
            self._arm_expiry()

    def _get_fx(self) -> Entry | None:
        ready = self.ready
        if self._unused_timer is not None:
            self._arm_unused_timer()
        if not ready:
            return None
        exp = ready[0].expires
        if exp is not None:
            now = self.clock.now_ms()
            if exp <= now:
                self._expire(now)
                if not ready:
                    return None
        e: Entry = ready.popleft()
        self.ready_bytes -= len(e.msg.body)
        if ready and self._expiry_timer is None:
            self._arm_expiry()
        return e

    def _requeue_fx(self, entries: Iterable[Entry]) -> None:
        back = sorted(entries, key=_seq)
        if not back or self.deleted:
            return
        limit = self.delivery_limit
        if limit is not None:
            over = [e for e in back if e.delivery_count > limit]
            if over:
                back = [e for e in back if e.delivery_count <= limit]
                self._discard(over, DELIVERY_LIMIT)
            for e in back:
                _set_delivery_count(e)
        if not back:
            return
        for e in back:
            e.redelivered = True
            self.ready_bytes += len(e.msg.body)
        self.ready.requeue(back)
        head = self.ready[0].expires
        if head is not None and (self._expiry_timer is None or head < self._expiry_at):
            self._arm_expiry()
        self.dispatch()

    # ------------------------------------------------------------------ expiry
    def _expire(self, now: int) -> int:
        """Drop (dead-letter) expired messages at the head; O(expired)."""
        expired: list[Entry] = []
        self.ready.pop_expired(now, expired)
        for e in expired:
            self.ready_bytes -= len(e.msg.body)
        self._discard(expired, EXPIRED)
        return len(expired)

    def _arm_expiry(self) -> None:
        at = self.ready.next_expiry() if self.featured else None
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
        assert self.expires_ms is not None
        self._unused_timer = self.clock.call_later(self.expires_ms / 1000, self._on_unused_timer)

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
        if self.dlx is None or self.host is None:
            return
        from broker.features.deadletter import dead_letter  # deadletter imports queue: import here, on the rare path

        dead_letter(self.host, self, [e.msg for e in entries], reason)


def _set_delivery_count(entry: Entry) -> None:
    """Give a redelivered entry its own copy of the message carrying ``x-delivery-count`` (the original may be
    shared with other queues)."""
    from broker.features.deadletter import with_headers

    entry.msg = with_headers(entry.msg, {"x-delivery-count": entry.delivery_count})
