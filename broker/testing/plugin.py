"""The ``amqpd`` pytest plugin: a real AMQP 0-9-1 broker for an application's tests, no Docker, no server to install.

Installing amqpd registers it (entry point ``pytest11``); its fixtures:

- ``amqpd_broker``: a running `broker.testing.BrokerThread` on 127.0.0.1 and a free port (its own event loop in
  a daemon thread, so sync tests with pika and async tests on any loop can use it alike). A fresh broker per
  test unless ``amqpd_scope`` says otherwise. ``.url``, ``.host``, ``.port``, ``.queues()``,
  ``.queue_depth(name)``, ``.queue_info(name)``, ``.stats()``.
- ``amqpd_broker_session``: one broker for the whole session, whatever ``amqpd_scope`` says.
- ``amqp_url``: ``amqpd_broker.url`` (``amqp://guest:guest@127.0.0.1:PORT/``).
- ``amqpd_config``: extra broker settings (`broker.server.config.Config` fields); ``{}`` unless a conftest.py
  overrides it (session-scoped, so that every broker scope may use it).

Options (command line, else ini, else default): ``--amqpd-scope`` / ``amqpd_scope`` (``function``; or class,
module, package, session), ``--amqpd-store`` / ``amqpd_store`` (``memory``; ``embedded``: the append-only log in a
temporary directory), ``--amqpd-log-level`` / ``amqpd_log_level`` (``warning``), ``--amqpd-leak-check`` /
``amqpd_leak_check`` (off: when on, a broker's teardown fails if clients left connections, channels, consumers or
exclusive queues behind).

This module imports nothing but pytest when pytest loads it: suites that use no broker pay nothing.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any, Literal, cast

import pytest

if TYPE_CHECKING:
    from amqpd.broker.testing.embedded import BrokerThread

ScopeName = Literal["session", "package", "module", "class", "function"]
SCOPES: tuple[ScopeName, ...] = ("function", "class", "module", "package", "session")
STORES = ("memory", "embedded")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LEAK_DEADLINE = 5.0
CALL_FAILED = pytest.StashKey[bool]()

# option -> (choices or None for a flag, default, help)
OPTIONS: dict[str, tuple[tuple[str, ...] | None, str, str]] = {
    "scope": (SCOPES, "function", "scope of the amqpd_broker and amqp_url fixtures"),
    "store": (STORES, "memory", "where the test broker keeps messages: memory, or the embedded store on disk"),
    "log_level": (LOG_LEVELS, "warning", "level of the test broker's 'amqpd' logger"),
    "leak_check": (
        None,
        "false",
        "fail a test broker's teardown when clients left connections, channels, consumers or exclusive queues",
    ),
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("amqpd", "amqpd test broker")
    for name, (choices, default, text) in OPTIONS.items():
        flag = "--amqpd-" + name.replace("_", "-")
        if choices is None:
            group.addoption(flag, action="store_true", default=None, dest=f"amqpd_{name}", help=text)
            parser.addini(f"amqpd_{name}", f"{text} (default: off)", type="bool", default=False)
        else:
            helptext = f"{text} (default: {default}; ini: amqpd_{name})"
            group.addoption(flag, choices=choices, default=None, dest=f"amqpd_{name}", help=helptext)
            parser.addini(f"amqpd_{name}", f"{text}: {', '.join(choices)} (default: {default})", default=default)


def option(config: pytest.Config, name: str) -> Any:
    """An option's value: the command line's, else the ini file's, else the default."""
    value = config.getoption(f"amqpd_{name}")
    if value is None:
        value = config.getini(f"amqpd_{name}")
    choices = OPTIONS[name][0]
    if choices is None:
        return bool(value)
    value = str(value).strip().lower()
    if value not in choices:
        raise pytest.UsageError(f"amqpd_{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def pytest_configure(config: pytest.Config) -> None:
    for name in OPTIONS:
        option(config, name)  # a bad value stops the run here, with one line that names it


def broker_scope(fixture_name: str, config: pytest.Config) -> ScopeName:
    return cast(ScopeName, option(config, "scope"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    # Remembered for the leak check, which stays quiet after a failed test: its leftovers are a symptom.
    if call.when == "call" and call.excinfo is not None:
        item.stash[CALL_FAILED] = True
    return report


def _run_broker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, settings: dict[str, Any]
) -> Iterator[BrokerThread]:
    from amqpd.broker.testing.embedded import BrokerThread

    config = request.config
    store = option(config, "store")
    data_dir = str(tmp_path_factory.mktemp("amqpd")) if store == "embedded" else None
    broker = BrokerThread(store=store, data_dir=data_dir, log_level=option(config, "log_level"), **settings)
    broker.start()
    leftovers: dict[str, int] = {}
    try:
        yield broker
        # A test's own broker is checked unless that test failed; a wider one unless any test has failed so far.
        node = request.node
        failed = node.stash.get(CALL_FAILED, False) if isinstance(node, pytest.Item) else request.session.testsfailed
        if option(config, "leak_check") and not failed:
            leftovers = broker.wait_idle(LEAK_DEADLINE)
    finally:
        broker.stop()
    leaked = {name: count for name, count in leftovers.items() if count}
    if leaked:
        pytest.fail(f"amqpd leak check: still open on the broker after {LEAK_DEADLINE} s: {leaked}", pytrace=False)


@pytest.fixture(scope="session")
def amqpd_config() -> dict[str, Any]:
    """Extra settings of the test brokers: `broker.server.config.Config` fields, e.g. ``{"heartbeat": 5}`` or
    ``{"definitions": "tests/definitions.json"}``. Override it in conftest.py, with ``scope="session"``."""
    return {}


@pytest.fixture(scope="session")
def amqpd_broker_session(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, amqpd_config: dict[str, Any]
) -> Iterator[BrokerThread]:
    """One amqpd for the whole test session."""
    yield from _run_broker(request, tmp_path_factory, amqpd_config)


@pytest.fixture(scope=broker_scope)
def amqpd_broker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, amqpd_config: dict[str, Any]
) -> Iterator[BrokerThread]:
    """A running amqpd (a `broker.testing.BrokerThread`): one per test, or per ``amqpd_scope``."""
    if option(request.config, "scope") == "session":
        yield request.getfixturevalue("amqpd_broker_session")  # one session broker, whichever fixture asks
        return
    yield from _run_broker(request, tmp_path_factory, amqpd_config)


@pytest.fixture(scope=broker_scope)
def amqp_url(amqpd_broker: BrokerThread) -> str:
    """The URL of `amqpd_broker`: ``amqp://guest:guest@127.0.0.1:PORT/``."""
    return amqpd_broker.url
