"""Backpressure: a consumer that stops reading costs the broker at most its socket's high-water mark (plus one
message); everything else waits in the queue, so memory is bounded by queue length, not by how long it lasts."""

from __future__ import annotations

import socket
import uuid

import pytest
from pamqp import body, commands, header

from amqpd.broker.session.connection import WRITE_HIGH_WATER
from tests.support.server_thread import ServerThread
from tests.support.waiting import wait_until
from tests.test_messaging_consume import Client, consume, declare, read_delivery

pytestmark = pytest.mark.integration

MESSAGE = 4096
FRAME_OVERHEAD = 8
# Deliver method frame (generous) + content header frame + body frame: what one delivery adds to the buffer.
ONE_DELIVERY = 256 + 64 + MESSAGE + 3 * FRAME_OVERHEAD
BATCH = 64  # messages per publisher write: 256 KiB, about one socket read on the broker's side


def consumer_buffer(server: ServerThread, queue: str) -> tuple[int, int, bool]:
    """(bytes buffered for the consumer's connection, ready messages in the queue, consumer parked?)"""

    def probe() -> tuple[int, int, bool]:
        q = server.server.vhosts["/"].queues[queue]
        consumer = q.consumers[0]
        conn = consumer.channel.conn  # type: ignore[attr-defined]
        assert conn.transport is not None
        pending = sum(len(chunk) for chunk in conn.proto.out)
        return conn.transport.get_write_buffer_size() + pending, q.message_count, consumer.parked

    return server.call(probe)


def publish_batch(client: Client, queue: str, start: int) -> None:
    frames: list[object] = []
    for i in range(start, start + BATCH):
        payload = i.to_bytes(8, "big") * (MESSAGE // 8)
        frames += [
            commands.Basic.Publish(exchange="", routing_key=queue),
            header.ContentHeader(0, MESSAGE, commands.Basic.Properties()),
            body.ContentBody(payload),
        ]
    client.send_frames(1, *frames)  # type: ignore[arg-type]


def test_a_consumer_that_stops_reading_parks_and_the_queue_takes_the_rest(
    broker_server: ServerThread, loop_kind: str
) -> None:
    q = f"slow-{uuid.uuid4().hex[:12]}"
    with Client.open(broker_server.url) as consumer, Client.open(broker_server.url) as publisher:
        # Small kernel buffers so the broker's transport, not the kernel, is where the backlog shows.
        consumer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        consumer.open_channel(1)
        declare(consumer, 1, q, exclusive=True)
        consume(consumer, 1, q, "slow", no_ack=True)  # no prefetch limit: only backpressure can stop it
        publisher.open_channel(1)
        published = 0
        worst = 0
        # Publish until the queue itself holds messages: the broker has stopped delivering.
        while published < 40 * BATCH:
            publish_batch(publisher, q, published)
            published += BATCH
            buffered, ready, _parked = consumer_buffer(broker_server, q)
            worst = max(worst, buffered)
            if ready >= 2 * BATCH:
                break
        buffered, ready, parked = consumer_buffer(broker_server, q)
        assert ready >= 2 * BATCH, f"the broker never stopped delivering ({published} published)"
        assert parked
        assert worst <= WRITE_HIGH_WATER + ONE_DELIVERY, worst
        # More publishes go to the queue only: the consumer's buffer does not grow by a byte.
        for _ in range(4):
            publish_batch(publisher, q, published)
            published += BATCH
        wait_until(lambda: consumer_buffer(broker_server, q)[1] == ready + 4 * BATCH)
        assert consumer_buffer(broker_server, q)[0] == buffered
        # The consumer reads again: delivery resumes and every message arrives once, in order.
        for expected in range(published):
            delivery = read_delivery(consumer)
            assert delivery.body[:8] == expected.to_bytes(8, "big")
        assert consumer_buffer(broker_server, q)[1] == 0
        publisher.close_connection()
        consumer.close_connection()
