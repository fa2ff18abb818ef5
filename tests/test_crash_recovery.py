"""Kill -9 the broker mid-stream: every message it confirmed must come back, exactly once.

The broker runs as a subprocess on the embedded store (and on PostgreSQL when AMQPD_TEST_POSTGRES_URL is set); a
publisher sends persistent messages with publisher confirms and a window of outstanding confirms; at a random
moment the broker is SIGKILLed; after a restart the queue is drained and compared with the confirmed set.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aio_pika
import pytest

pytestmark = [pytest.mark.crash, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
LISTEN = re.compile(r"listening on [^ ]*?:(\d+)")
POSTGRES_TABLES = "amqpd_definitions, amqpd_messages, amqpd_enqueues, amqpd_meta, amqpd_settings"


@asynccontextmanager
async def broker(data_dir: Path, store: str = "") -> AsyncIterator[tuple[subprocess.Popen[bytes], str]]:
    args = [sys.executable, "-m", "amqpd", "--host", "127.0.0.1", "--port", "0", "--data-dir", str(data_dir)]
    if store:
        args += ["--store", store]
    proc = subprocess.Popen(args, cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert proc.stderr is not None
    port = None
    lines: list[str] = []
    loop = asyncio.get_running_loop()
    while port is None:
        raw = await asyncio.wait_for(loop.run_in_executor(None, proc.stderr.readline), 30)
        if not raw:
            raise AssertionError("broker exited before listening:\n" + "".join(lines))
        line = raw.decode(errors="replace")
        lines.append(line)
        m = LISTEN.search(line)
        if m:
            port = int(m.group(1))
    drain = loop.run_in_executor(None, proc.stderr.read)  # keep the pipe from filling up
    try:
        yield proc, f"amqp://guest:guest@127.0.0.1:{port}/"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        await drain
        proc.stderr.close()


async def publish_until_killed(url: str, proc: subprocess.Popen[bytes], start: int, kill_after: int) -> set[int]:
    """Publish ids start, start+1, ... with confirms (window 200); SIGKILL once kill_after are confirmed."""
    confirmed: set[int] = set()
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue("crash", durable=True)
        window = asyncio.Semaphore(200)
        pending: set[asyncio.Task[None]] = set()

        async def one(i: int) -> None:
            try:
                await channel.default_exchange.publish(
                    aio_pika.Message(str(i).encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key="crash",
                )
                confirmed.add(i)
            except Exception:
                pass  # the broker died before confirming: this one may or may not have survived
            finally:
                window.release()

        i = start
        while len(confirmed) < kill_after:
            await window.acquire()
            t = asyncio.create_task(one(i))
            pending.add(t)
            t.add_done_callback(pending.discard)
            i += 1
        os.kill(proc.pid, signal.SIGKILL)
        await asyncio.gather(*pending, return_exceptions=True)
    finally:
        with contextlib.suppress(Exception):  # the broker is dead: closing may fail any way it likes
            await asyncio.wait_for(connection.close(), 5)
    return confirmed


async def drain(url: str) -> list[int]:
    connection = await aio_pika.connect(url)
    ids: list[int] = []
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue("crash", durable=True)
        while True:
            msg = await queue.get(no_ack=True, fail=False)
            if msg is None:
                break
            ids.append(int(msg.body))
    finally:
        await connection.close()
    return ids


async def crash_rounds(data_dir: Path, store: str, rounds: int, seed: int) -> None:
    rng = random.Random(seed)
    next_id = 0
    async with broker(data_dir, store) as (_proc, url):
        await drain(url)  # a shared database may hold messages from an earlier run
    for _ in range(rounds):
        async with broker(data_dir, store) as (proc, url):
            confirmed = await publish_until_killed(url, proc, next_id, rng.randint(50, 1500))
        next_id += 100_000
        async with broker(data_dir, store) as (_proc, url):
            ids = await drain(url)
        dupes = {i for i in ids if ids.count(i) > 1} if len(ids) != len(set(ids)) else set()
        assert not dupes, f"duplicated after restart: {sorted(dupes)[:10]}"
        missing = confirmed - set(ids)
        assert not missing, f"{len(missing)} confirmed messages lost, e.g. {sorted(missing)[:10]}"
        assert ids == sorted(ids), "messages came back out of order"


async def test_every_confirmed_message_survives_sigkill_exactly_once_embedded(tmp_path: Path) -> None:
    await crash_rounds(tmp_path / "data", "", rounds=4, seed=random.randrange(1 << 30))


async def test_every_confirmed_message_survives_sigkill_exactly_once_postgres(tmp_path: Path) -> None:
    url = os.environ.get("AMQPD_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("AMQPD_TEST_POSTGRES_URL is not set (tests/start_postgres.sh starts a local server)")
    import asyncpg

    # Start from empty tables: other tests leave users and settings behind (e.g. no guest, or another password).
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {POSTGRES_TABLES} CASCADE")
    finally:
        await conn.close()
    await crash_rounds(tmp_path / "data", url, rounds=3, seed=random.randrange(1 << 30))
