"""Listeners (plain TCP and TLS), the connection registry, vhosts and users (created, deleted, persisted),
and graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import resource
import ssl
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from amqpd.broker.access.control import AccessControl
from amqpd.broker.access.users import AccessConfigError, User
from amqpd.broker.durability.journal import StoreJournal
from amqpd.broker.durability.recovery import recover, stored_vhosts
from amqpd.broker.durability.settings import StoreSettingsJournal
from amqpd.broker.features.deadletter import dead_letter
from amqpd.broker.model.journal import NO_JOURNAL
from amqpd.broker.model.vhost import VHost
from amqpd.broker.server.config import Config
from amqpd.broker.server.tls import check_settings, server_context
from amqpd.broker.session.connection import BrokerConnection
from amqpd.protocol.errors import CONNECTION_FORCED
from amqpd.storage import GroupCommitter, Store, VHostDelete, VHostRecord, open_store

log = logging.getLogger("amqpd")


def amqpd_version() -> str:
    try:
        return version("amqpd")
    except PackageNotFoundError:
        return "0.0.0+unknown"


class ListenError(OSError):
    """A listener could not be opened; `where` and `flag` say which, for the one-line message of the CLI."""

    def __init__(self, exc: OSError, where: str, flag: str) -> None:
        super().__init__(exc.errno, exc.strerror or str(exc))
        self.where = where
        self.flag = flag


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    module = type(loop).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"


# The setting that says this store has been through a first start (vhost "", kind, name).
INITIALIZED = ("", "node", "initialized")
# File descriptors kept back from the automatic connection limit: the store's files, listeners, logs.
FD_RESERVE = 64
UNLIMITED_FDS = 1 << 20  # what an unlimited open-files limit counts as (Linux's default fs.nr_open)


def parse_user_list(text: str) -> frozenset[str]:
    """``loopback_users``: names separated by commas or spaces; "" or "none" is nobody (RabbitMQ's `none`)."""
    names = {n.strip() for n in text.replace(",", " ").split()}
    names.discard("")
    return frozenset() if names == {"none"} else frozenset(names)


def raise_fd_limit() -> int:
    """Lift the soft open-files limit to the hard one (as RabbitMQ's start script asks for) and return the soft
    limit then in force: the old one when it cannot be raised, 1024 when it cannot even be read."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ValueError, OSError):
        return 1024
    if soft == resource.RLIM_INFINITY:
        return UNLIMITED_FDS
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, UNLIMITED_FDS)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return int(soft)


class Server:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.version = amqpd_version()
        self.access = AccessControl(parse_user_list(config.loopback_users))
        self.connection_limit = config.max_connections  # 0 until start() derives it from the fd limit
        self.connections: set[BrokerConnection] = set()
        self.port = 0  # the plain listener's port once started (0 when it is off)
        self.tls_port = 0  # the TLS listener's port once started (0 when there is none)
        self._servers: list[asyncio.Server] = []
        self._stopped: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.store: Store | None = None
        self.committer: GroupCommitter | None = None
        self._message_ids = itertools.count(1).__next__
        self.vhosts: dict[str, VHost] = {}
        if not config.definitions:
            self.seed_defaults()
        self._store_pressure = False

    def seed_defaults(self) -> None:
        """A fresh broker's default vhost and user (an administrator with every permission in it), as RabbitMQ
        seeds them on a node's first start when no definitions file is configured."""
        cfg = self.config
        self.add_vhost(cfg.default_vhost)
        self.access.add_user(cfg.default_user, cfg.default_pass, tags=["administrator"])
        self.access.set_permissions(cfg.default_user, cfg.default_vhost, ".*", ".*", ".*")

    def _new_vhost(self, name: str) -> VHost:
        committer = self.committer
        journal = StoreJournal(committer, name) if committer is not None else NO_JOURNAL
        vhost = VHost(name, committer, self._message_ids, journal=journal, dead_letterer=dead_letter)
        self.vhosts[name] = vhost
        return vhost

    def _vhost_for(self, name: str) -> VHost:
        return self.vhosts.get(name) or self._new_vhost(name)

    def add_vhost(self, name: str, metadata: dict[str, Any] | None = None) -> VHost:
        """A new, empty virtual host (recorded in the store, so it comes back after a restart); the existing one
        when the name is taken. Nobody has permissions in a new vhost (as in RabbitMQ)."""
        if not name:
            raise AccessConfigError("a vhost name must not be empty")
        vhost = self.vhosts.get(name)
        if vhost is None:
            vhost = self._new_vhost(name)
            if self.committer is not None:
                self.committer.add_definition(VHostRecord(name, dict(metadata or {})))
        return vhost

    def delete_vhost(self, name: str) -> bool:
        """Close the vhost's connections with RabbitMQ's 320 text, drop its queues (and their messages),
        exchanges, permissions and limits, and forget it in the store. False when there is no such vhost."""
        vhost = self.vhosts.pop(name, None)
        if vhost is None:
            return False
        text = f"CONNECTION_FORCED - vhost '{name}' is deleted"
        for conn in [c for c in self.connections if c.vhost is vhost]:
            conn.close(CONNECTION_FORCED, text)
        vhost.journal = NO_JOURNAL  # the one VHostDelete below drops everything stored under it
        for q in list(vhost.queues.values()):
            vhost.delete_queue(q)
        self.access.forget_vhost(name)
        if self.committer is not None:
            self.committer.add_definition(VHostDelete(name))
        log.info("deleted vhost '%s'", name)
        return True

    def delete_user(self, name: str) -> bool:
        """Remove a user and its permissions; its open connections are closed (320, as RabbitMQ)."""
        if not self.access.delete_user(name):
            return False
        text = f"CONNECTION_FORCED - user '{name}' is deleted"
        for conn in [c for c in self.connections if c.user is not None and c.user.name == name]:
            conn.close(CONNECTION_FORCED, text)
        return True

    def set_permissions(self, user: str, vhost: str, configure: str, write: str, read: str) -> None:
        if vhost not in self.vhosts:
            raise AccessConfigError(f"no such vhost '{vhost}'")
        self.access.set_permissions(user, vhost, configure, write, read)

    def set_topic_permissions(self, user: str, vhost: str, exchange: str, write: str, read: str) -> None:
        if vhost not in self.vhosts:
            raise AccessConfigError(f"no such vhost '{vhost}'")
        self.access.set_topic_permissions(user, vhost, exchange, write, read)

    def set_vhost_limits(self, vhost: str, limits: dict[str, Any]) -> None:
        if vhost not in self.vhosts:
            raise AccessConfigError(f"no such vhost '{vhost}'")
        self.access.set_vhost_limits(vhost, limits)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "Server.start() has not run"
        return self._loop

    @property
    def url(self) -> str:
        """The default user's URL of the plain listener, or of the TLS one when the plain one is off."""
        if not self.config.plain_listener:
            return self.tls_url
        return self._url("amqp", self.port)

    @property
    def tls_url(self) -> str:
        return self._url("amqps", self.tls_port)

    def _url(self, scheme: str, port: int) -> str:
        host = self.config.host or "127.0.0.1"
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{self.config.default_user}:{self.config.default_pass}@{host}:{port}/"

    async def _open_store(self) -> None:
        cfg = self.config
        store_url = cfg.store
        if store_url.startswith("memory:"):
            return  # nothing is persisted: skip the committer entirely, so confirms need no store round trip
        started = self.loop.time()
        self.store = open_store(store_url, cfg.data_dir)
        snapshot = await self.store.open()
        self.committer = GroupCommitter(self.store)
        self.committer.set_pressure_callback(self._on_store_pressure)
        self.committer.set_failure_callback(self._on_store_failure)
        self._message_ids = itertools.count(snapshot.next_message_id).__next__
        self.vhosts = {}
        self.access = AccessControl(self.access.loopback_users)
        for name in stored_vhosts(snapshot):
            self._new_vhost(name)
            if name not in snapshot.vhosts:
                # Data from before vhost records: record the vhost now, or it would vanish with its last queue.
                self.committer.add_definition(VHostRecord(name, {}))
        for (vhost, kind, name), setting in snapshot.settings.items():
            try:
                self.access.restore(vhost, kind, name, dict(setting.value))
            except ValueError as exc:  # a record written by hand or by a future version: the rest still loads
                log.error("stored %s '%s' (vhost '%s') is unusable and was skipped: %s", kind, name, vhost, exc)
        self.access.journal = StoreSettingsJournal(self.committer)
        if INITIALIZED not in snapshot.settings:
            # RabbitMQ seeds the default user and vhost on a node's first start only (not again once every user
            # is deleted). A store from before users were stored has none: it gets them too.
            if not self.access.users and not cfg.definitions:
                self.seed_defaults()
            self.access.journal.put(*INITIALIZED, {})
        n = recover(snapshot, self._vhost_for)
        log.info(
            "recovered %d exchanges, %d queues, %d bindings and %d messages from %s in %.2f s",
            len(snapshot.exchanges),
            len(snapshot.queues),
            len(snapshot.bindings),
            n,
            store_url or cfg.data_dir,
            self.loop.time() - started,
        )

    def _on_store_pressure(self, pressed: bool) -> None:
        if pressed and not self._store_pressure:
            log.warning("the store is falling behind: pausing persistent publishers until it catches up")
        elif not pressed and self._store_pressure:
            log.info("the store caught up: resuming publishers")
        self._store_pressure = pressed
        for conn in list(self.connections):
            if conn.published_persistent:
                conn.pause_reading_for_store(pressed)

    def _on_store_failure(self, exc: BaseException) -> None:
        log.critical("the store failed (%s): no more confirms; shutting down so nothing unconfirmed is acked", exc)
        self.loop.create_task(self.shutdown(f"store failure: {exc}"))

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        cfg = self.config
        check_settings(cfg)
        # Before the store, which may take a while to recover: a bad certificate file stops the start at once.
        tls = server_context(cfg) if cfg.tls_listener else None
        fd_limit = raise_fd_limit()
        if self.connection_limit <= 0:
            self.connection_limit = max(fd_limit - FD_RESERVE, 1)
        try:
            await self._open_store()
            await self._load_definitions_and_listen(tls)
        except BaseException:
            # Stored state, a definitions file or a listen address that fails the start: release what was opened
            # (listeners, the store's worker thread, files or database connection), not leave it to the exit.
            for listener in self._servers:
                listener.close()
            self._servers.clear()
            if self.committer is not None:
                with contextlib.suppress(Exception):
                    await self.committer.close()
            raise

    async def _load_definitions_and_listen(self, tls: ssl.SSLContext | None) -> None:
        cfg = self.config
        assert self._loop is not None
        if cfg.definitions:
            from amqpd.broker.server.definitions import load_definitions_file

            load_definitions_file(self, cfg.definitions)
        listening: list[str] = []
        if cfg.plain_listener:
            self.port, addresses = await self._listen(cfg.port, None, "--port")
            listening.append(f"{addresses} (amqp)")
        if tls is not None:
            self.tls_port, addresses = await self._listen(cfg.tls_port, tls, "--tls-port")
            listening.append(f"{addresses} (amqps)")
        log.info(
            "amqpd %s listening on %s (loop %s, Python %s, store %s)",
            self.version,
            ", ".join(listening),
            loop_name(self._loop),
            sys.version.split()[0],
            cfg.store or f"embedded:{cfg.data_dir}",
        )
        # RabbitMQ's own line, word for word: what testcontainers' RabbitMQ modules (and scripts written for the
        # rabbitmq image) wait for in the log before they connect. amqpd has no plugins, hence "0".
        log.info("Server startup complete; 0 plugins started.")

    async def _listen(self, port: int, tls: ssl.SSLContext | None, flag: str) -> tuple[int, str]:
        """Listen on `port` (0: a free one) on the configured interface; the port and the addresses, for the log."""
        assert self._loop is not None
        cfg = self.config
        hosts: list[str | None] = [cfg.host or None]
        if not cfg.host and port == 0:
            # "All interfaces" on a random port would give IPv4 and IPv6 different ports: pick it on IPv4, then
            # listen on IPv6 on the same one where the machine has IPv6.
            hosts = ["0.0.0.0", "::"]
        # A TLS handshake gets the same bound as the AMQP one; asyncio's default would be 60 s.
        extra: dict[str, Any] = {"ssl": tls, "ssl_handshake_timeout": cfg.handshake_timeout} if tls else {}
        sockets: list[Any] = []
        for host in hosts:
            try:
                server = await self._loop.create_server(
                    lambda: BrokerConnection(self), host=host, port=port, reuse_address=True, backlog=1024, **extra
                )
            except OSError as exc:
                if host == "::" and sockets:
                    continue  # no IPv6 here: IPv4 alone is fine
                raise ListenError(exc, f"{host or cfg.host or '*'}:{port}", flag) from exc
            self._servers.append(server)
            sockets.extend(server.sockets or ())
            if port == 0 and sockets:
                port = sockets[0].getsockname()[1]
        bound = sockets[0].getsockname()[1] if sockets else port
        return bound, ", ".join(f"{s.getsockname()[0]}:{s.getsockname()[1]}" for s in sockets)

    async def serve_forever(self) -> None:
        assert self._stopped is not None
        await self._stopped.wait()

    def login(self, mechanism: str, username: str, password: str | None, from_loopback: bool) -> User | None:
        return self.access.login(mechanism, username, password, from_loopback)

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

    async def shutdown(self, reason: str = "shutdown") -> None:
        """Stop accepting, close every client with 320 CONNECTION_FORCED, wait for Close-Ok, then stop.

        The reply text is RabbitMQ's for a node stop (``... with reason 'shutdown'``), which clients and
        operators already recognise in their logs."""
        if self._stopped is None or self._stopped.is_set():
            return
        log.info("shutting down: %s", reason)
        for s in self._servers:
            s.close()
        text = f"CONNECTION_FORCED - broker forced connection closure with reason '{reason}'"
        for conn in list(self.connections):
            conn.close(CONNECTION_FORCED, text)
        deadline = self.loop.time() + self.config.shutdown_timeout
        while self.connections and self.loop.time() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        for s in self._servers:
            await s.wait_closed()
        self._servers.clear()
        if self.committer is not None:
            try:
                await self.committer.close()
            except Exception as exc:  # already reported by the failure callback
                log.error("closing the store: %s", exc)
        log.info("shutdown complete")
        self._stopped.set()
