"""Consumer acknowledgement timeout: a delivery left unacked longer than its queue's ``x-consumer-timeout`` (or
the broker's ``consumer_timeout``) cancels its consumer with a server-sent basic.cancel and requeues what it
held, or, for a client without ``consumer_cancel_notify``, closes the channel with RabbitMQ's 406.

amqpd settings only: RabbitMQ 3.10 accepts ``x-consumer-timeout`` and ignores it, and its broker-wide timeout
(30 minutes) cannot be shortened from a test, so every broker test here skips when AMQP_URL is set.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import aio_pika
import pika
import pytest
from aio_pika.abc import AbstractIncomingMessage
from pamqp import body, commands, header, heartbeat
from pamqp.common import FieldTable

from amqpd.broker.server.config import Config
from amqpd.broker.server.settings import ConfigError, load_config
from amqpd.broker.session.consumer_timeout import DeliveryAges, timeout_text
from tests.support.raw_client import AnyFrame, RawClient
from tests.support.server_thread import ServerThread
from tests.support.waiting import wait_for, wait_until

TIMEOUT_MS = 300
EXTERNAL = bool(os.environ.get("AMQP_URL"))
amqpd_only = pytest.mark.skipif(
    EXTERNAL,
    reason="amqpd setting: RabbitMQ 3.10 ignores x-consumer-timeout and its 30 min default cannot be shortened",
)
# What aio-pika announces, minus consumer_cancel_notify: such a client can only be told by a channel close.
NO_CANCEL_NOTIFY: FieldTable = {"publisher_confirms": True, "basic.nack": True, "connection.blocked": True}


def uniq(prefix: str) -> str:
    return f"ctimeout-{prefix}-{uuid.uuid4().hex[:12]}"


def expected_close_text(channel: int, timeout_ms: int) -> str:
    return (
        f"PRECONDITION_FAILED - delivery acknowledgement on channel {channel} timed out. Timeout value used: "
        f"{timeout_ms} ms. This timeout value can be configured, see consumers doc guide to learn more"
    )


def next_method(client: RawClient) -> tuple[int, AnyFrame]:
    """The next method frame; content headers and bodies (and heartbeats) are read past."""
    while True:
        got = client.read_frame()
        assert got is not None, "broker hung up"
        if not isinstance(got[1], header.ContentHeader | body.ContentBody | heartbeat.Heartbeat):
            return got


def declare(client: RawClient, channel: int, name: str, timeout_ms: int | None = TIMEOUT_MS) -> None:
    args: FieldTable = {"x-consumer-timeout": timeout_ms} if timeout_ms is not None else {}
    client.send_method(channel, commands.Queue.Declare(queue=name, exclusive=True, arguments=args))
    client.expect(channel, commands.Queue.DeclareOk)


def consume(client: RawClient, channel: int, queue: str, tag: str) -> None:
    client.send_method(channel, commands.Basic.Consume(queue=queue, consumer_tag=tag))
    client.expect(channel, commands.Basic.ConsumeOk)


def publish(client: RawClient, channel: int, queue: str, body: bytes) -> None:
    client.publish(channel, body, routing_key=queue)


# ------------------------------------------------------------------------------------------ delivery ages


def test_a_delivery_is_never_reported_older_than_it_can_be() -> None:
    ages = DeliveryAges()
    ages.note(1000, 3)  # tags 1-3 were delivered by t=1000
    ages.note(1100, 5)  # tags 4-5 by t=1100
    assert ages.expired_upto(1299, 300) == 0  # nothing is known to be 300 ms old at t=1299
    assert ages.expired_upto(1300, 300) == 3
    assert ages.expired_upto(1400, 300) == 5


def test_a_tick_without_new_deliveries_keeps_the_earlier_bound() -> None:
    ages = DeliveryAges()
    ages.note(1000, 3)
    ages.note(1100, 3)  # no delivery since: tag 3 is still only known to date from t=1000
    assert ages.expired_upto(1300, 300) == 3


def test_marks_of_settled_tags_are_dropped() -> None:
    ages = DeliveryAges()
    for t, tag in ((1000, 2), (1100, 4), (1200, 9)):
        ages.note(t, tag)
    ages.forget_below(5)  # tags below 5 are all settled: only the mark that bounds 5-9 is left
    assert ages.marks == [(1200, 9)]


def test_the_close_text_is_rabbitmqs() -> None:
    assert f"PRECONDITION_FAILED - {timeout_text(3, 300)}" == expected_close_text(3, 300)


def test_consumer_timeout_setting_is_validated() -> None:
    assert load_config(["--consumer-timeout", "0"], {}).consumer_timeout == 0
    assert load_config([], {"AMQPD_CONSUMER_TIMEOUT": "5000"}).consumer_timeout == 5000
    with pytest.raises(ConfigError, match="--consumer-timeout must be at least 0, got -1"):
        load_config(["--consumer-timeout", "-1"], {})


# ------------------------------------------------------------------------------------------ per-queue timeout


@pytest.mark.integration
@amqpd_only
async def test_aio_pika_consumer_that_never_acks_is_cancelled_and_its_message_redelivered(amqp_url: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        slow_channel = await connection.channel()
        queue = await slow_channel.declare_queue(
            uniq("q"), exclusive=True, arguments={"x-consumer-timeout": TIMEOUT_MS}
        )
        underlay = await slow_channel.get_underlay_channel()
        cancelled: list[str | None] = []
        underlay.on_consumer_cancel_callbacks.add(lambda frame: cancelled.append(frame.consumer_tag))
        held: list[AbstractIncomingMessage] = []

        async def hold(message: AbstractIncomingMessage) -> None:
            held.append(message)  # and never ack it

        slow_tag = await queue.consume(hold)
        await slow_channel.default_exchange.publish(aio_pika.Message(b"late"), routing_key=queue.name)
        await wait_for(lambda: held)
        assert not held[0].redelivered

        other = await connection.channel()
        other_queue = await other.get_queue(queue.name)
        got: list[AbstractIncomingMessage] = []

        async def take(message: AbstractIncomingMessage) -> None:
            got.append(message)
            await message.ack()

        await other_queue.consume(take)
        await wait_for(lambda: cancelled == [slow_tag])
        await wait_for(lambda: got)
        assert got[0].body == b"late"
        assert got[0].redelivered
        # the cancelled consumer's channel is still open and usable
        assert not slow_channel.is_closed
        assert (await slow_channel.declare_queue(queue.name, passive=True)).name == queue.name


@pytest.mark.integration
@amqpd_only
def test_pika_consumer_that_never_acks_is_cancelled_and_its_message_requeued(amqp_url: str, loop_kind: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        name = uniq("q")
        channel.queue_declare(name, exclusive=True, arguments={"x-consumer-timeout": TIMEOUT_MS})
        cancelled: list[str] = []
        channel.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
        held: list[bytes] = []
        channel.basic_consume(name, lambda _ch, _method, _props, body: held.append(body), consumer_tag="slow")
        channel.basic_publish("", name, b"late")

        def pump(done: list[str] | list[bytes]) -> bool:
            connection.process_data_events(time_limit=0.02)
            return bool(done)

        wait_until(lambda: pump(held))
        wait_until(lambda: pump(cancelled))
        assert cancelled == ["slow"]
        method, _props, body = channel.basic_get(name, auto_ack=True)
        assert method is not None and body == b"late" and method.redelivered
        assert channel.is_open
    finally:
        connection.close()


@pytest.mark.integration
@amqpd_only
def test_client_without_cancel_notify_gets_its_channel_closed_with_406(amqp_url: str, loop_kind: str) -> None:
    with RawClient.open(amqp_url, capabilities=NO_CANCEL_NOTIFY) as client:
        q = uniq("q")
        client.open_channel(1)
        client.open_channel(3)
        declare(client, 3, q)
        consume(client, 3, q, "slow")
        publish(client, 3, q, b"late")
        assert isinstance(next_method(client)[1], commands.Basic.Deliver)
        close = client.read_until_close()
        assert (close.kind, close.channel, close.reply_code) == ("channel", 3, 406)
        assert close.reply_text == expected_close_text(3, TIMEOUT_MS)
        assert (close.class_id, close.method_id) == (0, 0)
        # closing the channel requeued the message, marked redelivered
        client.send_method(1, commands.Basic.Get(queue=q, no_ack=True))
        channel, get_ok = next_method(client)
        assert channel == 1 and isinstance(get_ok, commands.Basic.GetOk) and get_ok.redelivered
        client.close_connection()


@pytest.mark.integration
@amqpd_only
def test_basic_get_left_unacked_closes_the_channel_even_with_cancel_notify(amqp_url: str, loop_kind: str) -> None:
    with RawClient.open(amqp_url) as client:  # advertises consumer_cancel_notify, but there is no consumer
        q = uniq("q")
        client.open_channel(1)
        declare(client, 1, q)
        publish(client, 1, q, b"polled")
        client.send_method(1, commands.Basic.Get(queue=q))
        assert isinstance(next_method(client)[1], commands.Basic.GetOk)
        close = client.read_until_close()
        assert (close.kind, close.reply_code, close.reply_text) == ("channel", 406, expected_close_text(1, TIMEOUT_MS))
        client.close_connection()


@pytest.mark.integration
@amqpd_only
def test_a_consumer_that_acks_in_time_is_never_cancelled(amqp_url: str, loop_kind: str) -> None:
    with RawClient.open(amqp_url) as client:
        prompt_q, slow_q = uniq("prompt"), uniq("slow")
        client.open_channel(1)
        declare(client, 1, prompt_q)
        declare(client, 1, slow_q)
        consume(client, 1, prompt_q, "prompt")
        consume(client, 1, slow_q, "slow")
        publish(client, 1, slow_q, b"never acked")
        deliver = next_method(client)[1]
        assert isinstance(deliver, commands.Basic.Deliver) and deliver.consumer_tag == "slow"
        # Keep the prompt consumer busy, acking each delivery at once, until the slow one has timed out: that
        # spans more than the timeout, on the same channel, and the prompt one must see no cancel.
        cancels: list[str] = []
        rounds = 0
        while not cancels:
            publish(client, 1, prompt_q, b"quick")
            while True:
                _, method = next_method(client)
                if isinstance(method, commands.Basic.Cancel):
                    cancels.append(method.consumer_tag or "")
                    continue
                assert isinstance(method, commands.Basic.Deliver) and method.consumer_tag == "prompt", method
                client.send_method(1, commands.Basic.Ack(delivery_tag=method.delivery_tag or 0))
                break
            rounds += 1
        assert cancels == ["slow"]
        assert rounds > 1
        publish(client, 1, prompt_q, b"still here")
        _, method = next_method(client)
        assert isinstance(method, commands.Basic.Deliver) and method.consumer_tag == "prompt"
        client.send_method(1, commands.Basic.Ack(delivery_tag=method.delivery_tag or 0))
        client.close_connection()


# ------------------------------------------------------------------------------------------ broker default


@pytest.fixture
def short_default(loop_kind: str) -> Iterator[ServerThread]:
    """An amqpd whose broker-wide consumer_timeout is TIMEOUT_MS."""
    if EXTERNAL:
        pytest.skip("amqpd setting: the reference RabbitMQ's consumer_timeout cannot be changed from a test")
    config = Config(host="127.0.0.1", port=0, store="memory://", consumer_timeout=TIMEOUT_MS)
    thread = ServerThread(config, loop_kind).start()
    try:
        yield thread
        assert not any(thread.wait_idle().values()), "the test left connections or consumers behind"
    finally:
        thread.stop()


@pytest.mark.integration
async def test_the_broker_default_applies_to_a_queue_without_the_argument(short_default: ServerThread) -> None:
    connection = await aio_pika.connect(short_default.url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(uniq("q"), exclusive=True)
        underlay = await channel.get_underlay_channel()
        cancelled: list[str | None] = []
        underlay.on_consumer_cancel_callbacks.add(lambda frame: cancelled.append(frame.consumer_tag))
        held: list[AbstractIncomingMessage] = []

        async def hold(message: AbstractIncomingMessage) -> None:
            held.append(message)

        tag = await queue.consume(hold)
        await channel.default_exchange.publish(aio_pika.Message(b"late"), routing_key=queue.name)
        await wait_for(lambda: cancelled == [tag])
        assert len(held) == 1
        redelivered = await queue.get(no_ack=True)
        assert redelivered.body == b"late" and redelivered.redelivered


@pytest.mark.integration
def test_a_longer_queue_timeout_overrides_the_default_and_does_not_hide_a_shorter_one(
    short_default: ServerThread, loop_kind: str
) -> None:
    # The older delivery has the long timeout; the younger one, from a queue on the broker default, must still
    # time out first.
    with RawClient.open(short_default.url) as client:
        patient_q, default_q = uniq("patient"), uniq("default")
        client.open_channel(1)
        declare(client, 1, patient_q, timeout_ms=600_000)
        declare(client, 1, default_q, timeout_ms=None)
        consume(client, 1, patient_q, "patient")
        consume(client, 1, default_q, "default")
        publish(client, 1, patient_q, b"old")
        first = next_method(client)[1]
        assert isinstance(first, commands.Basic.Deliver) and first.consumer_tag == "patient"
        publish(client, 1, default_q, b"young")
        second = next_method(client)[1]
        assert isinstance(second, commands.Basic.Deliver) and second.consumer_tag == "default"
        cancel = next_method(client)[1]
        assert isinstance(cancel, commands.Basic.Cancel) and cancel.consumer_tag == "default"
        # the patient consumer still holds its delivery: acking it is accepted, and the channel is open
        client.send_method(1, commands.Basic.Ack(delivery_tag=first.delivery_tag or 0))
        client.send_method(1, commands.Queue.Declare(queue=default_q, passive=True))
        ok = client.expect(1, commands.Queue.DeclareOk)
        assert ok.message_count == 1  # the young message went back to its queue
        client.close_connection()
