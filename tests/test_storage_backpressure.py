"""When the store falls behind, publishers of persistent messages stop being read until it catches up, and the
log says so once per episode; nothing published meanwhile is lost."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any

import pytest
from pamqp import commands

from amqpd.broker.server.config import Config
from tests.support.raw_client import RawClient
from tests.support.server_thread import ServerThread
from tests.support.waiting import wait_until


@pytest.fixture
def slow_store_broker(tmp_path: Path, loop_kind: str) -> Any:
    thread = ServerThread(Config(host="127.0.0.1", port=0, data_dir=str(tmp_path)), loop_kind).start()
    gate = asyncio.Event()
    committer = thread.server.committer
    assert committer is not None
    store = thread.server.store
    assert store is not None
    real_commit = store.commit

    async def held_commit(batch: Any) -> None:
        await gate.wait()  # the disk "stalls" until the test lets it go
        await real_commit(batch)

    def install() -> None:
        committer.high_water_bytes = 20_000
        committer.low_water_bytes = 10_000
        store.commit = held_commit  # type: ignore[method-assign]

    thread.call(install)
    try:
        yield thread, gate
    finally:
        thread.call(gate.set)
        thread.stop()


def test_a_stalled_store_pauses_persistent_publishers_until_it_catches_up(
    slow_store_broker: Any, caplog: pytest.LogCaptureFixture, loop_kind: str
) -> None:
    thread, gate = slow_store_broker
    caplog.set_level(logging.INFO, logger="amqpd")
    queue = "bp-q"
    count = 300  # 300 KB: far over the 20 KB high-water mark
    with RawClient.open(thread.url, timeout=30) as client:
        client.open_channel(1)
        client.send_method(1, commands.Queue.Declare(queue=queue, durable=True))
        done = threading.Event()

        def publish() -> None:
            props = commands.Basic.Properties(delivery_mode=2)
            for _ in range(count):  # blocks in sendall while the broker is not reading: that is the point
                client.publish(1, b"x" * 1000, routing_key=queue, properties=props)
            done.set()

        publisher = threading.Thread(target=publish, daemon=True)
        publisher.start()

        def paused() -> bool:
            return bool(thread.call(lambda: any(c.reading_paused for c in thread.server.connections)))

        wait_until(paused, timeout=10)
        assert thread.call(lambda: thread.server.committer.paused)
        assert sum("falling behind" in r.getMessage() for r in caplog.records) == 1

        def stored() -> int:
            return int(thread.call(lambda: thread.server.vhosts["/"].queues[queue].message_count))

        # The rest sits unread in the socket buffers (or in the publisher's sendall) while the store is stalled.
        assert stored() < count
        thread.call(gate.set)
        assert done.wait(20), "the publisher was never resumed"
        publisher.join(5)

        wait_until(lambda: stored() == count, timeout=10)
        wait_until(lambda: not paused(), timeout=10)
        # Each episode (there may be several while the backlog drains and refills) logs once at each end.
        messages = [r.getMessage() for r in caplog.records]
        episodes = sum("falling behind" in m for m in messages)
        assert episodes >= 1
        assert sum("caught up" in m for m in messages) == episodes
