"""The session's small state objects, without sockets: publisher confirms, unacked deliveries, flow reasons."""

from __future__ import annotations

import pytest

from amqpd.broker.model.message import Message
from amqpd.broker.model.queue import Entry, Queue
from amqpd.broker.session.confirms import Confirms
from amqpd.broker.session.flow import STORE_BEHIND, FlowControl
from amqpd.broker.session.unacked import Unacked
from amqpd.protocol.errors import PRECONDITION_FAILED, ChannelError


def flushed(confirms: Confirms) -> list[tuple[str, int, bool]]:
    out: list[tuple[str, int, bool]] = []
    confirms.flush(lambda upto, multiple: out.append(("ack", upto, multiple)), lambda n: out.append(("nack", n, False)))
    return out


# ------------------------------------------------------------------------------------------------ confirms
def test_confirms_coalesce_into_one_multiple_ack_per_flush() -> None:
    c = Confirms()
    for _ in range(3):
        c.publish(stored=False, refused=False)
    assert flushed(c) == [("ack", 3, True)]
    c.publish(stored=False, refused=False)
    assert flushed(c) == [("ack", 4, False)]
    assert flushed(c) == []


def test_a_refused_publish_is_nacked_in_order_between_acks() -> None:
    c = Confirms()
    c.publish(stored=False, refused=False)
    c.publish(stored=False, refused=False)
    c.publish(stored=False, refused=True)
    c.publish(stored=False, refused=False)
    assert flushed(c) == [("ack", 2, True), ("nack", 3, False), ("ack", 4, False)]


def test_a_stored_publish_and_every_later_one_wait_for_the_store() -> None:
    c = Confirms()
    c.publish(stored=False, refused=False)  # 1: at once
    c.publish(stored=True, refused=False)  # 2: waits for the store
    c.publish(stored=False, refused=False)  # 3: transient, but behind 2: waits too
    assert c.wait_for_store() == 3
    assert c.wait_for_store() == 0  # asked once
    assert flushed(c) == [("ack", 1, False)]
    c.made_durable(3)
    assert flushed(c) == [("ack", 3, True)]
    c.publish(stored=False, refused=False)  # nothing waits any more: at once
    assert c.wait_for_store() == 0
    assert flushed(c) == [("ack", 4, False)]


def test_a_nack_waiting_behind_the_store_goes_out_once_the_store_catches_up() -> None:
    c = Confirms()
    c.publish(stored=True, refused=False)
    c.publish(stored=False, refused=True)
    assert flushed(c) == []
    c.made_durable(c.wait_for_store())
    assert flushed(c) == [("ack", 1, False), ("nack", 2, False)]


# ------------------------------------------------------------------------------------------------ unacked
def entries(n: int) -> list[Entry]:
    q = Queue("q")
    return [Entry(Message("", "q", b"", b"x"), i + 1, q) for i in range(n)]


def test_unacked_multiple_takes_every_tag_up_to_the_given_one_in_order() -> None:
    u = Unacked()
    es = entries(5)
    for tag, e in enumerate(es, 1):
        u.add(tag, e)
    assert [t for t, _ in u.take(3, True, 80)] == [1, 2, 3]
    assert [t for t, _ in u.take(0, True, 80)] == [4, 5]
    assert not u
    assert u.count == 5  # settling is the channel's call, after the queue work
    u.settled(5)
    assert u.count == 0


def test_an_unknown_delivery_tag_is_a_406_naming_the_method() -> None:
    u = Unacked()
    u.add(1, entries(1)[0])
    with pytest.raises(ChannelError) as err:
        u.take(7, False, 120)
    assert (err.value.code, err.value.method_id) == (PRECONDITION_FAILED, 120)
    with pytest.raises(ChannelError):
        u.take(7, True, 80)
    u.take(1, False, 80)
    with pytest.raises(ChannelError):
        u.take(1, False, 80)  # twice is unknown too


def test_out_of_order_single_acks_keep_multiple_acks_exact() -> None:
    u = Unacked()
    for tag, e in enumerate(entries(200), 1):
        u.add(tag, e)
    for tag in range(2, 200, 2):
        u.take(tag, False, 80)
    taken = u.take(101, True, 80)
    assert [t for t, _ in taken] == list(range(1, 102, 2))
    assert sorted(u.by_tag) == [*range(103, 200, 2), 200]


def test_restored_deliveries_come_back_in_tag_order() -> None:
    u = Unacked()
    es = entries(3)
    for tag, e in enumerate(es, 1):
        u.add(tag, e)
    held = u.take(2, True, 80)  # a transaction's acks
    u.restore(held)  # rolled back
    assert [t for t, _ in u.take(0, True, 80)] == [1, 2, 3]


# ------------------------------------------------------------------------------------------------ flow
def test_reading_resumes_only_when_every_reason_has_ended() -> None:
    flow = FlowControl()
    q = Queue("backlog")
    assert flow.add(STORE_BEHIND)
    assert flow.add(q)
    assert not flow.add(q)  # the same reason twice is one reason
    assert flow.discard(STORE_BEHIND)
    assert flow.paused  # the queue's backlog still holds it
    assert flow.discard(q)
    assert not flow.paused
    assert not flow.discard(q)
    assert flow.pauses == 2
