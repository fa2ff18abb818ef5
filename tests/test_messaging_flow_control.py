"""Publisher flow control slows a publisher down to what the consumers of its queues take, and never deadlocks:
not when one connection publishes to a queue it consumes itself, nor when two connections each consume the
other's queue with manual acks (request/reply both ways)."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest

from tests.support.amqp import uniq
from tests.support.server_thread import ServerThread
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

N = 3000


@pytest.fixture
def amqpd_settings() -> dict[str, object]:
    """The in-process broker's flow marks for these tests, so N crosses them quickly."""
    return {"flow_high": 50, "flow_low": 10}


async def consume_counting(channel: aio_pika.abc.AbstractChannel, queue_name: str, counter: list[int]) -> None:
    queue = await channel.declare_queue(queue_name, auto_delete=True)

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        counter[0] += 1
        await message.ack()

    await queue.consume(on_message)


async def publish_many(channel: aio_pika.abc.AbstractChannel, queue_name: str, n: int = N) -> None:
    for i in range(n):
        await channel.default_exchange.publish(aio_pika.Message(b"%d" % i), routing_key=queue_name)


async def test_a_connection_publishing_into_a_queue_it_consumes_is_not_stalled(amqp_url: str) -> None:
    async with await aio_pika.connect(amqp_url) as conn:
        channel = await conn.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=5)
        name = uniq("flow-self")
        got = [0]
        await consume_counting(channel, name, got)
        await publish_many(channel, name)
        await wait_for(lambda: got[0] == N, timeout=60)


async def test_two_connections_consuming_each_others_queues_with_acks_never_deadlock(amqp_url: str) -> None:
    async with await aio_pika.connect(amqp_url) as a, await aio_pika.connect(amqp_url) as b:
        cha = await a.channel(publisher_confirms=False)
        chb = await b.channel(publisher_confirms=False)
        await cha.set_qos(prefetch_count=5)
        await chb.set_qos(prefetch_count=5)
        to_b, to_a = uniq("flow-to-b"), uniq("flow-to-a")
        got_a, got_b = [0], [0]
        await consume_counting(cha, to_a, got_a)
        await consume_counting(chb, to_b, got_b)
        await asyncio.gather(publish_many(cha, to_b), publish_many(chb, to_a))
        await wait_for(lambda: got_a[0] == N and got_b[0] == N, timeout=60)


@pytest.mark.parametrize(
    "arguments",
    [None, {"x-max-length": 1_000_000}, {"x-message-ttl": 600_000}],
    ids=["plain", "max-length", "ttl"],
)
async def test_a_flat_out_publisher_is_paused_while_its_queue_has_a_consumer_backlog(
    broker_server: ServerThread, amqp_url: str, arguments: dict[str, int] | None
) -> None:
    async with await aio_pika.connect(amqp_url) as pub, await aio_pika.connect(amqp_url) as sub:
        pch = await pub.channel(publisher_confirms=False)
        sch = await sub.channel()
        await sch.set_qos(prefetch_count=1)
        name = uniq("flow-backlog")
        queue = await sch.declare_queue(name, auto_delete=True, arguments=arguments)
        held: list[aio_pika.abc.AbstractIncomingMessage] = []

        async def hold(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            held.append(message)  # never acked until the end: the backlog only grows

        await queue.consume(hold)
        publishing = asyncio.create_task(publish_many(pch, name))

        def pauses() -> int:
            return int(broker_server.call(lambda: sum(c.flow_pauses for c in broker_server.server.connections)))

        await publishing  # pauses are bounded: the publisher still finishes
        assert pauses() > 0
        assert len(held) == 1  # prefetch 1, never acked: everything else waited in the queue
        for m in held:
            await m.ack()
