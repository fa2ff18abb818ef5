"""The named scenarios. Each is bounded in time and in messages, and returns flat metrics for one broker.

Every scenario names its headline metrics and which direction is better, so a comparison can print one ratio
per metric with a single convention: **ratio > 1 means amqpd is better** (amqpd/reference for rates,
reference/amqpd for latencies and memory).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from amqpd.benchmarks.perf import (
    PerfConfig,
    Stats,
    Topology,
    latency_summary,
    new_topology,
    run_perf,
    undeclare,
)
from amqpd.benchmarks.procstats import CpuMeter, open_files_limit, rss_bytes
from amqpd.benchmarks.rawclient import RawConnection, encode_publish, split_publish
from amqpd.benchmarks.series import Sampler
from amqpd.benchmarks.targets import Target

_TS = struct.Struct(">Q")


@dataclass(frozen=True, slots=True)
class Metric:
    key: str
    unit: str
    higher_is_better: bool


@dataclass(frozen=True, slots=True)
class Timing:
    duration: float
    warmup: float
    drain: float
    backlog: int
    idle_connections: int
    publish_cap: int  # bound on messages a publish-only run may leave in a queue

    @classmethod
    def for_mode(cls, quick: bool) -> Timing:
        if quick:
            return cls(
                duration=1.5, warmup=0.3, drain=1.0, backlog=20_000, idle_connections=100, publish_cap=200_000
            )
        return cls(
            duration=8.0,
            warmup=1.0,
            drain=3.0,
            backlog=1_000_000,
            idle_connections=1000,
            publish_cap=2_000_000,
        )


ScenarioFn = Callable[[Target, Timing, str, bool], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    headline: tuple[Metric, ...]
    fn: ScenarioFn
    # A variant of another scenario (same load, one broker-side difference): the report prints the two side by
    # side with the ratio variant/baseline per headline metric, for every broker that ran both.
    baseline: str | None = None


RATE = "msg/s"

# Far above anything a bounded run can queue (flow control holds a queue with consumers near 20,000 ready
# messages), so the limit never drops a message: declaring it only moves the queue onto amqpd's "featured" code
# path (and RabbitMQ's length-limit checks).
NEVER_REACHED_MAX_LENGTH = 10_000_000


def _base(target: Target, t: Timing, client: str, progress: bool, label: str) -> PerfConfig:
    return PerfConfig(
        url=target.url,
        duration=t.duration,
        warmup=t.warmup,
        drain=t.drain,
        client=client,
        progress=progress,
        label=f"{target.name}:{label}",
        broker_pid=target.pid,
    )


def perf_scenario(label: str, **overrides: Any) -> ScenarioFn:
    async def fn(target: Target, t: Timing, client: str, progress: bool) -> dict[str, Any]:
        cfg = replace(_base(target, t, client, progress, label), **overrides)
        if cfg.consumers == 0 and not cfg.pmessages:
            cfg.pmessages = t.publish_cap // (1 if cfg.size <= 64 else 2)
        return await run_perf(cfg)

    return fn


def counting_unconsumed(inner: ScenarioFn) -> ScenarioFn:
    """Add ``unconsumed``: published minus consumed after the drain period. 0 shows that a length limit meant
    never to be reached dropped nothing (a drain cut short by its time bound would show up here too)."""

    async def fn(target: Target, t: Timing, client: str, progress: bool) -> dict[str, Any]:
        res = await inner(target, t, client, progress)
        res["unconsumed"] = res["published"] - res["consumed"]
        return res

    return fn


# ---------------------------------------------------------------------------------------------- request/reply
async def run_rpc(
    url: str,
    *,
    rate: float,
    window: int,
    duration: float,
    warmup: float,
    size: int = 32,
    broker_pid: int | None = None,
    label: str = "",
    progress: bool = True,
) -> dict[str, Any]:
    """Round trips requester → queue → responder → reply queue → requester; latency from the stamped body.

    ``rate`` > 0: open loop at that many requests/s (at most ``window`` outstanding, so it stays bounded);
    ``rate`` == 0: closed loop with ``window`` requests in flight (the broker's saturation point).
    The responder replies to a fixed queue instead of parsing ``reply_to`` (which is still set on requests),
    and forwards the received body frame verbatim: it costs almost nothing, so the broker is what is measured.
    """
    loop = asyncio.get_running_loop()
    topo = new_topology(PerfConfig(url=url, queues=2, exchange_type="default"))
    req_q, reply_q = topo.queues
    stats = Stats()
    requester = await RawConnection.connect(url, name="amqpd-bench-requester")
    responder = await RawConnection.connect(url, name="amqpd-bench-responder")
    outstanding = 0
    room = asyncio.Event()
    sampler = Sampler(lambda: stats.consumed, broker_pid)
    try:
        rch = await requester.channel(1)
        await rch.queue_declare(req_q)
        await rch.queue_declare(reply_q)
        sch = await responder.channel(1)
        reply_prefix, reply_end = split_publish(encode_publish(1, "", reply_q, bytes(size)))

        def respond(payload: bytes) -> None:
            responder.write(reply_prefix + payload + reply_end)

        sch.on_body = respond
        await sch.consume(req_q, no_ack=True)

        def on_reply(payload: bytes) -> None:
            nonlocal outstanding
            stats.consumed += 1
            stats.record_latency(_TS.unpack_from(payload)[0])
            outstanding -= 1
            room.set()

        rch.on_body = on_reply
        await rch.consume(reply_q, no_ack=True)
        req_prefix, req_end = split_publish(encode_publish(1, "", req_q, bytes(size), reply_to=reply_q))
        rest = bytes(size - 8)

        t_start = loop.time()
        stop_at = t_start + duration
        sampler.origin = t_start
        sampler.start()
        w0: tuple[float, int, int] | None = None
        cpu_b = CpuMeter(broker_pid) if broker_pid else None
        cpu_c = CpuMeter(os.getpid())
        last_print = t_start
        last_count = 0
        while (now := loop.time()) < stop_at:
            if w0 is None and now - t_start >= warmup:
                w0 = (now, stats.consumed, len(stats.latencies_ns))
                if cpu_b:
                    cpu_b.start(now)
                cpu_c.start(now)
            if progress and now - last_print >= 1.0:
                recent = sorted(stats.latencies_ns[-2000:])
                p50 = recent[len(recent) // 2] / 1e6 if recent else 0.0
                p99 = recent[int(len(recent) * 0.99)] / 1e6 if recent else 0.0
                rps = (stats.consumed - last_count) / (now - last_print)
                print(
                    f"{label} t={now - t_start:5.1f}s  replies {rps:8.0f} msg/s  latency p50 {p50:.2f} ms"
                    f" p99 {p99:.2f} ms",
                    file=sys.stderr,
                    flush=True,
                )
                last_print, last_count = now, stats.consumed
            n = window - outstanding
            if rate:
                n = min(n, int(rate * (now - t_start)) + 1 - stats.published)
            if n <= 0:
                room.clear()
                wait = 0.001 if rate else max(0.0, stop_at - now)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(room.wait(), wait)
                continue
            requester.write((req_prefix + _TS.pack(time.monotonic_ns()) + rest + req_end) * n)
            outstanding += n
            stats.published += n
            await requester.drain()
            if not rate:
                room.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(room.wait(), max(0.0, stop_at - loop.time()))
        end = loop.time()
        w0 = w0 or (t_start, 0, 0)
        window_s = end - w0[0]
        series = await sampler.stop()
        result: dict[str, Any] = {
            "label": label,
            "window_s": round(window_s, 3),
            "requests": stats.published,
            "replies": stats.consumed,
            "reply_rate": (stats.consumed - w0[1]) / window_s if window_s > 0 else 0.0,
            "broker_cpu": cpu_b.stop(end) if cpu_b else None,
            "client_cpu": cpu_c.stop(end),
            "broker_cpu_wait": cpu_b.waited if cpu_b else None,
            "client_cpu_wait": cpu_c.waited,
            "broker_rss_end": rss_bytes(broker_pid) if broker_pid else 0,
            "series_rate": "replies",
            "series_windows": [[round(w0[0] - t_start, 3), round(end - t_start, 3)]],
            "series": series,
        }
        result.update(latency_summary(stats.latencies_ns[w0[2] :]))
        return result
    finally:
        await sampler.stop()
        await responder.close()
        await requester.close()
        await undeclare(url, topo)


def rpc_scenario(rate: float, window: int) -> ScenarioFn:
    async def fn(target: Target, t: Timing, client: str, progress: bool) -> dict[str, Any]:
        return await run_rpc(
            target.url,
            rate=rate,
            window=window,
            duration=t.duration,
            warmup=t.warmup,
            broker_pid=target.pid,
            label=f"{target.name}:rpc",
            progress=progress,
        )

    return fn


# ---------------------------------------------------------------------------------------------- memory
async def _settled_rss(pid: int | None, pause: float = 1.0) -> int:
    if not pid:
        return 0
    await asyncio.sleep(pause)
    return rss_bytes(pid)


async def idle_connections(target: Target, t: Timing, client: str, progress: bool) -> dict[str, Any]:
    """Open N idle connections (each with one open channel, as client libraries do), then run a small load."""
    n = t.idle_connections
    fd_limit = open_files_limit(target.pid) if target.pid else None
    if fd_limit is not None and n > fd_limit * 3 // 4:
        # A broker that runs out of file descriptors can fail in ways that outlive the test (RabbitMQ's
        # database did, once): stay well below its limit and report the cap.
        n = fd_limit * 3 // 4
    rss0 = await _settled_rss(target.pid, 0.5)
    conns: list[RawConnection] = []
    failures: list[str] = []
    sem = asyncio.Semaphore(20)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    # the series starts here, so the charts show the broker's memory growing while the connections open
    opening = Sampler(None, target.pid, origin=t0)
    opening.start()

    async def open_one() -> None:
        async with sem:
            if len(failures) >= 3:
                return  # the broker is at its connection limit; more attempts would only wait for timeouts
            try:
                c = await RawConnection.connect(target.url, name="amqpd-bench-idle", timeout=5)
                await asyncio.wait_for(c.channel(1), 5)
                conns.append(c)
            except Exception as e:  # a refused connection is a result, not a crash
                failures.append(repr(e))

    try:
        await asyncio.gather(*(open_one() for _ in range(n)))
        open_s = loop.time() - t0
        rss1 = await _settled_rss(target.pid, 1.0)
        opening_series = await opening.stop()
        if progress:
            print(
                f"{target.name}:idle opened {len(conns)}/{n} connections in {open_s:.1f} s", file=sys.stderr
            )
        opened = len(conns)
        if failures:
            # make room for the load's own connections
            for c in conns[-10:]:
                with contextlib.suppress(Exception):
                    await c.close()
            del conns[-10:]
        load = _base(target, t, client, progress, "idle+load")
        load = replace(load, rate=1000, latency=True, ack="multiple", prefetch=100, size=16, series_origin=t0)
        res = await run_perf(load)
    finally:
        await opening.stop()
        close_sem = asyncio.Semaphore(50)

        async def close_one(c: RawConnection) -> None:
            async with close_sem:
                with contextlib.suppress(Exception):
                    await c.close()

        await asyncio.gather(*(close_one(c) for c in conns))
    return {
        "connections_requested": t.idle_connections,
        "connections_attempted": n,
        "broker_fd_limit": fd_limit,
        "connections_opened": opened,
        "connection_failures": len(failures),
        "first_failure": failures[0] if failures else "",
        "open_seconds": round(open_s, 3),
        "open_rate": opened / open_s if open_s > 0 else 0.0,
        "broker_rss_before": rss0,
        "broker_rss_with_connections": rss1,
        "bytes_per_connection": (rss1 - rss0) / opened if opened and rss0 else 0.0,
        "load_consume_rate": res.get("consume_rate", 0.0),
        "latency_p50_ms": res.get("latency_p50_ms", 0.0),
        "latency_p99_ms": res.get("latency_p99_ms", 0.0),
        "broker_cpu": res.get("broker_cpu"),
        "client_cpu": res.get("client_cpu"),
        "latency_p95_ms": res.get("latency_p95_ms", 0.0),
        "latency_p999_ms": res.get("latency_p999_ms", 0.0),
        "latency_max_ms": res.get("latency_max_ms", 0.0),
        "series_rate": "deliveries (once the connections are open)",
        "series_windows": res.get("series_windows", []),
        "series": opening_series + res.get("series", []),
    }


async def _queue_depth(url: str, queue: str) -> int:
    conn = await RawConnection.connect(url, name="amqpd-bench-depth")
    try:
        ch = await conn.channel(1)
        ok = await ch.queue_declare(queue, passive=True)
        return int(ok.message_count or 0)
    finally:
        await conn.close()


async def backlog(target: Target, t: Timing, client: str, progress: bool) -> dict[str, Any]:
    """Fill one queue with N small messages (confirmed), measure RSS per queued message, then drain it."""
    n = t.backlog
    budget = 120.0 if n >= 100_000 else 20.0
    base = _base(target, t, client, progress, "backlog")
    fill = replace(
        base,
        publishers=1,
        consumers=0,
        size=16,
        confirm=5000,
        pmessages=n,
        duration=budget,
        warmup=0.0,
        label=f"{target.name}:backlog-fill",
    )
    topo: Topology = new_topology(fill)
    origin = asyncio.get_running_loop().time()
    fill = replace(fill, series_origin=origin)
    rss0 = 0
    try:
        conn = await RawConnection.connect(target.url, name="amqpd-bench-backlog")
        ch = await conn.channel(1)
        await ch.queue_declare(topo.queues[0])
        await conn.close()
        rss0 = await _settled_rss(target.pid, 0.5)
        f = await run_perf(fill, topo=topo, keep=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        depth = await _queue_depth(target.url, topo.queues[0])
        while depth < f["confirmed"] and loop.time() < deadline:
            await asyncio.sleep(0.2)
            depth = await _queue_depth(target.url, topo.queues[0])
        rss1 = await _settled_rss(target.pid, 1.0)
        drain = replace(
            base,
            publishers=0,
            consumers=1,
            ack="multiple",
            prefetch=1000,
            cmessages=depth,
            duration=budget,
            warmup=0.0,
            label=f"{target.name}:backlog-drain",
            series_origin=origin,
        )
        d = await run_perf(drain, topo=topo, keep=True)
        rss2 = await _settled_rss(target.pid, 1.0)
    finally:
        await undeclare(target.url, topo)
    fill_s = f["published"] / f["publish_rate"] if f["publish_rate"] else 0.0
    return {
        "messages": n,
        "queued": depth,
        "fill_rate": f["confirmed"] / fill_s if fill_s else 0.0,
        "drain_rate": d["consume_rate"],
        "drained": d["consumed"],
        "broker_rss_before": rss0,
        "broker_rss_full": rss1,
        "broker_rss_drained": rss2,
        "bytes_per_message": (rss1 - rss0) / depth if depth and rss0 else 0.0,
        "broker_cpu": d.get("broker_cpu"),
        "client_cpu": d.get("client_cpu"),
        "broker_rss_end": rss2,
        "series_rate": "confirms (fill), then deliveries (drain)",
        "series_windows": f["series_windows"] + d["series_windows"],
        "series": f["series"] + d["series"],
    }


# ---------------------------------------------------------------------------------------------- the catalogue
def _rate(key: str = "consume_rate") -> Metric:
    return Metric(key, RATE, True)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "publish-16b",
            "1 publisher, no consumer, 16 B messages into one queue",
            (_rate("publish_rate"),),
            perf_scenario("publish-16b", consumers=0, size=16),
        ),
        Scenario(
            "publish-1kib",
            "1 publisher, no consumer, 1 KiB messages into one queue",
            (_rate("publish_rate"),),
            perf_scenario("publish-1kib", consumers=0, size=1024),
        ),
        Scenario(
            "1p1c-noack",
            "1 publisher, 1 consumer, no-ack, 16 B",
            (_rate(),),
            perf_scenario("1p1c-noack", ack="auto"),
        ),
        Scenario(
            "1p1c-ack-p100",
            "1 publisher, 1 consumer, acks (multiple) at prefetch 100, 16 B",
            (_rate(),),
            perf_scenario("1p1c-ack-p100", ack="multiple", prefetch=100),
        ),
        Scenario(
            "1p1c-ack-p1000",
            "1 publisher, 1 consumer, acks (multiple) at prefetch 1000, 16 B",
            (_rate(),),
            perf_scenario("1p1c-ack-p1000", ack="multiple", prefetch=1000),
        ),
        Scenario(
            "1p1c-ack-p1000-maxlen",
            "as 1p1c-ack-p1000, queue declared with an x-max-length that is never reached (featured queue)",
            (_rate(),),
            counting_unconsumed(
                perf_scenario(
                    "1p1c-ack-p1000-maxlen",
                    ack="multiple",
                    prefetch=1000,
                    queue_arguments={"x-max-length": NEVER_REACHED_MAX_LENGTH},
                )
            ),
            baseline="1p1c-ack-p1000",
        ),
        Scenario(
            "fanout-10",
            "1 publisher to a fanout exchange, 10 queues, 1 consumer each (acks, prefetch 1000)",
            (_rate("publish_rate"), _rate()),
            perf_scenario(
                "fanout-10", exchange_type="fanout", queues=10, consumers=10, ack="multiple", prefetch=1000
            ),
        ),
        Scenario(
            "persistent-confirms",
            "persistent 16 B messages, confirms (window 1000), durable queue, 1 consumer",
            (_rate("confirm_rate"),),
            perf_scenario(
                "persistent-confirms", persistent=True, confirm=1000, ack="multiple", prefetch=1000
            ),
        ),
        Scenario(
            "rpc-1000",
            "request/reply at 1,000 requests/s (open loop)",
            (Metric("latency_p50_ms", "ms", False), Metric("latency_p99_ms", "ms", False)),
            rpc_scenario(rate=1000, window=1000),
        ),
        Scenario(
            "rpc-saturation",
            "request/reply, closed loop with 50 requests in flight",
            (
                _rate("reply_rate"),
                Metric("latency_p50_ms", "ms", False),
                Metric("latency_p99_ms", "ms", False),
            ),
            rpc_scenario(rate=0, window=50),
        ),
        Scenario(
            "idle-connections",
            "1,000 idle connections (1 channel each), then 1p1c at 1,000 msg/s",
            (Metric("bytes_per_connection", "B", False), Metric("latency_p99_ms", "ms", False)),
            idle_connections,
        ),
        Scenario(
            "backlog-1m",
            "fill one queue with 1,000,000 16 B messages, then drain it",
            (Metric("bytes_per_message", "B", False), _rate("fill_rate"), _rate("drain_rate")),
            backlog,
        ),
    )
}
