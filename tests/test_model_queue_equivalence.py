"""Property: a featured queue whose features never fire behaves exactly like a plain queue.

Both queues get the same random sequence of operations (publish, consumers coming and going, capacity
changes, acks, requeues, basic.get, purge, time passing). The featured one has x-max-length far above
anything reached, x-message-ttl far longer than the clock ever advances, x-delivery-limit above any
redelivery count and a dead-letter exchange. After every step both must have made the same deliveries in the
same order to the same consumers with the same redelivered flags, answered basic.get and purge the same, and
hold the same ready messages and byte count. Nothing may be dead-lettered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from amqpd.broker.model.queue import Entry
from tests.support.model_fakes import Delivery, FakeConsumer, assert_bytes_consistent, make_queue, message

NEVER_FIRES: dict[str, Any] = {
    "x-max-length": 1_000_000,
    "x-max-length-bytes": 1_000_000_000,
    "x-message-ttl": 1_000_000_000,
    "x-delivery-limit": 1_000_000,
    "x-dead-letter-exchange": "dlx",
}

limits = st.one_of(st.none(), st.integers(0, 3))
index = st.integers(0, 7)
mask = st.integers(0, 255)

operations = st.one_of(
    st.tuples(st.just("put"), st.integers(0, 40)),
    st.tuples(st.just("add"), limits),
    st.tuples(st.just("remove"), index),
    st.tuples(st.just("limit"), index, limits),
    st.tuples(st.just("ack"), index, index),
    st.tuples(st.just("requeue"), index, mask),
    st.tuples(st.just("get")),
    st.tuples(st.just("requeue_got"), mask),
    st.tuples(st.just("ack_got"), index),
    st.tuples(st.just("purge")),
    st.tuples(st.just("advance"), st.integers(0, 100_000)),
)


def _chosen(items: list[Entry], bits: int) -> list[int]:
    return [i for i in range(len(items)) if bits >> i & 1]


@dataclass
class World:
    arguments: dict[str, Any]
    log: list[Delivery] = field(default_factory=list)
    consumers: list[FakeConsumer] = field(default_factory=list)
    got: list[Entry] = field(default_factory=list)  # basic.get deliveries not settled yet
    published: int = 0

    def __post_init__(self) -> None:
        self.queue, self.clock, self.host = make_queue(self.arguments)

    def apply(self, op: tuple[Any, ...]) -> object:
        """Run one operation; returns what a client would see from it (get and purge answers)."""
        q = self.queue
        kind = op[0]
        if kind == "put":
            self.published += 1
            body = b"%d:" % self.published + b"x" * op[1]
            return q.put(message(body))
        if kind == "add":
            c = FakeConsumer(q, f"c{len(self.consumers)}", limit=op[1], log=self.log)
            self.consumers.append(c)
            q.add_consumer(c)
            return None
        if kind == "get":
            e = q.get()
            if e is None:
                return None
            e.delivery_count += 1
            self.got.append(e)
            return (e.msg.body, e.redelivered)
        if kind == "requeue_got":
            picked = _chosen(self.got, op[1])
            entries = [self.got[i] for i in picked]
            for i in reversed(picked):
                del self.got[i]
            q.requeue(entries)
            return len(entries)
        if kind == "ack_got":
            if self.got:
                q.forget(self.got.pop(op[1] % len(self.got)))
            return None
        if kind == "purge":
            return q.purge()
        if kind == "advance":
            return self.clock.advance(op[1])
        if not self.consumers:
            return None
        c = self.consumers[op[1] % len(self.consumers)]
        if kind == "remove":
            q.remove_consumer(c)
        elif kind == "limit":
            c.set_limit(op[2])
        elif kind == "ack":
            if c.held:
                c.ack(op[2] % len(c.held))
        elif kind == "requeue":
            c.requeue(_chosen(c.held, op[2]))
        return None

    def state(self) -> tuple[object, ...]:
        q = self.queue
        return (
            [(e.msg.body, e.redelivered) for e in q.ready],
            q.message_count,
            q.ready_bytes,
            q.consumer_count,
            [(c.tag, c.parked, c.unacked, [e.msg.body for e in c.held]) for c in self.consumers],
        )


@settings(max_examples=300, deadline=None)
@given(st.lists(operations, max_size=60))
def test_a_featured_queue_whose_features_never_fire_behaves_like_a_plain_one(ops: list[tuple[Any, ...]]) -> None:
    plain = World({})
    featured = World(NEVER_FIRES)
    assert plain.queue.fx is None
    assert featured.queue.fx is not None
    for step, op in enumerate(ops):
        answer_plain = plain.apply(op)
        answer_featured = featured.apply(op)
        where = f"after step {step} {op!r}"
        if op[0] != "advance":  # how many timers fired differs by design (the featured queue arms them)
            assert answer_featured == answer_plain, where
        assert featured.log == plain.log, where
        assert featured.state() == plain.state(), where
        assert_bytes_consistent(plain.queue)
        assert_bytes_consistent(featured.queue)
    assert featured.host.dead == [] and featured.host.deleted == []
