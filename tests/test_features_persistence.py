"""Queue features across a restart of amqpd on its embedded store: dead-lettered persistent messages are stored,
expired ones are removed from the store, and message TTL counts from the publish time."""

from __future__ import annotations

import time
from pathlib import Path

import pika
import pytest

from amqpd.broker.server.config import Config
from tests.conftest import external_url
from tests.support.amqp import uniq
from tests.support.server_thread import ServerThread
from tests.support.waiting import wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(external_url() is not None, reason="restarts an in-process amqpd on its own data directory"),
]


def start(data_dir: Path, loop_kind: str) -> ServerThread:
    return ServerThread(Config(host="127.0.0.1", port=0, data_dir=str(data_dir), heartbeat=60), loop_kind).start()


PERSISTENT = pika.BasicProperties(delivery_mode=2)


def test_a_dead_lettered_persistent_message_survives_a_restart(tmp_path: Path, loop_kind: str) -> None:
    src, dst = uniq("src"), uniq("dst")
    server = start(tmp_path, loop_kind)
    try:
        conn = pika.BlockingConnection(pika.URLParameters(server.url))
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare(dst, durable=True)
        ch.queue_declare(
            src, durable=True, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dst}
        )
        ch.basic_publish("", src, b"dead", PERSISTENT)
        method, _props, _body = ch.basic_get(src)
        assert method is not None
        ch.basic_reject(method.delivery_tag, requeue=False)
        # a round trip after the reject: the dead-letter is enqueued by then (and committed with the next batch)
        ch.basic_publish("", dst, b"marker", PERSISTENT)
        conn.close()
    finally:
        server.stop()
    server = start(tmp_path, loop_kind)
    try:
        conn = pika.BlockingConnection(pika.URLParameters(server.url))
        ch = conn.channel()
        assert ch.queue_declare(src, durable=True, passive=True).method.message_count == 0
        method, props, body = ch.basic_get(dst, auto_ack=True)
        assert body == b"dead"
        assert props.headers["x-death"][0]["reason"] == "rejected"
        assert props.headers["x-death"][0]["queue"] == src
        assert ch.basic_get(dst, auto_ack=True)[2] == b"marker"
        ch.queue_delete(src)
        ch.queue_delete(dst)
        conn.close()
    finally:
        server.stop()


def test_ttl_counts_from_publish_time_across_a_restart(tmp_path: Path, loop_kind: str) -> None:
    short, long_ = uniq("short"), uniq("long")
    ttl_ms = 300
    server = start(tmp_path, loop_kind)
    try:
        conn = pika.BlockingConnection(pika.URLParameters(server.url))
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare(short, durable=True, arguments={"x-message-ttl": ttl_ms})
        ch.queue_declare(long_, durable=True, arguments={"x-message-ttl": 600_000})
        ch.basic_publish("", short, b"soon gone", PERSISTENT)
        published = time.monotonic()
        ch.basic_publish("", long_, b"kept", PERSISTENT)
        conn.close()
    finally:
        server.stop()
    # The TTL runs out while the broker is down. Counted from the publish, the message is already expired when
    # the broker comes back; counted from the restart, the first basic.get below would still return it.
    wait_until(lambda: time.monotonic() - published > 1.5 * ttl_ms / 1000)
    server = start(tmp_path, loop_kind)
    try:
        conn = pika.BlockingConnection(pika.URLParameters(server.url))
        ch = conn.channel()
        method, _props, _body = ch.basic_get(short, auto_ack=True)
        assert method is None
        assert ch.basic_get(long_, auto_ack=True)[2] == b"kept"
        ch.queue_delete(short)
        ch.queue_delete(long_)
        conn.close()
    finally:
        server.stop()
