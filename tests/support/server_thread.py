"""`ServerThread`: runs `broker.server.server.Server` on its own event loop in a background thread, so blocking
clients (pika) and async clients (aio-pika, on the test's loop) can both talk to it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from tests.support.loops import DEFAULT_LOOP_KIND, LOOP_FACTORIES

if TYPE_CHECKING:
    from amqpd.broker.server.config import Config
    from amqpd.broker.server.server import Server

T = TypeVar("T")

IDLE = {"connections": 0, "channels": 0, "consumers": 0, "exclusive_queues": 0}


class ServerThread:
    """One `Server` on its own event loop in a daemon thread.

    Touch the server only through `run`/`call`/`stats` (they hop onto its loop); its objects are not
    thread-safe. `server` is exposed for reading attributes in assertions made through `call`.
    """

    def __init__(self, config: Config, loop_kind: str = DEFAULT_LOOP_KIND) -> None:
        self.config = config
        self.loop_kind = loop_kind
        self._factory = LOOP_FACTORIES[loop_kind]
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._server: Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._main, name=f"amqpd-{loop_kind}", daemon=True)

    # -- lifecycle
    def start(self, timeout: float = 10.0) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"amqpd did not start within {timeout} s")
        if self._error is not None:
            raise RuntimeError(f"amqpd failed to start: {self._error!r}") from self._error
        return self

    def _main(self) -> None:
        try:
            with asyncio.Runner(loop_factory=self._factory) as runner:
                runner.run(self._serve())
        except BaseException as exc:  # reported to the test thread by start()/stop()
            self._error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        from amqpd.broker.server.server import (
            Server,  # lazily: tests that need no broker must not depend on it importing
        )

        server = Server(self.config)
        await server.start()
        self._server = server
        self._loop = asyncio.get_running_loop()
        self._ready.set()
        await server.serve_forever()

    def stop(self, reason: str = "test finished", timeout: float = 15.0) -> None:
        """Shut the server down gracefully and join the thread; re-raise whatever killed it."""
        if self._thread.is_alive() and self._server is not None:
            self.run(self._server.shutdown(reason), timeout=timeout)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"amqpd thread still running {timeout} s after shutdown")
        if self._error is not None:
            raise RuntimeError(f"amqpd thread died: {self._error!r}") from self._error

    # -- access
    @property
    def server(self) -> Server:
        assert self._server is not None, "ServerThread.start() has not completed"
        return self._server

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "ServerThread.start() has not completed"
        return self._loop

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return self.server.port

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run `coro` on the server's loop and wait (blocking) for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[..., T], *args: Any, timeout: float = 10.0) -> T:
        """Call plain function `fn(*args)` on the server's loop thread and return its result."""

        async def invoke() -> T:
            return fn(*args)

        return self.run(invoke(), timeout)

    async def arun(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """`run` for async tests: awaits on the test's loop while `coro` runs on the server's."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout)

    def stats(self) -> dict[str, int]:
        return self.call(lambda: dict(self.server.stats()))

    def wait_idle(self, timeout: float = 5.0) -> dict[str, int]:
        """Wait until no connection, channel, consumer or exclusive queue is left; return the last stats."""

        async def poll() -> dict[str, int]:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while True:
                stats = dict(self.server.stats())
                if not any(stats.values()) or loop.time() >= deadline:
                    return stats
                await asyncio.sleep(0.01)

        return self.run(poll(), timeout + 5.0)
