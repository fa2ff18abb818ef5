"""Start and stop a real amqpd from Python code, for an application's tests.

`EmbeddedBroker` runs on the caller's event loop (``async with EmbeddedBroker() as broker:``); `BrokerThread`
runs its own loop in a daemon thread (``with BrokerThread() as broker:``), so blocking clients (pika) and
asyncio clients on any loop can both use it. Both listen on 127.0.0.1 and a free port, keep messages in
memory unless asked for the embedded store, and answer the same questions from any thread: `url`, `port`,
`queues()`, `queue_depth()`, `queue_info()`, `stats()`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
import tempfile
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from amqpd.broker.server.config import Config

if TYPE_CHECKING:
    from types import TracebackType

    from amqpd.broker.server.server import Server

T = TypeVar("T")

STORES = ("memory", "embedded")
# A test broker does not keep a suite waiting at teardown for clients that never answer its Connection.Close.
SHUTDOWN_TIMEOUT = 1.0
LOGGER = "amqpd"


@dataclasses.dataclass(frozen=True, slots=True)
class QueueInfo:
    """One queue as the broker sees it now."""

    name: str
    vhost: str
    messages: int  # ready messages: the count queue.declare (passive) reports; deliveries awaiting an ack excluded
    consumers: int
    durable: bool
    exclusive: bool
    auto_delete: bool


def broker_config(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    store: str = "memory",
    data_dir: str | None = None,
    user: str = "guest",
    password: str = "guest",
    vhost: str = "/",
    **settings: Any,
) -> Config:
    """The `Config` of a test broker. `store` is ``memory`` (nothing persisted), ``embedded`` (the append-only
    log in `data_dir`) or any storage URL amqpd accepts; `settings` are further `Config` fields."""
    if store == "memory":
        store_url = "memory://"
    elif store == "embedded":
        if not data_dir:
            raise ValueError("store='embedded' needs a data_dir")
        store_url = ""
    elif "://" in store:
        store_url = store
    else:
        raise ValueError(f"store must be one of {', '.join(STORES)} or a storage URL, got {store!r}")
    settings.setdefault("shutdown_timeout", SHUTDOWN_TIMEOUT)
    return Config(
        host=host,
        port=port,
        store=store_url,
        data_dir=data_dir or "./data",
        default_user=user,
        default_pass=password,
        default_vhost=vhost,
        **settings,
    )


class _Broker:
    """What both brokers share: the settings, the data directory, the URL and the questions about queues.

    Subclasses provide `_call`, which runs a plain function on the broker's loop thread and returns its result
    (the broker's objects are not thread-safe), and `_server`."""

    def __init__(self, store: str, data_dir: str | None, log_level: str | None, settings: dict[str, Any]) -> None:
        self._own_data_dir = store == "embedded" and not data_dir
        if self._own_data_dir:
            data_dir = tempfile.mkdtemp(prefix="amqpd-")
        self.config = broker_config(store=store, data_dir=data_dir, **settings)
        self.data_dir = data_dir
        self._log_level = log_level
        self._saved_level: int | None = None
        self._server: Server | None = None

    # -- what a test connects to
    @property
    def server(self) -> Server:
        """The running `Server`; touch it only on the broker's loop (see `call`)."""
        if self._server is None:
            raise RuntimeError("the broker is not running")
        return self._server

    @property
    def host(self) -> str:
        host = self.config.host
        return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        """``amqp://user:pass@host:port/vhost`` of the default user and vhost (percent-encoded)."""
        cfg = self.config
        host = f"[{self.host}]" if ":" in self.host else self.host
        user, password = quote(cfg.default_user, safe=""), quote(cfg.default_pass, safe="")
        vhost = "" if cfg.default_vhost == "/" else quote(cfg.default_vhost, safe="")
        return f"amqp://{user}:{password}@{host}:{self.port}/{vhost}"

    # -- inspection, safe from any thread
    def call(self, fn: Callable[..., T], *args: Any, timeout: float = 10.0) -> T:
        """Call ``fn(*args)`` on the broker's loop thread and return its result (from any thread)."""
        return self._call(lambda: fn(*args), timeout)

    def _call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        raise NotImplementedError

    def queue_info(self, name: str, vhost: str = "/") -> QueueInfo:
        """The queue `name` in `vhost`; KeyError when there is none."""
        return self._call(lambda: _queue_info(self.server, name, vhost))

    def queue_depth(self, name: str, vhost: str = "/") -> int:
        """Ready messages in queue `name` (what a passive queue.declare reports); KeyError when there is none."""
        return self.queue_info(name, vhost).messages

    def queues(self, vhost: str = "/") -> dict[str, int]:
        """Every queue of `vhost`, by name, with its ready messages; `{}` for an unknown vhost."""
        return self._call(lambda: _queue_depths(self.server, vhost))

    def stats(self) -> dict[str, int]:
        """Open connections, channels and consumers, and exclusive queues, now."""
        return self._call(lambda: dict(self.server.stats()))

    # -- helpers of start and stop
    def _apply_log_level(self) -> None:
        if self._log_level is not None:
            logger = logging.getLogger(LOGGER)
            self._saved_level = logger.level
            logger.setLevel(self._log_level.upper())

    def _restore(self) -> None:
        if self._saved_level is not None:
            logging.getLogger(LOGGER).setLevel(self._saved_level)
            self._saved_level = None
        if self._own_data_dir and self.data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def _queue_info(server: Server, name: str, vhost: str) -> QueueInfo:
    host = server.vhosts.get(vhost)
    q = host.queues.get(name) if host is not None else None
    if q is None:
        raise KeyError(f"no queue '{name}' in vhost '{vhost}'")
    return QueueInfo(q.name, vhost, q.message_count, q.consumer_count, q.durable, q.exclusive, q.auto_delete)


def _queue_depths(server: Server, vhost: str) -> dict[str, int]:
    host = server.vhosts.get(vhost)
    return {} if host is None else {name: q.message_count for name, q in host.queues.items()}


async def _wait_idle(server: Server, timeout: float) -> dict[str, int]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        stats = dict(server.stats())
        if not any(stats.values()) or loop.time() >= deadline:
            return stats
        await asyncio.sleep(0.01)


class EmbeddedBroker(_Broker):
    """amqpd on the running event loop::

        async with EmbeddedBroker() as broker:
            connection = await aio_pika.connect(broker.url)

    Keyword arguments: `host` (default 127.0.0.1), `port` (0: a free one), `store` (``memory`` or
    ``embedded``, which keeps its files in `data_dir`, a temporary directory removed at stop unless given),
    `user`/`password`/`vhost` (the default user, guest/guest on ``/``), `log_level` (of the ``amqpd`` logger;
    default: left as it is), and any other `broker.server.config.Config` field (``heartbeat=5``,
    ``definitions="defs.json"``, ...).

    Clients of this broker must run on the same loop, or in other threads (pika): a blocking client in the
    loop's own thread would wait for a broker that cannot run.
    """

    def __init__(
        self, *, store: str = "memory", data_dir: str | None = None, log_level: str | None = None, **settings: Any
    ) -> None:
        super().__init__(store, data_dir, log_level, settings)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread_id: int | None = None

    async def start(self) -> EmbeddedBroker:
        from amqpd.broker.server.server import Server

        if self._server is not None:
            raise RuntimeError("the broker is already running")
        self._apply_log_level()
        server = Server(self.config)
        try:
            await server.start()
        except BaseException:
            self._restore()
            raise
        self._loop = asyncio.get_running_loop()
        self._thread_id = threading.get_ident()
        self._server = server
        return self

    async def stop(self, reason: str = "test finished") -> None:
        """Close every client connection (320, as a stopping RabbitMQ does) and stop listening."""
        server, self._server = self._server, None
        try:
            if server is not None:
                await server.shutdown(reason)
        finally:
            self._restore()

    async def wait_idle(self, timeout: float = 5.0) -> dict[str, int]:
        """Wait until no connection, channel, consumer or exclusive queue is left (or `timeout` passes); return
        `stats()` as they are then."""
        return await _wait_idle(self.server, timeout)

    async def __aenter__(self) -> EmbeddedBroker:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def _call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        if self._loop is None or threading.get_ident() == self._thread_id:
            return fn()
        return _call_on(self._loop, fn, timeout)


class BrokerThread(_Broker):
    """amqpd on its own event loop in a daemon thread::

        with BrokerThread() as broker:
            connection = pika.BlockingConnection(pika.URLParameters(broker.url))

    Takes `EmbeddedBroker`'s keyword arguments, and `loop`: ``auto`` (uvloop when installed), ``uvloop`` or
    ``asyncio``. Every method may be called from any thread, including an asyncio test's loop (they block
    briefly while the broker's loop answers).
    """

    def __init__(
        self,
        *,
        store: str = "memory",
        data_dir: str | None = None,
        log_level: str | None = None,
        loop: str = "auto",
        **settings: Any,
    ) -> None:
        super().__init__(store, data_dir, log_level, settings)
        self.loop_kind = loop
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> BrokerThread:
        from amqpd.broker.server.cli import choose_loop

        if self._thread is not None:
            raise RuntimeError("a BrokerThread starts once")
        self.loop_kind, factory = choose_loop(self.loop_kind)
        self._apply_log_level()
        self._thread = threading.Thread(target=self._main, args=(factory,), name="amqpd-broker", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self._restore()
            raise TimeoutError(f"amqpd did not start within {timeout} s")
        if self._error is not None:
            self._thread.join(timeout)
            self._restore()
            raise RuntimeError(f"amqpd failed to start: {self._error!r}") from self._error
        return self

    def _main(self, factory: Callable[[], asyncio.AbstractEventLoop] | None) -> None:
        try:
            with asyncio.Runner(loop_factory=factory) as runner:
                runner.run(self._serve())
        except BaseException as exc:  # reported by start() or stop()
            self._error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        from amqpd.broker.server.server import Server

        server = Server(self.config)
        await server.start()
        self._loop = asyncio.get_running_loop()
        self._server = server
        self._ready.set()
        await server.serve_forever()

    def stop(self, reason: str = "test finished", timeout: float = 15.0) -> None:
        """Shut the broker down (clients get 320 CONNECTION_FORCED) and join its thread."""
        thread = self._thread
        try:
            if thread is None:
                return
            if thread.is_alive() and self._server is not None and self._loop is not None:
                server = self._server
                asyncio.run_coroutine_threadsafe(server.shutdown(reason), self._loop).result(timeout)
            thread.join(timeout)
            if thread.is_alive():
                raise TimeoutError(f"amqpd's thread still runs {timeout} s after its shutdown")
            if self._error is not None:
                raise RuntimeError(f"amqpd's thread died: {self._error!r}") from self._error
        finally:
            self._server = None
            self._restore()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run `coro` on the broker's loop and wait for its result (not from the broker's own thread)."""
        if self._loop is None:
            raise RuntimeError("the broker is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def wait_idle(self, timeout: float = 5.0) -> dict[str, int]:
        """Wait until no connection, channel, consumer or exclusive queue is left (or `timeout` passes); return
        `stats()` as they are then."""
        return self.run(_wait_idle(self.server, timeout), timeout + 5.0)

    def __enter__(self) -> BrokerThread:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        if self._loop is None:
            raise RuntimeError("the broker is not running")
        if self._thread is not None and threading.get_ident() == self._thread.ident:
            return fn()
        return _call_on(self._loop, fn, timeout)


def _call_on(loop: asyncio.AbstractEventLoop, fn: Callable[[], T], timeout: float) -> T:
    async def invoke() -> T:
        return fn()

    return asyncio.run_coroutine_threadsafe(invoke(), loop).result(timeout)
