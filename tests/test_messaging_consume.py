"""basic.consume / cancel, delivery order and fairness, basic.qos, channel.flow and consumer cancel notification."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, NamedTuple, TypeVar

import aio_pika
import pika
import pytest
from pamqp import body, commands, header, heartbeat

from tests.support.amqp import uniq
from tests.support.raw_client import AnyFrame, CloseInfo, RawClient
from tests.support.server_thread import ServerThread
from tests.support.waiting import wait_for, wait_until

pytestmark = pytest.mark.integration

T = TypeVar("T")


class Delivery(NamedTuple):
    channel: int
    consumer_tag: str
    delivery_tag: int
    redelivered: bool
    body: bytes


def next_frame(client: Client) -> tuple[int, AnyFrame]:
    while True:
        got = client.read_frame()
        assert got is not None, "broker hung up"
        if not isinstance(got[1], heartbeat.Heartbeat):
            return got


def read_body(client: Client, channel: int) -> bytes:
    ch, hdr = next_frame(client)
    assert ch == channel and isinstance(hdr, header.ContentHeader), hdr
    parts = []
    received = 0
    while received < hdr.body_size:
        ch, part = next_frame(client)
        assert ch == channel and isinstance(part, body.ContentBody), part
        parts.append(part.value)
        received += len(part.value)
    return b"".join(parts)


class Client(RawClient):
    """A RawClient that sets deliveries aside while it waits for a method reply, so one connection can both
    consume and ask the broker questions (deliveries and replies interleave on the wire)."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        super().__init__(url, timeout)
        self.deliveries: deque[Delivery] = deque()

    @classmethod
    def open(cls, url: str, **kwargs: Any) -> Client:
        client = super().open(url, **kwargs)
        assert isinstance(client, Client)
        return client

    def expect(self, channel: int, method_type: type[T]) -> T:
        while True:
            ch, value = next_frame(self)
            if isinstance(value, commands.Basic.Deliver):
                self.deliveries.append(
                    Delivery(ch, value.consumer_tag, value.delivery_tag, value.redelivered, read_body(self, ch))
                )
                continue
            if not isinstance(value, method_type) or ch != channel:
                raise AssertionError(f"expected {method_type.__name__} on channel {channel}, got {value!r} on {ch}")
            return value


def read_delivery(client: Client) -> Delivery:
    if client.deliveries:
        return client.deliveries.popleft()
    ch, frame = next_frame(client)
    assert isinstance(frame, commands.Basic.Deliver), frame
    return Delivery(ch, frame.consumer_tag, frame.delivery_tag, frame.redelivered, read_body(client, ch))


def declare(client: Client, channel: int, queue: str, **kwargs: Any) -> commands.Queue.DeclareOk:
    client.send_method(channel, commands.Queue.Declare(queue=queue, **kwargs))
    return client.expect(channel, commands.Queue.DeclareOk)


def message_count(client: Client, channel: int, queue: str) -> int:
    return declare(client, channel, queue, passive=True).message_count


def consume(client: Client, channel: int, queue: str, tag: str = "", **kwargs: Any) -> str:
    client.send_method(channel, commands.Basic.Consume(queue=queue, consumer_tag=tag, **kwargs))
    return client.expect(channel, commands.Basic.ConsumeOk).consumer_tag


def publish_n(client: Client, channel: int, queue: str, n: int, prefix: bytes = b"m") -> None:
    for i in range(n):
        client.publish(channel, prefix + b"%d" % i, routing_key=queue)


def get(client: Client, channel: int, queue: str, no_ack: bool = False) -> tuple[commands.Basic.GetOk, bytes]:
    client.send_method(channel, commands.Basic.Get(queue=queue, no_ack=no_ack))
    ok = client.expect(channel, commands.Basic.GetOk)
    return ok, read_body(client, channel)


def recover(client: Client, channel: int) -> None:
    client.send_method(channel, commands.Basic.Recover(requeue=True))
    client.expect(channel, commands.Basic.RecoverOk)


def cancel(client: Client, channel: int, tag: str) -> str:
    """Cancel a consumer and wait for the CancelOk; returns the tag it names."""
    client.send_method(channel, commands.Basic.Cancel(consumer_tag=tag))
    return client.expect(channel, commands.Basic.CancelOk).consumer_tag


def qos(client: Client, channel: int, prefetch_count: int, global_: bool = False) -> None:
    client.send_method(channel, commands.Basic.Qos(prefetch_count=prefetch_count, global_=global_))
    client.expect(channel, commands.Basic.QosOk)


# ------------------------------------------------------------------------------------------------ consume


def test_server_generated_consumer_tags_are_amq_ctag(amqp_url: str, loop_kind: str) -> None:
    q = uniq("q")
    with Client.open(amqp_url) as client:
        client.open_channel(1)
        declare(client, 1, q, exclusive=True)
        tags = {consume(client, 1, q) for _ in range(3)}
        assert len(tags) == 3
        assert all(tag.startswith("amq.ctag-") and len(tag) > len("amq.ctag-") for tag in tags)
        client.close_connection()


async def test_aio_pika_consumer_gets_every_message_in_queue_order(amqp_url: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(uniq("q"), exclusive=True)
        got: list[bytes] = []
        done = asyncio.Event()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            got.append(message.body)
            await message.ack()
            if len(got) == 30:
                done.set()

        tag = await queue.consume(on_message)
        for i in range(30):
            await channel.default_exchange.publish(aio_pika.Message(b"%d" % i), queue.name)
        await asyncio.wait_for(done.wait(), 10)
        assert got == [b"%d" % i for i in range(30)]
        await queue.cancel(tag)


def test_no_ack_consumer_empties_the_queue_and_its_tags_cannot_be_acked(amqp_url: str, loop_kind: str) -> None:
    q = uniq("q")
    with Client.open(amqp_url) as client:
        client.open_channel(1)
        declare(client, 1, q, exclusive=True)
        publish_n(client, 1, q, 3)
        consume(client, 1, q, "auto", no_ack=True)
        got = [read_delivery(client) for _ in range(3)]
        assert [d.body for d in got] == [b"m0", b"m1", b"m2"]
        assert [d.delivery_tag for d in got] == [1, 2, 3]
        assert message_count(client, 1, q) == 0
        client.send_method(1, commands.Basic.Ack(delivery_tag=1))
        info = client.read_until_close()
        assert info == CloseInfo("channel", 406, "PRECONDITION_FAILED - unknown delivery tag 1", 60, 80, 1)
        client.close_connection()


@pytest.mark.parametrize("exclusive_first", [True, False])
def test_exclusive_consume_conflicts_with_any_other_consumer(
    amqp_url: str, loop_kind: str, exclusive_first: bool
) -> None:
    q = uniq("q")
    with Client.open(amqp_url) as client:
        client.open_channel(1)
        client.open_channel(2)
        declare(client, 1, q, auto_delete=True)
        consume(client, 1, q, "first", exclusive=exclusive_first)
        client.send_method(2, commands.Basic.Consume(queue=q, consumer_tag="second", exclusive=not exclusive_first))
        info = client.read_until_close()
        text = f"ACCESS_REFUSED - queue '{q}' in vhost '/' in exclusive use"
        assert info == CloseInfo("channel", 403, text, 60, 20, 2)
        client.close_connection()


def test_exclusive_consumer_leaving_frees_the_queue(amqp_url: str, loop_kind: str) -> None:
    q = uniq("q")
    with Client.open(amqp_url) as client:
        client.open_channel(1)
        declare(client, 1, q, exclusive=True)
        consume(client, 1, q, "solo", exclusive=True)
        cancel(client, 1, "solo")
        consume(client, 1, q, "a")
        consume(client, 1, q, "b")
        client.close_connection()


def test_reusing_a_consumer_tag_on_a_channel_closes_the_connection_with_530(amqp_url: str, loop_kind: str) -> None:
    q = uniq("q")
    with Client.open(amqp_url) as client:
        client.open_channel(1)
        declare(client, 1, q, exclusive=True)
        consume(client, 1, q, "dup")
        client.send_method(1, commands.Basic.Consume(queue=q, consumer_tag="dup"))
        info = client.read_until_close()
        assert info == CloseInfo("connection", 530, "NOT_ALLOWED - attempt to reuse consumer tag 'dup'", 60, 20, 0)


def test_same_consumer_tag_on_two_channels_is_fine(amqp_url: str, loop_kind: str) -> None:
    q = uniq("q")
    with Client.open(amqp_url) as client:
        client.open_channel(1)
        client.open_channel(2)
        declare(client, 1, q, exclusive=True)
        assert consume(client, 1, q, "same") == consume(client, 2, q, "same") == "same"
        client.close_connection()


def test_nowait_consume_sends_no_consume_ok_but_delivers(amqp_url: str, loop_kind: str) -> None:
    q = uniq("q")
    with Client.open(amqp_url) as client:
        client.open_channel(1)
        declare(client, 1, q, exclusive=True)
        client.send_method(1, commands.Basic.Consume(queue=q, consumer_tag="quiet", nowait=True))
        client.publish(1, b"hello", routing_key=q)
        delivery = read_delivery(client)  # the first frame back is the delivery, not a ConsumeOk
        assert (delivery.consumer_tag, delivery.body) == ("quiet", b"hello")
        client.send_method(1, commands.Basic.Ack(delivery_tag=delivery.delivery_tag))
        client.send_method(1, commands.Basic.Cancel(consumer_tag="quiet", nowait=True))
        assert message_count(client, 1, q) == 0
        client.close_connection()


def test_cancel_of_an_unknown_tag_is_answered_with_cancel_ok(amqp_url: str, loop_kind: str) -> None:
    with Client.open(amqp_url) as client:
        client.open_channel(1)
        assert cancel(client, 1, "never-was") == "never-was"
        client.close_connection()


def test_cancelled_consumer_gets_no_more_messages_but_can_ack_what_it_holds(amqp_url: str, loop_kind: str) -> None:
    q = uniq("q")
    with Client.open(amqp_url) as client:
        client.open_channel(1)
        declare(client, 1, q, exclusive=True)
        qos(client, 1, 1)
        publish_n(client, 1, q, 3)
        consume(client, 1, q, "c")
        first = read_delivery(client)
        cancel(client, 1, "c")
        client.send_method(1, commands.Basic.Ack(delivery_tag=first.delivery_tag))
        assert message_count(client, 1, q) == 2  # the ack was accepted and nothing more was delivered
        client.close_connection()


def test_deleting_a_queue_cancels_its_consumers_with_a_server_basic_cancel(amqp_url: str, loop_kind: str) -> None:
    q = uniq("q")
    with Client.open(amqp_url) as consumer, Client.open(amqp_url) as admin:
        consumer.open_channel(1)
        declare(consumer, 1, q, auto_delete=False)
        consume(consumer, 1, q, "watcher")
        admin.open_channel(1)
        admin.send_method(1, commands.Queue.Delete(queue=q))
        admin.expect(1, commands.Queue.DeleteOk)
        notice = consumer.expect(1, commands.Basic.Cancel)
        assert notice.consumer_tag == "watcher"
        # The consumer is gone on the broker too: cancelling it again is the unknown-tag case.
        cancel(consumer, 1, "watcher")
        admin.close_connection()
        consumer.close_connection()


async def test_aio_pika_sees_its_consumer_cancelled_when_the_queue_is_deleted(amqp_url: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(uniq("q"))

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await message.ack()

        await queue.consume(on_message)
        other = await connection.channel()
        await other.queue_delete(queue.name)
        # aiormq drops the consumer when the server's Basic.Cancel arrives.
        underlay = await channel.get_underlay_channel()
        await wait_for(lambda: not underlay.consumers)
        assert not channel.is_closed


# ----------------------------------------------------------------------------------------------- delivery


def test_consumers_on_one_queue_get_messages_round_robin(amqp_url: str, loop_kind: str) -> None:
    q = uniq("q")
    with Client.open(amqp_url) as client:
        client.open_channel(1)
        declare(client, 1, q, exclusive=True)
        for tag in ("a", "b", "c"):
            consume(client, 1, q, tag)
        publish_n(client, 1, q, 9)
        got = [read_delivery(client) for _ in range(9)]
        assert [d.body for d in got] == [b"m%d" % i for i in range(9)]  # queue order is kept
        by_tag = {tag: [d.body for d in got if d.consumer_tag == tag] for tag in ("a", "b", "c")}
        assert sorted(len(v) for v in by_tag.values()) == [3, 3, 3]
        assert [d.delivery_tag for d in got] == list(range(1, 10))
        client.close_connection()


def test_delivery_tags_count_per_channel(amqp_url: str, loop_kind: str) -> None:
    q1, q2 = uniq("q"), uniq("q")
    with Client.open(amqp_url) as client:
        client.open_channel(1)
        client.open_channel(2)
        declare(client, 1, q1, exclusive=True)
        declare(client, 1, q2, exclusive=True)
        consume(client, 1, q1, "one")
        consume(client, 2, q2, "two")
        publish_n(client, 1, q1, 2)
        publish_n(client, 1, q2, 3)
        got = [read_delivery(client) for _ in range(5)]
        assert [d.delivery_tag for d in got if d.channel == 1] == [1, 2]
        assert [d.delivery_tag for d in got if d.channel == 2] == [1, 2, 3]
        client.close_connection()


def test_nacked_message_comes_back_marked_redelivered(amqp_url: str, loop_kind: str) -> None:
    q = uniq("q")
    with Client.open(amqp_url) as client:
        client.open_channel(1)
        declare(client, 1, q, exclusive=True)
        consume(client, 1, q, "c")
        client.publish(1, b"again", routing_key=q)
        first = read_delivery(client)
        assert not first.redelivered
        client.send_method(1, commands.Basic.Nack(delivery_tag=first.delivery_tag, requeue=True))
        second = read_delivery(client)
        assert (second.body, second.redelivered, second.delivery_tag) == (b"again", True, 2)
        client.send_method(1, commands.Basic.Ack(delivery_tag=2))
        assert message_count(client, 1, q) == 0
        client.close_connection()


def test_prefetch_one_work_queue_gives_a_slow_consumer_fewer_messages(amqp_url: str, loop_kind: str) -> None:
    q = uniq("work")
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channels = [connection.channel() for _ in range(3)]
        channels[0].queue_declare(q, exclusive=True)
        counts = [0, 0, 0]
        held: list[int] = []

        def make_callback(index: int):  # type: ignore[no-untyped-def]
            def on_message(ch, method, _props, _body):  # type: ignore[no-untyped-def]
                counts[index] += 1
                if index == 0:
                    held.append(method.delivery_tag)  # the slow worker sits on its message
                else:
                    ch.basic_ack(method.delivery_tag)

            return on_message

        for i, ch in enumerate(channels):
            ch.basic_qos(prefetch_count=1)
            ch.basic_consume(q, make_callback(i))
        for i in range(30):
            channels[0].basic_publish("", q, b"job %d" % i)
        deadline_checks = 0
        while sum(counts) < 30 and deadline_checks < 1000:
            connection.process_data_events(time_limit=0.05)
            deadline_checks += 1
        assert sum(counts) == 30
        assert counts[0] == 1
        assert counts[1] + counts[2] == 29 and counts[1] > 0 and counts[2] > 0
        channels[0].basic_ack(held[0])
    finally:
        connection.close()


# ------------------------------------------------------------------------------------------------- qos


def wait_ready(client: Client, channel: int, queue: str, expected: int) -> None:
    wait_until(lambda: message_count(client, channel, queue) == expected)


def two_queues_of_ten(client: Client) -> tuple[str, str]:
    """Opens channel 1 (to consume on) and 2 (to watch from); two exclusive queues, ten messages in each."""
    qa, qb = uniq("qa"), uniq("qb")
    client.open_channel(1)
    client.open_channel(2)
    for q in (qa, qb):
        declare(client, 2, q, exclusive=True)
    for q in (qa, qb):
        publish_n(client, 2, q, 10)
    return qa, qb


def test_per_consumer_prefetch_applies_to_consumers_created_after_it(amqp_url: str, loop_kind: str) -> None:
    with Client.open(amqp_url) as client:
        qa, qb = two_queues_of_ten(client)
        qos(client, 1, 2)
        consume(client, 1, qa, "a")
        qos(client, 1, 5)
        consume(client, 1, qb, "b")
        wait_ready(client, 2, qa, 8)
        wait_ready(client, 2, qb, 5)
        got = [read_delivery(client) for _ in range(7)]
        assert sorted(d.consumer_tag for d in got) == ["a"] * 2 + ["b"] * 5
        # Acking one of a's frees exactly one more for a (its limit stayed 2).
        first_a = next(d for d in got if d.consumer_tag == "a")
        client.send_method(1, commands.Basic.Ack(delivery_tag=first_a.delivery_tag))
        assert read_delivery(client).consumer_tag == "a"
        wait_ready(client, 2, qa, 7)
        client.close_connection()


def test_global_prefetch_limits_all_consumers_of_the_channel_together(amqp_url: str, loop_kind: str) -> None:
    with Client.open(amqp_url) as client:
        qa, qb = two_queues_of_ten(client)
        qos(client, 1, 3, global_=True)
        consume(client, 1, qa, "a")
        consume(client, 1, qb, "b")
        wait_until(lambda: message_count(client, 2, qa) + message_count(client, 2, qb) == 17)
        got = [read_delivery(client) for _ in range(3)]
        client.send_method(1, commands.Basic.Ack(delivery_tag=0, multiple=True))
        more = [read_delivery(client) for _ in range(3)]
        wait_until(lambda: message_count(client, 2, qa) + message_count(client, 2, qb) == 14)
        assert len(got) + len(more) == 6
        client.close_connection()


def test_per_consumer_and_global_prefetch_apply_at_once(amqp_url: str, loop_kind: str) -> None:
    with Client.open(amqp_url) as client:
        qa, qb = two_queues_of_ten(client)
        qos(client, 1, 2, global_=False)
        qos(client, 1, 3, global_=True)
        consume(client, 1, qa, "a")
        wait_ready(client, 2, qa, 8)  # the per-consumer limit binds first
        consume(client, 1, qb, "b")
        wait_ready(client, 2, qb, 9)  # then the channel-wide limit of 3
        got = [read_delivery(client) for _ in range(3)]
        assert sorted(d.consumer_tag for d in got) == ["a", "a", "b"]
        client.close_connection()


def test_qos_with_a_prefetch_size_closes_the_connection_with_540(amqp_url: str, loop_kind: str) -> None:
    with Client.open(amqp_url) as client:
        client.open_channel(1)
        client.send_method(1, commands.Basic.Qos(prefetch_size=1000, prefetch_count=1))
        info = client.read_until_close()
        assert info == CloseInfo("connection", 540, "NOT_IMPLEMENTED - prefetch_size!=0 (1000)", 60, 10, 0)


async def test_aio_pika_prefetch_caps_unacked_deliveries(amqp_url: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=4)
        queue = await channel.declare_queue(uniq("q"), exclusive=True)
        for i in range(10):
            await channel.default_exchange.publish(aio_pika.Message(b"%d" % i), queue.name)
        held: list[aio_pika.abc.AbstractIncomingMessage] = []

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            held.append(message)

        tag = await queue.consume(on_message)
        await wait_for(lambda: len(held) == 4)
        checker = await connection.channel()

        async def ready() -> int:
            declared = await checker.declare_queue(queue.name, passive=True)
            count = declared.declaration_result.message_count
            assert count is not None
            return count

        assert await ready() == 6
        assert len(held) == 4
        for message in held[:4]:
            await message.ack()
        await wait_for(lambda: len(held) == 8)
        for message in held[4:]:
            await message.ack()
        await wait_for(lambda: len(held) == 10)
        for message in held[8:]:
            await message.ack()
        await queue.cancel(tag)


# ------------------------------------------------------------------------------------------- channel.flow


def test_channel_flow_off_pauses_deliveries_and_on_resumes_them(broker_server: ServerThread) -> None:
    # RabbitMQ answers flow(active=false) with 540 NOT_IMPLEMENTED; amqpd implements the spec (broker_server
    # skips this test against an external broker).
    q = uniq("q")
    with Client.open(broker_server.url) as client:
        client.open_channel(1)
        client.open_channel(2)
        declare(client, 2, q, exclusive=True)
        consume(client, 1, q, "c", no_ack=True)
        client.send_method(1, commands.Channel.Flow(active=False))
        assert client.expect(1, commands.Channel.FlowOk).active is False
        publish_n(client, 2, q, 3)
        assert message_count(client, 2, q) == 3  # the DeclareOk came first: nothing was delivered meanwhile
        client.send_method(1, commands.Channel.Flow(active=True))
        assert client.expect(1, commands.Channel.FlowOk).active is True
        assert [read_delivery(client).body for _ in range(3)] == [b"m0", b"m1", b"m2"]
        client.close_connection()
