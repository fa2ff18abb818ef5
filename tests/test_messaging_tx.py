"""Transactions (tx.select / commit / rollback), the tx/confirm mode switch, and the delivery guarantees the
broker offers: at-most-once (auto-ack), at-least-once (manual ack) and all-or-nothing transactional publish."""

from __future__ import annotations

import os
from pathlib import Path

import aio_pika
import pika
import pytest
from pamqp import commands

from amqpd.broker.server.config import Config
from tests.support.amqp import uniq
from tests.support.raw_client import CloseInfo
from tests.support.server_thread import ServerThread
from tests.support.waiting import wait_for
from tests.test_messaging_consume import (
    Client,
    consume,
    declare,
    get,
    message_count,
    publish_n,
    read_body,
    read_delivery,
    recover,
)

pytestmark = pytest.mark.integration

EXTERNAL = bool(os.environ.get("AMQP_URL"))


def tx_select(client: Client, channel: int) -> None:
    client.send_method(channel, commands.Tx.Select())
    client.expect(channel, commands.Tx.SelectOk)


def commit(client: Client, channel: int) -> None:
    client.send_method(channel, commands.Tx.Commit())
    client.expect(channel, commands.Tx.CommitOk)


def rollback(client: Client, channel: int) -> None:
    client.send_method(channel, commands.Tx.Rollback())
    client.expect(channel, commands.Tx.RollbackOk)


def two_channels(amqp_url: str) -> tuple[Client, str]:
    """Channel 1 is transactional, channel 2 observes; returns the client and an exclusive queue."""
    client = Client.open(amqp_url)
    client.open_channel(1)
    client.open_channel(2)
    q = uniq("q")
    declare(client, 2, q, exclusive=True)
    return client, q


# ---------------------------------------------------------------------------------------------- publish


def test_transactional_publishes_appear_only_at_commit(amqp_url: str, loop_kind: str) -> None:
    client, q = two_channels(amqp_url)
    with client:
        tx_select(client, 1)
        publish_n(client, 1, q, 3)
        assert message_count(client, 2, q) == 0
        commit(client, 1)
        assert message_count(client, 2, q) == 3
        publish_n(client, 1, q, 2, prefix=b"second")  # the channel stays transactional after a commit
        assert message_count(client, 2, q) == 3
        commit(client, 1)
        assert message_count(client, 2, q) == 5
        client.close_connection()


def test_rollback_discards_the_transactions_publishes(amqp_url: str, loop_kind: str) -> None:
    client, q = two_channels(amqp_url)
    with client:
        tx_select(client, 1)
        publish_n(client, 1, q, 3, prefix=b"dropped")
        rollback(client, 1)
        publish_n(client, 1, q, 1, prefix=b"kept")
        commit(client, 1)
        assert message_count(client, 2, q) == 1
        assert get(client, 2, q, no_ack=True)[1] == b"kept0"
        client.close_connection()


def test_mandatory_unroutable_publish_in_a_transaction_is_returned_by_the_commit(amqp_url: str, loop_kind: str) -> None:
    with Client.open(amqp_url) as client:
        client.open_channel(1)
        tx_select(client, 1)
        rk = uniq("nowhere")
        client.publish(1, b"bounce", routing_key=rk, mandatory=True)
        client.send_method(1, commands.Tx.Commit())
        ret = client.expect(1, commands.Basic.Return)
        assert (ret.reply_code, ret.reply_text, ret.routing_key) == (312, "NO_ROUTE", rk)
        assert read_body(client, 1) == b"bounce"
        client.expect(1, commands.Tx.CommitOk)
        client.close_connection()


def test_a_transaction_routes_its_publishes_when_they_are_made(amqp_url: str, loop_kind: str) -> None:
    # RabbitMQ routes at publish time and delivers at commit: a queue bound after the publish gets nothing.
    client, q = two_channels(amqp_url)
    with client:
        ex = uniq("fan")
        client.send_method(2, commands.Exchange.Declare(exchange=ex, exchange_type="fanout", auto_delete=True))
        client.expect(2, commands.Exchange.DeclareOk)
        tx_select(client, 1)
        client.publish(1, b"routed-early", exchange=ex)
        client.send_method(2, commands.Queue.Bind(queue=q, exchange=ex))
        client.expect(2, commands.Queue.BindOk)
        commit(client, 1)
        assert message_count(client, 2, q) == 0
        client.publish(1, b"after-bind", exchange=ex)
        commit(client, 1)
        assert message_count(client, 2, q) == 1
        client.send_method(2, commands.Exchange.Delete(exchange=ex))
        client.expect(2, commands.Exchange.DeleteOk)
        client.close_connection()


# ------------------------------------------------------------------------------------------------- acks


def test_transactional_acks_take_effect_at_commit(amqp_url: str, loop_kind: str) -> None:
    client, q = two_channels(amqp_url)
    with client:
        publish_n(client, 2, q, 2)
        tx_select(client, 1)
        consume(client, 1, q, "c")
        got = [read_delivery(client) for _ in range(2)]
        client.send_method(1, commands.Basic.Ack(delivery_tag=got[1].delivery_tag, multiple=True))
        commit(client, 1)
        # Both are gone for good: a recover has nothing left to requeue.
        recover(client, 1)
        assert message_count(client, 2, q) == 0
        assert not client.deliveries
        client.close_connection()


def test_rollback_keeps_acked_messages_unacked_on_the_channel(amqp_url: str, loop_kind: str) -> None:
    client, q = two_channels(amqp_url)
    with client:
        publish_n(client, 2, q, 2)
        tx_select(client, 1)
        tags = [get(client, 1, q)[0].delivery_tag for _ in range(2)]
        client.send_method(1, commands.Basic.Ack(delivery_tag=tags[0]))
        client.send_method(1, commands.Basic.Nack(delivery_tag=tags[1], requeue=True))
        rollback(client, 1)
        assert message_count(client, 2, q) == 0  # the nack's requeue was rolled back too
        # Still unacked: they can be settled again, and this time the commit makes it stick.
        client.send_method(1, commands.Basic.Ack(delivery_tag=tags[1]))
        client.send_method(1, commands.Basic.Reject(delivery_tag=tags[0], requeue=True))
        commit(client, 1)
        assert message_count(client, 2, q) == 1
        ok, content = get(client, 2, q, no_ack=True)
        assert (content, ok.redelivered) == (b"m0", True)
        client.close_connection()


def test_uncommitted_acks_are_lost_when_the_channel_closes(amqp_url: str, loop_kind: str) -> None:
    client, q = two_channels(amqp_url)
    with client:
        publish_n(client, 2, q, 1)
        tx_select(client, 1)
        tag = get(client, 1, q)[0].delivery_tag
        client.send_method(1, commands.Basic.Ack(delivery_tag=tag))
        client.send_method(1, commands.Channel.Close(200, "bye", 0, 0))
        client.expect(1, commands.Channel.CloseOk)
        assert message_count(client, 2, q) == 1
        client.close_connection()


def test_acking_a_tag_twice_in_one_transaction_closes_the_channel_with_406(amqp_url: str, loop_kind: str) -> None:
    client, q = two_channels(amqp_url)
    with client:
        publish_n(client, 2, q, 1)
        tx_select(client, 1)
        tag = get(client, 1, q)[0].delivery_tag
        client.send_method(1, commands.Basic.Ack(delivery_tag=tag))
        client.send_method(1, commands.Basic.Ack(delivery_tag=tag))
        info = client.read_until_close()
        assert info == CloseInfo("channel", 406, f"PRECONDITION_FAILED - unknown delivery tag {tag}", 60, 80, 1)
        client.close_connection()


# -------------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("first", "second", "detail", "class_method"),
    [
        (commands.Tx.Select(), commands.Confirm.Select(), "cannot switch from tx to confirm mode", (85, 10)),
        (commands.Confirm.Select(), commands.Tx.Select(), "cannot switch from confirm to tx mode", (90, 10)),
    ],
    ids=["tx-then-confirm", "confirm-then-tx"],
)
def test_switching_between_tx_and_confirm_mode_closes_the_channel_with_406(
    amqp_url: str, loop_kind: str, first: object, second: object, detail: str, class_method: tuple[int, int]
) -> None:
    with Client.open(amqp_url) as client:
        client.open_channel(1)
        client.send_method(1, first)  # type: ignore[arg-type]
        client.expect(1, commands.Tx.SelectOk if isinstance(first, commands.Tx.Select) else commands.Confirm.SelectOk)
        client.send_method(1, second)  # type: ignore[arg-type]
        info = client.read_until_close()
        assert info == CloseInfo("channel", 406, f"PRECONDITION_FAILED - {detail}", *class_method, 1)
        client.close_connection()


@pytest.mark.parametrize(
    ("method", "method_id"), [(commands.Tx.Commit(), 20), (commands.Tx.Rollback(), 30)], ids=["commit", "rollback"]
)
def test_commit_or_rollback_without_select_closes_the_channel_with_406(
    amqp_url: str, loop_kind: str, method: object, method_id: int
) -> None:
    with Client.open(amqp_url) as client:
        client.open_channel(1)
        client.send_method(1, method)  # type: ignore[arg-type]
        info = client.read_until_close()
        assert info == CloseInfo("channel", 406, "PRECONDITION_FAILED - channel is not transactional", 90, method_id, 1)
        client.close_connection()


def test_pika_transaction_commit_and_rollback(amqp_url: str, loop_kind: str) -> None:
    q = uniq("q")
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        observer = connection.channel()
        observer.queue_declare(q, exclusive=True)
        channel = connection.channel()
        channel.tx_select()
        channel.basic_publish("", q, b"a")
        channel.basic_publish("", q, b"b")
        channel.tx_rollback()
        channel.basic_publish("", q, b"c")
        assert observer.queue_declare(q, passive=True).method.message_count == 0
        channel.tx_commit()
        assert observer.queue_declare(q, passive=True).method.message_count == 1
    finally:
        connection.close()


# ---------------------------------------------------------------------------------------- the guarantees


async def test_at_most_once_auto_ack_messages_in_flight_die_with_their_consumer(amqp_url: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(uniq("q"), auto_delete=False)
        for i in range(5):
            await channel.default_exchange.publish(aio_pika.Message(b"%d" % i), queue.name)
        consumer_conn = await aio_pika.connect(amqp_url)
        consumer_channel = await consumer_conn.channel()
        seen: list[bytes] = []

        async def crashes_before_processing(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            seen.append(message.body)

        await (await consumer_channel.get_queue(queue.name)).consume(crashes_before_processing, no_ack=True)
        await wait_for(lambda: len(seen) == 5)
        await consumer_conn.close()  # the consumer "dies" having processed nothing
        declared = await channel.declare_queue(queue.name, passive=True)
        assert declared.declaration_result.message_count == 0  # nothing comes back: at most once
        await queue.delete()


async def test_at_least_once_unacked_messages_survive_their_consumer_and_come_back_redelivered(
    amqp_url: str,
) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(uniq("q"), auto_delete=False)
        for i in range(5):
            await channel.default_exchange.publish(aio_pika.Message(b"%d" % i), queue.name)
        first_conn = await aio_pika.connect(amqp_url)
        first_channel = await first_conn.channel()
        processed: list[bytes] = []
        seen: list[aio_pika.abc.AbstractIncomingMessage] = []

        async def processes_two_then_dies(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            seen.append(message)
            if len(processed) < 2:
                processed.append(message.body)
                await message.ack()

        await (await first_channel.get_queue(queue.name)).consume(processes_two_then_dies)
        await wait_for(lambda: len(seen) == 5)
        await first_conn.close()
        survivors: list[tuple[bytes, bool]] = []

        async def second(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            survivors.append((message.body, message.redelivered))
            await message.ack()

        tag = await queue.consume(second)
        await wait_for(lambda: len(survivors) == 3)
        assert survivors == [(b"2", True), (b"3", True), (b"4", True)]  # nothing lost; a retry is visible
        assert sorted(processed + [body for body, _ in survivors]) == [b"%d" % i for i in range(5)]
        await queue.cancel(tag)
        await queue.delete()


async def test_transactional_publish_is_all_or_nothing(amqp_url: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        observer = await connection.channel()
        queue = await observer.declare_queue(uniq("q"), exclusive=True)

        async def count() -> int:
            declared = await observer.declare_queue(queue.name, passive=True)
            n = declared.declaration_result.message_count
            assert n is not None
            return n

        # A transaction whose channel dies before the commit publishes nothing ...
        doomed = await connection.channel(publisher_confirms=False)
        await doomed.transaction().select()
        for i in range(3):
            await doomed.default_exchange.publish(aio_pika.Message(b"%d" % i), queue.name)
        with pytest.raises(aio_pika.exceptions.ChannelClosed):
            await doomed.default_exchange.publish(aio_pika.Message(b"x"), routing_key="k", mandatory=False)
            await doomed.declare_exchange(uniq("missing"), passive=True)
        assert await count() == 0
        # ... and a committed one publishes every message.
        channel = await connection.channel(publisher_confirms=False)
        tx = channel.transaction()
        await tx.select()
        for i in range(3):
            await channel.default_exchange.publish(aio_pika.Message(b"%d" % i), queue.name)
        assert await count() == 0
        await tx.commit()
        assert await count() == 3


def test_committed_persistent_publishes_survive_a_restart(tmp_path: Path, loop_kind: str) -> None:
    if EXTERNAL:
        pytest.skip("restarts an amqpd with an embedded store; AMQP_URL points elsewhere")
    config = Config(host="127.0.0.1", port=0, store="", data_dir=str(tmp_path))
    q = uniq("durable")
    persistent = commands.Basic.Properties(delivery_mode=2)
    server = ServerThread(config, loop_kind).start()
    try:
        with Client.open(server.url) as client:
            client.open_channel(1)
            declare(client, 1, q, durable=True)
            tx_select(client, 1)
            for i in range(3):
                client.publish(1, b"kept%d" % i, routing_key=q, properties=persistent)
            commit(client, 1)  # commit-ok is held until the store has the messages
            client.publish(1, b"rolled-back", routing_key=q, properties=persistent)
            rollback(client, 1)
            client.close_connection()
    finally:
        server.stop()
    server = ServerThread(config, loop_kind).start()
    try:
        with Client.open(server.url) as client:
            client.open_channel(1)
            assert message_count(client, 1, q) == 3
            client.send_method(1, commands.Queue.Delete(queue=q))
            client.expect(1, commands.Queue.DeleteOk)
            client.close_connection()
    finally:
        server.stop()
