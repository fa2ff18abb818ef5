"""Queue and exchange names follow RabbitMQ 3.10.8: CR/LF stripped, only ``amq.`` reserved (probed)."""

from __future__ import annotations

import re

import pytest

from amqpd.broker.model.names import (
    check_not_default_exchange,
    check_reserved_prefix,
    generate_queue_name,
    normalize_name,
    validate_name,
)
from amqpd.protocol.errors import AMQPError


@pytest.mark.parametrize(
    ("name", "expected"), [("a\r\nb", "ab"), ("\r\namq.foo", "amq.foo"), ("plain", "plain"), ("\n", "")]
)
def test_cr_and_lf_are_stripped(name: str, expected: str) -> None:
    assert normalize_name(name) == expected


@pytest.mark.parametrize(
    ("kind", "name"), [("exchange", "amq.foo"), ("queue", "amq.foo"), ("exchange", "amq.")]
)
def test_amq_prefix_is_refused_with_403(kind: str, name: str) -> None:
    with pytest.raises(AMQPError) as caught:
        check_reserved_prefix(kind, name)
    assert caught.value.code == 403
    assert not caught.value.is_connection_error
    assert caught.value.detail == f"{kind} name '{name}' contains reserved prefix 'amq.*'"


@pytest.mark.parametrize("name", ["AMQ.foo", "amq", "amqfoo", "", "x.amq.y"])
def test_names_without_the_exact_prefix_are_allowed(name: str) -> None:
    check_reserved_prefix("queue", name)


@pytest.mark.parametrize("name", ["a b/c#*", "a\x00b", "é" * 127, "q" * 255, ""])
def test_any_shortstr_is_a_valid_name(name: str) -> None:
    validate_name("queue", name)


def test_name_longer_than_a_shortstr_is_refused() -> None:
    with pytest.raises(AMQPError) as caught:
        validate_name("queue", "é" * 128)
    assert caught.value.code == 406
    assert caught.value.detail == "queue name is too long: 256 bytes, at most 255"


def test_name_that_is_not_utf8_is_a_frame_error() -> None:
    with pytest.raises(AMQPError) as caught:
        validate_name("exchange", "a\udcff")
    assert (caught.value.code, caught.value.detail) == (501, "Malformed UTF-8 in shortstr")
    assert caught.value.is_connection_error


def test_default_exchange_is_off_limits() -> None:
    with pytest.raises(AMQPError) as caught:
        check_not_default_exchange("")
    assert (caught.value.code, caught.value.detail) == (
        403,
        "operation not permitted on the default exchange",
    )
    check_not_default_exchange("amq.direct")


def test_generated_queue_names_look_like_rabbitmqs() -> None:
    names = {generate_queue_name() for _ in range(50)}
    assert len(names) == 50
    assert all(re.fullmatch(r"amq\.gen-[A-Za-z0-9_-]{22}", name) for name in names)
