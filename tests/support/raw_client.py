"""`RawClient`: a *blocking* socket client speaking AMQP 0-9-1 frame by frame through pamqp, for tests that
misuse the protocol on purpose. Every read honours the client's timeout and raises `TimeoutError` when the
broker stays silent; it is meant for sync tests (call it via ``asyncio.to_thread`` from async ones).

`FramedSocket` is the frame-level socket under it, usable for either end of a conversation.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
from collections.abc import Callable
from types import TracebackType
from typing import NamedTuple, TypeVar
from urllib.parse import unquote, urlsplit

from pamqp import body, commands, common, frame, header, heartbeat
from pamqp.base import Frame

T = TypeVar("T")
S = TypeVar("S", bound="FramedSocket")

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
        # A reset reads as EOF by default (a test about *what* the broker says need not care how it hung up);
        # tests about *how* a connection ends set this to False, so ECONNRESET raises ConnectionResetError.
        self.reset_is_eof = True

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
                if not self.reset_is_eof:
                    raise
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

    def __init__(self, url: str, timeout: float = 5.0, *, tls: ssl.SSLContext | None = None) -> None:
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
        if tls is not None:  # amqps: TLS over the same socket (the handshake happens here)
            try:
                sock = tls.wrap_socket(sock, server_hostname=self.host)
            except BaseException:
                sock.close()
                raise
        super().__init__(sock)
        self.received: list[tuple[int, AnyFrame]] = []
        self.server_properties: common.FieldTable = {}
        self.mechanisms = ""  # what the server's Connection.Start offered
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
        tls: ssl.SSLContext | None = None,
        mechanism: str = "PLAIN",
    ) -> RawClient:
        client = cls(url, timeout) if tls is None else cls(url, timeout, tls=tls)  # subclasses may not take tls
        try:
            client.handshake(
                capabilities=capabilities,
                heartbeat=heartbeat,
                frame_max=frame_max,
                channel_max=channel_max,
                mechanism=mechanism,
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
        mechanism: str = "PLAIN",
    ) -> None:
        """Protocol header, Start/StartOk (PLAIN, or EXTERNAL over TLS), Tune/TuneOk, Open/OpenOk.

        `frame_max`/`channel_max` of None echo the server's proposal.
        """
        self.send_frame(PROTOCOL_HEADER)
        start = self.expect(0, commands.Connection.Start)
        self.server_properties = start.server_properties or {}
        self.mechanisms = start.mechanisms
        props: common.FieldTable = {"product": "amqpd-tests RawClient"}
        if capabilities is not None:
            props["capabilities"] = capabilities
        self.send_method(
            0,
            commands.Connection.StartOk(
                client_properties=props,
                mechanism=mechanism,
                response="" if mechanism == "EXTERNAL" else f"\0{self.user}\0{self.password}",
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

    def read_sequence(self, until: Callable[[list[tuple[int, str]]], bool]) -> list[tuple[int, str]]:
        """Read frames in wire order until ``until(sequence)`` holds; returns ``(channel, name)`` for each method
        received (heartbeats and content frames left out; names as pamqp's, e.g. ``"Basic.Cancel"``).

        The frames themselves are kept in `received`, in order, for a test that wants their fields. Raises
        `AssertionError` when the broker hangs up first and `TimeoutError` when it stays silent.
        """
        sequence: list[tuple[int, str]] = []
        while not until(sequence):
            got = self.read_frame()
            if got is None:
                raise AssertionError(f"connection closed after {sequence}")
            channel, value = got
            if isinstance(value, heartbeat.Heartbeat):
                continue
            self.received.append((channel, value))
            if isinstance(value, Frame):  # content headers and bodies are not
                sequence.append((channel, value.name))
        return sequence

    def read_methods(self, count: int) -> list[tuple[int, str]]:
        """The next ``count`` methods, in wire order, as ``(channel, name)`` (see `read_sequence`)."""
        return self.read_sequence(lambda seq: len(seq) >= count)

    def read_through(self, channel: int, name: str) -> list[tuple[int, str]]:
        """Methods in wire order up to and including the first ``name`` on ``channel`` (see `read_sequence`)."""
        return self.read_sequence(lambda seq: bool(seq) and seq[-1] == (channel, name))

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
