"""Exchange types: binding identity, routing per type, headers x-match semantics and validation."""

from __future__ import annotations

import datetime
from collections.abc import Hashable, Mapping
from decimal import Decimal

import pytest

from amqpd.broker.model.exchange import (
    EXCHANGE_TYPES,
    DirectExchange,
    Exchange,
    FanoutExchange,
    HeadersExchange,
    TopicExchange,
)
from amqpd.protocol.errors import PRECONDITION_FAILED, ChannelError


def route(ex: Exchange, key: str = "", headers: Mapping[str, object] | None = None) -> set[Hashable]:
    out: set[Hashable] = set()
    ex.route(key, headers, out)
    return out


# ------------------------------------------------------------------------------------------ registry, base class


def test_registry_maps_each_amqp_type_name_to_its_class() -> None:
    assert {
        "direct": DirectExchange,
        "fanout": FanoutExchange,
        "topic": TopicExchange,
        "headers": HeadersExchange,
    } == EXCHANGE_TYPES
    assert all(cls.type_name == name for name, cls in EXCHANGE_TYPES.items())
    assert [name for name, cls in EXCHANGE_TYPES.items() if cls.needs_headers] == ["headers"]


def test_constructor_keeps_flags_and_reads_alternate_exchange() -> None:
    ex = DirectExchange("x", durable=True, auto_delete=True, internal=True, arguments={"alternate-exchange": "ae"})
    assert (ex.name, ex.durable, ex.auto_delete, ex.internal) == ("x", True, True, True)
    assert ex.arguments == {"alternate-exchange": "ae"}
    assert ex.alternate_exchange == "ae"
    assert DirectExchange("y").alternate_exchange is None
    assert DirectExchange("z", arguments={"alternate-exchange": 5}).alternate_exchange is None


@pytest.mark.parametrize("cls", list(EXCHANGE_TYPES.values()))
def test_same_binding_twice_is_one_binding(cls: type[Exchange]) -> None:
    ex = cls("x")
    assert ex.bind("q", "k", {"a": 1})
    assert not ex.bind("q", "k", {"a": 1})
    assert ex.binding_count() == 1
    assert ex.unbind("q", "k", {"a": 1})
    assert not ex.unbind("q", "k", {"a": 1})
    assert not ex.has_bindings()


@pytest.mark.parametrize("cls", list(EXCHANGE_TYPES.values()))
def test_binding_arguments_compare_by_value(cls: type[Exchange]) -> None:
    ex = cls("x")
    assert ex.bind("q", "k", None)
    assert not ex.bind("q", "k", {})  # no arguments and an empty table are the same binding
    assert ex.bind("q", "k", {"a": 1, "b": [1, {"c": "d"}]})
    assert not ex.bind("q", "k", {"b": [1, {"c": "d"}], "a": 1})  # key order does not matter
    assert ex.bind("q", "k", {"a": True, "b": [1, {"c": "d"}]})  # bool true is not integer 1
    assert ex.bind("q", "k", {"a": 1.0, "b": [1, {"c": "d"}]})  # nor is a double
    assert ex.bind("q", "other", None)
    assert ex.bind("q2", "k", None)
    assert ex.binding_count() == 6


@pytest.mark.parametrize("cls", list(EXCHANGE_TYPES.values()))
def test_unbind_all_drops_only_that_destinations_bindings(cls: type[Exchange]) -> None:
    ex = cls("x")
    ex.bind("q1", "a", None)
    ex.bind("q1", "b", {"x-match": "any", "h": 1})
    ex.bind("q1", "a", {"h": 2})
    ex.bind("q2", "a", None)
    assert ex.unbind_all("q1") == 3
    assert ex.unbind_all("q1") == 0
    assert list(ex.bindings()) == [("q2", "a", {})]
    assert route(ex, "a", {}) == {"q2"}
    assert ex.unbind_all("q2") == 1
    assert not ex.has_bindings()
    assert route(ex, "a", {}) == set()


def test_bindings_is_a_snapshot_that_survives_unbinding() -> None:
    ex = TopicExchange("x")
    ex.bind("q1", "a.*", {"k": "v"})
    ex.bind("q2", "#", None)
    seen = []
    for dest, key, args in ex.bindings():
        seen.append((dest, key, args))
        ex.unbind(dest, key, args)
    assert sorted(seen, key=str) == [("q1", "a.*", {"k": "v"}), ("q2", "#", {})]
    assert ex.binding_count() == 0


def test_exchanges_can_be_destinations() -> None:
    src = FanoutExchange("src")
    dst = TopicExchange("dst")
    src.bind(dst, "", None)
    assert route(src) == {dst}
    assert src.unbind_all(dst) == 1


def test_route_adds_to_what_out_already_holds() -> None:
    ex = DirectExchange("x")
    ex.bind("q", "k", None)
    out: set[Hashable] = {"earlier"}
    ex.route("k", None, out)
    assert out == {"earlier", "q"}


# ------------------------------------------------------------------------------------------ direct, fanout, topic


def test_direct_routes_on_exact_key_equality() -> None:
    ex = DirectExchange("x")
    ex.bind("q1", "k", None)
    ex.bind("q2", "k", None)
    ex.bind("q3", "K", None)
    assert route(ex, "k") == {"q1", "q2"}
    assert route(ex, "K") == {"q3"}
    assert route(ex, "k.x") == set()
    assert route(ex, "") == set()


def test_direct_keeps_routing_while_any_argument_variant_remains() -> None:
    ex = DirectExchange("x")
    ex.bind("q", "k", None)
    ex.bind("q", "k", {"v": 2})
    ex.unbind("q", "k", None)
    assert route(ex, "k") == {"q"}
    ex.unbind("q", "k", {"v": 2})
    assert route(ex, "k") == set()


def test_fanout_ignores_the_key_and_refcounts_a_destinations_bindings() -> None:
    ex = FanoutExchange("x")
    ex.bind("q1", "a", None)
    ex.bind("q1", "b", None)
    ex.bind("q1", "b", {"v": 1})
    ex.bind("q2", "", None)
    assert route(ex, "anything") == {"q1", "q2"}
    ex.unbind("q1", "a", None)
    ex.unbind("q1", "b", None)
    assert route(ex, "") == {"q1", "q2"}
    ex.unbind("q1", "b", {"v": 1})
    assert route(ex, "") == {"q2"}


def test_topic_routes_through_wildcards() -> None:
    ex = TopicExchange("x")
    ex.bind("orange", "*.orange.*", None)
    ex.bind("rabbit", "*.*.rabbit", None)
    ex.bind("rabbit", "lazy.#", None)
    ex.bind("all", "#", None)
    assert route(ex, "quick.orange.rabbit") == {"orange", "rabbit", "all"}
    assert route(ex, "lazy") == {"rabbit", "all"}
    assert route(ex, "quick.brown.fox") == {"all"}
    assert route(ex, "") == {"all"}
    ex.unbind("rabbit", "lazy.#", None)
    assert route(ex, "lazy") == {"all"}
    assert route(ex, "a.b.rabbit") == {"rabbit", "all"}


def test_topic_same_pattern_with_two_argument_tables_needs_both_unbound() -> None:
    ex = TopicExchange("x")
    ex.bind("q", "a.#", None)
    ex.bind("q", "a.#", {"v": 1})
    ex.unbind("q", "a.#", {"v": 1})
    assert route(ex, "a.b") == {"q"}
    ex.unbind("q", "a.#", None)
    assert route(ex, "a.b") == set()


# ------------------------------------------------------------------------------------------ headers


def headers_exchange(*bindings: dict[str, object]) -> HeadersExchange:
    ex = HeadersExchange("h")
    for i, args in enumerate(bindings):
        HeadersExchange.validate_binding(args)
        ex.bind(f"b{i}", "", args)
    return ex


def test_headers_default_mode_is_all() -> None:
    ex = headers_exchange({"a": 1, "b": "x"})
    assert route(ex, headers={"a": 1, "b": "x", "c": 3}) == {"b0"}
    assert route(ex, headers={"a": 1}) == set()
    assert route(ex, headers={"a": 1, "b": "y"}) == set()
    assert route(ex, headers=None) == set()


def test_headers_any_needs_one_equal_header() -> None:
    ex = headers_exchange({"x-match": "any", "a": 1, "b": "x"})
    assert route(ex, headers={"b": "x"}) == {"b0"}
    assert route(ex, headers={"a": 2, "b": "y"}) == set()
    assert route(ex, headers={}) == set()


def test_headers_ignore_x_prefixed_binding_keys_in_all_and_any() -> None:
    ex = headers_exchange({"x-match": "all", "x-tag": "t"}, {"x-match": "any", "x-tag": "t", "a": 1})
    assert route(ex, headers={}) == {"b0"}  # "all" with nothing to compare matches every message
    assert route(ex, headers={"x-tag": "t"}) == {"b0"}
    assert route(ex, headers={"a": 1}) == {"b0", "b1"}


def test_headers_with_x_modes_compare_x_prefixed_keys_but_never_x_match() -> None:
    ex = headers_exchange({"x-match": "all-with-x", "x-tag": "t"}, {"x-match": "any-with-x", "x-tag": "t", "a": 1})
    assert route(ex, headers={"x-tag": "t"}) == {"b0", "b1"}
    assert route(ex, headers={"x-tag": "u", "a": 1}) == {"b1"}
    assert route(ex, headers={"x-match": "all-with-x"}) == set()


def test_headers_any_with_no_terms_matches_nothing_and_all_matches_everything() -> None:
    ex = headers_exchange({"x-match": "any"}, {})
    assert route(ex, headers={"a": 1}) == {"b1"}
    assert route(ex, headers=None) == {"b1"}


def test_headers_void_binding_value_means_present_with_any_value() -> None:
    ex = headers_exchange({"a": None}, {"x-match": "any", "a": None, "b": 1})
    assert route(ex, headers={"a": "whatever"}) == {"b0", "b1"}
    assert route(ex, headers={"a": None}) == {"b0", "b1"}
    assert route(ex, headers={"b": 2}) == set()


@pytest.mark.parametrize(
    ("bound", "sent", "matches"),
    [
        (1, 1, True),
        (1, 1.0, True),  # Erlang ==, as in RabbitMQ 3.10-3.12
        (True, 1, False),  # an atom is never a number
        (1, True, False),
        (False, 0, False),
        (True, True, True),
        ("abc", b"abc", True),  # longstr vs non-UTF-8 longstr as pamqp decodes it: both binaries
        ("abc", bytearray(b"abc"), True),  # longstr vs byte array: both binaries
        ("1", 1, False),
        (Decimal("1.0"), Decimal("1.0"), True),
        (Decimal("1.0"), Decimal("1"), False),  # {1,10} vs {0,1}
        (datetime.datetime(2024, 1, 2, tzinfo=datetime.UTC), datetime.datetime(2024, 1, 2, tzinfo=datetime.UTC), True),
        ([1, "a"], [1, "a"], True),
        ([1, "a"], ["a", 1], False),
        ({"k": [True]}, {"k": [True]}, True),
        ({"k": [True]}, {"k": [1]}, False),
        ("a", None, False),
    ],
)
def test_headers_compare_field_values_like_rabbitmq(bound: object, sent: object, matches: bool) -> None:
    ex = headers_exchange({"h": bound})
    assert route(ex, headers={"h": sent}) == ({"b0"} if matches else set())


def test_headers_routes_each_destination_once_and_unbinds() -> None:
    ex = HeadersExchange("h")
    ex.bind("q", "", {"x-match": "any", "a": 1})
    ex.bind("q", "", {"x-match": "any", "b": 1})
    assert route(ex, headers={"a": 1, "b": 1}) == {"q"}
    ex.unbind("q", "", {"x-match": "any", "a": 1})
    assert route(ex, headers={"a": 1}) == set()
    assert route(ex, headers={"b": 1}) == {"q"}


@pytest.mark.parametrize("mode", ["all", "any", "all-with-x", "any-with-x"])
def test_headers_binding_accepts_the_four_modes(mode: str) -> None:
    HeadersExchange.validate_binding({"x-match": mode})


def test_headers_binding_without_x_match_is_accepted() -> None:
    HeadersExchange.validate_binding(None)
    HeadersExchange.validate_binding({"a": 1})


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        ("bogus", 'Invalid x-match field value <<"bogus">>; expected all, any, all-with-x, or any-with-x'),
        ("ALL", 'Invalid x-match field value <<"ALL">>; expected all, any, all-with-x, or any-with-x'),
        ('a"b', 'Invalid x-match field value <<"a\\"b">>; expected all, any, all-with-x, or any-with-x'),
        ("é", 'Invalid x-match field value <<"é">>; expected all, any, all-with-x, or any-with-x'),
        ("ā", "Invalid x-match field value <<196,129>>; expected all, any, all-with-x, or any-with-x"),
        (1, "Invalid x-match field type signedint (value 1); expected longstr"),
        (2**40, "Invalid x-match field type long (value 1099511627776); expected longstr"),
        ([1], "Invalid x-match field type array (value [{signedint,1}]); expected longstr"),
        ({"a": 1}, 'Invalid x-match field type table (value [{<<"a">>,signedint,1}]); expected longstr'),
        (Decimal("1.5"), "Invalid x-match field type decimal (value {1,15}); expected longstr"),
        (True, "Invalid x-match field type bool (value true); expected longstr"),
        (None, "Invalid x-match field type void (value undefined); expected longstr"),
        (bytearray(b"all"), 'Invalid x-match field type binary (value <<"all">>); expected longstr'),
    ],
)
def test_headers_binding_rejects_a_bad_x_match_with_406(value: object, detail: str) -> None:
    with pytest.raises(ChannelError) as info:
        HeadersExchange.validate_binding({"x-match": value})
    assert info.value.code == PRECONDITION_FAILED
    assert info.value.detail == detail
    assert info.value.reply_text == f"PRECONDITION_FAILED - {detail}"


@pytest.mark.parametrize("cls", [DirectExchange, FanoutExchange, TopicExchange])
def test_other_types_accept_any_binding_arguments(cls: type[Exchange]) -> None:
    cls.validate_binding({"x-match": "bogus"})
