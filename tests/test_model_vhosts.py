"""Two virtual hosts in one broker are fully apart: queues, exchanges and direct reply-to addresses of one are
invisible from the other. (Creating vhosts over AMQP or HTTP comes with user management; here the in-process
broker adds one directly.)"""

from __future__ import annotations

import aio_pika
import pytest
from aiormq.exceptions import ChannelNotFoundEntity

from tests.support.amqp import uniq
from tests.support.server_thread import ServerThread
from tests.support.waiting import wait_for


@pytest.fixture
def other_vhost_url(broker_server: ServerThread, amqp_url: str) -> str:
    def add() -> None:
        broker_server.server.add_vhost("other")
        broker_server.server.set_permissions("guest", "other", ".*", ".*", ".*")

    broker_server.call(add)
    return amqp_url.rstrip("/") + "/other"


async def test_a_queue_name_in_one_vhost_is_a_different_queue_in_another(amqp_url: str, other_vhost_url: str) -> None:
    name = uniq("same-name")
    async with await aio_pika.connect(amqp_url) as a, await aio_pika.connect(other_vhost_url) as b:
        cha, chb = await a.channel(), await b.channel()
        qa = await cha.declare_queue(name, auto_delete=True)
        qb = await chb.declare_queue(name, auto_delete=True)
        await cha.default_exchange.publish(aio_pika.Message(b"in /"), routing_key=name)
        await chb.default_exchange.publish(aio_pika.Message(b"in other"), routing_key=name)
        got_a = await qa.get(timeout=5)
        got_b = await qb.get(timeout=5)
        assert (got_a.body, got_b.body) == (b"in /", b"in other")
        await got_a.ack()
        await got_b.ack()
        assert await qa.get(fail=False) is None
        await qa.delete()
        await qb.delete()


async def test_an_exchange_declared_in_one_vhost_is_not_found_in_another(amqp_url: str, other_vhost_url: str) -> None:
    name = uniq("x")
    async with await aio_pika.connect(amqp_url) as a, await aio_pika.connect(other_vhost_url) as b:
        ex = await (await a.channel()).declare_exchange(name, "fanout", auto_delete=True)
        with pytest.raises(ChannelNotFoundEntity, match=f"no exchange '{name}' in vhost 'other'"):
            await (await b.channel()).get_exchange(name, ensure=True)
        await ex.delete()


async def test_a_direct_reply_to_address_is_unroutable_from_another_vhost(
    amqp_url: str, other_vhost_url: str
) -> None:
    async with await aio_pika.connect(amqp_url) as a, await aio_pika.connect(other_vhost_url) as b:
        cha = await a.channel()
        replies: list[bytes] = []

        async def on_reply(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            replies.append(message.body)

        reply_queue = await cha.get_queue("amq.rabbitmq.reply-to", ensure=False)
        await reply_queue.consume(on_reply, no_ack=True)
        request = uniq("requests")
        server_q = await cha.declare_queue(request, auto_delete=True)
        await cha.default_exchange.publish(aio_pika.Message(b"ping", reply_to="amq.rabbitmq.reply-to"), request)
        incoming = await server_q.get(timeout=5)
        address = incoming.reply_to
        assert address is not None and address.startswith("amq.rabbitmq.reply-to.")
        await incoming.ack()

        returned: list[aio_pika.abc.AbstractIncomingMessage] = []
        chb = await b.channel(on_return_raises=False)
        chb.return_callbacks.add(lambda _ch, msg: returned.append(msg))
        await chb.default_exchange.publish(aio_pika.Message(b"from other"), routing_key=address, mandatory=True)
        await wait_for(lambda: len(returned) == 1)
        await cha.default_exchange.publish(aio_pika.Message(b"from /"), routing_key=address)
        await wait_for(lambda: replies == [b"from /"])
        await server_q.delete()
