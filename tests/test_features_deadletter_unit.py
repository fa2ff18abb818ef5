"""broker.features.deadletter without a broker: the dead-lettered copy (x-death and friends), the cycle rule,
and routing through a fake Router."""

from __future__ import annotations

import datetime
from collections.abc import Collection
from typing import Any

import pytest

from amqpd.broker.features.deadletter import dead_letter, is_cycle, make_dead_letter
from amqpd.broker.model.exchange import DirectExchange, Exchange
from amqpd.broker.model.message import Message
from amqpd.broker.model.queue import Queue
from tests.support.model_fakes import make_queue, message, ready_bodies


class FakeRouter:
    """A Router: named exchanges, and routes given as {(exchange, routing key): [queues]}."""

    def __init__(self, exchanges: list[str], routes: dict[tuple[str, str], list[Queue]]) -> None:
        self.name = "/"
        self.exchanges: dict[str, Exchange] = {name: DirectExchange(name) for name in exchanges}
        self.reply_queues: dict[str, Queue] = {}
        self.committer = None
        self.routes = routes
        self.asked: list[tuple[str, str]] = []
        self.next_message_id = iter(range(1, 1000)).__next__

    def route(self, ex: Exchange, msg: Message, routing_key: str | None = None) -> Collection[Queue]:
        key = msg.routing_key if routing_key is None else routing_key
        self.asked.append((ex.name, key))
        return self.routes.get((ex.name, key), [])


def headers_of(msg: Message) -> dict[str, Any]:
    h = msg.properties.headers
    assert isinstance(h, dict)
    return h


# ------------------------------------------------------------------------------------------- the copy


def test_first_death_writes_x_death_and_the_x_first_death_headers() -> None:
    msg = message(b"body", routing_key="rk", exchange="ex", headers={"CC": ["cc1"], "zz": 1, "aa": 2})
    dead, keys = make_dead_letter(msg, "rejected", "q1", "dlx", None)
    assert keys == ["rk", "cc1"]
    assert (dead.exchange, dead.routing_key, dead.body) == ("dlx", "rk", b"body")
    headers = headers_of(dead)
    assert list(headers) == sorted(headers)  # RabbitMQ sorts the table
    assert headers["x-first-death-reason"] == "rejected"
    assert headers["x-first-death-queue"] == "q1"
    assert headers["x-first-death-exchange"] == "ex"
    assert headers["CC"] == ["cc1"] and headers["zz"] == 1
    [death] = headers["x-death"]
    assert death["count"] == 1
    assert death["reason"] == "rejected"
    assert death["queue"] == "q1"
    assert death["exchange"] == "ex"
    assert death["routing-keys"] == ["rk", "cc1"]
    assert isinstance(death["time"], datetime.datetime)
    assert "original-expiration" not in death
    assert headers_of(msg) == {"CC": ["cc1"], "zz": 1, "aa": 2}  # the original is untouched


def test_expiration_is_removed_and_kept_as_original_expiration() -> None:
    msg = message(b"m", expiration=5000)
    dead, _keys = make_dead_letter(msg, "expired", "q1", "dlx", None)
    assert dead.properties.expiration is None
    assert headers_of(dead)["x-death"][0]["original-expiration"] == "5000"


def test_a_second_death_in_the_same_queue_for_the_same_reason_bumps_the_count() -> None:
    first, _ = make_dead_letter(message(b"m", exchange="ex"), "expired", "q1", "dlx", None)
    elsewhere, _ = make_dead_letter(first, "rejected", "q2", "dlx", None)
    again, _ = make_dead_letter(elsewhere, "expired", "q1", "dlx", None)
    deaths = headers_of(again)["x-death"]
    assert [(d["queue"], d["reason"], d["count"]) for d in deaths] == [("q1", "expired", 2), ("q2", "rejected", 1)]
    headers = headers_of(again)
    # the first death is remembered, not overwritten
    assert (headers["x-first-death-queue"], headers["x-first-death-reason"]) == ("q1", "expired")
    assert headers["x-first-death-exchange"] == "ex"


def test_old_style_duplicate_death_entries_are_merged_with_their_counts_summed() -> None:
    old = [
        {"queue": "q1", "reason": "expired", "count": 2},
        {"queue": "q9", "reason": "maxlen", "count": 1},
        {"queue": "q1", "reason": "expired", "count": 3},
    ]
    dead, _ = make_dead_letter(message(b"m", headers={"x-death": old}), "expired", "q1", "dlx", None)
    deaths = headers_of(dead)["x-death"]
    assert [(d["queue"], d["reason"], d["count"]) for d in deaths] == [("q1", "expired", 6), ("q9", "maxlen", 1)]


def test_a_dead_letter_routing_key_replaces_the_keys_and_drops_cc() -> None:
    msg = message(b"m", routing_key="rk", headers={"CC": ["cc1", "cc2"]})
    dead, keys = make_dead_letter(msg, "maxlen", "q1", "dlx", "dead-key")
    assert keys == ["dead-key"]
    assert dead.routing_key == "dead-key"
    headers = headers_of(dead)
    assert "CC" not in headers
    assert headers["x-death"][0]["routing-keys"] == ["rk", "cc1", "cc2"]  # the death records the original keys


@pytest.mark.parametrize(("mode", "persistent"), [(2, True), (1, False), (None, False)])
def test_the_copy_is_persistent_when_the_original_was(mode: int | None, persistent: bool) -> None:
    dead, _ = make_dead_letter(message(b"m", delivery_mode=mode), "expired", "q1", "dlx", None)
    assert dead.persistent is persistent


# ----------------------------------------------------------------------------------------------- cycles


@pytest.mark.parametrize(
    ("deaths", "cycle"),
    [
        ([], False),
        ([{"queue": "other", "reason": "expired"}], False),
        ([{"queue": "q", "reason": "expired"}], True),
        ([{"queue": "other", "reason": "maxlen"}, {"queue": "q", "reason": "expired"}], True),
        # a rejection since (more recent entries come first), or the death in q itself a rejection: no cycle
        ([{"queue": "other", "reason": "rejected"}, {"queue": "q", "reason": "expired"}], False),
        ([{"queue": "q", "reason": "rejected"}], False),
        # only deaths up to q's first (most recent) entry count
        ([{"queue": "q", "reason": "expired"}, {"queue": "x", "reason": "rejected"}], True),
    ],
)
def test_cycle_rule(deaths: list[dict[str, Any]], cycle: bool) -> None:
    assert is_cycle("q", deaths) is cycle


# ---------------------------------------------------------------------------------------------- routing


def test_dead_letter_routes_the_copy_to_the_dlx_queues() -> None:
    source, _clock, _host = make_queue({"x-dead-letter-exchange": "dlx"}, name="source")
    target, _clock, _host = make_queue(name="target")
    router = FakeRouter(["dlx"], {("dlx", "rk"): [target]})
    dead_letter(router, source, [message(b"m0"), message(b"m1")], "expired")
    assert ready_bodies(target) == [b"m0", b"m1"]
    deaths = headers_of(target.ready[0].msg)["x-death"]
    assert (deaths[0]["queue"], deaths[0]["reason"]) == ("source", "expired")


def test_dead_letter_uses_the_queues_routing_key_once() -> None:
    source, _clock, _host = make_queue(
        {"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "dk"}, name="source"
    )
    target, _clock, _host = make_queue(name="target")
    router = FakeRouter(["dlx"], {("dlx", "dk"): [target], ("dlx", "rk"): [target]})
    dead_letter(router, source, [message(b"m", headers={"CC": ["rk"]})], "rejected")
    assert router.asked == [("dlx", "dk")]
    assert ready_bodies(target) == [b"m"]


def test_a_message_reaching_two_keys_bound_to_one_queue_arrives_once() -> None:
    source, _clock, _host = make_queue({"x-dead-letter-exchange": "dlx"}, name="source")
    target, _clock, _host = make_queue(name="target")
    router = FakeRouter(["dlx"], {("dlx", "rk"): [target], ("dlx", "cc"): [target]})
    dead_letter(router, source, [message(b"m", headers={"CC": ["cc"]})], "maxlen")
    assert router.asked == [("dlx", "rk"), ("dlx", "cc")]
    assert ready_bodies(target) == [b"m"]


def test_an_automatic_cycle_is_dropped_but_a_rejection_breaks_it() -> None:
    source, _clock, _host = make_queue({"x-dead-letter-exchange": "dlx"}, name="q1")
    back, _ = make_dead_letter(message(b"m"), "expired", "q1", "dlx", None)  # died in q1 before
    router = FakeRouter(["dlx"], {("dlx", "rk"): [source]})
    dead_letter(router, source, [back], "expired")  # q1 -> dlx -> q1 again, no rejection: a cycle
    assert source.message_count == 0
    dead_letter(router, source, [back], "rejected")  # a client rejected it this time: not a cycle
    assert ready_bodies(source) == [b"m"]


def test_a_cycle_drops_only_the_queues_the_message_died_in() -> None:
    source, _clock, _host = make_queue({"x-dead-letter-exchange": "dlx"}, name="q1")
    fresh, _clock, _host = make_queue(name="fresh")
    back, _ = make_dead_letter(message(b"m"), "maxlen", "q1", "dlx", None)
    router = FakeRouter(["dlx"], {("dlx", "rk"): [source, fresh]})
    dead_letter(router, source, [back], "expired")
    assert source.message_count == 0
    assert ready_bodies(fresh) == [b"m"]


def test_dead_letters_are_dropped_when_the_dlx_does_not_exist() -> None:
    source, _clock, _host = make_queue({"x-dead-letter-exchange": "missing"}, name="source")
    target, _clock, _host = make_queue(name="target")
    router = FakeRouter(["dlx"], {("missing", "rk"): [target]})
    dead_letter(router, source, [message(b"m")], "expired")
    assert router.asked == []
    assert target.message_count == 0


def test_a_queue_without_a_dlx_dead_letters_nothing() -> None:
    source, _clock, _host = make_queue({"x-message-ttl": 10}, name="source")
    router = FakeRouter(["dlx", ""], {})
    dead_letter(router, source, [message(b"m")], "expired")
    assert router.asked == []
