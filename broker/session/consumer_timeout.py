"""Consumer acknowledgement timeout: a delivery held unacked longer than its timeout ends its consumer.

The timeout of a delivery is its queue's ``x-consumer-timeout`` (ms), else the broker's ``consumer_timeout``
setting (RabbitMQ's 30 minutes by default; 0 turns the default off). When one runs out:

- the client advertised ``consumer_cancel_notify``: the consumer gets a server-sent basic.cancel and the
  messages it holds unacked on that channel go back to their queues; the channel stays open (RabbitMQ 4.3+);
- otherwise, or when the delivery has no live consumer (basic.get, or a consumer the client cancelled), the
  channel is closed with 406 and RabbitMQ's text, which requeues everything it held (RabbitMQ up to 4.2).

Nothing of this runs per delivery or per ack. One timer per server ticks at a coarse interval (half the smallest
timeout in play, at most 1 s) and visits only channels that hold unacked deliveries. At each tick it notes, per
such channel, the channel's last delivery tag: tags only grow, so a tag ``t`` was delivered no later than the
first noted time whose tag is ``>= t``. A delivery is therefore known to be older than ``T`` when its tag is at
most the tag noted ``T`` ago. That never fires early and fires at most one interval late.
"""

from __future__ import annotations

import bisect
import logging
import weakref
from operator import itemgetter
from typing import TYPE_CHECKING

from amqpd.protocol.connection import RUNNING
from amqpd.protocol.errors import PRECONDITION_FAILED, ChannelError

if TYPE_CHECKING:
    import asyncio

    from amqpd.broker.model.queue import Entry
    from amqpd.broker.session.channel import Channel
    from amqpd.broker.session.consumer import ChannelConsumer
    from amqpd.broker.session.host import SessionHost

log = logging.getLogger("amqpd.consumer_timeout")

MAX_INTERVAL_MS = 1000
MIN_INTERVAL_MS = 10

_time = itemgetter(0)
_tag = itemgetter(1)


class DeliveryAges:
    """Per channel: (time in ms, highest delivery tag issued by then) at each tick, oldest first, tags rising."""

    __slots__ = ("marks",)

    def __init__(self) -> None:
        self.marks: list[tuple[int, int]] = []

    def note(self, now_ms: int, last_tag: int) -> None:
        marks = self.marks
        # Only the first time a tag was seen matters: a later mark with the same tag bounds nothing tighter.
        if not marks or marks[-1][1] != last_tag:
            marks.append((now_ms, last_tag))

    def forget_below(self, oldest_tag: int) -> None:
        """Drop marks that only bound tags older than ``oldest_tag`` (all settled by now)."""
        cut = bisect.bisect_left(self.marks, oldest_tag, key=_tag)
        if cut:
            del self.marks[:cut]

    def expired_upto(self, now_ms: int, timeout_ms: int) -> int:
        """The highest tag known to have been delivered at least ``timeout_ms`` ago; 0 when there is none."""
        i = bisect.bisect_right(self.marks, now_ms - timeout_ms, key=_time)
        return self.marks[i - 1][1] if i else 0


def timeout_text(channel: int, timeout_ms: int) -> str:
    # RabbitMQ's wording (rabbit_channel), so tooling that matches on it keeps working.
    return (
        f"delivery acknowledgement on channel {channel} timed out. Timeout value used: {timeout_ms} ms. "
        "This timeout value can be configured, see consumers doc guide to learn more"
    )


class ConsumerTimeouts:
    """The timer of one server: see the module docstring."""

    def __init__(self, server: SessionHost) -> None:
        # Weak: the registry below maps the server to this object, which must not keep the server alive.
        self._server = weakref.ref(server)
        self.default_ms = server.config.consumer_timeout
        self.ages: dict[Channel, DeliveryAges] = {}
        self.timer: asyncio.TimerHandle | None = None

    def ensure_running(self) -> None:
        server = self._server()
        if self.timer is None and server is not None:
            self.timer = server.loop.call_later(MAX_INTERVAL_MS / 1000, self.tick)

    def tick(self) -> None:
        self.timer = None
        server = self._server()
        if server is None or not server.connections:
            self.ages.clear()
            return  # the next channel opened starts it again
        now = int(server.loop.time() * 1000)
        previous, ages_now = self.ages, {}
        shortest: int | None = None
        suspects: list[tuple[Channel, DeliveryAges, int]] = []
        # The common case costs a mark and two comparisons per channel holding unacked deliveries; only a
        # channel whose oldest mark is older than its shortest timeout is looked at closely (after the walk, as
        # that may close channels).
        for conn in server.connections:
            if conn.proto.state != RUNNING:
                continue
            for ch in conn.channels.values():
                if not ch.unacked or ch.closed:
                    continue
                floor = self._floor(ch)
                if floor is None:
                    continue
                ages = previous.get(ch)
                if ages is None:
                    ages = DeliveryAges()
                ages_now[ch] = ages
                marks = ages.marks
                tag = ch.delivery_tag
                if not marks or marks[-1][1] != tag:
                    marks.append((now, tag))
                if marks[0][0] <= now - floor:
                    suspects.append((ch, ages, floor))
                if shortest is None or floor < shortest:
                    shortest = floor
        self.ages = ages_now
        for ch, ages, floor in suspects:
            if not ch.closed and ch.unacked:
                ages.forget_below(next(iter(ch.unacked.by_tag)))
                self._check(ch, ages, now, floor)
        interval = MAX_INTERVAL_MS if shortest is None else min(MAX_INTERVAL_MS, max(MIN_INTERVAL_MS, shortest // 2))
        self.timer = server.loop.call_later(interval / 1000, self.tick)

    def _timeout_of(self, entry: Entry) -> int:
        return entry.queue.consumer_timeout or self.default_ms

    def _floor(self, ch: Channel) -> int | None:
        """The shortest timeout that can apply to this channel's deliveries now (None: none applies).

        Its consumers' queues and the oldest delivery's queue (basic.get, a cancelled consumer) cover every
        timeout in play, except a younger delivery of a queue no longer consumed here: that one is caught once
        the walk below reaches it, a little late rather than never."""
        best = self.default_ms or None
        oldest = next(iter(ch.unacked.by_tag.values())).queue.consumer_timeout or best
        if oldest and (best is None or oldest < best):
            best = oldest
        for c in ch.consumers.values():
            t = c.queue.consumer_timeout
            if t and (best is None or t < best):
                best = t
        return best

    def _check(self, ch: Channel, ages: DeliveryAges, now: int, floor: int) -> None:
        limit = ages.expired_upto(now, floor)
        if not limit:
            return
        cutoffs = {floor: limit}
        expired: list[tuple[int, Entry, int]] = []
        # unacked is in delivery order (a tx.rollback re-inserts older tags at the end: they are then seen late)
        for tag, entry in ch.unacked.by_tag.items():
            if tag > limit:
                break
            timeout = self._timeout_of(entry)
            if not timeout:
                continue
            cutoff = cutoffs.get(timeout)
            if cutoff is None:
                cutoff = cutoffs[timeout] = ages.expired_upto(now, timeout)
            if tag <= cutoff:
                expired.append((tag, entry, timeout))
        if expired:
            self._expire(ch, expired)

    def _expire(self, ch: Channel, expired: list[tuple[int, Entry, int]]) -> None:
        notify = bool(ch.conn.proto.capabilities.get("consumer_cancel_notify"))
        doomed: dict[str, ChannelConsumer] = {}
        for tag, entry, timeout in expired:
            holder = entry.consumer
            live = ch.consumers.get(holder.tag) if holder is not None else None
            if not notify or live is None or live is not holder:
                log.warning(
                    "channel %d of %s: delivery tag %d not acknowledged within %d ms; closing the channel",
                    ch.number,
                    ch.conn.peer,
                    tag,
                    timeout,
                )
                error = ChannelError(PRECONDITION_FAILED, timeout_text(ch.number, timeout))
                ch.conn.proto.close_channel(ch.number, error)
                self.ages.pop(ch, None)
                return
            doomed[live.tag] = live
        for consumer in doomed.values():
            log.warning(
                "consumer %r on channel %d of %s did not acknowledge a delivery in time; cancelling it",
                consumer.tag,
                ch.number,
                ch.conn.peer,
            )
            ch.cancel_timed_out(consumer)


_running: weakref.WeakKeyDictionary[SessionHost, ConsumerTimeouts] = weakref.WeakKeyDictionary()


def watch(server: SessionHost) -> None:
    """Make sure ``server``'s consumer-timeout timer runs (called when a channel opens; it stops by itself once
    the server has no connections left)."""
    timeouts = _running.get(server)
    if timeouts is None:
        timeouts = _running[server] = ConsumerTimeouts(server)
    timeouts.ensure_running()
