"""The struct fast path agrees with pamqp 4.0.1 byte for byte, and fails to decode exactly where pamqp fails.

Encoders are compared with ``pamqp.frame.marshal``; decoders are fed what pamqp marshals, and also raw
payloads (arbitrary shortstr bytes, truncations, trailing garbage) on which pamqp's own decoder is the oracle.
"""

from __future__ import annotations

import contextlib
import datetime
import decimal
import math
import random
import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pamqp import body as pamqp_body
from pamqp import commands, exceptions
from pamqp import frame as pamqp_frame
from pamqp import header as pamqp_header
from pamqp import heartbeat as pamqp_heartbeat
from pamqp.base import Frame

from amqpd.protocol import constants as c
from amqpd.protocol import fastcodec as fc

# deadline=None: the machine is shared and slow examples are not failures here.
FAST = settings(max_examples=150, deadline=None)

U64 = 2**64
MAX_PAMQP_TAG = 2**63 - 1  # pamqp packs delivery tags as signed 64-bit

channels = st.integers(0, 65535)
pamqp_tags = st.integers(0, MAX_PAMQP_TAG)
all_tags = st.integers(0, U64 - 1)
# Any text up to 255 UTF-8 bytes, multibyte included; long strings are cut at a character boundary.
shortstrs = st.text(max_size=255).map(lambda s: s.encode("utf-8")[:255].decode("utf-8", "ignore"))
# pamqp validates exchange names on construction; the fast path does not care, but the oracle does.
exchange_names = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:@#,/+ ", max_size=127
)
raw_shortstrs = st.binary(max_size=255)  # includes invalid UTF-8


def payload_of(frame_bytes: bytes) -> bytes:
    """The bytes between the 7-byte frame header and the frame-end octet."""
    return frame_bytes[7:-1]


def frame(frame_type: int, channel: int, payload: bytes) -> bytes:
    """One complete frame around ``payload``, written out by hand."""
    return struct.pack(">BHI", frame_type, channel, len(payload)) + payload + b"\xce"


def pamqp_decode(payload: bytes, frame_type: int = c.FRAME_METHOD) -> Any:
    """pamqp's verdict on a payload: the decoded object, or None when pamqp refuses it."""
    try:
        return pamqp_frame.unmarshal(frame(frame_type, 0, payload))[2]
    except (exceptions.UnmarshalingException, ValueError, struct.error):
        # pamqp 4.0.1 lets a plain ValueError out when a method payload is shorter than its 4-byte method id.
        return None


def sstr(raw: bytes) -> bytes:
    return bytes([len(raw)]) + raw


# ------------------------------------------------------------------------------------------------ constants


@pytest.mark.parametrize(
    ("constant", "method"),
    [
        (c.CONNECTION_CLOSE_ID, commands.Connection.Close),
        (c.CONNECTION_CLOSE_OK_ID, commands.Connection.CloseOk),
        (c.CHANNEL_OPEN_ID, commands.Channel.Open),
        (c.CHANNEL_CLOSE_ID, commands.Channel.Close),
        (c.CHANNEL_CLOSE_OK_ID, commands.Channel.CloseOk),
        (c.BASIC_PUBLISH_ID, commands.Basic.Publish),
        (c.BASIC_RETURN_ID, commands.Basic.Return),
        (c.BASIC_DELIVER_ID, commands.Basic.Deliver),
        (c.BASIC_GET_OK_ID, commands.Basic.GetOk),
        (c.BASIC_ACK_ID, commands.Basic.Ack),
        (c.BASIC_REJECT_ID, commands.Basic.Reject),
        (c.BASIC_NACK_ID, commands.Basic.Nack),
    ],
)
def test_method_id_constants_are_pamqp_indexes(constant: int, method: type[Frame]) -> None:
    assert constant == method.index
    assert c.method_index(*c.split_method_id(constant)) == constant


@pytest.mark.parametrize(
    ("pair", "method"),
    [
        (c.CONNECTION_TUNE_OK, commands.Connection.TuneOk),
        (c.CHANNEL_OPEN, commands.Channel.Open),
        (c.BASIC_PUBLISH, commands.Basic.Publish),
    ],
)
def test_method_pairs_name_the_pamqp_methods(pair: c.MethodRef, method: type[Frame]) -> None:
    assert c.method_index(*pair) == method.index


def test_frame_constants_match_pamqp() -> None:
    assert pamqp_frame.marshal(pamqp_heartbeat.Heartbeat(), 0) == c.HEARTBEAT_FRAME
    assert commands.Connection.frame_id == c.CLASS_CONNECTION
    assert commands.Channel.frame_id == c.CLASS_CHANNEL
    assert commands.Basic.frame_id == c.CLASS_BASIC
    empty_header = pamqp_frame.marshal(pamqp_header.ContentHeader(0, 0, commands.Basic.Properties()), 1)
    assert empty_header[0] == c.FRAME_HEADER
    assert len(payload_of(empty_header)) == c.CONTENT_HEADER_MIN_SIZE
    assert pamqp_frame.marshal(pamqp_body.ContentBody(b"x"), 1)[0] == c.FRAME_BODY
    assert pamqp_frame.marshal(commands.Basic.Qos(), 1)[0] == c.FRAME_METHOD


# ------------------------------------------------------------------------------------------------ encoders


@FAST
@given(channels, shortstrs, pamqp_tags, st.booleans(), exchange_names, shortstrs)
def test_encode_deliver_matches_pamqp(
    channel: int, consumer_tag: str, tag: int, redelivered: bool, exchange: str, routing_key: str
) -> None:
    expected = pamqp_frame.marshal(
        commands.Basic.Deliver(consumer_tag, tag, redelivered, exchange, routing_key), channel
    )
    fast = fc.encode_deliver(channel, consumer_tag.encode(), tag, redelivered, exchange.encode(), routing_key.encode())
    assert fast == expected


@FAST
@given(channels, st.integers(2**63, U64 - 1), st.booleans(), st.booleans())
@example(0, U64 - 1, True, True)
def test_tag_encoders_write_unsigned_tags_that_pamqp_reads_back_signed(
    channel: int, tag: int, flag: bool, requeue: bool
) -> None:
    deliver = pamqp_decode(payload_of(fc.encode_deliver(channel, b"ctag", tag, flag, b"x", b"rk")))
    assert isinstance(deliver, commands.Basic.Deliver)
    assert (deliver.consumer_tag, deliver.delivery_tag, deliver.redelivered, deliver.exchange) == (
        "ctag",
        tag - U64,
        flag,
        "x",
    )
    get_ok = pamqp_decode(payload_of(fc.encode_get_ok(channel, tag, flag, b"x", b"rk", 7)))
    assert isinstance(get_ok, commands.Basic.GetOk)
    assert (get_ok.delivery_tag, get_ok.redelivered, get_ok.message_count) == (tag - U64, flag, 7)
    ack = pamqp_decode(payload_of(fc.encode_ack(channel, tag, flag)))
    assert isinstance(ack, commands.Basic.Ack)
    assert (ack.delivery_tag, ack.multiple) == (tag - U64, flag)
    nack = pamqp_decode(payload_of(fc.encode_nack(channel, tag, flag, requeue)))
    assert isinstance(nack, commands.Basic.Nack)
    assert (nack.delivery_tag, nack.multiple, nack.requeue) == (tag - U64, flag, requeue)


def test_encoders_refuse_a_shortstr_over_255_bytes() -> None:
    with pytest.raises(struct.error):
        fc.encode_deliver(1, b"t" * 256, 1, False, b"", b"")
    with pytest.raises(struct.error):
        fc.encode_return(1, 312, b"NO_ROUTE", b"", b"k" * 256)


@FAST
@given(channels, pamqp_tags, st.booleans())
def test_encode_ack_matches_pamqp(channel: int, tag: int, multiple: bool) -> None:
    expected = pamqp_frame.marshal(commands.Basic.Ack(tag, multiple), channel)
    assert fc.encode_ack(channel, tag, multiple) == expected


@FAST
@given(channels, pamqp_tags, st.booleans(), st.booleans())
def test_encode_nack_matches_pamqp(channel: int, tag: int, multiple: bool, requeue: bool) -> None:
    expected = pamqp_frame.marshal(commands.Basic.Nack(tag, multiple, requeue), channel)
    assert fc.encode_nack(channel, tag, multiple, requeue) == expected


@FAST
@given(channels, pamqp_tags, st.booleans(), exchange_names, shortstrs, st.integers(0, 2**32 - 1))
@example(65535, MAX_PAMQP_TAG, True, "amq.direct", "k", 2**32 - 1)
@example(0, 0, False, "", "", 2**31)
def test_encode_get_ok_matches_pamqp(
    channel: int, tag: int, redelivered: bool, exchange: str, routing_key: str, count: int
) -> None:
    expected = pamqp_frame.marshal(commands.Basic.GetOk(tag, redelivered, exchange, routing_key, count), channel)
    fast = fc.encode_get_ok(channel, tag, redelivered, exchange.encode(), routing_key.encode(), count)
    assert fast == expected


@FAST
@given(channels, st.integers(0, 65535), shortstrs, exchange_names, shortstrs)
def test_encode_return_matches_pamqp(channel: int, code: int, text: str, exchange: str, routing_key: str) -> None:
    expected = pamqp_frame.marshal(commands.Basic.Return(code, text, exchange, routing_key), channel)
    assert fc.encode_return(channel, code, text.encode(), exchange.encode(), routing_key.encode()) == expected


# ------------------------------------------------------------------------------------------------ decoders


@FAST
@given(exchange_names, shortstrs, st.booleans(), st.booleans(), st.binary(max_size=3))
def test_decode_publish_reads_what_pamqp_marshals(
    exchange: str, routing_key: str, mandatory: bool, immediate: bool, trailing: bytes
) -> None:
    method = commands.Basic.Publish(0, exchange, routing_key, mandatory, immediate)
    payload = payload_of(pamqp_frame.marshal(method, 1))
    assert fc.decode_publish(payload + trailing) == (exchange, routing_key, mandatory, immediate)


@FAST
@given(
    st.integers(0, 65535),
    raw_shortstrs,
    raw_shortstrs,
    st.integers(0, 255),
    st.data(),
)
def test_decode_publish_accepts_and_refuses_exactly_what_pamqp_does(
    ticket: int, exchange: bytes, routing_key: bytes, bits: int, data: st.DataObject
) -> None:
    whole = struct.pack(">IH", c.BASIC_PUBLISH_ID, ticket) + sstr(exchange) + sstr(routing_key) + bytes([bits])
    # Cut anywhere, keep whole, or add trailing garbage.
    payload = data.draw(
        st.one_of(
            st.integers(0, len(whole)).map(lambda n: whole[:n]),
            st.binary(max_size=4).map(lambda extra: whole + extra),
        )
    )
    oracle = pamqp_decode(payload)
    if oracle is None:
        with pytest.raises(ValueError):
            fc.decode_publish(payload)
    else:
        assert fc.decode_publish(payload) == (
            oracle.exchange,
            oracle.routing_key,
            oracle.mandatory,
            oracle.immediate,
        )


def test_decode_publish_refuses_invalid_utf8_like_pamqp() -> None:
    payload = struct.pack(">IH", c.BASIC_PUBLISH_ID, 0) + sstr(b"\xff\xfe") + sstr(b"rk") + b"\x00"
    assert pamqp_decode(payload) is None
    with pytest.raises(ValueError):
        fc.decode_publish(payload)


def test_every_proper_prefix_of_a_publish_is_refused_by_both() -> None:
    payload = payload_of(pamqp_frame.marshal(commands.Basic.Publish(0, "ex", "a.b", True, False), 1))
    for n in range(len(payload)):
        assert pamqp_decode(payload[:n]) is None
        with pytest.raises(ValueError):
            fc.decode_publish(payload[:n])


@FAST
@given(pamqp_tags, st.booleans(), st.booleans(), st.booleans())
def test_decode_ack_nack_reject_read_what_pamqp_marshals(
    tag: int, multiple: bool, requeue: bool, reject_requeue: bool
) -> None:
    ack = payload_of(pamqp_frame.marshal(commands.Basic.Ack(tag, multiple), 1))
    nack = payload_of(pamqp_frame.marshal(commands.Basic.Nack(tag, multiple, requeue), 1))
    reject = payload_of(pamqp_frame.marshal(commands.Basic.Reject(tag, reject_requeue), 1))
    assert fc.decode_ack(ack) == (tag, multiple)
    assert fc.decode_nack(nack) == (tag, multiple, requeue)
    assert fc.decode_reject(reject) == (tag, reject_requeue)


@pytest.mark.parametrize(
    ("method_id", "decoder", "fields"),
    [
        (c.BASIC_ACK_ID, fc.decode_ack, ("delivery_tag", "multiple")),
        (c.BASIC_NACK_ID, fc.decode_nack, ("delivery_tag", "multiple", "requeue")),
        (c.BASIC_REJECT_ID, fc.decode_reject, ("delivery_tag", "requeue")),
    ],
)
@FAST
@given(tag=all_tags, bits=st.integers(0, 255), cut=st.integers(0, 14), trailing=st.binary(max_size=3))
def test_tag_decoders_agree_with_pamqp_on_raw_payloads(
    method_id: int, decoder: Any, fields: tuple[str, ...], tag: int, bits: int, cut: int, trailing: bytes
) -> None:
    whole = struct.pack(">IQB", method_id, tag, bits)
    payload = whole[:cut] if cut < len(whole) else whole + trailing
    oracle = pamqp_decode(payload)
    if oracle is None:
        with pytest.raises(ValueError):
            decoder(payload)
        return
    expected = tuple(getattr(oracle, name) for name in fields)
    # Same bytes, read unsigned: pamqp's tag modulo 2**64.
    assert decoder(payload) == (expected[0] % U64, *expected[1:])


# ------------------------------------------------------------------------------------------- properties

field_names = st.text(max_size=40).map(lambda s: s.encode("utf-8")[:128].decode("utf-8", "ignore"))
utc_seconds = st.integers(0, 0xFFFFFFFF).map(lambda n: datetime.datetime.fromtimestamp(n, tz=datetime.UTC))
decimals = st.builds(
    lambda mantissa, scale: decimal.Decimal(mantissa).scaleb(-scale),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(0, 12),
)
# Values that pamqp round-trips exactly (floats go out as 32-bit, timestamps as whole UTC seconds).
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(width=32, allow_nan=False),
    st.text(max_size=30),
    decimals,
    utc_seconds,
    st.binary(max_size=20).map(bytearray),
)
field_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(field_names, inner, max_size=4),
    ),
    max_leaves=12,
)
tables = st.dictionaries(field_names, field_values, max_size=6)
# pamqp leaves out a property whose value is "", so absent properties are None and present ones non-empty.
present_strs = st.one_of(st.none(), shortstrs.filter(bool))
octets = st.one_of(st.none(), st.integers(0, 255))


@st.composite
def basic_properties(draw: st.DrawFn) -> commands.Basic.Properties:
    props = commands.Basic.Properties(
        content_type=draw(present_strs),
        content_encoding=draw(present_strs),
        headers=draw(st.one_of(st.none(), tables)),
        correlation_id=draw(present_strs),
        reply_to=draw(present_strs),
        expiration=draw(present_strs),
        message_id=draw(present_strs),
        timestamp=draw(st.one_of(st.none(), utc_seconds)),
        message_type=draw(present_strs),
        user_id=draw(present_strs),
        app_id=draw(present_strs),
    )
    # Assigned after construction: the constructor only allows delivery modes 1 and 2 and no cluster id,
    # but the wire carries any octet and any shortstr, and the fast readers must skip them correctly.
    props.delivery_mode = draw(octets)
    props.priority = draw(octets)
    props.cluster_id = draw(st.one_of(st.just(""), shortstrs))
    return props


SHORTSTR_PROPERTIES = {
    fc.HAS_CONTENT_TYPE: "content_type",
    fc.HAS_CONTENT_ENCODING: "content_encoding",
    fc.HAS_CORRELATION_ID: "correlation_id",
    fc.HAS_REPLY_TO: "reply_to",
    fc.HAS_EXPIRATION: "expiration",
    fc.HAS_MESSAGE_ID: "message_id",
    fc.HAS_TYPE: "message_type",
    fc.HAS_USER_ID: "user_id",
    fc.HAS_APP_ID: "app_id",
    fc.HAS_CLUSTER_ID: "cluster_id",
}
ALL_PROPERTIES = {
    **SHORTSTR_PROPERTIES,
    fc.HAS_HEADERS: "headers",
    fc.HAS_DELIVERY_MODE: "delivery_mode",
    fc.HAS_PRIORITY: "priority",
    fc.HAS_TIMESTAMP: "timestamp",
}
body_sizes = st.integers(0, 2**64 - 1)


def pamqp_header_payload(body_size: int, props: commands.Basic.Properties) -> bytes:
    return payload_of(pamqp_frame.marshal(pamqp_header.ContentHeader(0, body_size, props), 1))


def pamqp_properties(header_payload: bytes) -> commands.Basic.Properties | None:
    content_header = pamqp_decode(header_payload, c.FRAME_HEADER)
    return None if content_header is None else content_header.properties


@FAST
@given(body_sizes, basic_properties())
def test_properties_round_trip_through_header_payload(body_size: int, props: commands.Basic.Properties) -> None:
    header_payload = fc.encode_header_payload(body_size, props)
    assert header_payload == pamqp_header_payload(body_size, props)
    decoded = fc.decode_properties(header_payload)
    assert decoded == props
    assert decoded == pamqp_properties(header_payload)
    assert fc.encode_header_payload(body_size, decoded) == header_payload


@FAST
@given(body_sizes, basic_properties())
def test_fast_header_readers_agree_with_pamqp(body_size: int, props: commands.Basic.Properties) -> None:
    header_payload = pamqp_header_payload(body_size, props)
    assert fc.delivery_mode(header_payload) == (props.delivery_mode or 0)
    assert fc.priority(header_payload) == props.priority
    flags = fc.property_flags(header_payload)
    for flag, name in ALL_PROPERTIES.items():
        assert bool(flags & flag) == (getattr(props, name) not in (None, "")), name
    for flag, name in SHORTSTR_PROPERTIES.items():
        value = getattr(props, name)
        assert fc.short_property(header_payload, flag) == (value.encode() if value else None), name


@FAST
@given(basic_properties(), st.integers(1, 3), st.data())
def test_fast_header_readers_follow_continuation_flag_words(
    props: commands.Basic.Properties, extra_words: int, data: st.DataObject
) -> None:
    """A flags word with bit 0 set is followed by another; pamqp skips them and so must we."""
    plain = pamqp_header_payload(10, props)
    words = [struct.unpack_from(">H", plain, 12)[0] | 1]
    for i in range(extra_words):
        more = data.draw(st.integers(0, 0x7FFF)) << 1
        words.append(more | 1 if i < extra_words - 1 else more)
    header_payload = plain[:12] + struct.pack(f">{len(words)}H", *words) + plain[14:]
    oracle = pamqp_properties(header_payload)
    assert oracle is not None
    assert fc.decode_properties(header_payload) == oracle
    assert fc.delivery_mode(header_payload) == (oracle.delivery_mode or 0)
    assert fc.priority(header_payload) == oracle.priority
    assert fc.short_property(header_payload, fc.HAS_EXPIRATION) == (
        oracle.expiration.encode() if oracle.expiration is not None else None
    )


@FAST
@given(basic_properties(), st.data())
def test_truncated_header_payloads_fail_wherever_pamqp_fails(
    props: commands.Basic.Properties, data: st.DataObject
) -> None:
    whole = pamqp_header_payload(123, props)
    payload = whole[: data.draw(st.integers(0, len(whole) - 1))]
    oracle = pamqp_properties(payload)
    if oracle is None:
        with pytest.raises(ValueError):
            fc.decode_properties(payload)
    else:
        assert fc.decode_properties(payload) == oracle
    # The fast readers skip what they do not need, so they may succeed where the full decode fails, but
    # whenever pamqp decodes the payload they must agree with it, and short payloads must raise.
    readers: list[tuple[Callable[[bytes], object], Callable[[commands.Basic.Properties], object]]] = [
        (fc.delivery_mode, lambda p: p.delivery_mode or 0),
        (fc.priority, lambda p: p.priority),
        (
            lambda h: fc.short_property(h, fc.HAS_USER_ID),
            lambda p: None if p.user_id is None else p.user_id.encode(),
        ),
    ]
    for fast, slow in readers:
        try:
            value = fast(payload)
        except ValueError:
            assert oracle is None
        else:
            if oracle is not None:
                assert value == slow(oracle)
    if len(payload) < 14:
        for reader in (fc.property_flags, fc.delivery_mode, fc.priority):
            with pytest.raises(ValueError):
                reader(payload)


def test_every_short_prefix_of_a_header_payload_makes_every_reader_raise() -> None:
    props = commands.Basic.Properties(content_type="text/plain", headers={"a": 1}, delivery_mode=2, priority=3)
    whole = fc.encode_header_payload(5, props)
    for n in range(14):
        readers: list[Callable[[bytes], object]] = [fc.property_flags, fc.delivery_mode, fc.priority]
        if n < 12:
            readers.append(fc.decode_properties)
        for reader in readers:
            with pytest.raises(ValueError):
                reader(whole[:n])


def test_decode_properties_turns_runaway_table_nesting_into_value_error() -> None:
    table = b"\x00\x00\x00\x00"
    for _ in range(3000):
        entry = b"\x01aF" + table
        table = struct.pack(">I", len(entry)) + entry
    payload = struct.pack(">HHQH", 60, 0, 0, fc.HAS_HEADERS) + table
    with pytest.raises(ValueError):
        fc.decode_properties(payload)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 0xFFFF), st.binary(max_size=60))
def test_garbage_header_payloads_raise_only_value_error(flags: int, rest: bytes) -> None:
    payload = struct.pack(">HHQH", 60, 0, 5, flags) + rest
    readers: list[Callable[[bytes], object]] = [
        fc.decode_properties,
        fc.delivery_mode,
        fc.priority,
        lambda h: fc.short_property(h, fc.HAS_EXPIRATION),
    ]
    for reader in readers:
        with contextlib.suppress(ValueError):  # any other exception type fails the test
            reader(payload)


def test_short_property_refuses_a_flag_that_is_not_a_shortstr() -> None:
    with pytest.raises(ValueError):
        fc.short_property(fc.encode_header_payload(0, commands.Basic.Properties()), fc.HAS_HEADERS)


# ------------------------------------------------------------------------------------------------ content

frame_maxes = st.one_of(st.sampled_from([0, 4096, 131072]), st.integers(9, 5000))


def pamqp_content(channel: int, props: commands.Basic.Properties, body: bytes, frame_max: int) -> bytes:
    """Header frame then ContentBody frames of at most frame_max - 8 bytes, all marshalled by pamqp."""
    frames = [pamqp_frame.marshal(pamqp_header.ContentHeader(0, len(body), props), channel)]
    chunk = frame_max - 8 if frame_max else max(len(body), 1)
    frames += [
        pamqp_frame.marshal(pamqp_body.ContentBody(body[i : i + chunk]), channel) for i in range(0, len(body), chunk)
    ]
    return b"".join(frames)


@FAST
@given(
    channels,
    basic_properties(),
    st.one_of(st.just(0), st.integers(1, 20000), st.sampled_from([4088, 4089, 8176, 8177])),
    frame_maxes,
    st.integers(0, 2**32),
)
def test_encode_content_matches_pamqp_header_and_body_frames(
    channel: int, props: commands.Basic.Properties, size: int, frame_max: int, seed: int
) -> None:
    body = random.Random(seed).randbytes(size)
    header_payload = pamqp_header_payload(size, props)
    assert fc.encode_content(channel, header_payload, body, frame_max) == pamqp_content(channel, props, body, frame_max)


def test_encode_content_sends_no_body_frame_for_an_empty_body() -> None:
    header_payload = fc.encode_header_payload(0, commands.Basic.Properties())
    assert fc.encode_content(5, header_payload, b"", 4096) == frame(c.FRAME_HEADER, 5, header_payload)


def test_encode_content_refuses_a_frame_max_without_room_for_a_body() -> None:
    with pytest.raises(ValueError):
        fc.encode_content(1, fc.encode_header_payload(1, commands.Basic.Properties()), b"x", 8)


@FAST
@given(
    channels,
    shortstrs,
    pamqp_tags,
    st.booleans(),
    exchange_names,
    shortstrs,
    basic_properties(),
    st.one_of(st.just(0), st.integers(1, 20000), st.sampled_from([4088, 4089, 8176, 8177])),
    frame_maxes,
    st.integers(0, 2**32),
)
def test_encode_delivery_is_deliver_then_content_as_pamqp_frames_them(
    channel: int,
    consumer_tag: str,
    tag: int,
    redelivered: bool,
    exchange: str,
    routing_key: str,
    props: commands.Basic.Properties,
    size: int,
    frame_max: int,
    seed: int,
) -> None:
    body = random.Random(seed).randbytes(size)
    header_payload = pamqp_header_payload(size, props)
    expected = pamqp_frame.marshal(
        commands.Basic.Deliver(consumer_tag, tag, redelivered, exchange, routing_key), channel
    ) + pamqp_content(channel, props, body, frame_max)
    fast = fc.encode_delivery(
        channel,
        consumer_tag.encode(),
        tag,
        redelivered,
        exchange.encode(),
        routing_key.encode(),
        header_payload,
        body,
        frame_max,
    )
    assert fast == expected


# ------------------------------------------------------------------------- property-list check at publish


@FAST
@given(body_sizes, basic_properties())
def test_check_properties_accepts_every_header_pamqp_writes(body_size: int, props: commands.Basic.Properties) -> None:
    """Except infinite and NaN floats, which pamqp writes and RabbitMQ refuses (541): so do we (502)."""
    problem = fc.check_properties(pamqp_header_payload(body_size, props))
    assert problem is None or (_has_non_finite_float(props.headers) and problem.endswith("float is not finite"))


def _has_non_finite_float(value: object) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_non_finite_float(v) for v in value)
    return False


def _mutated_header(data: st.DataObject, whole: bytes) -> bytes:
    payload = bytearray(whole)
    for _ in range(data.draw(st.integers(1, 3))):
        kind = data.draw(st.sampled_from(["flip", "insert", "delete", "flags", "u32"]))
        pos = data.draw(st.integers(12, max(12, len(payload))))
        if kind == "flip" and pos < len(payload):
            payload[pos] ^= data.draw(st.integers(1, 255))
        elif kind == "insert":
            payload[pos:pos] = data.draw(st.binary(min_size=1, max_size=5))
        elif kind == "delete":
            del payload[pos : pos + data.draw(st.integers(1, 5))]
        elif kind == "flags" and len(payload) >= 14:
            struct.pack_into(">H", payload, 12, data.draw(st.integers(0, 0xFFFF)))
        elif kind == "u32" and pos + 4 <= len(payload):
            struct.pack_into(">I", payload, pos, data.draw(st.integers(0, 300)))
    return bytes(payload)


@settings(max_examples=600, deadline=None)
@given(body_sizes, basic_properties(), st.data())
def test_what_check_properties_accepts_pamqp_decodes_and_re_encodes(
    body_size: int, props: commands.Basic.Properties, data: st.DataObject
) -> None:
    """The check is stricter than pamqp (exact lengths, RabbitMQ's field types), never looser: a header it
    accepts decodes, re-encodes (dead-lettering, reply-to rewriting do that) and reads the same again."""
    payload = _mutated_header(data, pamqp_header_payload(body_size, props))
    if len(payload) >= 14 and fc.FIXED_ONLY_SIZES.get(struct.unpack_from(">H", payload, 12)[0]) == len(payload):
        assert fc.check_properties(payload) is None
    if fc.check_properties(payload) is not None:
        return
    decoded = fc.decode_properties(payload)
    again = fc.encode_header_payload(body_size, decoded)
    assert fc.check_properties(again) is None
    assert fc.decode_properties(again).headers is not None or decoded.headers is None


def _headers(table: bytes) -> bytes:
    return struct.pack(">HI", 0x2000, len(table)) + table


@pytest.mark.parametrize(
    ("properties", "problem"),
    [
        (b"", "content header is truncated"),
        (b"\x00\x00\x00", "1 octets left over after the last property"),
        (b"\x00\x01\x00\x00", "property flags 0x0001 have the continuation bit set (Basic has 14 properties)"),
        (b"\x10\x00", "property delivery_mode: truncated: 0 of 1 octets"),
        (b"\x00\x40" + bytes(7), "property timestamp: truncated: 7 of 8 octets"),
        (
            b"\x00\x40" + struct.pack(">Q", fc.MAX_TIMESTAMP + 1),
            f"property timestamp: {fc.MAX_TIMESTAMP + 1} is out of range",
        ),
        (b"\x80\x00\x05ab", "property content_type: short string of length 5 runs past the end (2 octets left)"),
        (_headers(b"\x01a"), "property headers: field 'a': no value"),
        (_headers(b"\x01aS\x00"), "property headers: field 'a': long string length is truncated"),
        (
            _headers(b"\x05a"),
            "property headers: field name: short string of length 5 runs past the end (1 octets left)",
        ),
        (_headers(b"\x01\xffV"), "property headers: field name: short string is not valid UTF-8"),
        (_headers(b"\x01aAZ"), "property headers: field 'a': array length is truncated"),
        (_headers(b"\x01aT"), "property headers: field 'a': value truncated"),
        (_headers(b"\x01aq"), "property headers: field 'a': unknown field type 'q'"),
        (
            _headers(b"\x01ad" + struct.pack(">d", 1e300)),
            "property headers: field 'a': double is not finite or outside the 32-bit float range",
        ),
        (_headers(b"\x01aA\x00\x00\x00\x01t"), "property headers: field 'a': array element 0: value truncated"),
    ],
)
def test_check_properties_names_the_problem(properties: bytes, problem: str) -> None:
    payload = struct.pack(">HHQ", 60, 0, 1) + properties
    assert fc.check_properties(payload) == problem


def test_check_properties_refuses_tables_nested_deeper_than_the_limit() -> None:
    def nested(depth: int) -> bytes:
        table = b""
        for _ in range(depth):
            table = struct.pack(">I", len(table) + 3) + b"\x01tF" + table if table else struct.pack(">I", 0)
        return table

    ok = struct.pack(">HHQH", 60, 0, 1, 0x2000) + nested(fc.MAX_TABLE_DEPTH)
    deep = struct.pack(">HHQH", 60, 0, 1, 0x2000) + nested(fc.MAX_TABLE_DEPTH + 1)
    assert fc.check_properties(ok) is None
    problem = fc.check_properties(deep)
    assert problem is not None and problem.endswith(f"field tables nested deeper than {fc.MAX_TABLE_DEPTH}")


def test_binary_long_strings_in_the_headers_survive_re_encoding() -> None:
    """pamqp decodes a long string that is not UTF-8 as bytes and cannot encode bytes; dead-lettering re-encodes
    the headers (found by tests/test_fuzz_malformed.py as a 541). They go back out as the same long strings."""
    table = b"\x01kS\x00\x00\x00\x01\x80" + b"\x01nF\x00\x00\x00\x0c\x01aA\x00\x00\x00\x05S\x00\x00\x00\x00"
    payload = struct.pack(">HHQH", 60, 0, 3, 0xA000) + b"\x04text" + struct.pack(">I", len(table)) + table
    assert fc.check_properties(payload) is None
    decoded = fc.decode_properties(payload)
    assert decoded.headers == {"k": b"\x80", "n": {"a": [""]}}
    assert fc.encode_header_payload(3, decoded) == payload
    props = commands.Basic.Properties(
        content_type="ct", content_encoding="enc", headers={"a": [b"\xff", {"b": b"\x80"}], "i": 1}, message_id="m"
    )
    again = fc.decode_properties(fc.encode_header_payload(5, props))
    assert (again.content_type, again.content_encoding, again.headers, again.message_id) == (
        "ct",
        "enc",
        props.headers,
        "m",
    )


def test_a_cluster_id_and_an_odd_delivery_mode_survive_re_encoding() -> None:
    """Refused by pamqp's constructor, passed through by RabbitMQ: dead-lettering re-encodes them."""
    payload = struct.pack(">HHQH", 60, 0, 3, 0x8004) + b"\x04text" + b"\x03cid"
    assert fc.check_properties(payload) is None
    decoded = fc.decode_properties(payload)
    assert decoded.cluster_id == "cid"
    assert fc.encode_header_payload(3, decoded) == payload
    with_binary = fc.properties_with(commands.Basic.Properties(headers={"b": b"\xff"}), cluster_id="c", delivery_mode=0)
    again = fc.decode_properties(fc.encode_header_payload(3, with_binary))
    assert (again.headers, again.cluster_id, again.delivery_mode) == ({"b": b"\xff"}, "c", 0)
