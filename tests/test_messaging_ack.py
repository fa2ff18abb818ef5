"""basic.get, ack / nack / reject, requeue order, basic.recover, and requeue when a channel or connection goes."""

from __future__ import annotations

import aio_pika
import pika
import pytest
from pamqp import commands

from tests.support.amqp import uniq
from tests.support.raw_client import CloseInfo
from tests.test_messaging_consume import (
    Client,
    cancel,
    consume,
    declare,
    get,
    message_count,
    publish_n,
    qos,
    read_delivery,
    recover,
)

pytestmark = pytest.mark.integration


def setup(amqp_url: str, n: int = 0) -> tuple[Client, str]:
    client = Client.open(amqp_url)
    client.open_channel(1)
    q = uniq("q")
    declare(client, 1, q, exclusive=True)
    publish_n(client, 1, q, n)
    return client, q


# --------------------------------------------------------------------------------------------------- get


def test_basic_get_reports_the_remaining_count_then_get_empty(amqp_url: str, loop_kind: str) -> None:
    client, q = setup(amqp_url, 3)
    with client:
        counts = []
        for i in range(3):
            ok, content = get(client, 1, q, no_ack=True)
            assert content == b"m%d" % i
            assert (ok.redelivered, ok.exchange, ok.routing_key) == (False, "", q)
            counts.append(ok.message_count)
        assert counts == [2, 1, 0]
        client.send_method(1, commands.Basic.Get(queue=q))
        client.expect(1, commands.Basic.GetEmpty)
        client.close_connection()


def test_basic_get_from_a_missing_queue_closes_the_channel_with_404(amqp_url: str, loop_kind: str) -> None:
    q = uniq("missing")
    with Client.open(amqp_url) as client:
        client.open_channel(1)
        client.send_method(1, commands.Basic.Get(queue=q))
        info = client.read_until_close()
        assert info == CloseInfo("channel", 404, f"NOT_FOUND - no queue '{q}' in vhost '/'", 60, 70, 1)
        client.close_connection()


def test_pika_basic_get_and_ack(amqp_url: str, loop_kind: str) -> None:
    q = uniq("q")
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.queue_declare(q, exclusive=True)
        channel.confirm_delivery()
        channel.basic_publish("", q, b"one")
        channel.basic_publish("", q, b"two")
        method, _props, content = channel.basic_get(q)
        assert method is not None and content == b"one" and method.message_count == 1
        channel.basic_ack(method.delivery_tag)
        method, _props, content = channel.basic_get(q)
        assert method is not None and content == b"two" and method.message_count == 0
        channel.basic_reject(method.delivery_tag, requeue=True)
        method, _props, content = channel.basic_get(q, auto_ack=True)
        assert method is not None and content == b"two" and method.redelivered
        assert channel.basic_get(q) == (None, None, None)
    finally:
        connection.close()


# ------------------------------------------------------------------------------------ ack / nack / reject


def test_ack_multiple_settles_every_tag_up_to_it(amqp_url: str, loop_kind: str) -> None:
    client, q = setup(amqp_url, 5)
    with client:
        for _ in range(5):
            get(client, 1, q)
        client.send_method(1, commands.Basic.Ack(delivery_tag=3, multiple=True))
        recover(client, 1)  # only 4 and 5 are still unacked
        assert message_count(client, 1, q) == 2
        assert [get(client, 1, q, no_ack=True)[1] for _ in range(2)] == [b"m3", b"m4"]
        client.close_connection()


def test_nack_multiple_with_requeue_returns_them_in_order_redelivered(amqp_url: str, loop_kind: str) -> None:
    client, q = setup(amqp_url, 4)
    with client:
        for _ in range(4):
            get(client, 1, q)
        client.send_method(1, commands.Basic.Nack(delivery_tag=3, multiple=True, requeue=True))
        got = [get(client, 1, q, no_ack=True) for _ in range(3)]
        assert [(ok.redelivered, content) for ok, content in got] == [(True, b"m0"), (True, b"m1"), (True, b"m2")]
        client.send_method(1, commands.Basic.Ack(delivery_tag=4))
        assert message_count(client, 1, q) == 0
        client.close_connection()


@pytest.mark.parametrize("method", ["nack", "reject"])
def test_nack_or_reject_without_requeue_drops_the_message(amqp_url: str, loop_kind: str, method: str) -> None:
    client, q = setup(amqp_url, 2)
    with client:
        ok, _ = get(client, 1, q)
        if method == "nack":
            client.send_method(1, commands.Basic.Nack(delivery_tag=ok.delivery_tag, requeue=False))
        else:
            client.send_method(1, commands.Basic.Reject(delivery_tag=ok.delivery_tag, requeue=False))
        recover(client, 1)
        assert message_count(client, 1, q) == 1
        assert get(client, 1, q, no_ack=True)[1] == b"m1"
        client.close_connection()


@pytest.mark.parametrize(
    ("frame", "method_id"),
    [
        (commands.Basic.Ack(delivery_tag=99), 80),
        (commands.Basic.Nack(delivery_tag=99), 120),
        (commands.Basic.Reject(delivery_tag=99), 90),
        (commands.Basic.Ack(delivery_tag=99, multiple=True), 80),
    ],
    ids=["ack", "nack", "reject", "ack-multiple"],
)
def test_settling_an_unknown_delivery_tag_closes_the_channel_with_406(
    amqp_url: str, loop_kind: str, frame: commands.Basic.Ack, method_id: int
) -> None:
    client, q = setup(amqp_url, 1)
    with client:
        get(client, 1, q)
        client.send_method(1, frame)
        info = client.read_until_close()
        assert info == CloseInfo("channel", 406, "PRECONDITION_FAILED - unknown delivery tag 99", 60, method_id, 1)
        client.close_connection()


def test_double_ack_closes_the_channel_with_406(amqp_url: str, loop_kind: str) -> None:
    client, q = setup(amqp_url, 1)
    with client:
        ok, _ = get(client, 1, q)
        client.send_method(1, commands.Basic.Ack(delivery_tag=ok.delivery_tag))
        client.send_method(1, commands.Basic.Ack(delivery_tag=ok.delivery_tag))
        info = client.read_until_close()
        assert info == CloseInfo("channel", 406, "PRECONDITION_FAILED - unknown delivery tag 1", 60, 80, 1)
        client.close_connection()


def test_ack_multiple_of_tag_zero_with_nothing_outstanding_is_accepted(amqp_url: str, loop_kind: str) -> None:
    with Client.open(amqp_url) as client:
        client.open_channel(1)
        client.send_method(1, commands.Basic.Ack(delivery_tag=0, multiple=True))
        qos(client, 1, 1)  # the channel is still open
        client.close_connection()


def test_requeued_messages_go_back_to_their_original_position(amqp_url: str, loop_kind: str) -> None:
    client, q = setup(amqp_url, 5)
    with client:
        tags = [get(client, 1, q)[0].delivery_tag for _ in range(5)]
        client.send_method(1, commands.Basic.Nack(delivery_tag=tags[3], requeue=True))  # message 4 first
        client.send_method(1, commands.Basic.Nack(delivery_tag=tags[1], requeue=True))  # then message 2
        first, second = get(client, 1, q), get(client, 1, q)
        assert [(ok.redelivered, content) for ok, content in (first, second)] == [(True, b"m1"), (True, b"m3")]
        client.send_method(1, commands.Basic.Ack(delivery_tag=0, multiple=True))
        assert message_count(client, 1, q) == 0
        client.close_connection()


def test_requeue_puts_a_message_ahead_of_later_ready_ones(amqp_url: str, loop_kind: str) -> None:
    client, q = setup(amqp_url, 3)
    with client:
        ok, _ = get(client, 1, q)  # m0 out, m1 and m2 still ready
        client.send_method(1, commands.Basic.Reject(delivery_tag=ok.delivery_tag, requeue=True))
        assert [get(client, 1, q, no_ack=True)[1] for _ in range(3)] == [b"m0", b"m1", b"m2"]
        client.close_connection()


# --------------------------------------------------------------------------------------------- recover


def test_recover_requeues_every_unacked_message_to_the_consumer(amqp_url: str, loop_kind: str) -> None:
    client, q = setup(amqp_url, 3)
    with client:
        consume(client, 1, q, "c")
        first = [read_delivery(client) for _ in range(3)]
        assert not any(d.redelivered for d in first)
        recover(client, 1)
        again = [read_delivery(client) for _ in range(3)]
        assert [(d.body, d.redelivered) for d in again] == [(b"m0", True), (b"m1", True), (b"m2", True)]
        assert [d.delivery_tag for d in again] == [4, 5, 6]
        client.send_method(1, commands.Basic.Ack(delivery_tag=6, multiple=True))
        assert message_count(client, 1, q) == 0
        client.close_connection()


def test_recover_without_requeue_closes_the_connection_with_540(amqp_url: str, loop_kind: str) -> None:
    with Client.open(amqp_url) as client:
        client.open_channel(1)
        client.send_method(1, commands.Basic.Recover(requeue=False))
        info = client.read_until_close()
        assert info == CloseInfo("connection", 540, "NOT_IMPLEMENTED - requeue=false", 60, 110, 0)


# ------------------------------------------------------------------------------- close requeues unacked


def test_closing_a_channel_requeues_its_unacked_messages(amqp_url: str, loop_kind: str) -> None:
    client, q = setup(amqp_url, 3)
    with client:
        client.open_channel(2)
        consume(client, 2, q, "c")
        [read_delivery(client) for _ in range(3)]
        cancel(client, 2, "c")
        publish_n(client, 1, q, 1, prefix=b"late")
        ok, _ = get(client, 2, q)  # held via basic.get on the same channel
        get_tag = ok.delivery_tag
        assert get_tag == 4
        assert message_count(client, 1, q) == 0
        client.send_method(2, commands.Channel.Close(200, "bye", 0, 0))
        client.expect(2, commands.Channel.CloseOk)
        assert message_count(client, 1, q) == 4
        got = [get(client, 1, q, no_ack=True) for _ in range(4)]
        assert [content for _, content in got] == [b"m0", b"m1", b"m2", b"late0"]
        assert all(ok.redelivered for ok, _ in got)
        client.close_connection()


async def test_closing_a_connection_requeues_its_unacked_messages(amqp_url: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(uniq("q"), auto_delete=False)
        for i in range(4):
            await channel.default_exchange.publish(aio_pika.Message(b"%d" % i), queue.name)
        consumer_conn = await aio_pika.connect(amqp_url)
        consumer_channel = await consumer_conn.channel()
        held = []
        for _ in range(4):
            message = await (await consumer_channel.get_queue(queue.name)).get(no_ack=False)
            held.append(message.body)
        assert held == [b"0", b"1", b"2", b"3"]
        await consumer_conn.close()
        back = []
        for _ in range(4):
            message = await queue.get(no_ack=True)
            assert message.redelivered
            back.append(message.body)
        assert back == held
        await queue.delete()
