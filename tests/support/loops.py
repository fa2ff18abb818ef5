"""Event-loop factories: every async test runs on each of them (tests/conftest.py), and so does its broker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping


class LoopFactory:
    """A loop factory that knows its own name, so fixtures can tell which loop a test was given."""

    def __init__(self, kind: str, factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
        self.kind = kind
        self._factory = factory

    def __call__(self) -> asyncio.AbstractEventLoop:
        return self._factory()

    def __repr__(self) -> str:
        return f"LoopFactory({self.kind!r})"


def _loop_factories() -> dict[str, LoopFactory]:
    # SelectorEventLoop, not asyncio.new_event_loop: the latter follows whatever policy is installed.
    factories = {"asyncio": LoopFactory("asyncio", asyncio.SelectorEventLoop)}
    try:
        import uvloop
    except ImportError:
        return factories
    factories["uvloop"] = LoopFactory("uvloop", uvloop.new_event_loop)
    return factories


LOOP_FACTORIES: Mapping[str, LoopFactory] = _loop_factories()
# What a sync test that does not ask for `loop_kind` gets: the loop `amqpd --loop auto` would pick.
DEFAULT_LOOP_KIND = "uvloop" if "uvloop" in LOOP_FACTORIES else "asyncio"
