"""Test harness: a broker per test, both event loops everywhere, and a leak check at teardown.

Fixtures
- `amqp_url`: the broker to talk to. ``AMQP_URL`` from the environment (an external broker, e.g. RabbitMQ) or
  else a fresh in-process amqpd on 127.0.0.1 and a free port, run by `tests.support.server_thread.ServerThread`.
- `broker_server`: the `ServerThread` behind `amqp_url`, for tests that look inside amqpd; skips the test when
  ``AMQP_URL`` points elsewhere.
- `loop_kind`: "asyncio" or "uvloop", the loop the in-process server runs on.
- `connection` / `other_connection`: aio-pika connections to `amqp_url`, closed at teardown (two, for tests
  about what one connection may do to another's queues). A test module may define its own to override them.

Loops: every async test runs once per loop in `LOOP_FACTORIES` (ids ``[asyncio]`` / ``[uvloop]``) through
pytest-asyncio's ``pytest_asyncio_loop_factories`` hook, and its in-process server runs on the same kind of
loop, so both loops are exercised on the client and the server side. A sync test gets the same two-way
parametrisation by naming `loop_kind` in its signature; otherwise its server uses `DEFAULT_LOOP_KIND`.

Leak check: after a test that passed, the in-process server must come back to zero connections, channels,
consumers and exclusive queues within `LEAK_DEADLINE` seconds; otherwise the test errors at teardown with
the leftover counts.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import AsyncIterator, Generator, Iterator, Mapping
from typing import Any

import aio_pika
import pytest
from pytest_asyncio import is_async_test

from tests.support.loops import DEFAULT_LOOP_KIND, LOOP_FACTORIES, LoopFactory
from tests.support.server_thread import ServerThread

LEAK_DEADLINE = 5.0
ASYNC_TEST_LOOP_SCOPE = "function"  # asyncio_default_test_loop_scope in pyproject.toml
FAILED_CALL = pytest.StashKey[bool]()


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> Mapping[str, LoopFactory]:
    return LOOP_FACTORIES


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Only sync tests that ask for loop_kind by name; async tests already get one run per loop factory.
    if inspect.iscoroutinefunction(metafunc.function):
        return
    if "loop_kind" in inspect.signature(metafunc.function).parameters:
        metafunc.parametrize("loop_kind", list(LOOP_FACTORIES), indirect=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, object, object]:
    report = yield
    # Remembered so the leak check stays quiet after a failed test: its leftovers are a symptom, not news.
    if call.when == "call" and call.excinfo is not None:
        item.stash[FAILED_CALL] = True
    return report


@pytest.fixture
def loop_kind(request: pytest.FixtureRequest) -> str:
    param = getattr(request, "param", None)
    if isinstance(param, str):
        return param
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None:
        for value in callspec.params.values():
            if isinstance(value, LoopFactory):
                return value.kind
    return DEFAULT_LOOP_KIND


def external_url() -> str | None:
    return os.environ.get("AMQP_URL") or None


@pytest.fixture
def amqpd_settings() -> dict[str, object]:
    """Extra settings (Config fields) for the in-process broker; a test module overrides this fixture to change
    them, e.g. lower flow-control marks."""
    return {}


@pytest.fixture
def amqpd_instance(
    request: pytest.FixtureRequest, loop_kind: str, amqpd_settings: dict[str, object]
) -> Iterator[ServerThread | None]:
    """The in-process broker for this test, or None when AMQP_URL names an external one."""
    if external_url() is not None:
        yield None
        return
    if is_async_test(request.node):
        # Set the test's event loop up before the broker, so it is torn down after the leak check: closing
        # the loop closes the test's client sockets, which would hide connections the test forgot to close.
        # The runner fixture's name is pytest-asyncio's (1.x); without it the check is merely less strict.
        with contextlib.suppress(pytest.FixtureLookupError):
            request.getfixturevalue(f"_{ASYNC_TEST_LOOP_SCOPE}_scoped_runner")
    from amqpd.broker.server.config import Config

    settings: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "store": "memory://", "heartbeat": 60}
    settings.update(amqpd_settings)
    thread = ServerThread(Config(**settings), loop_kind)
    thread.start()
    leftovers: dict[str, int] = {}
    try:
        yield thread
        if not request.node.stash.get(FAILED_CALL, False):
            leftovers = thread.wait_idle(LEAK_DEADLINE)
    finally:
        thread.stop()
    leaked = {name: count for name, count in leftovers.items() if count}
    assert not leaked, f"test left these behind on the broker after {LEAK_DEADLINE} s: {leaked}"


@pytest.fixture
def amqp_url(amqpd_instance: ServerThread | None) -> str:
    if amqpd_instance is None:
        url = external_url()
        assert url is not None
        return url
    return amqpd_instance.url


@pytest.fixture
def broker_server(amqpd_instance: ServerThread | None) -> ServerThread:
    if amqpd_instance is None:
        pytest.skip("looks inside the in-process amqpd; AMQP_URL points at an external broker")
    return amqpd_instance


@pytest.fixture
async def connection(amqp_url: str) -> AsyncIterator[aio_pika.abc.AbstractConnection]:
    async with await aio_pika.connect(amqp_url) as conn:  # leaving the block closes it
        yield conn


@pytest.fixture
async def other_connection(amqp_url: str) -> AsyncIterator[aio_pika.abc.AbstractConnection]:
    async with await aio_pika.connect(amqp_url) as conn:
        yield conn
