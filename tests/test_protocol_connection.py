"""The sans-IO connection state machine, driven byte by byte with a recording handler (no sockets)."""

from __future__ import annotations

from typing import Any

import pytest
from pamqp import commands
from pamqp import frame as pframe
from pamqp.base import Frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from amqpd.protocol.connection import CLOSED, CLOSING, RUNNING, WITH_EXTERNAL, AMQPConnection
from amqpd.protocol.constants import PROTOCOL_HEADER
from amqpd.protocol.errors import ChannelError
from amqpd.protocol.framing import FRAME_PUBLISH, FrameReader, ProtocolHeaderMismatch


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.accept = True
        self.raise_on_method: Exception | None = None

    def on_login(self, mechanism: str, username: str, password: str, props: dict[str, Any]) -> bool:
        self.calls.append(("login", mechanism, username, password))
        return self.accept

    def on_open_vhost(self, vhost: str) -> None:
        self.calls.append(("vhost", vhost))

    def on_channel_open(self, channel: int) -> None:
        self.calls.append(("open", channel))

    def on_channel_closed(self, channel: int) -> None:
        self.calls.append(("closed", channel))

    def on_method(self, channel: int, method: Frame) -> None:
        if self.raise_on_method is not None:
            raise self.raise_on_method
        self.calls.append(("method", channel, method.name))

    def on_publish(self, channel: int, exchange: str, rk: str, mandatory: bool, header: bytes, body: bytes) -> None:
        self.calls.append(("publish", channel, exchange, rk, mandatory, body))

    def on_ack(self, channel: int, tag: int, multiple: bool) -> None:
        self.calls.append(("ack", channel, tag, multiple))

    def on_nack(self, channel: int, tag: int, multiple: bool, requeue: bool) -> None:
        self.calls.append(("nack", channel, tag, multiple, requeue))

    def on_reject(self, channel: int, tag: int, requeue: bool) -> None:
        self.calls.append(("reject", channel, tag, requeue))

    def on_close(self) -> None:
        self.calls.append(("close",))


def decode_all(data: bytes) -> list[tuple[int, Any]]:
    out = []
    while data:
        n, ch, f = pframe.unmarshal(data)
        out.append((ch, f))
        data = data[n:]
    return out


def m(channel: int, method: Frame) -> bytes:
    return pframe.marshal(method, channel)


HANDSHAKE = (
    PROTOCOL_HEADER
    + m(
        0,
        commands.Connection.StartOk(
            client_properties={"capabilities": {"authentication_failure_close": True}},
            mechanism="PLAIN",
            response="\x00guest\x00guest",
        ),
    )
    + m(0, commands.Connection.TuneOk(channel_max=2047, frame_max=131072, heartbeat=60))
    + m(0, commands.Connection.Open(virtual_host="/"))
)


def feed(conn: AMQPConnection, data: bytes, mode: str) -> None:
    if mode == "whole":
        conn.receive_data(data)
    elif mode == "bytewise":
        for i in range(len(data)):
            conn.receive_data(data[i : i + 1])
    else:  # split in two uneven halves
        conn.receive_data(data[:5])
        conn.receive_data(data[5:])


MODES = ["whole", "bytewise", "split"]


def open_conn(mode: str = "whole") -> tuple[AMQPConnection, Recorder]:
    rec = Recorder()
    conn = AMQPConnection(rec)
    feed(conn, HANDSHAKE, mode)
    assert conn.state == RUNNING
    return conn, rec


@pytest.mark.parametrize("mode", MODES)
def test_handshake_reaches_running_and_sends_start_tune_openok(mode: str) -> None:
    conn, rec = open_conn(mode)
    frames = decode_all(conn.data_to_send())
    names = [f.name for _, f in frames]
    assert names == ["Connection.Start", "Connection.Tune", "Connection.OpenOk"]
    start = frames[0][1]
    caps = start.server_properties["capabilities"]
    assert caps["publisher_confirms"] and caps["consumer_cancel_notify"] and caps["basic.nack"]
    assert ("login", "PLAIN", "guest", "guest") in rec.calls
    assert ("vhost", "/") in rec.calls


@pytest.mark.parametrize("mode", MODES)
def test_publish_is_assembled_from_method_header_and_split_body(mode: str) -> None:
    conn, rec = open_conn()
    conn.data_to_send()
    body = b"x" * 10000
    data = (
        m(1, commands.Channel.Open())
        + m(1, commands.Basic.Publish(exchange="ex", routing_key="rk", mandatory=True))
        + pframe.marshal(ContentHeader(0, len(body), commands.Basic.Properties()), 1)
        + pframe.marshal(ContentBody(body[:4000]), 1)
        + pframe.marshal(ContentBody(body[4000:]), 1)
        + m(1, commands.Basic.Ack(delivery_tag=7, multiple=True))
    )
    feed(conn, data + b"\x01", mode)  # a trailing partial frame stays buffered
    assert ("publish", 1, "ex", "rk", True, body) in rec.calls
    assert ("ack", 1, 7, True) in rec.calls
    assert conn.state == RUNNING


def test_empty_body_completes_at_the_header() -> None:
    conn, rec = open_conn()
    conn.receive_data(
        m(1, commands.Channel.Open())
        + m(1, commands.Basic.Publish(exchange="", routing_key="q"))
        + pframe.marshal(ContentHeader(0, 0, commands.Basic.Properties()), 1)
    )
    assert ("publish", 1, "", "q", False, b"") in rec.calls


def test_non_amqp_header_gets_our_header_back() -> None:
    conn = AMQPConnection(Recorder())
    with pytest.raises(ProtocolHeaderMismatch):
        conn.receive_data(b"GET / HTTP/1.1\r\n\r\n")
    assert conn.data_to_send() == PROTOCOL_HEADER


def last_close(conn: AMQPConnection) -> tuple[int, Any]:
    return decode_all(conn.data_to_send())[-1]


def test_channel_error_closes_only_the_channel_and_discards_until_close_ok() -> None:
    conn, rec = open_conn()
    conn.receive_data(m(1, commands.Channel.Open()))
    rec.raise_on_method = ChannelError(404, "no queue 'q' in vhost '/'")
    conn.receive_data(m(1, commands.Queue.Purge(queue="q")))
    conn.data_to_send()
    rec.raise_on_method = None
    ch, close = last_close(conn) if False else (1, None)
    conn.receive_data(m(1, commands.Queue.Purge(queue="q")))  # discarded
    assert ("method", 1, "Queue.Purge") not in rec.calls
    conn.receive_data(m(1, commands.Channel.CloseOk()))
    conn.receive_data(m(1, commands.Channel.Open()))
    assert rec.calls.count(("open", 1)) == 2
    assert conn.state == RUNNING
    del ch, close


def sent_names(conn: AMQPConnection) -> list[tuple[int, str]]:
    return [(ch, f.name) for ch, f in decode_all(conn.data_to_send())]


@pytest.mark.parametrize("mode", MODES)
def test_a_channel_close_crossing_ours_gets_close_ok_and_the_channel_awaits_the_close_ok_to_ours(mode: str) -> None:
    conn, rec = open_conn()
    conn.receive_data(m(1, commands.Channel.Open()))
    conn.data_to_send()
    rec.raise_on_method = ChannelError(404, "no queue 'q' in vhost '/'")
    # The client closes channel 1 before it sees the Close our 404 sends: the two Closes cross on the wire.
    crossing = (
        m(1, commands.Queue.Purge(queue="q"))
        + m(1, commands.Channel.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0))
        + m(1, commands.Queue.Purge(queue="q"))  # still discarded: the channel awaits the Close-Ok to ours
    )
    feed(conn, crossing, mode)
    assert sent_names(conn) == [(1, "Channel.Close"), (1, "Channel.CloseOk")]
    assert rec.calls.count(("closed", 1)) == 1
    rec.raise_on_method = None
    feed(conn, m(1, commands.Channel.CloseOk()) + m(1, commands.Channel.Open()), mode)
    assert conn.state == RUNNING  # the Close-Ok was not taken for a frame on an unopened channel (504)
    assert sent_names(conn) == [(1, "Channel.OpenOk")]
    assert rec.calls.count(("open", 1)) == 2


@pytest.mark.parametrize("mode", MODES)
def test_a_connection_close_crossing_ours_gets_close_ok_and_ends_the_connection(mode: str) -> None:
    conn, rec = open_conn()
    conn.data_to_send()
    crossing = (
        m(5, commands.Basic.Qos())  # channel 5 was never opened: 504, a connection error
        + m(0, commands.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0))
        + m(0, commands.Connection.CloseOk())  # the client's answer to our Close, once it has seen it
    )
    feed(conn, crossing, mode)
    assert sent_names(conn) == [(0, "Connection.Close"), (0, "Connection.CloseOk")]
    assert conn.state == CLOSED
    assert rec.calls.count(("close",)) == 1


def test_channel_error_reply_carries_code_text_and_method_ids() -> None:
    conn, rec = open_conn()
    conn.receive_data(m(1, commands.Channel.Open()))
    conn.data_to_send()
    rec.raise_on_method = ChannelError(404, "no queue 'q' in vhost '/'")
    conn.receive_data(m(1, commands.Queue.Purge(queue="q")))
    ch, close = last_close(conn)
    assert ch == 1 and isinstance(close, commands.Channel.Close)
    assert (close.reply_code, close.reply_text) == (404, "NOT_FOUND - no queue 'q' in vhost '/'")
    assert (close.class_id, close.method_id) == (50, 30)
    assert ("closed", 1) in rec.calls


@pytest.mark.parametrize(
    ("data", "code", "text_start"),
    [
        (m(1, commands.Basic.Qos()), 504, "CHANNEL_ERROR - expected 'channel.open'"),
        (
            m(1, commands.Channel.Open()) + m(1, commands.Channel.Open()),
            504,
            "CHANNEL_ERROR - second 'channel.open'",
        ),
        (m(0, commands.Channel.Open()), 504, "CHANNEL_ERROR - unexpected method in connection state running"),
        (
            m(1, commands.Channel.Open()) + m(1, commands.Connection.Blocked()),
            503,
            "COMMAND_INVALID - unimplemented",
        ),
        (
            m(1, commands.Channel.Open()) + pframe.marshal(ContentBody(b"x"), 1),
            505,
            "UNEXPECTED_FRAME - expected method",
        ),
        (
            m(1, commands.Channel.Open()) + m(1, commands.Basic.Publish()) + m(1, commands.Basic.Qos()),
            505,
            "UNEXPECTED_FRAME - expected content header",
        ),
        (b"\x01\x00\x01\x00\x00\x00\x04\x00\x63\x00\x0a\xce", 540, "NOT_IMPLEMENTED - unknown class 99"),
        (b"\x01\x00\x00\x00\x00\x00\x04\x00\x3c\x03\xe7\xce", 503, "COMMAND_INVALID - unknown method 999"),
        (b"\x08\x00\x01\x00\x00\x00\x00\xce", 505, "UNEXPECTED_FRAME - type 8"),
        (
            b"\x09\x00\x00\x00\x00\x00\x04abcd\xce",
            501,
            'FRAME_ERROR - type 9, all octets = <<"abcd">>: unknown_frame',
        ),
        (b"\x01\x00\x00\x00\x00\x00\x04\x00\x0a\x00\x33\x00", 501, "FRAME_ERROR - type 1"),
        (
            b"\x03\x00\x01\x00\x02\x00\x01",  # a payload of frame_max is allowed, one octet more is not
            501,
            "FRAME_ERROR - type 3, all octets = <<>>: {frame_too_large,131073,",
        ),
        (
            m(1, commands.Channel.Open()) + m(1, commands.Basic.Publish(immediate=True)),
            540,
            "NOT_IMPLEMENTED - immediate=true",
        ),
    ],
)
def test_connection_level_errors_send_connection_close(data: bytes, code: int, text_start: str) -> None:
    conn, _rec = open_conn()
    conn.data_to_send()
    conn.receive_data(data)
    ch, close = last_close(conn)
    assert ch == 0 and isinstance(close, commands.Connection.Close), close
    assert close.reply_code == code
    assert close.reply_text.startswith(text_start), close.reply_text
    assert conn.state == CLOSING
    conn.receive_data(m(0, commands.Connection.CloseOk()))
    assert conn.state == CLOSED


def test_body_longer_than_declared_is_a_frame_error() -> None:
    conn, _ = open_conn()
    conn.data_to_send()
    conn.receive_data(
        m(1, commands.Channel.Open())
        + m(1, commands.Basic.Publish(exchange="", routing_key="q"))
        + pframe.marshal(ContentHeader(0, 2, commands.Basic.Properties()), 1)
        + pframe.marshal(ContentBody(b"abc"), 1)
    )
    _, close = last_close(conn)
    assert close.reply_code == 501


def test_field_table_with_unknown_type_is_a_syntax_error() -> None:
    conn, _ = open_conn()
    conn.receive_data(m(1, commands.Channel.Open()))
    conn.data_to_send()
    raw = bytearray(m(1, commands.Queue.Declare(queue="q", arguments={"x-a": 1})))
    idx = raw.index(b"x-a") + 3
    raw[idx] = ord("Z")  # not a field type
    conn.receive_data(bytes(raw))
    _, close = last_close(conn)
    assert close.reply_code == 502


def test_channel_max_is_enforced_by_count() -> None:
    rec = Recorder()
    conn = AMQPConnection(rec)
    conn.receive_data(
        HANDSHAKE.replace(
            m(0, commands.Connection.TuneOk(channel_max=2047, frame_max=131072, heartbeat=60)),
            m(0, commands.Connection.TuneOk(channel_max=2, frame_max=131072, heartbeat=60)),
        )
    )
    conn.data_to_send()
    conn.receive_data(m(1, commands.Channel.Open()) + m(5, commands.Channel.Open()) + m(6, commands.Channel.Open()))
    _, close = last_close(conn)
    assert close.reply_code == 530
    assert "number of channels opened (2) has reached the negotiated channel_max (2)" in close.reply_text


@pytest.mark.parametrize(
    ("frame_max", "text"),
    [
        (1000, "negotiated frame_max = 1000 is lower than the minimum allowed value (4096)"),
        (0, "negotiated frame_max = 0 (no limit) is higher than the maximum allowed value (131072)"),
    ],
)
def test_bad_tune_ok_gets_530_instead_of_a_silent_close(frame_max: int, text: str) -> None:
    conn = AMQPConnection(Recorder())
    conn.receive_data(
        HANDSHAKE.replace(
            m(0, commands.Connection.TuneOk(channel_max=2047, frame_max=131072, heartbeat=60)),
            m(0, commands.Connection.TuneOk(channel_max=2047, frame_max=frame_max, heartbeat=60)),
        )
    )
    _, close = last_close(conn)
    assert close.reply_code == 530 and text in close.reply_text


def test_refused_login_with_capability_gets_403_close() -> None:
    rec = Recorder()
    rec.accept = False
    conn = AMQPConnection(rec)
    conn.receive_data(HANDSHAKE)
    _, close = last_close(conn)
    assert close.reply_code == 403
    assert close.reply_text.startswith("ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN")


def test_refused_login_without_capability_just_closes() -> None:
    rec = Recorder()
    rec.accept = False
    conn = AMQPConnection(rec)
    conn.receive_data(HANDSHAKE.replace(b"authentication_failure_close", b"authentication_failure_closX"))
    names = [f.name for _, f in decode_all(conn.data_to_send())]
    assert names == ["Connection.Start"]
    assert ("close",) in rec.calls


def start_ok(mechanism: str, response: str = "") -> bytes:
    return m(
        0,
        commands.Connection.StartOk(
            client_properties={"capabilities": {"authentication_failure_close": True}},
            mechanism=mechanism,
            response=response,
        ),
    )


def test_start_offers_amqplain_and_plain_unless_the_handler_says_otherwise() -> None:
    conn = AMQPConnection(Recorder())
    conn.receive_data(PROTOCOL_HEADER)
    assert decode_all(conn.data_to_send())[0][1].mechanisms == "AMQPLAIN PLAIN"
    conn = AMQPConnection(Recorder())
    conn.mechanisms = WITH_EXTERNAL  # set by the I/O shell before the header arrives (a verified client cert)
    conn.receive_data(PROTOCOL_HEADER)
    assert decode_all(conn.data_to_send())[0][1].mechanisms == "EXTERNAL AMQPLAIN PLAIN"


@pytest.mark.parametrize("mode", MODES)
def test_external_when_offered_asks_the_handler_with_no_credentials(mode: str) -> None:
    rec = Recorder()
    conn = AMQPConnection(rec, mechanisms=WITH_EXTERNAL)
    after_login = m(0, commands.Connection.TuneOk(channel_max=2047, frame_max=131072, heartbeat=60)) + m(
        0, commands.Connection.Open(virtual_host="/")
    )
    feed(conn, PROTOCOL_HEADER + start_ok("EXTERNAL", "ignored") + after_login, mode)
    assert conn.state == RUNNING
    assert rec.calls[0] == ("login", "EXTERNAL", "", "")
    names = [f.name for _, f in decode_all(conn.data_to_send())]
    assert names == ["Connection.Start", "Connection.Tune", "Connection.OpenOk"]


def test_a_refused_external_login_gets_the_same_403_text_as_plain() -> None:
    rec = Recorder()
    rec.accept = False
    conn = AMQPConnection(rec, mechanisms=WITH_EXTERNAL)
    conn.receive_data(PROTOCOL_HEADER + start_ok("EXTERNAL"))
    _, close = last_close(conn)
    assert (close.reply_code, close.reply_text) == (
        403,
        "ACCESS_REFUSED - Login was refused using authentication mechanism EXTERNAL. "
        "For details see the broker logfile.",
    )


def test_external_when_not_offered_closes_the_socket_without_asking_the_handler() -> None:
    rec = Recorder()
    conn = AMQPConnection(rec)
    conn.receive_data(PROTOCOL_HEADER + start_ok("EXTERNAL"))
    assert conn.state == CLOSED
    assert rec.calls == [("close",)]


def test_client_close_gets_close_ok_and_ends_connection() -> None:
    conn, rec = open_conn()
    conn.data_to_send()
    conn.receive_data(m(0, commands.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0)))
    _, ok = last_close(conn)
    assert isinstance(ok, commands.Connection.CloseOk)
    assert ("close",) in rec.calls


# ---------------------------------------------------------------------------------------------------------------
# The one-piece publish path (FRAME_PUBLISH) must be indistinguishable from the frame-by-frame path.

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_STEP = st.one_of(
    st.tuples(
        st.just("publish"),
        st.integers(1, 3),
        st.sampled_from(["", "ex", "amq.topic"]),
        st.text(max_size=8),
        st.booleans(),
        st.one_of(st.integers(0, 300), st.integers(7900, 9000)),
        st.sampled_from([False, False, False, True]),  # immediate, now and then
        st.sampled_from([60, 60, 60, 50]),  # content header class
    ),
    st.tuples(st.just("open"), st.integers(1, 3)),
    st.tuples(st.just("close"), st.integers(1, 3)),
    st.tuples(st.just("ack"), st.integers(1, 3), st.integers(0, 5), st.booleans()),
    st.tuples(st.just("purge"), st.integers(0, 3)),
)


def _encode_steps(steps: list[tuple[Any, ...]]) -> bytes:
    out = bytearray()
    for step in steps:
        kind, ch = step[0], step[1]
        if kind == "publish":
            _, ch, ex, rk, mandatory, size, immediate, class_id = step
            out += m(ch, commands.Basic.Publish(exchange=ex, routing_key=rk, mandatory=mandatory, immediate=immediate))
            head = bytearray(pframe.marshal(ContentHeader(0, size, commands.Basic.Properties()), ch))
            head[7:9] = class_id.to_bytes(2, "big")
            out += head
            body = bytes(range(256)) * (size // 256 + 1)
            for i in range(0, size, 8184):
                out += pframe.marshal(ContentBody(body[i : min(size, i + 8184)]), ch)
        elif kind == "open":
            out += m(ch, commands.Channel.Open())
        elif kind == "close":
            out += m(ch, commands.Channel.Close(reply_code=200, reply_text="", class_id=0, method_id=0))
        elif kind == "ack":
            out += m(ch, commands.Basic.Ack(delivery_tag=step[2], multiple=step[3]))
        else:
            out += m(ch, commands.Queue.Purge(queue="q"))
    return bytes(out)


def _run(data: bytes, chunk: int) -> tuple[list[tuple[Any, ...]], bytes, str]:
    rec = Recorder()
    conn = AMQPConnection(rec, frame_max=8192, max_message_size=8000)
    conn.receive_data(
        HANDSHAKE.replace(
            m(0, commands.Connection.TuneOk(channel_max=2047, frame_max=131072, heartbeat=60)),
            m(0, commands.Connection.TuneOk(channel_max=2047, frame_max=8192, heartbeat=60)),
        )
    )
    assert conn.state == RUNNING
    conn.data_to_send()
    for i in range(0, len(data), chunk):
        conn.receive_data(data[i : i + chunk])
    return rec.calls, conn.data_to_send(), conn.state


@settings(max_examples=150, deadline=None)
@given(st.lists(_STEP, max_size=12))
def test_publish_fast_path_is_indistinguishable_from_frame_by_frame(steps: list[tuple[Any, ...]]) -> None:
    data = _encode_steps([("open", 1), *steps])
    whole = _run(data, len(data) or 1)
    assert whole == _run(data, 1)  # byte by byte: the reader never sees a publish in one piece
    assert whole == _run(data, 97)


def test_a_publish_in_one_read_takes_the_one_piece_path() -> None:
    data = _encode_steps([("publish", 1, "ex", "rk", False, 10, False, 60)])
    reader = FrameReader(131072)
    reader.feed(PROTOCOL_HEADER)
    frames = reader.feed(data)
    assert [f[0] for f in frames] == [FRAME_PUBLISH]
    _, channel, method, header, body = frames[0]
    assert channel == 1
    assert method == m(1, commands.Basic.Publish(exchange="ex", routing_key="rk"))[7:-1]
    assert header == pframe.marshal(ContentHeader(0, 10, commands.Basic.Properties()), 1)[7:-1]
    assert body == bytes(range(10))


def test_ordinary_frames_carry_no_content_fields() -> None:
    reader = FrameReader(131072)
    reader.feed(PROTOCOL_HEADER)
    ack = pframe.marshal(commands.Basic.Ack(delivery_tag=7), 1)
    assert reader.feed(ack) == [(1, 1, ack[7:-1], b"", b"")]


@pytest.mark.parametrize(
    "step",
    [
        ("publish", 1, "ex", "rk", False, 8100, False, 60),  # over max_message_size, body in one frame
        ("publish", 1, "ex", "rk", True, 10, True, 60),  # immediate
        ("publish", 1, "ex", "rk", False, 10, False, 50),  # header of the wrong class
        ("publish", 2, "ex", "rk", False, 10, False, 60),  # channel never opened
        ("publish", 1, "ex", "rk", False, 0, False, 60),  # empty body: no body frame
    ],
)
def test_unusual_publishes_get_the_same_answer_in_one_piece_and_byte_by_byte(step: tuple[Any, ...]) -> None:
    data = _encode_steps([("open", 1), step, ("purge", 1)])
    assert _run(data, len(data)) == _run(data, 1)
