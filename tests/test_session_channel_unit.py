"""broker.session.channel.Channel over a fake connection: frames out are recorded and decoded, nothing touches
a socket or an event loop."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, TypeVar, cast

import pytest
from pamqp import body, commands, header
from pamqp import frame as pamqp_frame

from amqpd.broker.access.control import AccessControl
from amqpd.broker.model.queue import Queue
from amqpd.broker.model.vhost import VHost
from amqpd.broker.server.config import Config
from amqpd.broker.session.channel import Channel
from amqpd.protocol import fastcodec
from amqpd.protocol.errors import ChannelError

T = TypeVar("T")
FRAME_HEADER = struct.Struct(">BHI")


class RecordingProto:
    """The slice of protocol.connection.AMQPConnection a channel uses: output and a few negotiated values."""

    frame_max = 131072
    username = "guest"

    def __init__(self) -> None:
        self.capabilities: dict[str, Any] = {"consumer_cancel_notify": True}
        self.out = bytearray()

    def send(self, data: bytes) -> None:
        self.out += data

    def send_method(self, channel: int, method: Any) -> None:
        self.out += pamqp_frame.marshal(method, channel)

    def take(self) -> list[Any]:
        """Every frame sent since the last call, decoded (channel numbers checked to be 1)."""
        frames: list[Any] = []
        data, self.out = bytes(self.out), bytearray()
        while data:
            _type, channel, size = FRAME_HEADER.unpack_from(data)
            total = FRAME_HEADER.size + size + 1
            _n, ch, value = pamqp_frame.unmarshal(data[:total])
            assert ch == channel == 1
            frames.append(value)
            data = data[total:]
        return frames


class FakeTimer:
    def cancel(self) -> None:
        pass


class FakeLoop:
    """Timers are recorded and never run (the consumer-timeout ticker asks for one)."""

    def __init__(self) -> None:
        self.timers: list[tuple[float, Callable[..., object]]] = []

    def call_later(self, delay: float, callback: Callable[..., object], *args: object) -> FakeTimer:
        self.timers.append((delay, callback))
        return FakeTimer()

    def time(self) -> float:
        return 0.0


class FakeServer:
    def __init__(self) -> None:
        self.config = Config(consumer_timeout=0, flow_high=20000, flow_low=10000)
        self.loop = FakeLoop()
        self.connections: set[object] = set()
        self.access = AccessControl()


class FakeConnection:
    """What a Channel asks of its BrokerConnection, and nothing more."""

    def __init__(self) -> None:
        self.server = FakeServer()
        self.proto = RecordingProto()
        self.vhost = VHost("/")
        self.user = None  # no login: the channel checks no permissions
        self.transport = None
        self.writable = True
        self.exclusive_queues: set[Queue] = set()
        self.published_persistent = False
        self.throttled: list[Queue] = []
        self._confirm: list[Channel] = []
        self.posted: list[Callable[[], None]] = []  # notifications waiting for the current reply

    def after_reply(self, notify: Callable[[], None]) -> None:
        self.posted.append(notify)

    def run_posted(self) -> None:
        """What BrokerConnection.on_method does once the handler (and so its reply) is done."""
        posted, self.posted = self.posted, []
        for notify in posted:
            notify()

    def want_confirm_flush(self, channel: Channel) -> None:
        if channel not in self._confirm:
            self._confirm.append(channel)

    def flush(self) -> None:
        chans, self._confirm = self._confirm, []
        for ch in chans:
            ch.flush_confirms()

    def throttle(self, queue: Queue) -> None:
        self.throttled.append(queue)

    def unthrottle(self, queue: Queue) -> None:
        pass

    def hold_output_until_durable(self) -> None:
        pass


@pytest.fixture
def conn() -> FakeConnection:
    return FakeConnection()


@pytest.fixture
def ch(conn: FakeConnection) -> Channel:
    return Channel(cast(Any, conn), 1, conn.vhost)


def reply(ch: Channel, method: Any, expected: type[T]) -> T:
    ch.handle(method)
    frames = cast(RecordingProto, ch.proto).take()
    assert len(frames) == 1 and isinstance(frames[0], expected), frames
    return frames[0]


def publish(ch: Channel, body_bytes: bytes, routing_key: str = "q", **properties: Any) -> None:
    props = commands.Basic.Properties(**properties)
    ch.publish("", routing_key, False, fastcodec.encode_header_payload(len(body_bytes), props), body_bytes)


def deliveries(ch: Channel) -> list[tuple[int, bool, bytes]]:
    """(delivery tag, redelivered, body) of every Deliver sent since the last look."""
    frames = cast(RecordingProto, ch.proto).take()
    out: list[tuple[int, bool, bytes]] = []
    for i, f in enumerate(frames):
        if isinstance(f, commands.Basic.Deliver):
            content_header, content = frames[i + 1], frames[i + 2]
            assert isinstance(content_header, header.ContentHeader)
            assert isinstance(content, body.ContentBody)
            out.append((f.delivery_tag or 0, bool(f.redelivered), content.value))
        else:
            assert isinstance(f, header.ContentHeader | body.ContentBody), f
    return out


def setup_consumer(ch: Channel, prefetch: int = 0) -> None:
    reply(ch, commands.Queue.Declare(queue="q"), commands.Queue.DeclareOk)
    if prefetch:
        reply(ch, commands.Basic.Qos(prefetch_count=prefetch), commands.Basic.QosOk)
    ok = reply(ch, commands.Basic.Consume(queue="q", consumer_tag="c"), commands.Basic.ConsumeOk)
    assert ok.consumer_tag == "c"


# ---------------------------------------------------------------------------------------------- tests


def test_publish_to_a_consumed_queue_delivers_with_increasing_tags(ch: Channel) -> None:
    setup_consumer(ch)
    for i in range(3):
        publish(ch, b"m%d" % i)
    assert deliveries(ch) == [(1, False, b"m0"), (2, False, b"m1"), (3, False, b"m2")]
    assert ch.unacked.count == 3


def test_ack_multiple_settles_everything_up_to_the_tag(ch: Channel, conn: FakeConnection) -> None:
    setup_consumer(ch)
    for i in range(4):
        publish(ch, b"m%d" % i)
    deliveries(ch)
    ch.ack(2, multiple=True)
    assert sorted(ch.unacked.by_tag) == [3, 4]
    ch.ack(4, multiple=False)
    assert sorted(ch.unacked.by_tag) == [3]
    ch.ack(0, multiple=True)  # tag 0 with multiple: everything outstanding
    assert ch.unacked.by_tag == {} and ch.unacked.count == 0
    assert conn.vhost.queues["q"].message_count == 0


def test_nack_with_requeue_redelivers_and_reject_drops(ch: Channel, conn: FakeConnection) -> None:
    setup_consumer(ch)
    publish(ch, b"m0")
    publish(ch, b"m1")
    deliveries(ch)
    ch.nack(2, multiple=True, requeue=True)
    assert deliveries(ch) == [(3, True, b"m0"), (4, True, b"m1")]
    ch.reject(3, requeue=False)
    ch.reject(4, requeue=True)
    assert deliveries(ch) == [(5, True, b"m1")]
    ch.nack(5, multiple=False, requeue=False)
    assert ch.unacked.by_tag == {}
    assert conn.vhost.queues["q"].message_count == 0


@pytest.mark.parametrize(
    ("settle", "method_id"),
    [
        (lambda ch: ch.ack(99, False), 80),
        (lambda ch: ch.ack(99, True), 80),
        (lambda ch: ch.nack(99, False, True), 120),
        (lambda ch: ch.reject(99, False), 90),
    ],
    ids=["ack", "ack multiple", "nack", "reject"],
)
def test_an_unknown_delivery_tag_is_a_406_channel_error(
    ch: Channel, settle: Callable[[Channel], None], method_id: int
) -> None:
    setup_consumer(ch)
    publish(ch, b"m0")
    deliveries(ch)
    with pytest.raises(ChannelError) as caught:
        settle(ch)
    assert caught.value.code == 406
    assert caught.value.detail == "unknown delivery tag 99"
    assert (caught.value.class_id, caught.value.method_id) == (60, method_id)


def test_a_tag_acked_twice_is_unknown_the_second_time(ch: Channel) -> None:
    setup_consumer(ch)
    publish(ch, b"m0")
    deliveries(ch)
    ch.ack(1, False)
    with pytest.raises(ChannelError) as caught:
        ch.ack(1, False)
    assert caught.value.code == 406


def test_prefetch_parks_the_consumer_until_an_ack(ch: Channel, conn: FakeConnection) -> None:
    setup_consumer(ch, prefetch=2)
    for i in range(5):
        publish(ch, b"m%d" % i)
    assert deliveries(ch) == [(1, False, b"m0"), (2, False, b"m1")]
    q = conn.vhost.queues["q"]
    assert q.message_count == 3
    assert ch.consumers["c"].parked
    ch.ack(1, False)
    assert deliveries(ch) == [(3, False, b"m2")]
    ch.ack(3, True)
    assert deliveries(ch) == [(4, False, b"m3"), (5, False, b"m4")]
    assert q.message_count == 0


def test_global_prefetch_counts_the_whole_channel(ch: Channel) -> None:
    reply(ch, commands.Basic.Qos(prefetch_count=1, global_=True), commands.Basic.QosOk)
    setup_consumer(ch)
    publish(ch, b"m0")
    publish(ch, b"m1")
    assert deliveries(ch) == [(1, False, b"m0")]
    ch.ack(1, False)
    assert deliveries(ch) == [(2, False, b"m1")]


def test_confirm_mode_acks_publishes_at_the_flush(ch: Channel, conn: FakeConnection) -> None:
    reply(ch, commands.Queue.Declare(queue="q"), commands.Queue.DeclareOk)
    reply(ch, commands.Confirm.Select(), commands.Confirm.SelectOk)
    for i in range(3):
        publish(ch, b"m%d" % i)
    publish(ch, b"unroutable", routing_key="nowhere")  # confirmed too: routed to no queue is not an error
    assert cast(RecordingProto, ch.proto).take() == []  # nothing before the flush
    conn.flush()
    [ack] = cast(RecordingProto, ch.proto).take()
    assert isinstance(ack, commands.Basic.Ack)
    assert (ack.delivery_tag, ack.multiple) == (4, True)
    publish(ch, b"m4")
    conn.flush()
    [ack] = cast(RecordingProto, ch.proto).take()
    assert isinstance(ack, commands.Basic.Ack)
    assert (ack.delivery_tag, ack.multiple) == (5, False)


def test_confirm_mode_nacks_a_publish_refused_by_reject_publish(ch: Channel, conn: FakeConnection) -> None:
    reply(
        ch,
        commands.Queue.Declare(queue="q", arguments={"x-max-length": 1, "x-overflow": "reject-publish"}),
        commands.Queue.DeclareOk,
    )
    reply(ch, commands.Confirm.Select(), commands.Confirm.SelectOk)
    publish(ch, b"m0")
    publish(ch, b"m1")  # refused: the queue is full
    publish(ch, b"m2")  # refused
    conn.flush()
    frames = cast(RecordingProto, ch.proto).take()
    assert [(type(f).__name__, f.delivery_tag) for f in frames] == [("Ack", 1), ("Nack", 2), ("Nack", 3)]
    assert conn.vhost.queues["q"].message_count == 1


def test_mandatory_unroutable_publish_is_returned(ch: Channel) -> None:
    props = commands.Basic.Properties()
    ch.publish("", "nowhere", True, fastcodec.encode_header_payload(1, props), b"x")
    frames = cast(RecordingProto, ch.proto).take()
    assert isinstance(frames[0], commands.Basic.Return)
    assert (frames[0].reply_code, frames[0].reply_text, frames[0].routing_key) == (312, "NO_ROUTE", "nowhere")
    assert isinstance(frames[2], body.ContentBody) and frames[2].value == b"x"


def test_closing_the_channel_requeues_what_it_held(ch: Channel, conn: FakeConnection) -> None:
    setup_consumer(ch, prefetch=1)
    publish(ch, b"m0")
    publish(ch, b"m1")
    deliveries(ch)
    ch.close()
    q = conn.vhost.queues["q"]
    assert q.consumer_count == 0
    assert [(e.msg.body, e.redelivered) for e in q.ready] == [(b"m0", True), (b"m1", False)]


def test_deleting_the_consumed_queue_replies_first_and_posts_the_cancel(ch: Channel, conn: FakeConnection) -> None:
    setup_consumer(ch)
    reply(ch, commands.Queue.Delete(queue="q"), commands.Queue.DeleteOk)
    assert "c" not in ch.consumers  # forgotten at once: only the frame waits
    conn.run_posted()
    frames = cast(RecordingProto, ch.proto).take()
    assert [type(f) for f in frames] == [commands.Basic.Cancel]
    assert frames[0].consumer_tag == "c"


def test_a_posted_cancel_is_dropped_when_its_channel_closed_meanwhile(ch: Channel, conn: FakeConnection) -> None:
    setup_consumer(ch)
    reply(ch, commands.Queue.Delete(queue="q"), commands.Queue.DeleteOk)
    ch.close()
    conn.run_posted()
    assert cast(RecordingProto, ch.proto).take() == []
