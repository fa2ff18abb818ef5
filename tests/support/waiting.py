"""Poll a condition with a deadline instead of sleeping: `wait_for` (async) and `wait_until` (sync)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any


async def wait_for(predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.005) -> Any:
    """Poll `predicate` (sync, or returning an awaitable) until it is truthy; return that value.

    Raises AssertionError naming the predicate when `timeout` seconds pass first.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() >= deadline:
            raise AssertionError(f"condition {_describe(predicate)} still false after {timeout} s")
        await asyncio.sleep(interval)


def wait_until(predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.005) -> Any:
    """Blocking twin of `wait_for` for sync tests."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition {_describe(predicate)} still false after {timeout} s")
        time.sleep(interval)


def _describe(predicate: Callable[..., object]) -> str:
    try:
        return inspect.getsource(predicate).strip()
    except (OSError, TypeError):
        return repr(predicate)
