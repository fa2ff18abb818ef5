"""Clocks and timers for message TTL, queue expiry and consumer timeouts.

Deadlines are wall-clock milliseconds, because a persistent message's TTL counts from its publish time
(``Message.timestamp_ms``, stored) across restarts. Timers run on the event loop. A queue reaches both through one
``Clock`` object so that a benchmark or a unit test can drive expiry with a hand-turned clock and no loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now_ms(self) -> int: ...
    def call_later(self, delay_s: float, callback: Callable[[], None]) -> TimerHandle: ...


class LoopClock:
    """Wall-clock time and timers on the running event loop (queues live on the broker's loop)."""

    __slots__ = ()

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> TimerHandle:
        return asyncio.get_running_loop().call_later(delay_s, callback)


LOOP_CLOCK = LoopClock()


class ManualTimer:
    __slots__ = ("at", "callback", "cancelled")

    def __init__(self, at: int, callback: Callable[[], None]) -> None:
        self.at = at
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A clock turned by hand: ``advance`` runs every timer that came due, in deadline order."""

    def __init__(self, now_ms: int = 1_000_000) -> None:
        self.now = now_ms
        self.timers: list[ManualTimer] = []
        self.fired = 0

    def now_ms(self) -> int:
        return self.now

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> TimerHandle:
        timer = ManualTimer(self.now + max(0, int(delay_s * 1000)), callback)
        self.timers.append(timer)
        return timer

    def advance(self, ms: int) -> int:
        """Move time forward by ``ms`` and fire due timers; returns how many fired."""
        self.now += ms
        fired = 0
        while True:
            due = [t for t in self.timers if not t.cancelled and t.at <= self.now]
            self.timers = [t for t in self.timers if not t.cancelled and t.at > self.now]
            if not due:
                break
            for t in sorted(due, key=lambda t: t.at):
                fired += 1
                t.callback()
        self.fired += fired
        return fired
