"""Priority queues, consumer priorities, single active consumer, CC/BCC, direct reply-to and the delivery limit."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from tests.support.amqp import drain, ignore, uniq
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

EXTERNAL = bool(os.environ.get("AMQP_URL"))


@pytest.fixture
async def channel(connection: aio_pika.abc.AbstractConnection) -> AbstractChannel:
    return await connection.channel()


async def declare(ch: AbstractChannel, name: str, **arguments: Any) -> AbstractQueue:
    return await ch.declare_queue(name, arguments=arguments or None)


def handler(
    on: Callable[[str, AbstractIncomingMessage], Awaitable[None]], which: str
) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
    async def callback(m: AbstractIncomingMessage) -> None:
        await on(which, m)

    return callback


# ------------------------------------------------------------------------------------- priority queues


async def test_a_priority_queue_serves_higher_priorities_first_fifo_within_one(channel: AbstractChannel) -> None:
    name = uniq("prio")
    q = await declare(channel, name, **{"x-max-priority": 5})
    for body, prio in ((b"low-1", 1), (b"none", None), (b"high-1", 5), (b"mid", 3), (b"high-2", 9), (b"low-2", 1)):
        await channel.default_exchange.publish(aio_pika.Message(body, priority=prio), routing_key=name)
    assert await drain(q) == [b"high-1", b"high-2", b"mid", b"low-1", b"low-2", b"none"]
    await q.delete()


async def test_a_requeued_message_goes_back_ahead_of_its_priority_peers(channel: AbstractChannel) -> None:
    name = uniq("prio")
    q = await declare(channel, name, **{"x-max-priority": 2})
    for body, prio in ((b"a", 1), (b"b", 1), (b"c", 2), (b"d", 0)):
        await channel.default_exchange.publish(aio_pika.Message(body, priority=prio), routing_key=name)
    first = await q.get()
    second = await q.get()
    assert (first.body, second.body) == (b"c", b"a")
    await second.nack(requeue=True)
    await first.nack(requeue=True)
    assert await drain(q) == [b"c", b"a", b"b", b"d"]
    await q.delete()


# ------------------------------------------------------------------------------------- consumer priorities


async def test_a_higher_priority_consumer_gets_messages_while_it_has_capacity(
    connection: aio_pika.abc.AbstractConnection,
) -> None:
    setup = await connection.channel()
    name = uniq("q")
    await declare(setup, name)
    high_ch = await connection.channel()
    await high_ch.set_qos(prefetch_count=2)
    low_ch = await connection.channel()
    got: dict[str, list[AbstractIncomingMessage]] = {"high": [], "low": []}

    async def on(which: str, m: AbstractIncomingMessage) -> None:
        got[which].append(m)

    high_q = await high_ch.get_queue(name)
    low_q = await low_ch.get_queue(name)
    await low_q.consume(handler(on, "low"))
    await high_q.consume(handler(on, "high"), arguments={"x-priority": 10})
    for i in range(5):
        await setup.default_exchange.publish(aio_pika.Message(b"%d" % i), routing_key=name)
    await wait_for(lambda: len(got["high"]) + len(got["low"]) == 5)
    assert [m.body for m in got["high"]] == [b"0", b"1"]
    assert [m.body for m in got["low"]] == [b"2", b"3", b"4"]
    for m in got["high"] + got["low"]:
        await m.ack()
    await setup.queue_delete(name)


# ------------------------------------------------------------------------------------- single active consumer


async def test_only_the_single_active_consumer_receives_until_its_channel_dies(
    connection: aio_pika.abc.AbstractConnection,
) -> None:
    setup = await connection.channel()
    name = uniq("sac")
    await declare(setup, name, **{"x-single-active-consumer": True})
    first_ch = await connection.channel()
    second_ch = await connection.channel()
    got: dict[str, list[AbstractIncomingMessage]] = {"first": [], "second": []}

    async def on(which: str, m: AbstractIncomingMessage) -> None:
        got[which].append(m)

    await (await first_ch.get_queue(name)).consume(handler(on, "first"))
    await (await second_ch.get_queue(name)).consume(handler(on, "second"))
    for i in range(3):
        await setup.default_exchange.publish(aio_pika.Message(b"%d" % i), routing_key=name)
    await wait_for(lambda: len(got["first"]) == 3)
    assert got["second"] == []
    await first_ch.close()  # "crash" with three unacked: they go to the next consumer, redelivered
    await wait_for(lambda: len(got["second"]) == 3)
    assert [(m.body, m.redelivered) for m in got["second"]] == [(b"0", True), (b"1", True), (b"2", True)]
    await setup.default_exchange.publish(aio_pika.Message(b"after"), routing_key=name)
    await wait_for(lambda: len(got["second"]) == 4)
    for m in got["second"]:
        await m.ack()
    await setup.queue_delete(name)


async def test_a_cancelled_single_active_consumer_hands_over_to_the_next(channel: AbstractChannel) -> None:
    name = uniq("sac")
    q = await declare(channel, name, **{"x-single-active-consumer": True})
    got: list[tuple[str, bytes]] = []

    async def on(which: str, m: AbstractIncomingMessage) -> None:
        got.append((which, m.body))
        await m.ack()

    tag_a = await q.consume(handler(on, "a"))
    await q.consume(handler(on, "b"))
    await channel.default_exchange.publish(aio_pika.Message(b"1"), routing_key=name)
    await wait_for(lambda: got == [("a", b"1")])
    await q.cancel(tag_a)
    await channel.default_exchange.publish(aio_pika.Message(b"2"), routing_key=name)
    await wait_for(lambda: got == [("a", b"1"), ("b", b"2")])
    await channel.queue_delete(name)


# ------------------------------------------------------------------------------------- CC / BCC


async def test_cc_and_bcc_add_routes_and_bcc_never_reaches_consumers(channel: AbstractChannel) -> None:
    ex = await channel.declare_exchange(uniq("direct"), aio_pika.ExchangeType.DIRECT, auto_delete=True)
    main, cc, bcc = uniq("main"), uniq("cc"), uniq("bcc")
    queues = {}
    for name in (main, cc, bcc):
        queues[name] = await declare(channel, name)
        await queues[name].bind(ex, routing_key=name)
    await ex.publish(aio_pika.Message(b"hi", headers={"CC": [cc], "BCC": [bcc], "k": "v"}), routing_key=main)
    for name in (main, cc, bcc):
        m = await queues[name].get(no_ack=True)
        assert m.body == b"hi"
        assert m.routing_key == main
        assert m.headers == {"CC": [cc], "k": "v"}
    for q in queues.values():
        await q.delete()


async def test_a_cc_header_that_is_not_an_array_closes_the_channel(channel: AbstractChannel) -> None:
    name = uniq("q")
    await declare(channel, name)
    with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed) as err:
        await channel.default_exchange.publish(aio_pika.Message(b"x", headers={"CC": "single"}), routing_key=name)
    assert err.value.args[0] == 'PRECONDITION_FAILED - invalid message: {unacceptable_type_in_header,"CC",longstr}'
    await channel.reopen()
    await channel.queue_delete(name)


# ------------------------------------------------------------------------------------- direct reply-to


async def test_direct_reply_to_routes_the_reply_back_to_the_requesting_channel(
    connection: aio_pika.abc.AbstractConnection,
) -> None:
    server_ch = await connection.channel()
    client_ch = await connection.channel()
    rpc = uniq("rpc")
    requests = await declare(server_ch, rpc)

    async def serve(m: AbstractIncomingMessage) -> None:
        assert m.reply_to is not None and m.reply_to.startswith("amq.rabbitmq.reply-to.")
        await server_ch.default_exchange.publish(
            aio_pika.Message(b"re:" + m.body, correlation_id=m.correlation_id), routing_key=m.reply_to
        )
        await m.ack()

    await requests.consume(serve)
    replies: list[AbstractIncomingMessage] = []

    async def on_reply(m: AbstractIncomingMessage) -> None:
        replies.append(m)

    reply_q = await client_ch.get_queue("amq.rabbitmq.reply-to", ensure=False)
    await reply_q.consume(on_reply, no_ack=True)
    await client_ch.default_exchange.publish(
        aio_pika.Message(b"ping", reply_to="amq.rabbitmq.reply-to", correlation_id="c1"), routing_key=rpc
    )
    await wait_for(lambda: len(replies) == 1)
    assert (replies[0].body, replies[0].correlation_id) == (b"re:ping", "c1")
    await server_ch.queue_delete(rpc)


async def test_a_reply_consumer_must_be_no_ack(channel: AbstractChannel) -> None:
    q = await channel.get_queue("amq.rabbitmq.reply-to", ensure=False)
    with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed) as err:
        await q.consume(ignore, no_ack=False)
    assert err.value.args[0] == "PRECONDITION_FAILED - reply consumer cannot acknowledge"


async def test_a_request_needs_a_reply_consumer_on_its_channel(channel: AbstractChannel) -> None:
    name = uniq("rpc")
    await declare(channel, name)
    with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed) as err:
        await channel.default_exchange.publish(
            aio_pika.Message(b"x", reply_to="amq.rabbitmq.reply-to"), routing_key=name
        )
    assert err.value.args[0] == "PRECONDITION_FAILED - fast reply consumer does not exist"
    await channel.reopen()
    await channel.queue_delete(name)


# ------------------------------------------------------------------------------------- delivery limit


@pytest.mark.skipif(EXTERNAL, reason="amqpd extension: RabbitMQ 3.x accepts x-delivery-limit on quorum queues only")
async def test_a_message_over_the_delivery_limit_is_dead_lettered(channel: AbstractChannel) -> None:
    src, dst = uniq("src"), uniq("dst")
    target = await declare(channel, dst)
    q = await declare(
        channel, src, **{"x-delivery-limit": 1, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dst}
    )
    await channel.default_exchange.publish(aio_pika.Message(b"poison"), routing_key=src)
    first = await q.get()
    assert "x-delivery-count" not in first.headers
    await first.nack(requeue=True)
    second = await q.get()
    assert second.redelivered and second.headers["x-delivery-count"] == 1
    await second.nack(requeue=True)
    assert await q.get(fail=False) is None
    dead = await target.get(no_ack=True)
    assert dead.body == b"poison"
    assert dead.headers["x-death"][0]["reason"] == "delivery_limit"  # type: ignore[index,call-overload]
    await q.delete()
    await target.delete()
