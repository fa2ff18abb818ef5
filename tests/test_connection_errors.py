"""Connection-level errors through real sockets: each misuse gets RabbitMQ's reply code, text and method ids.

Every case is raw frames from `RawClient` against the running broker (both server loops via `loop_kind`).
After each error the test opens a fresh connection, so a client sending garbage never takes the broker down.
The same misuse fed to the sans-IO layer without sockets is in test_protocol_connection.py.

Rule for raw cases (from the reference notes): send nothing after the offending frame, or the kernel may turn
the broker's close into an RST and the Connection.Close frame is lost.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
from pamqp import body, commands, frame, header
from pamqp.base import Frame

from tests.support.raw_client import CLIENT_CAPABILITIES, EOF, PROTOCOL_HEADER, CloseInfo, RawClient
from tests.support.server_thread import ServerThread

pytestmark = pytest.mark.integration

EXTERNAL = bool(os.environ.get("AMQP_URL"))
FRAME_HEADER = struct.Struct(">BHI")
PROPERTIES = commands.Basic.Properties()


def raw_frame(frame_type: int, channel: int, payload: bytes, end: bytes = b"\xce") -> bytes:
    return FRAME_HEADER.pack(frame_type, channel, len(payload)) + payload + end


def method_payload(method: Frame) -> bytes:
    """A method frame's payload (class id, method id, arguments) without the frame around it."""
    return frame.marshal(method, 0)[7:-1]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def address_of(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 5672


def read_until_hang_up(sock: socket.socket) -> bytes:
    """Everything the peer sends before it closes. A reset counts as closing: RabbitMQ closes while our
    unread greeting is still in its buffer, which Linux turns into an RST after the data it did send."""
    got = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(64):
            got += chunk
    return got


def assert_broker_still_serves(url: str) -> None:
    """A fresh connection completes the handshake and opens a channel: the misuse harmed nobody else."""
    with RawClient.open(url) as client:
        client.open_channel(1)
        client.close_connection()


def assert_closed_after_close_ok(client: RawClient) -> None:
    """`read_until_close` answered Close-Ok; the broker now hangs up (and sends nothing more)."""
    assert client.read_frame() is None


def start_ok(
    client: RawClient,
    *,
    mechanism: str = "PLAIN",
    password: str | None = None,
    capabilities: dict[str, Any] | None = CLIENT_CAPABILITIES,
) -> None:
    props: dict[str, Any] = {"product": "amqpd-tests"}
    if capabilities is not None:
        props["capabilities"] = capabilities
    secret = client.password if password is None else password
    client.send_frame(PROTOCOL_HEADER)
    client.expect(0, commands.Connection.Start)
    client.send_method(
        0,
        commands.Connection.StartOk(
            client_properties=props,
            mechanism=mechanism,
            response=f"\0{client.user}\0{secret}",
            locale="en_US",
        ),
    )


def start_and_tune(client: RawClient, *, frame_max: int | None = None) -> commands.Connection.Tune:
    """Header, Start/StartOk, Tune/TuneOk: the connection then waits for Connection.Open."""
    start_ok(client)
    tune = client.expect(0, commands.Connection.Tune)
    client.send_method(
        0,
        commands.Connection.TuneOk(
            channel_max=tune.channel_max,
            frame_max=tune.frame_max if frame_max is None else frame_max,
            heartbeat=0,
        ),
    )
    return tune


# ---------------------------------------------------------------------------- misuse on a running connection


@dataclass(frozen=True)
class Misuse:
    """Frames a client sends on an open connection (channel 1 open) and the Connection.Close they earn."""

    send: Callable[[RawClient], None]
    reply: CloseInfo
    open_kwargs: dict[str, Any] = field(default_factory=dict)
    differs_from_rabbitmq: str | None = None  # why RabbitMQ answers otherwise (the case is skipped there)


def conn_close(code: int, text: str, class_id: int = 0, method_id: int = 0) -> CloseInfo:
    return CloseInfo("connection", code, text, class_id, method_id, 0)


def send_methods(channel: int, *methods: Frame) -> Callable[[RawClient], None]:
    return lambda client: client.send_frames(channel, *methods)


def send_bytes(data: bytes) -> Callable[[RawClient], None]:
    return lambda client: client.send_frame(data)


def duplicate_consumer_tag(client: RawClient) -> None:
    queue = unique("dup-tag")
    client.send_method(1, commands.Queue.Declare(queue=queue, exclusive=True))
    client.expect(1, commands.Queue.DeclareOk)
    client.send_method(1, commands.Basic.Consume(queue=queue, consumer_tag="dup"))
    client.expect(1, commands.Basic.ConsumeOk)
    client.send_method(1, commands.Basic.Consume(queue=queue, consumer_tag="dup"))


def unknown_exchange_type(client: RawClient) -> None:
    client.send_method(1, commands.Exchange.Declare(exchange=unique("x-type"), exchange_type="foo"))


def publish_then(*frames: Any) -> Callable[[RawClient], None]:
    """Basic.Publish to the default exchange, then `frames` (content header, body, or a misplaced method)."""
    return lambda client: client.send_frames(
        1, commands.Basic.Publish(exchange="", routing_key=unique("rk")), *frames
    )


def field_table_with_unknown_type() -> bytes:
    payload = bytearray(method_payload(commands.Queue.Declare(queue=unique("ft"), arguments={"x-a": 1})))
    payload[payload.index(b"x-a") + 3] = ord("Z")  # the field's type tag: no such type
    return raw_frame(1, 1, bytes(payload))


QOS_PAYLOAD = method_payload(commands.Basic.Qos(prefetch_count=1))
PUBLISH_PAYLOAD = method_payload(commands.Basic.Publish(exchange="", routing_key="rk"))


def content_header(properties: bytes, *, class_id: int = 60, weight: int = 0, body_size: int = 1) -> bytes:
    """A content header frame on channel 1 with a hand-made property list (flags word included)."""
    return raw_frame(2, 1, struct.pack(">HHQ", class_id, weight, body_size) + properties)


def publish_with_properties(properties: bytes, **kwargs: int) -> Callable[[RawClient], None]:
    """A whole publish (method, content header, one-octet body) in one write: the one-piece fast path."""
    frames = raw_frame(1, 1, PUBLISH_PAYLOAD) + content_header(properties, **kwargs) + raw_frame(3, 1, b"x")
    return send_bytes(frames)


def headers_table(*entries: bytes) -> bytes:
    """The headers property alone: flags word, then a field table holding ``entries`` (name + tag + value)."""
    table = b"".join(entries)
    return struct.pack(">HI", 0x2000, len(table)) + table


def malformed_properties(detail: str) -> CloseInfo:
    return conn_close(502, f"SYNTAX_ERROR - malformed content header properties: {detail}", 60, 40)


def method_with_extra_octet(channel: int, method: Frame) -> Callable[[RawClient], None]:
    return send_bytes(raw_frame(1, channel, method_payload(method) + b"\x01"))


RABBITMQ_541 = "RabbitMQ 3.10 refuses this publish too, but with 541 INTERNAL_ERROR and no text"
NOT_UTF8 = "RabbitMQ passes it through; pamqp (aio-pika) cannot decode the delivery, which would poison consumers"
UNEXPECTED_HEADER = "UNEXPECTED_FRAME - expected content header for class 60, got "

MISUSES: dict[str, Misuse] = {
    "duplicate consumer tag": Misuse(
        duplicate_consumer_tag, conn_close(530, "NOT_ALLOWED - attempt to reuse consumer tag 'dup'", 60, 20)
    ),
    "unknown exchange type": Misuse(
        unknown_exchange_type, conn_close(503, "COMMAND_INVALID - invalid exchange type 'foo'", 40, 10)
    ),
    "connection method on a channel": Misuse(
        send_methods(1, commands.Connection.Open(virtual_host="/")),
        conn_close(503, "COMMAND_INVALID - unimplemented method", 10, 40),
    ),
    "second channel.open": Misuse(
        send_methods(1, commands.Channel.Open()),
        conn_close(504, "CHANNEL_ERROR - second 'channel.open' seen", 20, 10),
    ),
    "method on an unopened channel": Misuse(
        send_methods(7, commands.Basic.Qos(prefetch_count=1)),
        conn_close(504, "CHANNEL_ERROR - expected 'channel.open'", 60, 10),
    ),
    "channel method on channel 0": Misuse(
        send_methods(0, commands.Basic.Qos(prefetch_count=1)),
        conn_close(504, "CHANNEL_ERROR - unexpected method in connection state running", 60, 10),
    ),
    "channel.open on channel 0": Misuse(
        send_methods(0, commands.Channel.Open()),
        conn_close(504, "CHANNEL_ERROR - unexpected method in connection state running", 20, 10),
    ),
    "body without a method": Misuse(
        send_methods(1, body.ContentBody(b"x")),
        conn_close(505, "UNEXPECTED_FRAME - expected method frame, got non method frame instead"),
    ),
    "content header without a method": Misuse(
        send_methods(1, header.ContentHeader(0, 1, PROPERTIES)),
        conn_close(505, "UNEXPECTED_FRAME - expected method frame, got non method frame instead"),
    ),
    "method while a body is expected": Misuse(
        publish_then(header.ContentHeader(0, 10, PROPERTIES), commands.Basic.Qos(prefetch_count=1)),
        conn_close(
            505, "UNEXPECTED_FRAME - expected content body, got non content body frame instead", 60, 40
        ),
    ),
    "heartbeat on a channel": Misuse(
        send_bytes(raw_frame(8, 1, b"")),
        conn_close(505, "UNEXPECTED_FRAME - type 8, all octets = <<>>"),
    ),
    "frame larger than frame_max": Misuse(
        # Only the frame header: the broker must refuse from the size alone, before buffering the payload.
        send_bytes(FRAME_HEADER.pack(3, 1, 10000)),
        conn_close(501, "FRAME_ERROR - type 3, all octets = <<>>: {frame_too_large,10000,4088}"),
        open_kwargs={"frame_max": 4096},
    ),
    "bad frame-end octet": Misuse(
        send_bytes(raw_frame(1, 1, QOS_PAYLOAD, end=b"\x00")),
        conn_close(
            501,
            "FRAME_ERROR - type 1, all octets = <<0,60,0,10,0,0,0,0,0,1,0>>: {invalid_frame_end_marker,0}",
        ),
    ),
    "unknown frame type": Misuse(
        send_bytes(raw_frame(9, 0, b"abcd")),
        conn_close(501, 'FRAME_ERROR - type 9, all octets = <<"abcd">>: unknown_frame'),
    ),
    "truncated method arguments": Misuse(
        send_bytes(raw_frame(1, 1, QOS_PAYLOAD[:5])),
        conn_close(501, "FRAME_ERROR - cannot decode <<0>>", 60, 10),
    ),
    "publish with immediate=true": Misuse(
        lambda client: client.send_frames(
            1,
            commands.Basic.Publish(exchange="", routing_key=unique("rk"), immediate=True),
            header.ContentHeader(0, 1, PROPERTIES),
            body.ContentBody(b"x"),
        ),
        conn_close(540, "NOT_IMPLEMENTED - immediate=true", 60, 40),
    ),
    "qos with prefetch_size": Misuse(
        send_methods(1, commands.Basic.Qos(prefetch_size=1000)),
        conn_close(540, "NOT_IMPLEMENTED - prefetch_size!=0 (1000)", 60, 10),
    ),
    "recover with requeue=false": Misuse(
        send_methods(1, commands.Basic.Recover(requeue=False)),
        conn_close(540, "NOT_IMPLEMENTED - requeue=false", 60, 110),
    ),
    "method while a content header is expected": Misuse(
        publish_then(commands.Basic.Qos(prefetch_count=1)),
        conn_close(
            505,
            "UNEXPECTED_FRAME - expected content header for class 60, got non content header frame instead",
            60,
            40,
        ),
    ),
    "body while a content header is expected": Misuse(
        publish_then(body.ContentBody(b"x")),
        conn_close(
            505,
            "UNEXPECTED_FRAME - expected content header for class 60, got non content header frame instead",
            60,
            40,
        ),
    ),
    "content header while a body is expected": Misuse(
        publish_then(header.ContentHeader(0, 3, PROPERTIES), header.ContentHeader(0, 3, PROPERTIES)),
        conn_close(
            505, "UNEXPECTED_FRAME - expected content body, got non content body frame instead", 60, 40
        ),
    ),
    "body on an unopened channel": Misuse(
        send_methods(5, body.ContentBody(b"x")),
        conn_close(505, "UNEXPECTED_FRAME - expected method frame, got non method frame instead"),
    ),
    "connection method on an unopened channel": Misuse(
        send_methods(7, commands.Connection.Open(virtual_host="/")),
        conn_close(504, "CHANNEL_ERROR - expected 'channel.open'", 10, 40),
    ),
    "second connection.open": Misuse(
        send_methods(0, commands.Connection.Open(virtual_host="/")),
        conn_close(504, "CHANNEL_ERROR - unexpected method in connection state running", 10, 40),
    ),
    "server-only method from the client": Misuse(
        send_methods(1, commands.Basic.GetEmpty()),
        conn_close(503, "COMMAND_INVALID - unimplemented method", 60, 72),
    ),
    "heartbeat with a payload": Misuse(
        send_bytes(raw_frame(8, 0, b"ab")),
        conn_close(501, 'FRAME_ERROR - type 8, all octets = <<"ab">>: unknown_frame'),
    ),
    "method frame too short to name a method": Misuse(
        send_bytes(raw_frame(1, 1, b"\x00\x3c")),
        conn_close(501, "FRAME_ERROR - type 1, all octets = <<0,60>>: unknown_frame"),
    ),
    "malformed UTF-8 in a short string": Misuse(
        # Queue.Declare whose queue name is the two octets FF FE.
        send_bytes(raw_frame(1, 1, b"\x00\x32\x00\x0a\x00\x00\x02\xff\xfe\x00\x00\x00\x00\x00")),
        conn_close(501, "FRAME_ERROR - Malformed UTF-8 in shortstr"),
    ),
    "frame larger than frame_max on channel 0": Misuse(
        send_bytes(FRAME_HEADER.pack(1, 0, 200000)),
        conn_close(501, "FRAME_ERROR - type 1, all octets = <<>>: {frame_too_large,200000,131064}"),
    ),
    "unknown class": Misuse(
        send_bytes(raw_frame(1, 1, struct.pack(">HH", 99, 10))),
        conn_close(540, "NOT_IMPLEMENTED - unknown class 99", 99, 10),
        differs_from_rabbitmq="RabbitMQ's reader crashes on an unknown class id and resets the connection",
    ),
    "unknown method": Misuse(
        send_bytes(raw_frame(1, 1, struct.pack(">HH", 60, 999))),
        conn_close(503, "COMMAND_INVALID - unknown method 999 of class 60", 60, 999),
        differs_from_rabbitmq="RabbitMQ's reader crashes on an unknown method id and resets the connection",
    ),
    "undecodable field table": Misuse(
        send_bytes(field_table_with_unknown_type()),
        conn_close(502, "SYNTAX_ERROR - cannot decode field table in Queue.Declare", 50, 10),
        differs_from_rabbitmq="RabbitMQ crashes decoding an unknown field type and resets the TCP connection",
    ),
    # --- malformed property lists: refused at publish, never queued (RabbitMQ: 541, which we never send)
    "headers table running past the end": Misuse(
        publish_with_properties(struct.pack(">HI", 0x2000, 100) + b"abc"),
        malformed_properties("property headers: field table of length 100 runs past the end (3 octets left)"),
        differs_from_rabbitmq=RABBITMQ_541,
    ),
    "three-octet timestamp": Misuse(
        publish_with_properties(struct.pack(">H", 0x0040) + b"\x00\x00\x01"),
        malformed_properties("property timestamp: truncated: 3 of 8 octets"),
        differs_from_rabbitmq=RABBITMQ_541,
    ),
    "short string property running past the end": Misuse(
        publish_with_properties(struct.pack(">H", 0x8000) + b"\x10abc"),
        malformed_properties(
            "property content_type: short string of length 16 runs past the end (3 octets left)"
        ),
        differs_from_rabbitmq=RABBITMQ_541,
    ),
    "octets after the last property": Misuse(
        publish_with_properties(struct.pack(">H", 0x8000) + b"\x03abczz"),
        malformed_properties("2 octets left over after the last property"),
        differs_from_rabbitmq=RABBITMQ_541,
    ),
    "octets after an empty property list": Misuse(
        publish_with_properties(b"\x00\x00zz"),
        malformed_properties("2 octets left over after the last property"),
        differs_from_rabbitmq=RABBITMQ_541,
    ),
    "delivery mode flag without its octet": Misuse(
        publish_with_properties(struct.pack(">H", 0x1000)),
        malformed_properties("property delivery_mode: truncated: 0 of 1 octets"),
        differs_from_rabbitmq=RABBITMQ_541,
    ),
    "property flags with the continuation bit": Misuse(
        publish_with_properties(struct.pack(">HH", 0x8001, 0) + b"\x03abc"),
        malformed_properties("property flags 0x8001 have the continuation bit set (Basic has 14 properties)"),
        differs_from_rabbitmq=RABBITMQ_541,
    ),
    "unknown field type in the headers": Misuse(
        publish_with_properties(headers_table(b"\x01aZ")),
        malformed_properties("property headers: field 'a': unknown field type 'Z'"),
        differs_from_rabbitmq=RABBITMQ_541,
    ),
    "field type 0 in the headers": Misuse(
        # pamqp reads it as void; RabbitMQ does not know it.
        publish_with_properties(headers_table(b"\x01a\x00")),
        malformed_properties("property headers: field 'a': unknown field type '\\x00'"),
        differs_from_rabbitmq=RABBITMQ_541,
    ),
    "NaN float in the headers": Misuse(
        publish_with_properties(headers_table(b"\x01af" + struct.pack(">f", float("nan")))),
        malformed_properties("property headers: field 'a': float is not finite"),
        differs_from_rabbitmq=RABBITMQ_541,
    ),
    "infinite double in a nested array": Misuse(
        publish_with_properties(
            headers_table(
                b"\x01aF" + struct.pack(">I", 16) + b"\x01bA" + struct.pack(">I", 9) + b"d" + struct.pack(">d", 1e999)
            )
        ),
        malformed_properties(
            "property headers: field 'a': field 'b': array element 0: double is not finite or outside the "
            "32-bit float range"
        ),
        differs_from_rabbitmq=RABBITMQ_541,
    ),
    "nested table running past its parent": Misuse(
        publish_with_properties(headers_table(b"\x01aF" + struct.pack(">I", 9))),
        malformed_properties(
            "property headers: field 'a': field table of length 9 runs past the end (0 octets left)"
        ),
        differs_from_rabbitmq=RABBITMQ_541,
    ),
    "invalid UTF-8 in a short string property": Misuse(
        publish_with_properties(struct.pack(">H", 0x0400) + b"\x02\xff\xfe"),
        malformed_properties("property correlation_id: short string is not valid UTF-8"),
        differs_from_rabbitmq=NOT_UTF8,
    ),
    "timestamp past the year 9999": Misuse(
        publish_with_properties(struct.pack(">HQ", 0x0040, 2**64 - 1)),
        malformed_properties(f"property timestamp: {2**64 - 1} is out of range"),
        differs_from_rabbitmq="RabbitMQ passes it through; pamqp (aio-pika) cannot decode the delivery",
    ),
    "malformed properties on the frame-by-frame path": Misuse(
        send_bytes(raw_frame(1, 1, PUBLISH_PAYLOAD) + content_header(struct.pack(">HI", 0x2000, 100), body_size=0)),
        malformed_properties("property headers: field table of length 100 runs past the end (0 octets left)"),
        differs_from_rabbitmq=RABBITMQ_541,
    ),
    # --- content headers that are not what a publish expects
    "content header with a non-zero weight": Misuse(
        publish_with_properties(b"\x00\x00", weight=1),
        conn_close(505, UNEXPECTED_HEADER + "non content header frame instead", 60, 40),
    ),
    "content header of another class": Misuse(
        publish_with_properties(b"\x00\x00", class_id=50),
        conn_close(505, UNEXPECTED_HEADER + "one for class 50 instead", 60, 40),
    ),
    "content header of another class and no body": Misuse(
        send_bytes(raw_frame(1, 1, PUBLISH_PAYLOAD) + content_header(b"\x00\x00", class_id=10, body_size=0)),
        conn_close(505, UNEXPECTED_HEADER + "one for class 10 instead", 60, 40),
    ),
    # --- method frames with octets left over after their arguments: exact decoding on every path
    "qos with an octet left over": Misuse(
        send_bytes(raw_frame(1, 1, QOS_PAYLOAD + b"\x07")),
        conn_close(501, "FRAME_ERROR - cannot decode <<0,0,0,0,0,1,0,7>>", 60, 10),
    ),
    "publish with an octet left over, whole": Misuse(
        send_bytes(
            raw_frame(1, 1, PUBLISH_PAYLOAD + b"\x07") + content_header(b"\x00\x00") + raw_frame(3, 1, b"x")
        ),
        conn_close(501, "FRAME_ERROR - cannot decode <<0,0,0,2,114,107,0,7>>", 60, 40),
    ),
    "publish with an octet left over, alone": Misuse(
        send_bytes(raw_frame(1, 1, PUBLISH_PAYLOAD + b"\x07")),
        conn_close(501, "FRAME_ERROR - cannot decode <<0,0,0,2,114,107,0,7>>", 60, 40),
    ),
    "ack with an octet left over": Misuse(
        method_with_extra_octet(1, commands.Basic.Ack(delivery_tag=0, multiple=True)),
        conn_close(501, "FRAME_ERROR - cannot decode <<0,0,0,0,0,0,0,0,1,1>>", 60, 80),
    ),
    "channel.close with an octet left over": Misuse(
        method_with_extra_octet(1, commands.Channel.Close(200, "x", 0, 0)),
        conn_close(501, "FRAME_ERROR - cannot decode <<0,200,1,120,0,0,0,0,1>>", 20, 40),
    ),
    "queue.declare with an octet left over": Misuse(
        method_with_extra_octet(1, commands.Queue.Declare(queue="td")),
        conn_close(501, "FRAME_ERROR - cannot decode <<0,0,2,116,100,0,0,0,0,0,1>>", 50, 10),
    ),
    "connection.close with an octet left over": Misuse(
        method_with_extra_octet(0, commands.Connection.Close(200, "x", 0, 0)),
        conn_close(501, "FRAME_ERROR - cannot decode <<0,200,1,120,0,0,0,0,1>>", 10, 50),
        differs_from_rabbitmq="RabbitMQ 3.10 answers 541 INTERNAL_ERROR (its channel-0 decode crashes)",
    ),
    "queue name running past the end": Misuse(
        # pamqp cuts the short string short and fills the rest with defaults; RabbitMQ refuses it.
        send_bytes(raw_frame(1, 1, b"\x00\x32\x00\x0a\x00\x00\x09abc")),
        conn_close(501, "FRAME_ERROR - cannot decode <<0,0,9,97,98,99>>", 50, 10),
    ),
    "body longer than declared": Misuse(
        publish_then(header.ContentHeader(0, 2, PROPERTIES), body.ContentBody(b"abc")),
        conn_close(501, "FRAME_ERROR - content body frame exceeds remaining content size"),
        differs_from_rabbitmq="RabbitMQ 3.10 wedges the channel silently (its main branch sends this 501)",
    ),
}


@pytest.mark.parametrize("name", list(MISUSES))
def test_misuse_on_an_open_connection_gets_rabbitmqs_connection_close(
    name: str, amqp_url: str, loop_kind: str
) -> None:
    misuse = MISUSES[name]
    if EXTERNAL and misuse.differs_from_rabbitmq:
        pytest.skip(f"deliberate difference: {misuse.differs_from_rabbitmq}")
    with RawClient.open(amqp_url, **misuse.open_kwargs) as client:
        client.open_channel(1)
        misuse.send(client)
        assert client.read_until_close() == misuse.reply
        assert_closed_after_close_ok(client)
    assert_broker_still_serves(amqp_url)


def test_a_deprecated_method_is_still_served(amqp_url: str, loop_kind: str) -> None:
    """Basic.RecoverAsync (deprecated in 0-9-1, still served by RabbitMQ): no reply, the channel goes on. pamqp's
    constructor of it warns; the broker must not turn that into an error (the fuzz found a 541 under pytest)."""
    with RawClient.open(amqp_url) as client:
        client.open_channel(1)
        client.send_frame(raw_frame(1, 1, struct.pack(">HHB", 60, 100, 1)))
        client.send_method(1, commands.Basic.Qos(prefetch_count=1))
        client.expect(1, commands.Basic.QosOk)
        client.close_connection()


def test_channel_max_is_enforced_with_530(amqp_url: str, loop_kind: str) -> None:
    with RawClient.open(amqp_url, channel_max=2) as client:
        client.open_channel(1)
        client.open_channel(2)
        client.send_method(3, commands.Channel.Open())
        assert client.read_until_close() == conn_close(
            530, "NOT_ALLOWED - number of channels opened (2) has reached the negotiated channel_max (2)"
        )
    assert_broker_still_serves(amqp_url)


# --------------------------------------------------------------------------------------------- channel errors


def test_after_a_channel_error_the_channel_discards_frames_until_close_ok(
    amqp_url: str, loop_kind: str
) -> None:
    missing = unique("missing")
    with RawClient.open(amqp_url) as client:
        client.open_channel(1)
        client.send_method(1, commands.Queue.Declare(queue=missing, passive=True))
        close = client.read_until_close(reply=False)
        assert close == CloseInfo("channel", 404, f"NOT_FOUND - no queue '{missing}' in vhost '/'", 50, 10, 1)
        # Sent before our Close-Ok: dropped, so no Declare-Ok, no second Channel.Close.
        client.send_method(1, commands.Queue.Declare(queue=missing, passive=True))
        client.send_method(1, commands.Basic.Qos(prefetch_count=1))
        client.send_method(1, commands.Channel.CloseOk())
        client.send_method(1, commands.Channel.Open())
        client.expect(1, commands.Channel.OpenOk)  # the first frame back: nothing was answered in between
        client.send_method(1, commands.Basic.Qos(prefetch_count=1))
        client.expect(1, commands.Basic.QosOk)
        client.close_connection()


def test_channel_flow_off_is_acknowledged_and_pauses_deliveries(amqp_url: str, loop_kind: str) -> None:
    if EXTERNAL:
        pytest.skip(
            "deliberate difference: RabbitMQ answers channel.flow active=false with 540 NOT_IMPLEMENTED"
        )
    queue = unique("flow")
    with RawClient.open(amqp_url) as client:
        client.open_channel(1)
        client.send_method(1, commands.Queue.Declare(queue=queue, exclusive=True))
        client.expect(1, commands.Queue.DeclareOk)
        client.send_method(1, commands.Basic.Consume(queue=queue, consumer_tag="c", no_ack=True))
        client.expect(1, commands.Basic.ConsumeOk)
        client.send_method(1, commands.Channel.Flow(active=False))
        assert client.expect(1, commands.Channel.FlowOk).active is False
        client.publish(1, b"held", routing_key=queue)
        # The broker routes a publish before reading the next frame: an unpaused delivery would come first.
        client.send_method(1, commands.Basic.Qos(prefetch_count=10))
        client.expect(1, commands.Basic.QosOk)
        client.send_method(1, commands.Channel.Flow(active=True))
        assert client.expect(1, commands.Channel.FlowOk).active is True
        assert client.expect(1, commands.Basic.Deliver).consumer_tag == "c"
        client.close_connection()


# --------------------------------------------------------------------------------------------- the handshake


def test_open_of_an_unknown_vhost_gets_530(amqp_url: str, loop_kind: str) -> None:
    with RawClient(amqp_url) as client:
        start_and_tune(client)
        client.send_method(0, commands.Connection.Open(virtual_host="nope"))
        assert client.read_until_close() == conn_close(530, "NOT_ALLOWED - vhost nope not found", 10, 40)
        assert_closed_after_close_ok(client)
    assert_broker_still_serves(amqp_url)


def test_tune_ok_with_frame_max_below_4096_gets_530(amqp_url: str, loop_kind: str) -> None:
    if EXTERNAL:
        pytest.skip("deliberate difference: RabbitMQ closes the socket silently after 3 s instead of its 530")
    with RawClient(amqp_url) as client:
        start_and_tune(client, frame_max=1000)
        client.send_method(0, commands.Connection.Open(virtual_host="/"))
        assert client.read_until_close() == conn_close(
            530,
            "NOT_ALLOWED - negotiated frame_max = 1000 is lower than the minimum allowed value (4096)",
            10,
            31,
        )
    assert_broker_still_serves(amqp_url)


def test_bad_credentials_get_403_when_the_client_asks_for_it(amqp_url: str, loop_kind: str) -> None:
    with RawClient(amqp_url) as client:
        start_ok(client, password="wrong")
        assert client.read_until_close() == conn_close(
            403,
            "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. "
            "For details see the broker logfile.",
        )
        assert_closed_after_close_ok(client)
    assert_broker_still_serves(amqp_url)


def test_bad_credentials_close_the_socket_without_the_capability(amqp_url: str, loop_kind: str) -> None:
    with RawClient(amqp_url) as client:
        start_ok(client, password="wrong", capabilities=None)
        assert client.read_until_close() == EOF
    assert_broker_still_serves(amqp_url)


def test_unknown_sasl_mechanism_closes_the_socket(amqp_url: str, loop_kind: str) -> None:
    with RawClient(amqp_url) as client:
        start_ok(client, mechanism="FOO")
        assert client.read_until_close() == EOF
    assert_broker_still_serves(amqp_url)


def test_a_start_ok_larger_than_frame_min_size_is_refused_before_tune(amqp_url: str, loop_kind: str) -> None:
    if EXTERNAL:
        pytest.skip("deliberate difference: RabbitMQ refuses it too, but by closing silently after 3 s")
    start = commands.Connection.StartOk(
        client_properties={"product": "x" * 5000},
        mechanism="PLAIN",
        response="\0guest\0guest",
        locale="en_US",
    )
    size = len(method_payload(start))
    with RawClient(amqp_url) as client:
        client.send_frame(PROTOCOL_HEADER)
        client.expect(0, commands.Connection.Start)
        client.send_method(0, start)
        assert client.read_until_close() == conn_close(
            501, f"FRAME_ERROR - type 1, all octets = <<>>: {{frame_too_large,{size},4088}}"
        )
    assert_broker_still_serves(amqp_url)


@pytest.mark.parametrize(
    "greeting",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"AMQP\x01\x01\x00\x0a",
        b"AMQP\x00\x00\x09\x02",
        b"AMQP\x00\x00\x09\x00",  # 0-9 in the 0-9-1 layout: not a version anyone speaks
        b"AMQP\x00\x00\x08\x00",
        b"AMQP\x00\x01\x00\x00",  # AMQP 1.0
        b"AMQP\x03\x01\x00\x00",  # AMQP 1.0 SASL
    ],
)
def test_non_amqp_091_greeting_gets_our_protocol_header_and_a_close(
    greeting: bytes, amqp_url: str, loop_kind: str
) -> None:
    with RawClient(amqp_url) as client:
        client.send_frame(greeting)
        assert read_until_hang_up(client.sock) == PROTOCOL_HEADER
    assert_broker_still_serves(amqp_url)


def test_an_amqp_0_9_greeting_gets_the_0_9_1_handshake(amqp_url: str, loop_kind: str) -> None:
    """RabbitMQ answers ``AMQP 1 1 0 9`` (0-9 in the old header layout) with its 0-9-1 Connection.Start, which
    says 0-9 either way: 0-9-1 is 0-9 with errata. The handshake then completes as usual."""
    with RawClient(amqp_url) as client:
        client.send_frame(b"AMQP\x01\x01\x00\x09")
        start = client.expect(0, commands.Connection.Start)
        assert (start.version_major, start.version_minor) == (0, 9)
        client.send_method(
            0,
            commands.Connection.StartOk(
                client_properties={"product": "amqpd-tests"},
                mechanism="PLAIN",
                response=f"\0{client.user}\0{client.password}",
                locale="en_US",
            ),
        )
        tune = client.expect(0, commands.Connection.Tune)
        client.send_method(0, commands.Connection.TuneOk(tune.channel_max, tune.frame_max, 0))
        client.send_method(0, commands.Connection.Open(virtual_host=client.vhost))
        client.expect(0, commands.Connection.OpenOk)
        client.open_channel(1)
        client.close_connection()


@pytest.mark.parametrize("greeting", [b"AMQP\x01\x01\x08\x00", b"AMQP\x01\x01\x09\x01"])
def test_an_amqp_0_8_greeting_gets_our_protocol_header_and_a_close(
    greeting: bytes, amqp_url: str, loop_kind: str
) -> None:
    if EXTERNAL:
        pytest.skip(
            "deliberate difference: RabbitMQ speaks AMQP 0-8 too (these greetings get its 0-8 Connection.Start); "
            "0-8 lays several methods out differently, and amqpd speaks 0-9-1 only"
        )
    with RawClient(amqp_url) as client:
        client.send_frame(greeting)
        assert read_until_hang_up(client.sock) == PROTOCOL_HEADER
    assert_broker_still_serves(amqp_url)


def test_channel_open_before_connection_open_gets_505(amqp_url: str, loop_kind: str) -> None:
    with RawClient(amqp_url) as client:
        start_and_tune(client)
        client.send_method(1, commands.Channel.Open())
        # pamqp writes Channel.Open's deprecated out-of-band field as the short string "0".
        expected = conn_close(505, "UNEXPECTED_FRAME - type 1, all octets = <<0,20,0,10,1,48>>")
        assert client.read_until_close() == expected
        assert_closed_after_close_ok(client)
    assert_broker_still_serves(amqp_url)


def test_a_body_frame_of_exactly_frame_max_octets_is_accepted(amqp_url: str, loop_kind: str) -> None:
    """RabbitMQ's reader allows a payload of frame_max octets (the frame is 8 over); one more is refused."""
    with RawClient.open(amqp_url, frame_max=4096) as client:
        client.open_channel(1)
        client.send_method(1, commands.Queue.Declare(queue="", exclusive=True))
        queue = client.expect(1, commands.Queue.DeclareOk).queue
        payload = b"y" * 4096
        client.send_frame(
            raw_frame(1, 1, method_payload(commands.Basic.Publish(exchange="", routing_key=queue)))
            + raw_frame(2, 1, struct.pack(">HHQH", 60, 0, len(payload), 0))
            + raw_frame(3, 1, payload)
        )
        client.send_method(1, commands.Basic.Get(queue=queue, no_ack=True))
        client.expect(1, commands.Basic.GetOk)
        assert client.expect(1, header.ContentHeader).body_size == 4096
        got = b""
        while len(got) < 4096:
            got += client.expect(1, body.ContentBody).value
        assert got == payload
        client.send_frame(raw_frame(3, 1, payload + b"y"))
        assert client.read_until_close() == conn_close(
            501, "FRAME_ERROR - type 3, all octets = <<>>: {frame_too_large,4097,4088}"
        )
    assert_broker_still_serves(amqp_url)


CONSUMER_ARGUMENTS: dict[str, tuple[dict[str, Any], str | None]] = {
    # arguments -> the detail after "invalid arg '<name>' for queue '<q>' in vhost '/'", or None for accepted
    "x-priority as a string": ({"x-priority": "high"}, '"expected integer, got longstr"'),
    "x-priority as a float": ({"x-priority": 1.5}, '"expected integer, got float"'),
    "x-priority as a bool": ({"x-priority": True}, '"expected integer, got bool"'),
    "x-priority void": ({"x-priority": None}, '"expected integer, got void"'),
    "x-priority negative": ({"x-priority": -5}, None),
    "x-priority beyond 32 bits": ({"x-priority": 2**40}, None),
    "x-cancel-on-ha-failover as a string": ({"x-cancel-on-ha-failover": "yes"}, "{unacceptable_type,longstr}"),
    "x-cancel-on-ha-failover as a number": ({"x-cancel-on-ha-failover": 1}, "{unacceptable_type,byte}"),
    "x-cancel-on-ha-failover true": ({"x-cancel-on-ha-failover": True}, None),
    "x-stream-offset on a classic queue": ({"x-stream-offset": "first"}, "of queue type rabbit_classic_queue"),
    "x-stream-offset as a bool": ({"x-stream-offset": True}, "of queue type rabbit_classic_queue"),
    "x-credit as a table": ({"x-credit": {"credit": 1, "drain": False}}, None),
    "x-credit as a number": ({"x-credit": 1}, "{unacceptable_type,byte}"),  # RabbitMQ: 541
    "unknown argument": ({"x-other": "x", "x-stream-filter": 1}, None),
}


@pytest.mark.parametrize("name", list(CONSUMER_ARGUMENTS))
def test_consumer_arguments_are_validated_like_rabbitmq(name: str, amqp_url: str, loop_kind: str) -> None:
    arguments, detail = CONSUMER_ARGUMENTS[name]
    if EXTERNAL and "x-credit" in arguments and detail is not None:
        pytest.skip("deliberate difference: RabbitMQ 3.10 answers an x-credit that is not a table with 541")
    with RawClient.open(amqp_url) as client:
        client.open_channel(1)
        client.send_method(1, commands.Queue.Declare(queue="", exclusive=True))
        queue = client.expect(1, commands.Queue.DeclareOk).queue
        client.send_method(1, commands.Basic.Consume(queue=queue, arguments=arguments))
        if detail is None:
            client.expect(1, commands.Basic.ConsumeOk)
            client.close_connection()
            return
        separator = " " if detail.startswith("of queue type") else ": "
        key = next(iter(arguments))
        assert client.read_until_close() == CloseInfo(
            "channel",
            406,
            f"PRECONDITION_FAILED - invalid arg '{key}' for queue '{queue}' in vhost '/'{separator}{detail}",
            60,
            20,
            1,
        )
        client.close_connection()


def test_garbage_before_the_handshake_leaves_the_broker_serving(amqp_url: str, loop_kind: str) -> None:
    for garbage in (b"\x00" * 64, b"\xff" * 3, bytes(range(256))):
        with socket.create_connection(address_of(amqp_url), timeout=5) as sock:
            sock.sendall(garbage)
            with contextlib.suppress(OSError):  # the broker may already have hung up
                sock.shutdown(socket.SHUT_WR)
            answer = read_until_hang_up(sock)
            # RabbitMQ closes with our garbage unread, and the RST it causes may discard its header in flight.
            assert answer == PROTOCOL_HEADER or (EXTERNAL and answer == b"")
    assert_broker_still_serves(amqp_url)


# ------------------------------------------------------------------------------------------ handshake timeout


@pytest.fixture
def impatient_broker(loop_kind: str) -> Iterator[ServerThread]:
    """An in-process broker that gives a client 0.3 s to complete the handshake."""
    if EXTERNAL:
        pytest.skip("configures its own in-process amqpd (RabbitMQ's handshake timeout is a fixed 10 s)")
    from amqpd.broker.server.config import Config

    thread = ServerThread(
        Config(host="127.0.0.1", port=0, store="memory://", handshake_timeout=0.3), loop_kind
    ).start()
    try:
        yield thread
        assert thread.wait_idle()["connections"] == 0
    finally:
        thread.stop()


@pytest.mark.parametrize("stage", ["silent", "after protocol header", "after start-ok"])
def test_a_client_that_stalls_the_handshake_is_disconnected(
    stage: str, impatient_broker: ServerThread
) -> None:
    with RawClient(impatient_broker.url) as client:
        if stage == "after protocol header":
            client.send_frame(PROTOCOL_HEADER)
            client.expect(0, commands.Connection.Start)
        elif stage == "after start-ok":
            start_ok(client)
            client.expect(0, commands.Connection.Tune)
        assert client.read_until_close() == EOF
    assert_broker_still_serves(impatient_broker.url)


def test_a_completed_handshake_outlives_the_handshake_timeout(impatient_broker: ServerThread) -> None:
    with RawClient.open(impatient_broker.url) as client:
        client.open_channel(1)
        # A client that connects later and stalls is dropped; by then our own handshake timer has fired too.
        with RawClient(impatient_broker.url) as stalled:
            assert stalled.read_until_close() == EOF
        client.send_method(1, commands.Basic.Qos(prefetch_count=1))
        client.expect(1, commands.Basic.QosOk)
        client.close_connection()
