"""Heartbeats: idle clients that answer them stay connected; a client that falls silent is dropped.

All with heartbeat=1 so each test lasts a few seconds. The clients idle at the same time where they can, so
the three-interval wait is paid once per loop rather than once per client.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aio_pika
import pika
import pytest
from pamqp import heartbeat

from tests.support.raw_client import RawClient
from tests.support.server_thread import ServerThread
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

HEARTBEAT = 1
IDLE = 3.5 * HEARTBEAT  # three intervals and a half: past the point where a silent peer would be dropped
DROP_DEADLINE = 6.0  # generous: amqpd drops after two silent intervals, RabbitMQ after about as long


def with_heartbeat(url: str, seconds: int) -> str:
    return f"{url}{'&' if '?' in url else '?'}heartbeat={seconds}"


def pika_idles_then_works(url: str) -> bool:
    """Connect with heartbeat=1, stay idle (pika's I/O loop keeps answering heartbeats), then use it."""
    connection = pika.BlockingConnection(pika.URLParameters(with_heartbeat(url, HEARTBEAT)))
    try:
        connection.sleep(IDLE)  # idles while serving I/O: this is what the test is about
        channel = connection.channel()
        channel.close()
        return connection.is_open
    finally:
        if connection.is_open:
            connection.close()


async def _heartbeats(thread: ServerThread) -> list[int]:
    return sorted(conn.proto.heartbeat for conn in thread.server.connections)


async def test_idle_clients_that_answer_heartbeats_stay_connected(
    amqp_url: str, amqpd_instance: ServerThread | None
) -> None:
    aio_connection = await aio_pika.connect_robust(with_heartbeat(amqp_url, HEARTBEAT))
    lost: list[Any] = []
    aio_connection.close_callbacks.add(lambda *args: lost.append(args))
    aio_connection.reconnect_callbacks.add(lambda *args: lost.append(args))
    try:
        pika_thread = asyncio.create_task(asyncio.to_thread(pika_idles_then_works, amqp_url))
        if amqpd_instance is not None:
            # Both clients negotiated our 1 s: the server side really is on the short interval.
            async def both_on_one_second() -> bool:
                return await amqpd_instance.arun(_heartbeats(amqpd_instance)) == [HEARTBEAT, HEARTBEAT]

            await wait_for(both_on_one_second)
        await asyncio.sleep(IDLE)  # the idle period itself is the test
        channel = await aio_connection.channel()
        await channel.close()
        assert await pika_thread
        assert lost == [], "the aio-pika connection was dropped (and reconnected) while idle"
    finally:
        await aio_connection.close()


def test_a_silent_client_gets_heartbeats_and_is_then_dropped(amqp_url: str, loop_kind: str) -> None:
    with RawClient.open(amqp_url, heartbeat=HEARTBEAT) as client:
        started = time.monotonic()
        heartbeats = 0
        # We negotiated heartbeat=1 and now never send a byte: the broker keeps talking until it hangs up.
        while (got := client.read_frame()) is not None:
            assert isinstance(got[1], heartbeat.Heartbeat), f"only heartbeats were expected, got {got!r}"
            assert got[0] == 0
            heartbeats += 1
        elapsed = time.monotonic() - started
    assert heartbeats >= 1, "an idle broker must send heartbeats"
    assert elapsed < DROP_DEADLINE, f"a silent client was dropped only after {elapsed:.1f} s"
