"""amqpd.broker.testing's embedded API: `EmbeddedBroker` on the running loop, `BrokerThread` on its own; both answer
questions about queues from any thread."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from pathlib import Path

import aio_pika
import pika
import pytest

from amqpd.broker.testing import BrokerThread, EmbeddedBroker, QueueInfo
from amqpd.broker.testing.embedded import broker_config


def publish_with_pika(url: str, queue: str, count: int = 1, *, durable: bool = False) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.queue_declare(queue, durable=durable)
        for _ in range(count):
            channel.basic_publish("", queue, b"m", pika.BasicProperties(delivery_mode=2 if durable else 1))
    finally:
        connection.close()


async def ignore(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    pass


def port_is_closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


# ------------------------------------------------------------------------------------------------ EmbeddedBroker


async def test_embedded_broker_serves_aio_pika_on_the_running_loop() -> None:
    async with EmbeddedBroker() as broker:
        assert broker.host == "127.0.0.1"
        assert broker.port > 0
        assert broker.url == f"amqp://guest:guest@127.0.0.1:{broker.port}/"
        async with await aio_pika.connect(broker.url) as connection:
            channel = await connection.channel()
            queue = await channel.declare_queue("orders")
            for body in (b"1", b"2"):
                await channel.default_exchange.publish(aio_pika.Message(body), routing_key="orders")
            assert broker.queue_depth("orders") == 2
            assert broker.queues() == {"orders": 2}
            await queue.consume(ignore, no_ack=False)
            info = broker.queue_info("orders")
            assert (info.consumers, info.durable, info.exclusive) == (1, False, False)
        assert (await broker.wait_idle()) == {"connections": 0, "channels": 0, "consumers": 0, "exclusive_queues": 0}
        port = broker.port
    assert port_is_closed(port)


async def test_embedded_broker_answers_other_threads_from_its_loop() -> None:
    async with EmbeddedBroker() as broker, await aio_pika.connect(broker.url) as connection:
        channel = await connection.channel()
        await channel.declare_queue("q")
        await channel.default_exchange.publish(aio_pika.Message(b"x"), routing_key="q")
        # A worker thread's question hops onto the broker's loop, which keeps running meanwhile.
        assert await asyncio.to_thread(broker.queue_depth, "q") == 1
        assert await asyncio.to_thread(broker.stats) == {
            "connections": 1,
            "channels": 1,
            "consumers": 0,
            "exclusive_queues": 0,
        }


async def test_embedded_broker_serves_a_blocking_client_in_another_thread() -> None:
    async with EmbeddedBroker() as broker:
        await asyncio.to_thread(publish_with_pika, broker.url, "from-pika", 3)
        assert broker.queue_depth("from-pika") == 3


async def test_embedded_broker_stop_closes_the_clients_connections() -> None:
    broker = await EmbeddedBroker().start()
    connection = await aio_pika.connect(broker.url)
    closed = asyncio.get_running_loop().create_future()
    connection.close_callbacks.add(lambda _, exc: closed.done() or closed.set_result(exc))
    await broker.stop()
    exc = await asyncio.wait_for(closed, 5)
    assert "CONNECTION_FORCED" in str(exc)
    with pytest.raises(RuntimeError, match="not running"):
        broker.queues()


# ------------------------------------------------------------------------------------------------ BrokerThread


def test_broker_thread_serves_pika_and_counts_its_messages() -> None:
    with BrokerThread() as broker:
        publish_with_pika(broker.url, "jobs", 2)
        publish_with_pika(broker.url, "other")
        assert broker.queue_depth("jobs") == 2
        assert broker.queues() == {"jobs": 2, "other": 1}
        assert broker.queue_info("jobs") == QueueInfo("jobs", "/", 2, 0, False, False, False)
        assert broker.stats()["connections"] == 0
        port = broker.port
    assert port_is_closed(port)


async def test_broker_thread_serves_an_async_test_on_any_loop() -> None:
    with BrokerThread() as broker:
        async with await aio_pika.connect(broker.url) as connection:
            channel = await connection.channel()
            await channel.declare_queue("q", exclusive=True)
            await channel.default_exchange.publish(aio_pika.Message(b"x"), routing_key="q")
            # Blocking for a moment on the test's loop is fine: the broker answers from its own.
            assert broker.queue_info("q").exclusive
            assert broker.queue_depth("q") == 1
        assert broker.wait_idle() == {"connections": 0, "channels": 0, "consumers": 0, "exclusive_queues": 0}


def test_queue_questions_about_what_does_not_exist() -> None:
    with BrokerThread() as broker:
        with pytest.raises(KeyError, match="no queue 'missing' in vhost '/'"):
            broker.queue_depth("missing")
        assert broker.queues() == {}
        assert broker.queues(vhost="no-such-vhost") == {}


def test_user_password_and_vhost_are_in_the_url() -> None:
    with BrokerThread(user="app", password="s3cret/+", vhost="app/one") as broker:
        assert broker.url == f"amqp://app:s3cret%2F%2B@127.0.0.1:{broker.port}/app%2Fone"
        publish_with_pika(broker.url, "q")
        assert broker.queues(vhost="app/one") == {"q": 1}
        assert broker.queues() == {}


def test_the_embedded_store_keeps_persistent_messages_in_its_data_dir(tmp_path: Path) -> None:
    data_dir = str(tmp_path / "broker")
    with BrokerThread(store="embedded", data_dir=data_dir) as broker:
        publish_with_pika(broker.url, "durable-q", 2, durable=True)
    assert os.listdir(data_dir)
    with BrokerThread(store="embedded", data_dir=data_dir) as broker:
        assert broker.queue_info("durable-q").durable
        assert broker.queue_depth("durable-q") == 2


def test_the_embedded_store_without_a_data_dir_uses_a_temporary_one() -> None:
    with BrokerThread(store="embedded") as broker:
        data_dir = broker.data_dir
        assert data_dir is not None and os.path.isdir(data_dir)
        assert broker.config.store == ""  # amqpd's embedded store in config.data_dir
        assert broker.config.data_dir == data_dir
    assert not os.path.exists(data_dir)


def test_log_level_is_set_for_the_broker_and_restored_after() -> None:
    logger = logging.getLogger("amqpd")
    before = logger.level
    with BrokerThread(log_level="debug"):
        assert logger.level == logging.DEBUG
    assert logger.level == before


def test_a_broker_that_cannot_listen_says_so_and_leaves_nothing_behind() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        logger = logging.getLogger("amqpd")
        before = logger.level
        with pytest.raises(RuntimeError, match="amqpd failed to start"):
            BrokerThread(port=port, log_level="critical").start()
        assert logger.level == before


def test_settings_other_than_the_named_ones_are_config_fields() -> None:
    config = broker_config(heartbeat=5, max_connections=3)
    assert (config.heartbeat, config.max_connections, config.store) == (5, 3, "memory://")
    assert config.shutdown_timeout == 1.0  # a test broker does not make teardown wait for silent clients
    with pytest.raises(TypeError):
        broker_config(no_such_setting=1)
    with pytest.raises(ValueError, match="store must be one of memory, embedded"):
        broker_config(store="disk")
    with pytest.raises(ValueError, match="needs a data_dir"):
        broker_config(store="embedded")
