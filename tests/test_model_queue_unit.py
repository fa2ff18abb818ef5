"""broker.model.queue.Queue driven directly: fake consumers, a fake host and a hand-turned clock; no sockets,
no event loop."""

from __future__ import annotations

from typing import Any

import pytest

from amqpd.broker.model.queue import Queue
from amqpd.broker.model.vhost import VHost
from amqpd.protocol.errors import AMQPError
from tests.support.model_fakes import (
    FakeConsumer,
    FakeSession,
    assert_bytes_consistent,
    make_queue,
    message,
    ready_bodies,
)

DLX = {"x-dead-letter-exchange": "dlx"}


def put_all(q: Queue, *bodies: bytes) -> list[bool]:
    refused = [q.put(message(b)) for b in bodies]
    assert_bytes_consistent(q)
    return refused


# ------------------------------------------------------------------------------------------- dispatch


@pytest.mark.parametrize("arguments", [{}, {"x-max-length": 1000}, {"x-message-ttl": 60_000}])
def test_a_consumer_gets_messages_in_publish_order(arguments: dict[str, Any]) -> None:
    q, _clock, _host = make_queue(arguments)
    put_all(q, b"m0", b"m1", b"m2")
    c = FakeConsumer(q, "c")
    q.add_consumer(c)
    put_all(q, b"m3")
    assert c.bodies() == [b"m0", b"m1", b"m2", b"m3"]
    assert q.message_count == 0
    assert_bytes_consistent(q)


def test_consumers_are_served_round_robin() -> None:
    q, _clock, _host = make_queue()
    log: list[tuple[str, bytes, bool]] = []
    for tag in ("a", "b", "c"):
        q.add_consumer(FakeConsumer(q, tag, log=log))
    put_all(q, *[b"m%d" % i for i in range(7)])
    assert [tag for tag, _body, _red in log] == ["a", "b", "c", "a", "b", "c", "a"]


def test_a_full_consumer_is_parked_and_unparked_when_capacity_returns() -> None:
    q, _clock, _host = make_queue()
    c = FakeConsumer(q, "c", limit=1)
    q.add_consumer(c)
    put_all(q, b"m0", b"m1", b"m2")
    assert c.bodies() == [b"m0"]
    assert c.parked
    assert len(q.active) == 0
    c.ack()
    assert c.bodies() == [b"m0", b"m1"]
    c.set_limit(5)
    assert c.bodies() == [b"m0", b"m1", b"m2"]
    assert not c.parked
    assert q.message_count == 0


def test_a_parked_consumer_is_skipped_for_one_with_capacity() -> None:
    q, _clock, _host = make_queue()
    full = FakeConsumer(q, "full", limit=0)
    free = FakeConsumer(q, "free")
    q.add_consumer(full)
    q.add_consumer(free)
    put_all(q, b"m0", b"m1")
    assert full.bodies() == []
    assert free.bodies() == [b"m0", b"m1"]
    assert full.parked


def test_unpark_without_capacity_keeps_the_consumer_parked() -> None:
    q, _clock, _host = make_queue()
    c = FakeConsumer(q, "c", limit=0)
    q.add_consumer(c)
    put_all(q, b"m0")
    q.unpark(c)
    assert c.parked and c.bodies() == []
    c.set_limit(1)
    assert c.bodies() == [b"m0"]


def test_requeue_puts_messages_back_at_their_original_position_marked_redelivered() -> None:
    q, _clock, _host = make_queue()
    c = FakeConsumer(q, "c", limit=2)
    q.add_consumer(c)
    put_all(q, b"m0", b"m1", b"m2", b"m3")
    assert c.bodies() == [b"m0", b"m1"]
    c.limit = 0  # so the requeue does not hand them straight back
    c.requeue([1, 0])
    assert ready_bodies(q) == [b"m0", b"m1", b"m2", b"m3"]
    assert [e.redelivered for e in q.ready] == [True, True, False, False]
    assert_bytes_consistent(q)
    c.set_limit(None)
    assert c.log[2:] == [("c", b"m0", True), ("c", b"m1", True), ("c", b"m2", False), ("c", b"m3", False)]


def test_requeue_between_ready_messages_merges_by_publish_order() -> None:
    q, _clock, _host = make_queue()
    c = FakeConsumer(q, "c", limit=4)
    q.add_consumer(c)
    put_all(q, *[b"m%d" % i for i in range(6)])
    c.limit = 0
    c.requeue([1, 3])  # m1 and m3 go back; m0 and m2 stay held
    assert ready_bodies(q) == [b"m1", b"m3", b"m4", b"m5"]
    c.ack(0)  # m0: unpark sees no capacity (limit 0)
    assert ready_bodies(q) == [b"m1", b"m3", b"m4", b"m5"]
    assert_bytes_consistent(q)


def test_get_takes_the_head_and_leaves_the_rest() -> None:
    q, _clock, _host = make_queue()
    put_all(q, b"m0", b"m1")
    e = q.get()
    assert e is not None and e.msg.body == b"m0" and not e.redelivered
    assert ready_bodies(q) == [b"m1"]
    q.requeue([e])
    assert ready_bodies(q) == [b"m0", b"m1"]
    got = q.get()
    assert got is not None and got.redelivered
    assert_bytes_consistent(q)


def test_purge_empties_the_queue_and_reports_the_count() -> None:
    q, _clock, _host = make_queue()
    put_all(q, b"a", b"bb", b"ccc")
    assert q.purge() == 3
    assert q.message_count == 0 and q.ready_bytes == 0


# ----------------------------------------------------------------------------------------------- TTL


def test_per_queue_ttl_expires_messages_when_the_timer_fires() -> None:
    q, clock, host = make_queue({"x-message-ttl": 100, **DLX})
    put_all(q, b"m0", b"m1")
    clock.advance(50)
    put_all(q, b"m2")
    assert clock.advance(51) >= 1  # the timer for m0/m1 fired, without any queue activity
    assert ready_bodies(q) == [b"m2"]
    assert host.dead == [("q", [b"m0", b"m1"], "expired")]
    assert_bytes_consistent(q)
    clock.advance(50)
    assert q.message_count == 0
    assert host.dead_bodies("expired") == [b"m0", b"m1", b"m2"]
    assert q.ready_bytes == 0


def test_per_queue_ttl_is_not_applied_to_messages_a_consumer_took_in_time() -> None:
    q, clock, host = make_queue({"x-message-ttl": 100, **DLX})
    c = FakeConsumer(q, "c", limit=1)
    q.add_consumer(c)
    put_all(q, b"m0", b"m1")
    clock.advance(99)
    c.ack()
    assert c.bodies() == [b"m0", b"m1"]
    clock.advance(1000)
    assert host.dead == []


def test_dispatch_drops_an_expired_head_instead_of_delivering_it() -> None:
    q, clock, host = make_queue({"x-message-ttl": 100, **DLX})
    c = FakeConsumer(q, "c", limit=0)
    q.add_consumer(c)
    put_all(q, b"m0")
    clock.now += 200  # time passes but the timer has not run yet
    c.set_limit(None)
    assert c.bodies() == []
    assert host.dead_bodies("expired") == [b"m0"]


def test_per_message_expiration_is_honoured_at_the_head() -> None:
    q, clock, host = make_queue(DLX)
    q.put(message(b"short", expiration=50))
    q.put(message(b"forever"))
    q.put(message(b"behind", expiration=10))
    clock.advance(60)
    # "behind" is past its deadline but not at the head: RabbitMQ drops it only once it gets there.
    assert host.dead_bodies("expired") == [b"short"]
    assert ready_bodies(q) == [b"forever", b"behind"]
    e = q.get()
    assert e is not None and e.msg.body == b"forever"
    assert q.get() is None  # the expired head is dropped, not returned
    assert host.dead_bodies("expired") == [b"short", b"behind"]
    assert_bytes_consistent(q)


def test_a_plain_queue_becomes_timed_on_its_first_message_with_an_expiration() -> None:
    q, clock, _host = make_queue()
    assert q.fx is None
    q.put(message(b"m0", expiration=20))
    assert q.fx is not None and q.fx.timed
    clock.advance(21)
    assert q.message_count == 0 and q.ready_bytes == 0


def test_message_expiration_shorter_than_the_queue_ttl_wins() -> None:
    q, clock, host = make_queue({"x-message-ttl": 1000, **DLX})
    q.put(message(b"m0", expiration=10))
    clock.advance(11)
    assert host.dead_bodies("expired") == [b"m0"]


def test_ttl_zero_is_delivered_to_a_waiting_consumer() -> None:
    q, _clock, host = make_queue({"x-message-ttl": 0, **DLX})
    c = FakeConsumer(q, "c")
    q.add_consumer(c)
    put_all(q, b"m0")
    assert c.bodies() == [b"m0"]
    assert host.dead == []


@pytest.mark.parametrize("limit", [None, 0], ids=["no consumer", "consumer without capacity"])
def test_ttl_zero_expires_at_once_otherwise(limit: int | None) -> None:
    q, _clock, host = make_queue({"x-message-ttl": 0, **DLX})
    if limit is not None:
        q.add_consumer(FakeConsumer(q, "c", limit=limit))
    put_all(q, b"m0")
    assert q.message_count == 0
    assert host.dead == [("q", [b"m0"], "expired")]


def test_message_expiration_zero_on_a_plain_queue_expires_at_once() -> None:
    q, _clock, _host = make_queue()
    q.put(message(b"m0", expiration=0))
    assert q.message_count == 0 and q.ready_bytes == 0


# -------------------------------------------------------------------------------------------- limits


def test_max_length_drop_head_dead_letters_the_oldest() -> None:
    q, _clock, host = make_queue({"x-max-length": 2, **DLX})
    assert put_all(q, b"m0", b"m1", b"m2", b"m3") == [False] * 4
    assert ready_bodies(q) == [b"m2", b"m3"]
    assert host.dead_bodies("maxlen") == [b"m0", b"m1"]


def test_max_length_reject_publish_refuses_the_new_message() -> None:
    q, _clock, host = make_queue({"x-max-length": 2, "x-overflow": "reject-publish", **DLX})
    assert put_all(q, b"m0", b"m1", b"m2") == [False, False, True]
    assert ready_bodies(q) == [b"m0", b"m1"]
    assert host.dead == []  # reject-publish does not dead-letter


def test_max_length_reject_publish_dlx_dead_letters_the_refused_message() -> None:
    q, _clock, host = make_queue({"x-max-length": 1, "x-overflow": "reject-publish-dlx", **DLX})
    assert put_all(q, b"m0", b"m1") == [False, True]
    assert ready_bodies(q) == [b"m0"]
    assert host.dead == [("q", [b"m1"], "maxlen")]


def test_max_length_counts_only_ready_messages() -> None:
    q, _clock, host = make_queue({"x-max-length": 1, **DLX})
    c = FakeConsumer(q, "c", limit=2)
    q.add_consumer(c)
    put_all(q, b"m0", b"m1", b"m2")
    assert c.bodies() == [b"m0", b"m1"]
    assert ready_bodies(q) == [b"m2"]
    assert host.dead == []


def test_max_length_bytes_drops_from_the_head_by_body_size() -> None:
    q, _clock, host = make_queue({"x-max-length-bytes": 10, **DLX})
    put_all(q, b"aaaa", b"bbbb", b"cccc")
    assert ready_bodies(q) == [b"bbbb", b"cccc"]
    assert q.ready_bytes == 8
    put_all(q, b"x" * 10)
    assert ready_bodies(q) == [b"x" * 10]
    assert host.dead_bodies("maxlen") == [b"aaaa", b"bbbb", b"cccc"]


def test_max_length_bytes_reject_publish() -> None:
    q, _clock, _host = make_queue({"x-max-length-bytes": 5, "x-overflow": "reject-publish"})
    assert put_all(q, b"abc", b"def", b"gh") == [False, True, False]
    assert ready_bodies(q) == [b"abc", b"gh"]


# ------------------------------------------------------------------------------------- delivery limit


def test_delivery_limit_dead_letters_after_too_many_redeliveries() -> None:
    q, _clock, host = make_queue({"x-delivery-limit": 1, **DLX})
    c = FakeConsumer(q, "c")
    q.add_consumer(c)
    put_all(q, b"m0")
    c.requeue()  # delivered once: back, with x-delivery-count 1
    assert c.log == [("c", b"m0", False), ("c", b"m0", True)]
    assert c.held[0].msg.headers() == {"x-delivery-count": 1}
    c.requeue()  # delivered twice: over the limit
    assert host.dead == [("q", [b"m0"], "delivery_limit")]
    assert q.message_count == 0 and c.unacked == 0
    assert len(c.log) == 2


def test_delivery_limit_zero_dead_letters_on_the_first_requeue() -> None:
    q, _clock, host = make_queue({"x-delivery-limit": 0, **DLX})
    c = FakeConsumer(q, "c")
    q.add_consumer(c)
    put_all(q, b"m0", b"m1")
    c.requeue([1])
    assert host.dead == [("q", [b"m1"], "delivery_limit")]
    assert_bytes_consistent(q)


# -------------------------------------------------------------------------------------------- priority


def test_priority_queue_delivers_highest_first_capped_at_max_priority() -> None:
    q, _clock, _host = make_queue({"x-max-priority": 5})
    for body, prio in [(b"p1", 1), (b"p5", 5), (b"p3", 3), (b"none", None), (b"p9", 9), (b"p3b", 3)]:
        q.put(message(body, priority=prio))
    assert_bytes_consistent(q)
    c = FakeConsumer(q, "c")
    q.add_consumer(c)
    assert c.bodies() == [b"p5", b"p9", b"p3", b"p3b", b"p1", b"none"]


def test_priority_queue_requeue_keeps_each_level_in_order() -> None:
    q, _clock, _host = make_queue({"x-max-priority": 2})
    c = FakeConsumer(q, "c", limit=2)
    q.add_consumer(c)
    for body, prio in [(b"lo0", 0), (b"hi0", 2), (b"hi1", 2), (b"lo1", 0)]:
        q.put(message(body, priority=prio))
    # m "lo0" was delivered on publish (the consumer had room), then "hi0"
    assert c.bodies() == [b"lo0", b"hi0"]
    c.limit = 0
    c.requeue()
    assert ready_bodies(q) == [b"hi0", b"hi1", b"lo0", b"lo1"]
    assert_bytes_consistent(q)


def test_consumer_priority_serves_the_highest_group_first() -> None:
    q, _clock, _host = make_queue()
    log: list[tuple[str, bytes, bool]] = []
    low = FakeConsumer(q, "low", log=log)
    high = FakeConsumer(q, "high", priority=5, limit=2, log=log)
    q.add_consumer(low)
    q.add_consumer(high)
    put_all(q, b"m0", b"m1", b"m2")
    assert [tag for tag, _b, _r in log] == ["high", "high", "low"]


# ------------------------------------------------------------------------------ single active consumer


def test_single_active_consumer_serves_one_and_hands_over_on_cancel() -> None:
    q, _clock, _host = make_queue({"x-single-active-consumer": True})
    first = FakeConsumer(q, "first", limit=2)
    second = FakeConsumer(q, "second")
    q.add_consumer(first)
    q.add_consumer(second)
    put_all(q, b"m0", b"m1", b"m2")
    assert first.bodies() == [b"m0", b"m1"]
    assert second.bodies() == []  # waits even though it has capacity
    q.unpark(second)
    assert second.bodies() == []
    q.remove_consumer(first)
    assert q.sac_active is second
    assert second.bodies() == [b"m2"]
    put_all(q, b"m3")
    assert second.bodies() == [b"m2", b"m3"]


# ---------------------------------------------------------------------------------------------- x-expires


def test_x_expires_deletes_an_unused_queue_through_its_host() -> None:
    q, clock, host = make_queue({"x-expires": 1000})
    clock.advance(999)
    assert host.deleted == []
    clock.advance(2)
    assert host.deleted == [q]
    assert q.deleted


def test_x_expires_waits_while_consumed_and_restarts_on_use() -> None:
    q, clock, host = make_queue({"x-expires": 1000})
    c = FakeConsumer(q, "c")
    q.add_consumer(c)
    clock.advance(5000)
    assert host.deleted == []
    q.remove_consumer(c)
    clock.advance(600)
    assert q.get() is None  # basic.get counts as use: the countdown starts again
    clock.advance(600)
    q.touch()  # so does a redeclare
    clock.advance(600)
    assert host.deleted == []
    clock.advance(401)
    assert host.deleted == [q]


def test_delete_cancels_consumers_and_timers() -> None:
    q, clock, host = make_queue({"x-message-ttl": 10, "x-expires": 100, **DLX})
    c = FakeConsumer(q, "c", limit=0)
    q.add_consumer(c)
    put_all(q, b"m0")
    assert q.delete() == 1
    assert c.cancelled and c.parked
    clock.advance(1000)
    assert host.dead == [] and host.deleted == []
    assert q.ready_bytes == 0


# ------------------------------------------------------------------------------------- flow control


FLOW_ARGUMENTS = [
    pytest.param({}, id="plain"),
    pytest.param({"x-max-length": 1000}, id="x-max-length"),
    pytest.param({"x-message-ttl": 60_000}, id="x-message-ttl"),
    pytest.param({"x-max-priority": 3}, id="x-max-priority"),
]


@pytest.mark.parametrize("arguments", FLOW_ARGUMENTS)
def test_dispatch_releases_blocked_publishers_at_the_low_mark(arguments: dict[str, Any]) -> None:
    q, _clock, _host = make_queue(arguments)
    c = FakeConsumer(q, "c", limit=0)
    q.add_consumer(c)
    put_all(q, *[b"m%d" % i for i in range(6)])
    publisher = FakeSession("publisher")
    q.flow_blocked = {publisher}
    q.flow_low = 2
    c.set_limit(3)  # three delivered: 3 ready, still above the mark
    assert publisher.unthrottled == 0
    assert q.flow_blocked == {publisher}
    c.ack()  # a fourth: 2 ready
    assert q.message_count == 2
    assert publisher.unthrottled == 1
    assert publisher.released_by == [q]
    assert q.flow_blocked is None
    c.set_limit(None)
    assert publisher.unthrottled == 1
    assert q.message_count == 0


@pytest.mark.parametrize("arguments", FLOW_ARGUMENTS)
def test_a_publish_dispatched_at_once_releases_blocked_publishers(arguments: dict[str, Any]) -> None:
    q, _clock, _host = make_queue(arguments)
    c = FakeConsumer(q, "c")
    q.add_consumer(c)
    publisher = FakeSession("publisher")
    q.flow_blocked = {publisher}
    q.flow_low = 0
    put_all(q, b"m0")
    assert c.bodies() == [b"m0"]
    assert publisher.unthrottled == 1
    assert q.flow_blocked is None


@pytest.mark.parametrize("arguments", FLOW_ARGUMENTS)
def test_blocked_publishers_are_released_by_get_purge_last_consumer_and_delete(arguments: dict[str, Any]) -> None:
    q, _clock, _host = make_queue(arguments)
    put_all(q, b"m0", b"m1", b"m2")
    sessions = [FakeSession(f"p{i}") for i in range(4)]

    q.flow_blocked, q.flow_low = {sessions[0]}, 1
    q.get()
    assert sessions[0].unthrottled == 0
    q.get()
    assert sessions[0].unthrottled == 1

    q.flow_blocked = {sessions[1]}
    q.purge()
    assert sessions[1].unthrottled == 1

    c = FakeConsumer(q, "c", limit=0)
    q.add_consumer(c)
    q.flow_blocked = {sessions[2]}
    q.remove_consumer(c)
    assert sessions[2].unthrottled == 1

    q.flow_blocked = {sessions[3]}
    q.delete()
    assert sessions[3].unthrottled == 1
    assert all(s.unthrottled == 1 for s in sessions)


def test_expiry_that_drains_the_queue_releases_blocked_publishers() -> None:
    # A consumed TTL queue whose consumer cannot keep up: its backlog paused a publisher, then the messages
    # expire (the expiry timer drains the queue, no dispatch happens).
    q, clock, _host = make_queue({"x-message-ttl": 100})
    c = FakeConsumer(q, "c", limit=0)
    q.add_consumer(c)
    put_all(q, *[b"m%d" % i for i in range(5)])
    publisher = FakeSession("publisher")
    q.flow_blocked = {publisher}
    q.flow_low = 2
    clock.advance(101)
    assert q.message_count == 0
    assert publisher.unthrottled == 1
    assert q.flow_blocked is None


# ----------------------------------------------------------------------------------------- accounting


def test_ready_bytes_follow_every_path_in_and_out() -> None:
    q, clock, host = make_queue({"x-max-length": 4, "x-message-ttl": 100, "x-delivery-limit": 1, **DLX})
    c = FakeConsumer(q, "c", limit=0)
    q.add_consumer(c)
    for i in range(6):
        q.put(message(b"x" * (i + 1)))
        assert_bytes_consistent(q)
    c.set_limit(2)
    assert_bytes_consistent(q)
    c.limit = 0
    c.requeue([0])
    assert_bytes_consistent(q)
    assert q.get() is not None
    assert_bytes_consistent(q)
    clock.advance(50)
    q.put(message(b"late", expiration=10))
    clock.advance(60)
    assert_bytes_consistent(q)
    clock.advance(200)
    assert_bytes_consistent(q)
    assert q.message_count == 0 and q.ready_bytes == 0
    assert host.dead_bodies("maxlen") == [b"x", b"xx"]


# ------------------------------------------------------------------------------------------------ names


def test_a_queue_name_longer_than_a_shortstr_is_refused_with_406() -> None:
    # No client can send one (a shortstr holds 255 bytes), so the rule is checked at the model's door.
    vhost = VHost("/")
    owner = FakeSession("owner")
    vhost.declare_queue("q" * 255, owner)
    with pytest.raises(AMQPError) as caught:
        vhost.declare_queue("q" * 256, owner)
    assert caught.value.code == 406
    assert caught.value.detail == "queue name is too long: 256 bytes, at most 255"
