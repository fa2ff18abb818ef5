"""Listeners, the connection registry, authentication of the default user, and graceful shutdown."""

from __future__ import annotations

import asyncio
import hmac
import logging
import sys
from importlib.metadata import PackageNotFoundError, version

from broker.config import Config
from broker.connection import BrokerConnection
from broker.vhost import VHost
from protocol.errors import CONNECTION_FORCED

log = logging.getLogger("amqpd")


def amqpd_version() -> str:
    try:
        return version("amqpd")
    except PackageNotFoundError:
        return "0.0.0+unknown"


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    module = type(loop).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"


class Server:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.version = amqpd_version()
        self.vhosts: dict[str, VHost] = {config.default_vhost: VHost(config.default_vhost)}
        self.users: dict[str, str] = {config.default_user: config.default_pass}
        self.connections: set[BrokerConnection] = set()
        self.port = 0
        self._servers: list[asyncio.Server] = []
        self._stopped: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "Server.start() has not run"
        return self._loop

    @property
    def url(self) -> str:
        host = self.config.host or "127.0.0.1"
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"amqp://{self.config.default_user}:{self.config.default_pass}@{host}:{self.port}/"

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        cfg = self.config
        server = await self._loop.create_server(
            lambda: BrokerConnection(self), host=cfg.host or None, port=cfg.port, reuse_address=True, backlog=1024
        )
        self._servers.append(server)
        sockets = server.sockets or []
        self.port = sockets[0].getsockname()[1] if sockets else cfg.port
        addrs = ", ".join(f"{s.getsockname()[0]}:{s.getsockname()[1]}" for s in sockets)
        log.info(
            "amqpd %s listening on %s (loop %s, Python %s, store %s)",
            self.version,
            addrs,
            loop_name(self._loop),
            sys.version.split()[0],
            cfg.store or f"embedded:{cfg.data_dir}",
        )

    async def serve_forever(self) -> None:
        assert self._stopped is not None
        await self._stopped.wait()

    def authenticate(self, username: str, password: str, from_loopback: bool) -> bool:
        expected = self.users.get(username)
        if expected is None or not hmac.compare_digest(expected.encode(), password.encode()):
            return False
        if username == "guest" and not from_loopback:
            log.warning("user 'guest' can only connect via localhost")
            return False
        return True

    def stats(self) -> dict[str, int]:
        channels = consumers = 0
        for c in self.connections:
            ch, co = c.stats()
            channels += ch
            consumers += co
        exclusive = sum(1 for vh in self.vhosts.values() for q in vh.queues.values() if q.exclusive)
        return {
            "connections": len(self.connections),
            "channels": channels,
            "consumers": consumers,
            "exclusive_queues": exclusive,
        }

    async def shutdown(self, reason: str = "broker shutdown") -> None:
        """Stop accepting, close every client with 320 CONNECTION_FORCED, wait for Close-Ok, then stop."""
        if self._stopped is None or self._stopped.is_set():
            return
        log.info("shutting down: %s", reason)
        for s in self._servers:
            s.close()
        for conn in list(self.connections):
            conn.close(CONNECTION_FORCED, f"CONNECTION_FORCED - {reason}")
        deadline = self.loop.time() + self.config.shutdown_timeout
        while self.connections and self.loop.time() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        for s in self._servers:
            await s.wait_closed()
        self._servers.clear()
        log.info("shutdown complete")
        self._stopped.set()
