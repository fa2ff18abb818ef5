"""The load generator: publishers and consumers over the raw client (or aio-pika), PerfTest-style.

One run: declare the topology, start consumers, then publishers; publish until ``duration`` or the message
limit; let consumers drain for a bounded grace period; delete what was declared. Rates are measured over the
window ``[warmup, end of publishing]`` so connection set-up and the ramp do not dilute them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from amqpd.benchmarks.procstats import CpuMeter, rss_bytes
from amqpd.benchmarks.rawclient import Channel, RawConnection, encode_publish, split_publish
from amqpd.benchmarks.series import Sampler

EXCHANGE_TYPES = ("direct", "fanout", "topic", "default")
ACK_MODES = ("auto", "manual", "multiple")
_TS = struct.Struct(">Q")
LATENCY_SAMPLE_CAP = 2_000_000


@dataclass(slots=True)
class PerfConfig:
    url: str
    publishers: int = 1
    consumers: int = 1
    queues: int = 1
    size: int = 16
    persistent: bool = False
    confirm: int = 0  # publisher-confirm window; 0 = no confirms
    prefetch: int = 0  # 0 = unlimited
    ack: str = "auto"  # auto (no-ack) | manual (one ack per message) | multiple
    ack_every: int = (
        0  # multiple: ack at least every N deliveries (0 = prefetch // 2), and at the end of each read
    )
    exchange_type: str = "direct"
    rate: float = 0.0  # per publisher, msg/s; 0 = as fast as possible
    duration: float = 10.0
    pmessages: int = 0  # per publisher; 0 = no limit (duration bounds the run)
    cmessages: int = (
        0  # with no publishers: stop once consumers got this many (duration still bounds the run)
    )
    warmup: float = 1.0
    drain: float = 5.0  # after publishing stops, how long consumers may catch up
    latency: bool = False  # stamp every message and measure publish-to-deliver latency
    client: str = "raw"  # raw | aio-pika
    durable: bool | None = None  # queue durability; None = same as persistent
    queue_arguments: dict[str, Any] | None = None  # x-arguments for every queue declared (e.g. x-max-length)
    progress: bool = True
    label: str = ""
    broker_pid: int | None = None
    series_origin: float | None = None  # loop time the series' ``t`` counts from; None = the start of publishing

    def check(self) -> None:
        if self.exchange_type not in EXCHANGE_TYPES:
            raise ValueError(f"exchange type must be one of {EXCHANGE_TYPES}")
        if self.ack not in ACK_MODES:
            raise ValueError(f"ack mode must be one of {ACK_MODES}")
        if self.client not in ("raw", "aio-pika"):
            raise ValueError("client must be raw or aio-pika")
        if self.queues < 1 or self.publishers < 0 or self.consumers < 0:
            raise ValueError("need at least one queue and non-negative publishers/consumers")
        if self.latency and self.size < 8:
            raise ValueError("--latency needs messages of at least 8 bytes (the timestamp)")


@dataclass(slots=True)
class Stats:
    published: int = 0
    confirmed: int = 0
    nacked: int = 0
    consumed: int = 0
    latencies_ns: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def record_latency(self, sent_ns: int) -> None:
        lat = self.latencies_ns
        if len(lat) < LATENCY_SAMPLE_CAP:
            lat.append(time.monotonic_ns() - sent_ns)


class ConfirmTracker:
    """Counts confirmed publishes from acks that may be single or ``multiple`` (all tags up to N)."""

    __slots__ = ("low", "on_change", "singles", "stats")

    def __init__(self, stats: Stats, on_change: Callable[[], None]) -> None:
        self.stats = stats
        self.low = 0  # every tag <= low is settled
        self.singles: set[int] = set()
        self.on_change = on_change

    def settle(self, tag: int, multiple: bool, nack: bool = False) -> int:
        if tag <= self.low:
            return 0
        if multiple:
            n = tag - self.low - sum(1 for t in self.singles if t <= tag)
            if self.singles:
                self.singles = {t for t in self.singles if t > tag}
            self.low = tag
        else:
            n = 1
            self.singles.add(tag)
        while self.low + 1 in self.singles:
            self.low += 1
            self.singles.discard(self.low)
        if nack:
            self.stats.nacked += n
        else:
            self.stats.confirmed += n
        self.on_change()
        return n

    def ack(self, tag: int, multiple: bool) -> None:
        self.settle(tag, multiple)

    def nack(self, tag: int, multiple: bool) -> None:
        self.settle(tag, multiple, nack=True)


def percentile(sorted_values: list[int], p: float) -> float:
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return float(sorted_values[k])


def latency_summary(latencies_ns: list[int]) -> dict[str, float]:
    s = sorted(latencies_ns)
    return {
        "latency_p50_ms": percentile(s, 50) / 1e6,
        "latency_p95_ms": percentile(s, 95) / 1e6,
        "latency_p99_ms": percentile(s, 99) / 1e6,
        "latency_p999_ms": percentile(s, 99.9) / 1e6,
        "latency_max_ms": (s[-1] / 1e6) if s else 0.0,
        "latency_samples": float(len(s)),
    }


# ---------------------------------------------------------------------------------------------- topology
@dataclass(slots=True)
class Topology:
    exchange: str
    queues: list[str]
    routing_keys: list[str]  # what publisher i uses: routing_keys[i % len]


def topology_names(cfg: PerfConfig, run_id: str) -> Topology:
    prefix = f"amqpd-bench-{run_id}"
    queues = [f"{prefix}-q{i}" for i in range(cfg.queues)]
    if cfg.exchange_type == "default":
        return Topology("", queues, queues)
    exchange = f"{prefix}-{cfg.exchange_type}"
    if cfg.exchange_type == "fanout":
        return Topology(exchange, queues, [""])
    if cfg.exchange_type == "topic":
        return Topology(exchange, queues, [f"bench.q{i}.x" for i in range(cfg.queues)])
    return Topology(exchange, queues, queues)


async def declare(ch: Channel, cfg: PerfConfig, topo: Topology) -> None:
    durable = cfg.persistent if cfg.durable is None else cfg.durable
    if topo.exchange:
        await ch.exchange_declare(topo.exchange, cfg.exchange_type, durable=durable)
    for i, q in enumerate(topo.queues):
        await ch.queue_declare(q, durable=durable, arguments=cfg.queue_arguments)
        if cfg.exchange_type == "direct":
            await ch.queue_bind(q, topo.exchange, q)
        elif cfg.exchange_type == "fanout":
            await ch.queue_bind(q, topo.exchange, "")
        elif cfg.exchange_type == "topic":
            await ch.queue_bind(q, topo.exchange, f"bench.q{i}.#")


async def undeclare(url: str, topo: Topology) -> None:
    """Delete what a run declared; tolerant of a broker that already dropped it."""
    try:
        conn = await RawConnection.connect(url, name="amqpd-bench-cleanup")
    except (OSError, TimeoutError, ConnectionError):
        return
    try:
        for q in topo.queues:
            with contextlib.suppress(Exception):
                ch = await conn.channel()
                await asyncio.wait_for(ch.queue_delete(q), 30)
                await ch.close()
        if topo.exchange:
            with contextlib.suppress(Exception):
                ch = await conn.channel()
                await asyncio.wait_for(ch.exchange_delete(topo.exchange), 10)
    finally:
        await conn.close()


# ---------------------------------------------------------------------------------------------- raw workers
class RawPublisher:
    def __init__(self, cfg: PerfConfig, stats: Stats, exchange: str, routing_key: str) -> None:
        self.cfg = cfg
        self.stats = stats
        self.exchange = exchange
        self.routing_key = routing_key
        self.conn: RawConnection | None = None
        self.sent = 0
        self._window_open = asyncio.Event()
        self._window_open.set()
        self.tracker = ConfirmTracker(stats, self._on_confirm)

    def _on_confirm(self) -> None:
        if self.sent - self.tracker.low - len(self.tracker.singles) < self.cfg.confirm:
            self._window_open.set()

    def outstanding(self) -> int:
        return self.sent - self.tracker.low - len(self.tracker.singles)

    async def setup(self) -> None:
        self.conn = await RawConnection.connect(self.cfg.url, name="amqpd-bench-publisher")
        ch = await self.conn.channel(1)
        if self.cfg.confirm:
            ch.on_confirm = self.tracker.ack
            ch.on_nack = self.tracker.nack
            await ch.confirm_select()

    async def run(self, stop_at: float) -> None:
        cfg, stats, conn = self.cfg, self.stats, self.conn
        assert conn is not None
        body = bytes(cfg.size)
        wire = encode_publish(
            1, self.exchange, self.routing_key, body, persistent=cfg.persistent, frame_max=conn.frame_max
        )
        prefix, end = split_publish(wire) if cfg.latency else (b"", b"")
        rest = body[8:]
        batch_max = max(1, min(200, 64 * 1024 // len(wire)))
        if cfg.confirm:
            batch_max = max(1, min(batch_max, cfg.confirm // 4 or 1))
        batches = {n: wire * n for n in (batch_max,)}
        limit = cfg.pmessages or (1 << 62)
        rate = cfg.rate
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        monotonic_ns = time.monotonic_ns
        while self.sent < limit:
            now = loop.time()
            if now >= stop_at:
                break
            n = min(batch_max, limit - self.sent)
            if rate:
                due = int(rate * (now - t0)) + 1 - self.sent
                if due <= 0:
                    await asyncio.sleep(min(stop_at - now, (self.sent + 1) / rate - (now - t0)))
                    continue
                n = min(n, due)
            if cfg.confirm:
                room = cfg.confirm - self.outstanding()
                if room <= 0:
                    self._window_open.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._window_open.wait(), max(0.001, stop_at - now))
                    continue
                n = min(n, room)
            if cfg.latency:
                stamp = prefix + _TS.pack(monotonic_ns()) + rest + end
                data = stamp * n
            else:
                data = batches.get(n) or wire * n
            conn.write(data)
            self.sent += n
            stats.published += n
            await conn.drain()
            if not rate:
                await asyncio.sleep(0)  # let the consumers' reads run between batches

    async def wait_confirms(self, timeout: float) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while self.cfg.confirm and self.outstanding() > 0 and asyncio.get_running_loop().time() < deadline:
            self._window_open.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._window_open.wait(), 0.05)

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()


class RawConsumer:
    def __init__(self, cfg: PerfConfig, stats: Stats, queue: str) -> None:
        self.cfg = cfg
        self.stats = stats
        self.queue = queue
        self.conn: RawConnection | None = None

    async def setup(self) -> None:
        cfg, stats = self.cfg, self.stats
        self.conn = await RawConnection.connect(cfg.url, name="amqpd-bench-consumer")
        ch = await self.conn.channel(1)
        if cfg.prefetch:
            await ch.qos(cfg.prefetch)
        ch.ack_mode = {"auto": "auto", "manual": "single", "multiple": "multiple"}[cfg.ack]
        ch.ack_every = cfg.ack_every or max(1, cfg.prefetch // 2 if cfg.prefetch else 1000)

        def on_deliver(_tag: int) -> None:
            stats.consumed += 1

        ch.on_deliver = on_deliver
        if cfg.latency:

            def on_body(payload: bytes) -> None:
                stats.record_latency(_TS.unpack_from(payload)[0])

            ch.on_body = on_body
        await ch.consume(self.queue, no_ack=cfg.ack == "auto")

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()


# ------------------------------------------------------------------------------------------ aio-pika workers
class PikaPublisher:
    """Publishes the way an aio-pika user typically does: one awaited ``exchange.publish`` per message."""

    def __init__(self, cfg: PerfConfig, stats: Stats, exchange: str, routing_key: str) -> None:
        self.cfg = cfg
        self.stats = stats
        self.exchange_name = exchange
        self.routing_key = routing_key
        self.conn: Any = None
        self.exchange: Any = None

    async def setup(self) -> None:
        import aio_pika

        self.conn = await aio_pika.connect(self.cfg.url)
        ch = await self.conn.channel(publisher_confirms=bool(self.cfg.confirm))
        self.exchange = (
            ch.default_exchange
            if not self.exchange_name
            else await ch.get_exchange(self.exchange_name, ensure=False)
        )

    async def run(self, stop_at: float) -> None:
        import aio_pika

        cfg, stats = self.cfg, self.stats
        mode = aio_pika.DeliveryMode.PERSISTENT if cfg.persistent else aio_pika.DeliveryMode.NOT_PERSISTENT
        body = bytes(cfg.size)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        limit = cfg.pmessages or (1 << 62)
        sent = 0
        while sent < limit and loop.time() < stop_at:
            if cfg.rate:
                ahead = (sent + 1) / cfg.rate - (loop.time() - t0)
                if ahead > 0:
                    await asyncio.sleep(ahead)
                    continue
            if cfg.latency:
                body = _TS.pack(time.monotonic_ns()) + body[8:]
            await self.exchange.publish(
                aio_pika.Message(body, delivery_mode=mode), routing_key=self.routing_key
            )
            sent += 1
            stats.published += 1
            if cfg.confirm:
                stats.confirmed += 1

    async def wait_confirms(self, timeout: float) -> None:
        return None

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()


class PikaConsumer:
    def __init__(self, cfg: PerfConfig, stats: Stats, queue: str) -> None:
        self.cfg = cfg
        self.stats = stats
        self.queue = queue
        self.conn: Any = None

    async def setup(self) -> None:
        import aio_pika

        cfg, stats = self.cfg, self.stats
        self.conn = await aio_pika.connect(cfg.url)
        ch = await self.conn.channel()
        if cfg.prefetch:
            await ch.set_qos(prefetch_count=cfg.prefetch)
        queue = await ch.get_queue(self.queue, ensure=False)
        every = cfg.ack_every or max(1, cfg.prefetch // 2 if cfg.prefetch else 1000)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            stats.consumed += 1
            if cfg.latency:
                stats.record_latency(_TS.unpack_from(message.body)[0])
            if cfg.ack == "manual":
                await message.ack()
            elif cfg.ack == "multiple" and stats.consumed % every == 0:
                await message.ack(multiple=True)

        await queue.consume(on_message, no_ack=cfg.ack == "auto")

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()


# ---------------------------------------------------------------------------------------------- the run
def progress_line(label: str, t: float, d_pub: int, d_conf: int, d_cons: int, dt: float, stats: Stats) -> str:
    parts = [f"{label + ' ' if label else ''}t={t:5.1f}s", f"sent {d_pub / dt:9.0f} msg/s"]
    if stats.confirmed or stats.nacked:
        parts.append(f"confirmed {d_conf / dt:9.0f} msg/s")
    parts.append(f"received {d_cons / dt:9.0f} msg/s")
    if stats.latencies_ns:
        recent = sorted(stats.latencies_ns[-5000:])
        parts.append(
            f"latency p50 {percentile(recent, 50) / 1e6:.2f} ms p99 {percentile(recent, 99) / 1e6:.2f} ms"
        )
    return "  ".join(parts)


async def _progress(cfg: PerfConfig, stats: Stats, t_start: float) -> None:
    loop = asyncio.get_running_loop()
    last = (loop.time(), stats.published, stats.confirmed, stats.consumed)
    while True:
        await asyncio.sleep(1.0)
        now = loop.time()
        dt = now - last[0]
        line = progress_line(
            cfg.label,
            now - t_start,
            stats.published - last[1],
            stats.confirmed - last[2],
            stats.consumed - last[3],
            dt,
            stats,
        )
        print(line, file=sys.stderr, flush=True)
        last = (now, stats.published, stats.confirmed, stats.consumed)


def series_counter(cfg: PerfConfig, stats: Stats) -> tuple[str, Callable[[], int]]:
    """What the ``rate`` of a run's time series counts: deliveries when it has consumers, else confirms when it
    uses them, else publishes."""
    if cfg.consumers:
        return "deliveries", lambda: stats.consumed
    if cfg.confirm:
        return "confirms", lambda: stats.confirmed
    return "publishes", lambda: stats.published


def new_topology(cfg: PerfConfig) -> Topology:
    return topology_names(cfg, uuid.uuid4().hex[:8])


async def run_perf(cfg: PerfConfig, topo: Topology | None = None, keep: bool = False) -> dict[str, Any]:
    """Run one load-generator configuration; returns flat, JSON-ready metrics.

    ``topo`` reuses names from an earlier run (declares are idempotent); ``keep`` leaves queues and exchange
    in place for a following run (the backlog scenario fills in one run and drains in the next).
    """
    cfg.check()
    loop = asyncio.get_running_loop()
    stats = Stats()
    topo = topo or new_topology(cfg)
    admin = await RawConnection.connect(cfg.url, name="amqpd-bench-admin")
    pub_cls: Callable[..., RawPublisher | PikaPublisher] = (
        RawPublisher if cfg.client == "raw" else PikaPublisher
    )
    con_cls: Callable[..., RawConsumer | PikaConsumer] = RawConsumer if cfg.client == "raw" else PikaConsumer
    publishers = [
        pub_cls(cfg, stats, topo.exchange, topo.routing_keys[i % len(topo.routing_keys)])
        for i in range(cfg.publishers)
    ]
    consumers = [con_cls(cfg, stats, topo.queues[i % cfg.queues]) for i in range(cfg.consumers)]
    progress: asyncio.Task[None] | None = None
    sampler: Sampler | None = None
    result: dict[str, Any] = {}
    try:
        ch = await admin.channel(1)
        await declare(ch, cfg, topo)
        await _gather_bounded([c.setup for c in consumers])
        await _gather_bounded([p.setup for p in publishers])
        broker_cpu = CpuMeter(cfg.broker_pid) if cfg.broker_pid else None
        client_cpu = CpuMeter(os.getpid())
        rss_start = rss_bytes(cfg.broker_pid) if cfg.broker_pid else 0
        t_start = loop.time()
        stop_at = t_start + cfg.duration
        series_rate, count = series_counter(cfg, stats)
        origin = t_start if cfg.series_origin is None else cfg.series_origin
        sampler = Sampler(count, cfg.broker_pid, origin=origin)
        sampler.start()
        if cfg.progress:
            progress = asyncio.create_task(_progress(cfg, stats, t_start))
        tasks = [asyncio.create_task(p.run(stop_at)) for p in publishers]

        # the measurement window: [warmup, end of publishing]
        warm = min(cfg.warmup, cfg.duration / 4)
        await _wait_any(tasks, t_start + warm)
        w0 = (loop.time(), stats.published, stats.confirmed, stats.consumed, len(stats.latencies_ns))
        if broker_cpu:
            broker_cpu.start(w0[0])
        client_cpu.start(w0[0])
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=cfg.duration + 30)
            for t in pending:
                t.cancel()
            for t in done:
                if t.exception() is not None:
                    stats.errors.append(repr(t.exception()))
        else:
            while loop.time() < stop_at and not (cfg.cmessages and stats.consumed >= cfg.cmessages):
                await asyncio.sleep(0.02)
        w1 = (loop.time(), stats.published, stats.confirmed, stats.consumed, len(stats.latencies_ns))
        cpu_b = broker_cpu.stop(w1[0]) if broker_cpu else None
        cpu_c = client_cpu.stop(w1[0])
        rss_end = rss_bytes(cfg.broker_pid) if cfg.broker_pid else 0

        # bounded catch-up: confirms, then consumers
        await _gather_bounded([partial(p.wait_confirms, cfg.drain) for p in publishers])
        fanout = cfg.queues if cfg.exchange_type == "fanout" else 1
        per_queue_consumers = min(cfg.consumers, cfg.queues)
        expected = stats.published * fanout * per_queue_consumers // cfg.queues if cfg.consumers else 0
        deadline = loop.time() + cfg.drain
        while cfg.consumers and stats.consumed < expected and loop.time() < deadline:
            await asyncio.sleep(0.05)
        series = await sampler.stop()

        window = w1[0] - w0[0]
        result = {
            "label": cfg.label,
            "client": cfg.client,
            "window_s": round(window, 3),
            "published": stats.published,
            "confirmed": stats.confirmed,
            "nacked": stats.nacked,
            "consumed": stats.consumed,
            "publish_rate": (w1[1] - w0[1]) / window if window > 0 else 0.0,
            "confirm_rate": (w1[2] - w0[2]) / window if window > 0 and cfg.confirm else 0.0,
            "consume_rate": (w1[3] - w0[3]) / window if window > 0 else 0.0,
            "broker_cpu": cpu_b,
            "client_cpu": cpu_c,
            "broker_cpu_wait": broker_cpu.waited if broker_cpu else None,
            "client_cpu_wait": client_cpu.waited,
            "broker_rss_start": rss_start,
            "broker_rss_end": rss_end,
            "errors": stats.errors,
            "series_rate": series_rate,
            "series_windows": [[round(w0[0] - origin, 3), round(w1[0] - origin, 3)]],
            "series": series,
        }
        if cfg.latency:
            result.update(latency_summary(stats.latencies_ns[w0[4] :] or stats.latencies_ns))
    finally:
        if progress is not None:
            progress.cancel()
        if sampler is not None:
            await sampler.stop()
        await _gather_bounded([c.close for c in consumers] + [p.close for p in publishers], timeout=10)
        await admin.close()
        if not keep:
            await undeclare(cfg.url, topo)
    return result


async def _wait_any(tasks: list[asyncio.Task[None]], until: float) -> None:
    """Sleep until ``until`` unless every task finished earlier."""
    timeout = max(0.0, until - asyncio.get_running_loop().time())
    if tasks:
        await asyncio.wait(tasks, timeout=timeout)
    else:
        await asyncio.sleep(timeout)


async def _gather_bounded(
    factories: Sequence[Callable[[], Awaitable[None]]], timeout: float = 60.0, concurrency: int = 50
) -> None:
    """Run coroutine factories with bounded concurrency; re-raise the first failure."""
    sem = asyncio.Semaphore(concurrency)

    async def one(f: Callable[[], Awaitable[None]]) -> None:
        async with sem:
            await f()

    await asyncio.wait_for(asyncio.gather(*(one(f) for f in factories)), timeout)
