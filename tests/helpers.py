"""Test utilities: condition waiting, an in-thread broker, a broker subprocess, and a raw AMQP client.

- `wait_for` (async) / `wait_until` (sync): poll a condition with a deadline instead of sleeping.
- `ServerThread`: runs `broker.server.server.Server` on its own event loop in a background thread, so blocking
  clients (pika) and async clients (aio-pika, on the test's loop) can both talk to it.
- `AmqpdProcess`: runs ``python -m broker`` as a subprocess (for signal and crash tests).
- `RawClient`: a *blocking* socket client speaking AMQP 0-9-1 frame by frame through pamqp, for tests that
  misuse the protocol on purpose. Every read honours the client's timeout and raises `TimeoutError` when the
  broker stays silent; it is meant for sync tests (call it via ``asyncio.to_thread`` from async ones).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar
from urllib.parse import unquote, urlsplit

from pamqp import body, commands, common, frame, header, heartbeat
from pamqp.base import Frame

if TYPE_CHECKING:
    from broker.server.config import Config
    from broker.server.server import Server

T = TypeVar("T")
S = TypeVar("S", bound="FramedSocket")
REPO_ROOT = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------------------------- event loops


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


# ------------------------------------------------------------------------------------------------- waiting


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


# ---------------------------------------------------------------------------------------- in-thread broker

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
        from broker.server.server import Server  # lazily: tests that need no broker must not depend on it importing

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


# --------------------------------------------------------------------------------------- subprocess broker

LISTENING = re.compile(r"listening on \S*?:(\d+)")


class AmqpdProcess:
    """``python -m broker`` in a subprocess on 127.0.0.1 and a free port; the port is read from its log.

    Use as a context manager; on exit the process is killed if still running. `lines` collects its stderr.
    """

    def __init__(self, *args: str, env: Mapping[str, str] | None = None, start_timeout: float = 15.0) -> None:
        self.args = ["--host", "127.0.0.1", "--port", "0", "--log-level", "info", *args]
        self.env = {**os.environ, **(env or {})}
        self.start_timeout = start_timeout
        self.lines: list[str] = []
        self.port = 0
        self._listening = threading.Event()
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def __enter__(self) -> AmqpdProcess:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "broker", *self.args],
            cwd=REPO_ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        # Drain stderr continuously so a chatty broker never blocks on a full pipe.
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + self.start_timeout
        while not self._listening.wait(0.05):
            if self._proc.poll() is not None or time.monotonic() >= deadline:
                self._reader.join(2)
                self.kill()
                raise RuntimeError("amqpd did not start; its log:\n" + "".join(self.lines))
        return self

    def _read_log(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for line in self._proc.stderr:
            self.lines.append(line)
            match = LISTENING.search(line)
            if match and not self._listening.is_set():
                self.port = int(match.group(1))
                self._listening.set()

    def __exit__(self, *exc: object) -> None:
        self.kill()

    @property
    def proc(self) -> subprocess.Popen[str]:
        assert self._proc is not None
        return self._proc

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def signal(self, sig: signal.Signals, timeout: float = 15.0) -> int:
        """Send `sig` and wait for the exit code."""
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        if self._reader is not None:
            self._reader.join(2)
        return code

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)
        if self._proc is not None and self._proc.stderr is not None:
            if self._reader is not None:
                self._reader.join(2)
            self._proc.stderr.close()

    @property
    def log(self) -> str:
        return "".join(self.lines)


# ----------------------------------------------------------------------------------------- raw AMQP client

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_HEADER = struct.Struct(">BHI")
AnyFrame = Frame | header.ContentHeader | body.ContentBody | heartbeat.Heartbeat | header.ProtocolHeader

# What aio-pika announces; brokers change behaviour on some (e.g. authentication_failure_close).
CLIENT_CAPABILITIES: common.FieldTable = {
    "authentication_failure_close": True,
    "basic.nack": True,
    "connection.blocked": True,
    "consumer_cancel_notify": True,
    "publisher_confirms": True,
    "exchange_exchange_bindings": True,
    "per_consumer_qos": True,
}


class CloseInfo(NamedTuple):
    kind: str  # "channel", "connection" or "eof"
    reply_code: int
    reply_text: str
    class_id: int
    method_id: int
    channel: int = 0


EOF = CloseInfo("eof", 0, "", 0, 0)


def _close_info(
    kind: str, close: commands.Channel.Close | commands.Connection.Close, channel: int
) -> CloseInfo:
    code, text = close.reply_code or 0, close.reply_text or ""
    return CloseInfo(kind, code, text, close.class_id or 0, close.method_id or 0, channel)


class FramedSocket:
    """A blocking socket that sends and receives whole AMQP frames; both ends of a conversation can use it.

    Every read waits at most the socket's timeout and raises `TimeoutError` when the peer stays silent.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def __enter__(self: S) -> S:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    # -- sending
    def send_frame(self, data: bytes) -> None:
        """Send raw bytes: a hand-made (possibly malformed) frame, or anything else."""
        self.sock.sendall(data)

    def send_method(self, channel: int, method: Frame) -> None:
        self.sock.sendall(frame.marshal(method, channel))

    def send_frames(self, channel: int, *values: AnyFrame) -> None:
        """Marshal several frames on `channel` and send them in one write."""
        self.sock.sendall(b"".join(frame.marshal(v, channel) for v in values))

    # -- receiving
    def _fill(self, size: int) -> bool:
        while len(self.buffer) < size:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return False
            if not chunk:
                return False
            self.buffer += chunk
        return True

    def read_frame(self) -> tuple[int, AnyFrame] | None:
        """The next frame as (channel, pamqp object), heartbeats included; None once the peer hung up."""
        if not self._fill(8):
            return None
        if self.buffer.startswith(b"AMQP"):
            # A protocol header: the client's opening, or a server refusing ours with the one it speaks.
            raw = bytes(self.buffer[:8])
            del self.buffer[:8]
            return 0, header.ProtocolHeader(raw[5], raw[6], raw[7])
        _, _, size = FRAME_HEADER.unpack_from(self.buffer)
        total = FRAME_HEADER.size + size + 1
        if not self._fill(total):
            return None
        raw = bytes(self.buffer[:total])
        del self.buffer[:total]
        _, channel, value = frame.unmarshal(raw)
        return channel, value

    def expect(self, channel: int, method_type: type[T]) -> T:
        """Read until a non-heartbeat frame arrives; assert it is `method_type` on `channel`."""
        while True:
            got = self.read_frame()
            if got is None:
                raise AssertionError(f"connection closed while waiting for {method_type.__name__}")
            ch, value = got
            if isinstance(value, heartbeat.Heartbeat):
                continue
            if not isinstance(value, method_type) or ch != channel:
                wanted = f"{method_type.__name__} on channel {channel}"
                raise AssertionError(f"expected {wanted}, got {value!r} on channel {ch}")
            return value


class RawClient(FramedSocket):
    """A blocking AMQP 0-9-1 client that sends exactly the frames a test asks for.

    ``RawClient.open(url)`` connects and completes the handshake; ``RawClient(url)`` only connects, for tests
    that misbehave during the handshake itself. Frames that arrive and are not asked for are kept in
    `received` (e.g. deliveries skipped by `read_until_close`).
    """

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 5672
        self.user = unquote(parts.username) if parts.username is not None else "guest"
        self.password = unquote(parts.password) if parts.password is not None else "guest"
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        self.vhost = unquote(path) if path else "/"
        self.timeout = timeout
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().__init__(sock)
        self.received: list[tuple[int, AnyFrame]] = []
        self.server_properties: common.FieldTable = {}
        self.frame_max = 0
        self.channel_max = 0
        self.heartbeat = 0

    @classmethod
    def open(
        cls,
        url: str,
        *,
        timeout: float = 5.0,
        capabilities: common.FieldTable | None = CLIENT_CAPABILITIES,
        heartbeat: int = 0,
        frame_max: int | None = None,
        channel_max: int | None = None,
    ) -> RawClient:
        client = cls(url, timeout)
        try:
            client.handshake(
                capabilities=capabilities, heartbeat=heartbeat, frame_max=frame_max, channel_max=channel_max
            )
        except BaseException:
            client.close()
            raise
        return client

    # -- handshake
    def handshake(
        self,
        *,
        capabilities: common.FieldTable | None = CLIENT_CAPABILITIES,
        heartbeat: int = 0,
        frame_max: int | None = None,
        channel_max: int | None = None,
    ) -> None:
        """Protocol header, Start/StartOk (PLAIN), Tune/TuneOk, Open/OpenOk.

        `frame_max`/`channel_max` of None echo the server's proposal.
        """
        self.send_frame(PROTOCOL_HEADER)
        start = self.expect(0, commands.Connection.Start)
        self.server_properties = start.server_properties or {}
        props: common.FieldTable = {"product": "amqpd-tests RawClient"}
        if capabilities is not None:
            props["capabilities"] = capabilities
        self.send_method(
            0,
            commands.Connection.StartOk(
                client_properties=props,
                mechanism="PLAIN",
                response=f"\0{self.user}\0{self.password}",
                locale="en_US",
            ),
        )
        tune = self.expect(0, commands.Connection.Tune)
        self.frame_max = tune.frame_max if frame_max is None else frame_max
        self.channel_max = tune.channel_max if channel_max is None else channel_max
        self.heartbeat = heartbeat
        self.send_method(
            0,
            commands.Connection.TuneOk(
                channel_max=self.channel_max, frame_max=self.frame_max, heartbeat=heartbeat
            ),
        )
        self.send_method(0, commands.Connection.Open(virtual_host=self.vhost))
        self.expect(0, commands.Connection.OpenOk)

    def open_channel(self, channel: int = 1) -> None:
        self.send_method(channel, commands.Channel.Open())
        self.expect(channel, commands.Channel.OpenOk)

    def publish(
        self,
        channel: int,
        body_bytes: bytes,
        *,
        exchange: str = "",
        routing_key: str = "",
        properties: commands.Basic.Properties | None = None,
        mandatory: bool = False,
    ) -> None:
        """Basic.Publish + content header + body frames (split at frame_max - 8; none for an empty body)."""
        frames: list[AnyFrame] = [
            commands.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=mandatory),
            header.ContentHeader(0, len(body_bytes), properties or commands.Basic.Properties()),
        ]
        chunk = (self.frame_max or 131072) - 8
        frames.extend(body.ContentBody(body_bytes[i : i + chunk]) for i in range(0, len(body_bytes), chunk))
        self.send_frames(channel, *frames)

    def read_until_close(self, reply: bool = True) -> CloseInfo:
        """Read (and keep in `received`) everything until Channel.Close, Connection.Close or EOF.

        With `reply`, answers Channel.CloseOk / Connection.CloseOk as a well-behaved client would, so the
        broker can release the channel or connection at once.
        """
        while True:
            got = self.read_frame()
            if got is None:
                return EOF
            channel, value = got
            if isinstance(value, commands.Channel.Close):
                if reply:
                    self._reply(channel, commands.Channel.CloseOk())
                return _close_info("channel", value, channel)
            if isinstance(value, commands.Connection.Close):
                if reply:
                    self._reply(0, commands.Connection.CloseOk())
                return _close_info("connection", value, 0)
            if not isinstance(value, heartbeat.Heartbeat):
                self.received.append((channel, value))

    def _reply(self, channel: int, method: Frame) -> None:
        # The broker may already have hung up after its Close; that is its right, not a test failure.
        with contextlib.suppress(OSError):
            self.send_method(channel, method)

    def close_connection(self) -> None:
        """Polite close: Connection.Close, wait for Close-Ok (or EOF), close the socket."""
        self.send_method(0, commands.Connection.Close(200, "bye", 0, 0))
        while True:
            got = self.read_frame()
            if got is None or isinstance(got[1], commands.Connection.CloseOk):
                break
        self.close()


# -------------------------------------------------------------------------------------------- fake AMQP peer

GOOD_USER, GOOD_PASS = "guest", "guest"


class FakeBroker:
    """Serves one connection at a time on 127.0.0.1: Start, Tune, OpenOk, Close-Ok, unless told otherwise.

    `behaviour`: "healthy"; "refuse_login" (Connection.Close 403 after StartOk); "hang_up_on_login" (closes
    the socket after StartOk, as brokers do for clients without authentication_failure_close); "silent"
    (accepts, never answers); "wrong_protocol" (answers with an AMQP 1.0 header). Any behaviour answers
    530 to an Open of a vhost other than "/".
    """

    def __init__(self, behaviour: str = "healthy") -> None:
        self.behaviour = behaviour
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.seen: list[object] = []  # every frame the client sent, in order
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def url(self, user: str = GOOD_USER, password: str = GOOD_PASS, vhost: str = "") -> str:
        return f"amqp://{user}:{password}@127.0.0.1:{self.port}/{vhost}"

    def __enter__(self) -> FakeBroker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        # Wake accept() so the thread can see the stop flag.
        with socket.create_connection(("127.0.0.1", self.port), timeout=1):
            pass
        self._thread.join(5)
        self.listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            conn, _ = self.listener.accept()
            conn.settimeout(5)
            with FramedSocket(conn) as peer:
                # The client may go away mid-handshake; the test asserts on what it saw.
                if not self._stop.is_set():
                    with contextlib.suppress(OSError, AssertionError):
                        self._converse(peer)

    def _next(self, peer: FramedSocket) -> object:
        got = peer.read_frame()
        if got is None:
            raise AssertionError("client hung up")
        self.seen.append(got[1])
        return got[1]

    def _converse(self, peer: FramedSocket) -> None:
        self._next(peer)  # protocol header
        if self.behaviour == "silent":
            self._stop.wait(10)
            return
        if self.behaviour == "wrong_protocol":
            peer.send_frame(b"AMQP\x00\x01\x00\x00")
            return
        peer.send_method(
            0,
            commands.Connection.Start(
                server_properties={"product": "FakeBroker", "version": "9.9"},
                mechanisms="PLAIN AMQPLAIN",
                locales="en_US",
            ),
        )
        start_ok = self._next(peer)
        assert isinstance(start_ok, commands.Connection.StartOk)
        if start_ok.response != f"\0{GOOD_USER}\0{GOOD_PASS}":
            if self.behaviour == "hang_up_on_login":
                return
            text = "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN."
            peer.send_method(0, commands.Connection.Close(403, text, 0, 0))
            self._next(peer)  # Close-Ok
            return
        peer.send_method(0, commands.Connection.Tune(channel_max=2047, frame_max=131072, heartbeat=60))
        self._next(peer)  # TuneOk
        open_ = self._next(peer)
        assert isinstance(open_, commands.Connection.Open)
        if open_.virtual_host != "/":
            text = f"NOT_ALLOWED - vhost {open_.virtual_host} not found"
            peer.send_method(0, commands.Connection.Close(530, text, 10, 40))
            self._next(peer)
            return
        peer.send_method(0, commands.Connection.OpenOk())
        self._next(peer)  # Close
        peer.send_method(0, commands.Connection.CloseOk())


def free_port() -> int:
    """A port nothing listens on: bound and released at once (the kernel will not hand it out again soon)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


__all__ = [
    "DEFAULT_LOOP_KIND",
    "EOF",
    "GOOD_PASS",
    "GOOD_USER",
    "IDLE",
    "LOOP_FACTORIES",
    "PROTOCOL_HEADER",
    "AmqpdProcess",
    "CloseInfo",
    "FakeBroker",
    "FramedSocket",
    "LoopFactory",
    "RawClient",
    "ServerThread",
    "free_port",
    "wait_for",
    "wait_until",
]
