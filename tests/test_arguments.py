"""Declare-argument validation, redeclare equivalence and expiration parsing give RabbitMQ 3.10.8 texts.

Expected texts marked "probed" were read off a real RabbitMQ 3.10.8 over the wire, with the value sent in the
AMQP type pamqp picks for the Python value used here.
"""

from __future__ import annotations

import datetime
import decimal
from collections.abc import Mapping

import pytest

from amqpd.broker.model.arguments import (
    ExchangeShape,
    QueueShape,
    amqp_type_name,
    check_exchange_equivalence,
    check_queue_equivalence,
    erlang_float,
    validate_consume_arguments,
    validate_exchange_arguments,
    validate_expiration,
    validate_queue_arguments,
)
from amqpd.protocol.errors import AMQPError

Q = "invalid arg '{key}' for queue 'q' in vhost '/': "


def _declare_error(args: Mapping[str, object], **flags: bool) -> AMQPError:
    with pytest.raises(AMQPError) as caught:
        validate_queue_arguments("q", "/", args, **flags)
    return caught.value


# ----------------------------------------------------------------------------------------------------
# Integer arguments: every bad value class (probed)

INT_ARGS = ("x-message-ttl", "x-expires", "x-max-length", "x-max-length-bytes", "x-max-priority")
WRONG_TYPES: list[tuple[object, str]] = [
    ("10", '"expected integer, got longstr"'),
    (b"\xff", '"expected integer, got longstr"'),
    (1.5, '"expected integer, got float"'),
    (True, '"expected integer, got bool"'),
    (decimal.Decimal("1.5"), '"expected integer, got decimal"'),
    (datetime.datetime(2024, 1, 1), '"expected integer, got timestamp"'),
    (None, '"expected integer, got void"'),
    ({}, '"expected integer, got table"'),
    ([], '"expected integer, got array"'),
    (bytearray(b"ab"), '"expected integer, got binary"'),
]


@pytest.mark.parametrize("key", INT_ARGS)
@pytest.mark.parametrize(("value", "term"), WRONG_TYPES)
def test_integer_argument_of_wrong_type_names_the_amqp_type(key: str, value: object, term: str) -> None:
    error = _declare_error({key: value})
    assert (error.code, error.detail) == (406, Q.format(key=key) + term)


@pytest.mark.parametrize(
    ("key", "value", "term"),
    [
        ("x-message-ttl", -1, "{value_negative,-1}"),
        ("x-message-ttl", -5, "{value_negative,-5}"),
        ("x-message-ttl", 2**40, "{value_too_large,1099511627776}"),
        ("x-message-ttl", 315_360_000_001, "{value_too_large,315360000001}"),
        ("x-expires", -1, "{value_negative,-1}"),
        ("x-expires", 0, "{value_zero,0}"),
        ("x-expires", 315_360_000_001, "{value_too_large,315360000001}"),
        ("x-max-length", -1, "{value_negative,-1}"),
        ("x-max-length-bytes", -1, "{value_negative,-1}"),
        ("x-max-priority", -1, "{value_negative,-1}"),
        ("x-max-priority", 256, "{max_value_exceeded,256}"),
        ("x-max-priority", 65535, "{max_value_exceeded,65535}"),
        ("x-max-priority", 2**40, "{max_value_exceeded,1099511627776}"),
        ("x-queue-version", -1, "{value_negative,-1}"),
        ("x-queue-version", 3, "\"unsupported queue version '3'\""),
        ("x-queue-version", "1", '"expected integer, got longstr"'),
        ("x-consumer-timeout", 0, "{value_zero,0}"),
        ("x-consumer-timeout", -5, "{value_negative,-5}"),
        ("x-consumer-timeout", "60000", '"expected integer, got longstr"'),
    ],
)
def test_integer_argument_out_of_range_is_refused(key: str, value: object, term: str) -> None:
    error = _declare_error({key: value})
    assert (error.code, error.detail) == (406, Q.format(key=key) + term)


@pytest.mark.parametrize(
    "args",
    [
        {"x-message-ttl": 0},
        {"x-message-ttl": 315_360_000_000},
        {"x-expires": 1},
        {"x-expires": 315_360_000_000},
        {"x-max-length": 0},
        {"x-max-length": 2**40},
        {"x-max-length-bytes": 0},
        {"x-max-priority": 0},
        {"x-max-priority": 255},
        {"x-queue-version": 1},
        {"x-queue-version": 2},
        {"x-consumer-timeout": 1},
        {"x-single-active-consumer": True},
        {"x-single-active-consumer": False},
        {"x-overflow": "drop-head"},
        {"x-overflow": "reject-publish"},
        {"x-overflow": "reject-publish-dlx"},
        {"x-queue-mode": "lazy"},
        {"x-queue-mode": "default"},
        {"x-queue-type": "classic"},
        {"x-queue-master-locator": "min-masters"},
        {"x-queue-master-locator": "client-local"},
        {"x-queue-master-locator": "random"},
        {"x-dead-letter-exchange": ""},
        {"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "rk"},
        {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "rk"},
        {"x-unknown": -1, "foo": "bar"},
        {},
    ],
)
def test_valid_classic_arguments_are_accepted(args: Mapping[str, object]) -> None:
    validate_queue_arguments("q", "/", args)


# ----------------------------------------------------------------------------------------------------
# String and boolean arguments (probed)

STRING_WRONG_TYPES: list[tuple[object, str]] = [
    (1, "byte"),
    (1000, "short"),
    (True, "bool"),
    (bytearray(b"ab"), "binary"),
    (None, "void"),
    (1.5, "float"),
]


@pytest.mark.parametrize("key", ["x-overflow", "x-queue-mode", "x-queue-type", "x-queue-master-locator"])
@pytest.mark.parametrize(("value", "type_name"), STRING_WRONG_TYPES)
def test_string_argument_of_wrong_type_is_unacceptable(key: str, value: object, type_name: str) -> None:
    error = _declare_error({key: value})
    assert error.detail == Q.format(key=key) + f"{{unacceptable_type,{type_name}}}"


@pytest.mark.parametrize(
    ("value", "type_name"), [*STRING_WRONG_TYPES[:2], ("yes", "longstr"), ("", "longstr")]
)
def test_single_active_consumer_must_be_a_bool(value: object, type_name: str) -> None:
    error = _declare_error({"x-single-active-consumer": value})
    assert error.detail == Q.format(key="x-single-active-consumer") + f"{{unacceptable_type,{type_name}}}"


@pytest.mark.parametrize(
    ("args", "key", "term"),
    [
        ({"x-overflow": "bogus"}, "x-overflow", "invalid_overflow"),
        ({"x-overflow": ""}, "x-overflow", "invalid_overflow"),
        ({"x-queue-mode": "bogus"}, "x-queue-mode", "\"unsupported queue mode 'bogus'\""),
        ({"x-queue-mode": ""}, "x-queue-mode", "\"unsupported queue mode ''\""),
        ({"x-queue-mode": "café"}, "x-queue-mode", "\"unsupported queue mode 'café'\""),
        ({"x-queue-type": "bogus"}, "x-queue-type", "\"unsupported queue type 'bogus'\""),
        ({"x-queue-type": "Classic"}, "x-queue-type", "\"unsupported queue type 'Classic'\""),
        ({"x-queue-type": 'bo"g\\us'}, "x-queue-type", '"unsupported queue type \'bo\\"g\\\\us\'"'),
        # amqpd decision: streams are not supported (RabbitMQ would create one).
        ({"x-queue-type": "stream"}, "x-queue-type", "\"unsupported queue type 'stream'\""),
        # RabbitMQ 3.10-3.13 crash with 541 and no text here; we answer like x-queue-leader-locator does.
        ({"x-queue-master-locator": "bogus"}, "x-queue-master-locator", "invalid_queue_locator_arg"),
        ({"x-dead-letter-routing-key": "rk"}, "x-dead-letter-routing-key", "routing_key_but_no_dlx_defined"),
        ({"x-dead-letter-routing-key": 1}, "x-dead-letter-routing-key", "{unacceptable_type,byte}"),
        (
            {"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": bytearray(b"rk")},
            "x-dead-letter-routing-key",
            "{unacceptable_type,binary}",
        ),
    ],
)
def test_bad_string_argument_gets_rabbitmq_term(args: Mapping[str, object], key: str, term: str) -> None:
    assert _declare_error(args).detail == Q.format(key=key) + term


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (1, "byte"),
        (100000, "signedint"),
        (True, "bool"),
        (bytearray(b"ab"), "binary"),
        (None, "void"),
        (1.5, "float"),
    ],
)
def test_dead_letter_exchange_of_wrong_type_uses_the_channel_wording(value: object, type_name: str) -> None:
    error = _declare_error({"x-dead-letter-exchange": value})
    assert (
        error.detail
        == f"invalid type '{type_name}' for arg 'x-dead-letter-exchange' in queue 'q' in vhost '/'"
    )


# ----------------------------------------------------------------------------------------------------
# Order of checks and queue types (probed)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        # declare_args order, not table order
        ({"x-max-length": -1, "x-message-ttl": -1}, Q.format(key="x-message-ttl") + "{value_negative,-1}"),
        ({"x-max-length": -1, "x-expires": 0}, Q.format(key="x-expires") + "{value_zero,0}"),
        # the DLX type check comes first, then x-queue-type
        (
            {"x-message-ttl": -1, "x-dead-letter-exchange": 1},
            "invalid type 'byte' for arg 'x-dead-letter-exchange' in queue 'q' in vhost '/'",
        ),
        (
            {"x-message-ttl": -1, "x-queue-type": "bogus"},
            Q.format(key="x-queue-type") + "\"unsupported queue type 'bogus'\"",
        ),
        # foreign arguments are reported in table order, after every value check
        (
            {"x-quorum-initial-group-size": 5, "x-max-age": "1D"},
            "invalid arg 'x-quorum-initial-group-size' for queue 'q' in vhost '/' of queue type rabbit_classic_queue",
        ),
        (
            {"x-max-age": "1D", "x-delivery-limit": 5},
            "invalid arg 'x-max-age' for queue 'q' in vhost '/' of queue type rabbit_classic_queue",
        ),
        ({"x-delivery-limit": 5, "x-message-ttl": -1}, Q.format(key="x-message-ttl") + "{value_negative,-1}"),
    ],
)
def test_checks_run_in_rabbitmq_order(args: Mapping[str, object], expected: str) -> None:
    assert _declare_error(args).detail == expected


@pytest.mark.parametrize(
    "key",
    # (x-delivery-limit is accepted on classic queues as an amqpd extension: see test_features_*)
    ["x-dead-letter-strategy", "x-quorum-initial-group-size", "x-max-in-memory-length"],
)
def test_quorum_only_argument_is_invalid_on_a_classic_queue(key: str) -> None:
    error = _declare_error({key: 1})
    assert (
        error.detail == f"invalid arg '{key}' for queue 'q' in vhost '/' of queue type rabbit_classic_queue"
    )


QQ = {"x-queue-type": "quorum"}


@pytest.mark.parametrize(
    ("args", "flags", "expected"),
    [
        (QQ, {"durable": False}, "invalid property 'non-durable' for queue 'q' in vhost '/'"),
        (QQ, {"exclusive": True}, "invalid property 'exclusive-owner' for queue 'q' in vhost '/'"),
        (QQ, {"auto_delete": True}, "invalid property 'auto-delete' for queue 'q' in vhost '/'"),
        (
            QQ,
            {"auto_delete": True, "exclusive": True, "durable": False},
            "invalid property 'auto-delete' for queue 'q' in vhost '/'",
        ),
        (
            {**QQ, "x-max-priority": 5},
            {"durable": False},
            "invalid arg 'x-max-priority' for queue 'q' in vhost '/' of queue type rabbit_quorum_queue",
        ),
        (
            {**QQ, "x-queue-mode": "lazy"},
            {},
            "invalid arg 'x-queue-mode' for queue 'q' in vhost '/' of queue type rabbit_quorum_queue",
        ),
        ({**QQ, "x-delivery-limit": -1}, {}, Q.format(key="x-delivery-limit") + "{value_negative,-1}"),
        (
            {**QQ, "x-dead-letter-strategy": "bogus"},
            {},
            Q.format(key="x-dead-letter-strategy") + "invalid_dlx_strategy",
        ),
        (
            {**QQ, "x-quorum-initial-group-size": 0},
            {},
            Q.format(key="x-quorum-initial-group-size") + "{value_zero,0}",
        ),
        (QQ, {"server_named": True}, "Cannot declare a server-named queue for type rabbit_quorum_queue"),
    ],
)
def test_quorum_queue_rules(args: Mapping[str, object], flags: dict[str, bool], expected: str) -> None:
    assert _declare_error(args, **flags).detail == expected


def test_durable_quorum_queue_with_its_arguments_is_accepted() -> None:
    validate_queue_arguments(
        "q",
        "/",
        {
            **QQ,
            "x-delivery-limit": 3,
            "x-dead-letter-strategy": "at-least-once",
            "x-queue-leader-locator": "balanced",
        },
    )


def test_server_named_queue_with_bad_type_reports_the_type_not_a_crash() -> None:
    error = _declare_error({"x-queue-type": 1}, server_named=True)
    assert error.detail == Q.format(key="x-queue-type") + "{unacceptable_type,byte}"


def test_errors_are_channel_level_precondition_failures() -> None:
    error = _declare_error({"x-message-ttl": -1})
    assert error.code == 406
    assert not error.is_connection_error
    assert error.reply_text.startswith("PRECONDITION_FAILED - invalid arg")


# ----------------------------------------------------------------------------------------------------
# basic.consume arguments (probed)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            {"x-priority": "x"},
            "invalid arg 'x-priority' for queue 'q' in vhost '/': \"expected integer, got longstr\"",
        ),
        (
            {"x-priority": True},
            "invalid arg 'x-priority' for queue 'q' in vhost '/': \"expected integer, got bool\"",
        ),
        (
            {"x-priority": 1.5},
            "invalid arg 'x-priority' for queue 'q' in vhost '/': \"expected integer, got float\"",
        ),
        (
            {"x-cancel-on-ha-failover": 1},
            "invalid arg 'x-cancel-on-ha-failover' for queue 'q' in vhost '/': {unacceptable_type,byte}",
        ),
        (
            {"x-stream-offset": 1},
            "invalid arg 'x-stream-offset' for queue 'q' in vhost '/' of queue type rabbit_classic_queue",
        ),
    ],
)
def test_bad_consume_arguments_are_refused(args: Mapping[str, object], expected: str) -> None:
    with pytest.raises(AMQPError) as caught:
        validate_consume_arguments("q", "/", {}, args)
    assert (caught.value.code, caught.value.detail) == (406, expected)


def test_good_consume_arguments_are_accepted() -> None:
    validate_consume_arguments(
        "q", "/", {}, {"x-priority": -5, "x-cancel-on-ha-failover": True, "x-other": "y"}
    )


# ----------------------------------------------------------------------------------------------------
# Exchange arguments (probed)


@pytest.mark.parametrize(
    ("value", "type_name"), [(5, "byte"), (bytearray(b"ae"), "binary"), (None, "void"), (True, "bool")]
)
def test_alternate_exchange_must_be_a_longstr(value: object, type_name: str) -> None:
    with pytest.raises(AMQPError) as caught:
        validate_exchange_arguments("x", "/", {"alternate-exchange": value})
    expected = f"invalid type '{type_name}' for arg 'alternate-exchange' in exchange 'x' in vhost '/'"
    assert (caught.value.code, caught.value.detail) == (406, expected)


def test_exchange_arguments_other_than_alternate_exchange_are_ignored() -> None:
    validate_exchange_arguments("x", "/", {"alternate-exchange": "ae", "x-foo": 1, "bar": None})


# ----------------------------------------------------------------------------------------------------
# Queue redeclare equivalence (probed)

EQ = "inequivalent arg '{key}' for queue 'q' in vhost '/': "


def _shape(
    durable: bool = False, auto_delete: bool = False, exclusive: bool = False, **args: object
) -> QueueShape:
    return QueueShape(durable=durable, exclusive=exclusive, auto_delete=auto_delete, arguments=args)


def _qshape(args: Mapping[str, object], durable: bool = False) -> QueueShape:
    return QueueShape(durable=durable, exclusive=False, auto_delete=False, arguments=args)


def _queue_mismatch(current: QueueShape, received: QueueShape) -> AMQPError:
    with pytest.raises(AMQPError) as caught:
        check_queue_equivalence("q", "/", current, received)
    return caught.value


@pytest.mark.parametrize(
    ("current", "received", "expected"),
    [
        (_shape(), _shape(durable=True), EQ.format(key="durable") + "received 'true' but current is 'false'"),
        (_shape(durable=True), _shape(), EQ.format(key="durable") + "received 'false' but current is 'true'"),
        (
            _shape(),
            _shape(auto_delete=True),
            EQ.format(key="auto_delete") + "received 'true' but current is 'false'",
        ),
        (
            _shape(auto_delete=True),
            _shape(),
            EQ.format(key="auto_delete") + "received 'false' but current is 'true'",
        ),
        # durable is checked before auto_delete, both before the arguments
        (
            _shape(),
            _shape(durable=True, auto_delete=True),
            EQ.format(key="durable") + "received 'true' but current is 'false'",
        ),
        (
            _qshape({"x-max-length": 10}),
            _shape(auto_delete=True, args={"x-max-length": 20}),
            EQ.format(key="auto_delete") + "received 'true' but current is 'false'",
        ),
    ],
)
def test_queue_property_mismatch(current: QueueShape, received: QueueShape, expected: str) -> None:
    error = _queue_mismatch(current, received)
    assert (error.code, error.detail) == (406, expected)


@pytest.mark.parametrize(
    ("current", "received", "tail"),
    [
        ({"x-max-length": 10}, {"x-max-length": 20}, "received '20' but current is '10'"),
        ({}, {"x-message-ttl": 1000}, "received the value '1000' of type 'short' but current is none"),
        ({"x-message-ttl": 1000}, {}, "received none but current is the value '1000' of type 'short'"),
        ({"x-message-ttl": 1000}, {"x-message-ttl": -1}, "received '-1' but current is '1000'"),
        ({}, {"x-message-ttl": -1}, "received the value '-1' of type 'byte' but current is none"),
        (
            {},
            {"x-message-ttl": 100000},
            "received the value '100000' of type 'signedint' but current is none",
        ),
        ({"x-max-length": 10}, {"x-max-length": "10"}, "received '10' but current is '10'"),
        ({"x-max-length": 10}, {"x-max-length": 10.0}, "received '10.0' but current is '10'"),
        ({"x-max-length": 10}, {"x-max-length": 1e10}, "received '1.0e10' but current is '10'"),
        ({"x-max-length": 10}, {"x-max-length": 1e-5}, "received '1.0e-5' but current is '10'"),
        ({"x-max-length": 10}, {"x-max-length": 0.0001}, "received '0.0001' but current is '10'"),
        ({"x-max-length": 10}, {"x-max-length": True}, "received 'true' but current is '10'"),
        ({"x-max-length": 10}, {"x-max-length": None}, "received none but current is '10'"),
        ({"x-max-length": 10}, {"x-max-length": bytearray(b"ab")}, "received 'ab' but current is '10'"),
        ({"x-max-length": 1}, {"x-max-length": "café"}, "received 'café' but current is '1'"),
        (
            {"x-max-length": 10},
            {"x-max-length": datetime.datetime(2023, 11, 14, 22, 13, 20)},
            "received '1700000000' but current is '10'",
        ),
        (
            {"x-max-length": 10},
            {"x-max-length": {"a": 1000, "b": "x"}},
            'received \'[{<<"a">>,short,1000},{<<"b">>,longstr,<<"x">>}]\' but current is \'10\'',
        ),
        (
            {"x-max-length": 10},
            {"x-max-length": [1000, "x"]},
            "received '[{short,1000},{longstr,<<\"x\">>}]' but current is '10'",
        ),
        ({}, {"x-max-length": None}, "received the value 'undefined' of type 'void' but current is none"),
        (
            {},
            {"x-max-length": decimal.Decimal("1.5")},
            "received the value '{1,15}' of type 'decimal' but current is none",
        ),
        ({}, {"x-max-length": 1.5}, "received the value '1.5' of type 'float' but current is none"),
        ({}, {"x-max-length": True}, "received the value 'true' of type 'bool' but current is none"),
        (
            {},
            {"x-max-length": bytearray(b"ab")},
            "received the value 'ab' of type 'binary' but current is none",
        ),
        ({}, {"x-max-length": "café"}, "received the value 'café' of type 'longstr' but current is none"),
        (
            {"x-single-active-consumer": True},
            {"x-single-active-consumer": False},
            "received 'false' but current is 'true'",
        ),
        ({}, {"x-queue-type": "quorum"}, "received the value 'quorum' of type 'longstr' but current is none"),
        (
            {"x-queue-type": "classic"},
            {"x-queue-type": "quorum"},
            "received 'quorum' but current is 'classic'",
        ),
        ({"x-queue-mode": "lazy"}, {"x-queue-mode": "default"}, "received 'default' but current is 'lazy'"),
        (
            {},
            {"x-queue-master-locator": "bogus"},
            "received the value 'bogus' of type 'longstr' but current is none",
        ),
        ({}, {"x-dead-letter-exchange": 5}, "received the value '5' of type 'byte' but current is none"),
        (
            {"x-dead-letter-exchange": "dlx"},
            {"x-dead-letter-exchange": "dlx2"},
            "received 'dlx2' but current is 'dlx'",
        ),
    ],
)
def test_queue_argument_mismatch(current: dict[str, object], received: dict[str, object], tail: str) -> None:
    key = next(iter(received or current))
    error = _queue_mismatch(_qshape(current), _qshape(received))
    assert (error.code, error.detail) == (406, EQ.format(key=key) + tail)


def test_decimal_against_integer_is_shown_instead_of_crashing() -> None:
    # RabbitMQ 3.10.8 answers 541 here (its formatter mistakes {1,15} for a typed value).
    error = _queue_mismatch(_qshape({"x-max-length": 10}), _qshape({"x-max-length": decimal.Decimal("1.5")}))
    assert error.detail == EQ.format(key="x-max-length") + "received '{1,15}' but current is '10'"


def test_arguments_are_compared_in_the_queue_types_order() -> None:
    error = _queue_mismatch(_qshape({}), _qshape({"x-max-priority": 5, "x-max-length": 5}))
    assert error.detail.startswith(EQ.format(key="x-max-length"))


@pytest.mark.parametrize(
    ("current", "received"),
    [
        ({"x-message-ttl": 10}, {"x-message-ttl": 10}),
        ({}, {"x-queue-type": "classic"}),
        ({"x-queue-type": "classic"}, {}),
        ({}, {"x-unknown": 5, "x-delivery-limit": 5, "x-max-age": "1D", "x-consumer-timeout": 5}),
        ({"x-foo": 1}, {"x-foo": 2}),
        ({"x-dead-letter-exchange": "dlx"}, {"x-dead-letter-exchange": bytearray(b"dlx")}),
        ({"x-dead-letter-exchange": "dlx"}, {"x-dead-letter-exchange": b"dlx"}),
        ({"x-max-length": 1.5}, {"x-max-length": 1.5}),
        ({"x-max-length": 1700000000}, {"x-max-length": datetime.datetime(2023, 11, 14, 22, 13, 20)}),
        ({"x-max-length": decimal.Decimal("1.5")}, {"x-max-length": decimal.Decimal("1.5")}),
    ],
)
def test_equivalent_queue_redeclare_passes(current: dict[str, object], received: dict[str, object]) -> None:
    check_queue_equivalence("q", "/", _qshape(current), _qshape(received))


def test_decimals_with_different_scales_are_not_equivalent() -> None:
    error = _queue_mismatch(
        _qshape({"x-max-length": decimal.Decimal("1.5")}), _qshape({"x-max-length": decimal.Decimal("1.50")})
    )
    assert error.detail == EQ.format(key="x-max-length") + "received '{2,150}' but current is '{1,15}'"


@pytest.mark.parametrize(("current", "received"), [(True, False), (False, True)])
def test_exclusive_flag_mismatch_is_resource_locked(current: bool, received: bool) -> None:
    error = _queue_mismatch(_shape(exclusive=current), _shape(exclusive=received, durable=True))
    assert error.code == 405
    assert error.detail == (
        "cannot obtain exclusive access to locked queue 'q' in vhost '/'. It could be originally declared on "
        "another connection or the exclusive property value does not match that of the original declaration."
    )


def test_durable_flag_of_an_exclusive_queue_is_not_compared() -> None:
    check_queue_equivalence("q", "/", _shape(exclusive=True), _shape(exclusive=True, durable=True))
    check_queue_equivalence("q", "/", _shape(exclusive=True, durable=True), _shape(exclusive=True))


def test_quorum_queue_compares_quorum_arguments_only() -> None:
    current = _qshape({**QQ}, durable=True)
    # x-max-priority is not a quorum argument, so not compared; x-delivery-limit is.
    error = _queue_mismatch(
        current, _qshape({**QQ, "x-max-priority": 3, "x-delivery-limit": 3}, durable=True)
    )
    assert error.detail == EQ.format(key="x-delivery-limit") + (
        "received the value '3' of type 'byte' but current is none"
    )
    error = _queue_mismatch(current, _qshape({}, durable=True))
    assert error.detail == EQ.format(key="x-queue-type") + (
        "received none but current is the value 'quorum' of type 'longstr'"
    )


# ----------------------------------------------------------------------------------------------------
# Exchange redeclare equivalence (probed)

EX = "inequivalent arg '{key}' for exchange 'x' in vhost '/': "


def _ex(
    type_: str = "direct",
    durable: bool = False,
    auto_delete: bool = False,
    internal: bool = False,
    args: Mapping[str, object] | None = None,
) -> ExchangeShape:
    return ExchangeShape(
        type=type_, durable=durable, auto_delete=auto_delete, internal=internal, arguments=args or {}
    )


@pytest.mark.parametrize(
    ("current", "received", "expected"),
    [
        (_ex(), _ex("fanout"), EX.format(key="type") + "received 'fanout' but current is 'direct'"),
        (
            _ex(),
            _ex("topic", durable=True),
            EX.format(key="type") + "received 'topic' but current is 'direct'",
        ),
        (_ex(), _ex(durable=True), EX.format(key="durable") + "received 'true' but current is 'false'"),
        (_ex(durable=True), _ex(), EX.format(key="durable") + "received 'false' but current is 'true'"),
        (
            _ex(),
            _ex(auto_delete=True),
            EX.format(key="auto_delete") + "received 'true' but current is 'false'",
        ),
        (_ex(), _ex(internal=True), EX.format(key="internal") + "received 'true' but current is 'false'"),
        (
            _ex(),
            _ex(durable=True, internal=True),
            EX.format(key="durable") + "received 'true' but current is 'false'",
        ),
        (
            _ex(),
            _ex(args={"alternate-exchange": "ae"}),
            EX.format(key="alternate-exchange")
            + "received the value 'ae' of type 'longstr' but current is none",
        ),
        (
            _ex(args={"alternate-exchange": "ae"}),
            _ex(),
            EX.format(key="alternate-exchange")
            + "received none but current is the value 'ae' of type 'longstr'",
        ),
        (
            _ex(args={"alternate-exchange": "ae"}),
            _ex(args={"alternate-exchange": "ae2"}),
            EX.format(key="alternate-exchange") + "received 'ae2' but current is 'ae'",
        ),
        (
            _ex(),
            _ex(args={"alternate-exchange": 5}),
            EX.format(key="alternate-exchange") + "received the value '5' of type 'byte' but current is none",
        ),
        # an atom that needs quoting in Erlang keeps its quotes (source: ~tp of the type atom)
        (_ex(), _ex("x-custom"), EX.format(key="type") + "received ''x-custom'' but current is 'direct'"),
    ],
)
def test_exchange_mismatch(current: ExchangeShape, received: ExchangeShape, expected: str) -> None:
    with pytest.raises(AMQPError) as caught:
        check_exchange_equivalence("x", "/", current, received)
    assert (caught.value.code, caught.value.detail) == (406, expected)


def test_exchange_arguments_other_than_alternate_exchange_are_not_compared() -> None:
    check_exchange_equivalence("x", "/", _ex(args={"x-foo": 1}), _ex(args={"x-foo": 2}))
    check_exchange_equivalence("x", "/", _ex(durable=True), _ex(durable=True))


# ----------------------------------------------------------------------------------------------------
# The expiration property (probed)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0", 0), ("+5", 5), ("00010", 10), ("-0", 0), ("60000", 60000), ("315360000000", 315_360_000_000)],
)
def test_valid_expiration_parses_to_milliseconds(value: str, expected: int) -> None:
    assert validate_expiration(value) == expected


@pytest.mark.parametrize(
    ("value", "term"),
    [
        ("abc", "no_integer"),
        ("", "no_integer"),
        (" 5", "no_integer"),
        ("--5", "no_integer"),
        ("-", "no_integer"),
        ("\u0665", "no_integer"),
        ("-5", "{value_negative,-5}"),
        ("315360000001", "{value_too_large,315360000001}"),
        ("5abc", '{leftover_string,"abc"}'),
        ("1.5", '{leftover_string,".5"}'),
        ("5 ", '{leftover_string," "}'),
        ("5\n", '{leftover_string,"\\n"}'),
        ('5"x', '{leftover_string,"\\"x"}'),
        ("5é", '{leftover_string,"é"}'),
        ("5\x01", "{leftover_string,[1]}"),
        ("5\u0142", "{leftover_string,[197,130]}"),
        ("5" + "a" * 17, '{leftover_string,"' + "a" * 17 + '"}'),
    ],
)
def test_invalid_expiration_is_refused(value: str, term: str) -> None:
    with pytest.raises(AMQPError) as caught:
        validate_expiration(value)
    assert (caught.value.code, caught.value.detail) == (406, f"invalid expiration '{value}': {term}")


@pytest.mark.parametrize(
    ("value", "head", "tail"),
    [
        ("9" * 19, "{value_too_large,", "9" * 19 + "}"),
        ("9" * 23, "{value_too_large,", "9" * 23 + "}"),
        ("5" + "a" * 18, "{leftover_string,", '"' + "a" * 18 + '"}'),
    ],
)
def test_wide_expiration_terms_wrap_like_erlang(value: str, head: str, tail: str) -> None:
    with pytest.raises(AMQPError) as caught:
        validate_expiration(value)
    prefix = f"invalid expiration '{value}': "
    assert caught.value.detail == prefix + head + "\n" + " " * (len(prefix) + 1) + tail


# ----------------------------------------------------------------------------------------------------
# Helpers


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (10.0, "10.0"),
        (1e10, "1.0e10"),
        (1e-5, "1.0e-5"),
        (123456.789, "123456.789"),
        (1e21, "1.0e21"),
        (1e16, "1.0e16"),
        (1e15, "1.0e15"),
        (0.001, "0.001"),
        (0.0001, "0.0001"),
        (-2.5e-7, "-2.5e-7"),
        (0.10000000149011612, "0.10000000149011612"),
        (0.0, "0.0"),
        (1.5, "1.5"),
    ],
)
def test_floats_print_like_erlang(value: float, expected: str) -> None:
    assert erlang_float(value) == expected


@pytest.mark.parametrize(
    ("value", "name"),
    [
        (0, "byte"),
        (-128, "byte"),
        (127, "byte"),
        (128, "short"),
        (-32768, "short"),
        (40000, "unsignedshort"),
        (-40000, "signedint"),
        (2**31 - 1, "signedint"),
        (2**31, "unsignedint"),
        (2**32, "long"),
        (True, "bool"),
        ("s", "longstr"),
        (b"\xff", "longstr"),
        (bytearray(b"x"), "binary"),
        (1.5, "float"),
        (decimal.Decimal(1), "decimal"),
        (datetime.datetime(2020, 1, 1), "timestamp"),
        ({}, "table"),
        ([], "array"),
        (None, "void"),
    ],
)
def test_amqp_type_names_follow_pamqp_encoding(value: object, name: str) -> None:
    assert amqp_type_name(value) == name
