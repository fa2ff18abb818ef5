"""Time series of a run, for the charts of the HTML report: throughput and the broker's CPU and RSS over time.

A :class:`Sampler` runs beside the load as one asyncio task and takes a point every half second::

    {"t": 2.5, "rate": 118000.0, "broker_cpu": 0.98, "broker_rss": 47845376}

``t`` is seconds since the run's origin (the start of publishing, or the start of a scenario made of several
runs); ``rate`` is messages/s of one counter over the last interval (what it counts is named by the result's
``series_rate``); ``broker_cpu`` is the broker's CPU over the interval as a share of one core and ``broker_rss``
its VmRSS in bytes. A key is left out when it is not known (no broker pid, no counter; the first point, at the
start, has only the RSS). The cost is two small reads from /proc per half second.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from amqpd.benchmarks.procstats import cpu_seconds, rss_bytes

SAMPLE_INTERVAL = 0.5


class Sampler:
    """Samples ``count()`` (a cumulative message counter) and the broker process every ``interval`` seconds
    between :meth:`start` and :meth:`stop`; :meth:`stop` adds the last, partial interval when it is not too short
    (a run shorter than one interval still gets a point)."""

    def __init__(
        self,
        count: Callable[[], int] | None,
        pid: int | None,
        *,
        origin: float | None = None,
        interval: float = SAMPLE_INTERVAL,
    ) -> None:
        self.count = count
        self.pid = pid
        self.origin = origin
        self.interval = interval
        self.points: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._last_t = 0.0
        self._last_n = 0
        self._last_cpu = 0.0

    def start(self) -> None:
        now = asyncio.get_running_loop().time()
        if self.origin is None:
            self.origin = now
        self._last_t = now
        self._last_n = self.count() if self.count else 0
        self._last_cpu = cpu_seconds(self.pid) if self.pid else 0.0
        if self.pid and (rss := rss_bytes(self.pid)):  # where memory started (a rate needs an interval)
            self.points.append({"t": round(now - self.origin, 3), "broker_rss": rss})
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> list[dict[str, Any]]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            now = asyncio.get_running_loop().time()
            if now - self._last_t >= self.interval / 5:
                self._sample(now)
        return self.points

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        tick = self._last_t
        while True:
            tick += self.interval
            await asyncio.sleep(max(0.0, tick - loop.time()))
            now = loop.time()
            self._sample(now)
            if tick < now - self.interval:  # the loop was held up: skip the missed ticks instead of bursting
                tick = now

    def _sample(self, now: float) -> None:
        dt = now - self._last_t
        if dt <= 0 or self.origin is None:
            return
        point: dict[str, Any] = {"t": round(now - self.origin, 3)}
        if self.count is not None:
            n = self.count()
            point["rate"] = round((n - self._last_n) / dt, 1)
            self._last_n = n
        if self.pid:
            cpu = cpu_seconds(self.pid)
            if cpu and self._last_cpu and cpu >= self._last_cpu:  # 0.0: the process is gone or unreadable
                point["broker_cpu"] = round((cpu - self._last_cpu) / dt, 3)
            self._last_cpu = cpu
            rss = rss_bytes(self.pid)
            if rss:
                point["broker_rss"] = rss
        self.points.append(point)
        self._last_t = now
