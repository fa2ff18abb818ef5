"""A deliberately cheap AMQP 0-9-1 client for load generation.

The benchmark client shares two cores with the broker it measures, so every microsecond it spends per message
is a microsecond taken from the broker. pamqp is used only where speed does not matter (handshake, declares,
consume); the hot frames are handled with ``struct``:

* publishing writes pre-encoded method+header+body frames, built once and repeated in batches;
* receiving cuts frames by their 7-byte header and decodes only the delivery tag of ``Basic.Deliver`` and of
  publisher-confirm ``Basic.Ack``/``Basic.Nack``; content frames are skipped (or, when latency is wanted,
  only the first 8 bytes of the body are read);
* acknowledgements are hand-encoded ``Basic.Ack`` frames, usually one ``multiple=True`` per read.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import unquote, urlsplit

from pamqp import commands, frame, header
from pamqp.base import Frame
from pamqp.body import ContentBody

FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_HEARTBEAT = 8
FRAME_END = 0xCE

_FRAME_HEADER = struct.Struct(">BHI")
_IDS = struct.Struct(">HH")
_U64 = struct.Struct(">Q")
_ACK = struct.Struct(">BHIHHQB")  # frame header + Basic.Ack(delivery_tag, multiple) without the frame end
_BODY_HEADER = struct.Struct(">BHI")

BASIC_DELIVER = (60 << 16) | 60
BASIC_ACK = (60 << 16) | 80
BASIC_NACK = (60 << 16) | 120
BASIC_RETURN = (60 << 16) | 50

WRITE_HIGH_WATER = 512 * 1024
WRITE_LOW_WATER = 128 * 1024


class AMQPError(Exception):
    """The broker closed the channel or connection (carries its reply code and text)."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code} {text}")
        self.code = code
        self.text = text


@dataclass(frozen=True, slots=True)
class URL:
    host: str
    port: int
    user: str
    password: str
    vhost: str

    @classmethod
    def parse(cls, url: str) -> URL:
        parts = urlsplit(url)
        if parts.scheme != "amqp":
            raise ValueError(f"only amqp:// URLs are supported, got {url!r}")
        vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 5672,
            user=unquote(parts.username or "guest"),
            password=unquote(parts.password or "guest"),
            vhost=vhost,
        )


def encode_ack(channel: int, delivery_tag: int, multiple: bool) -> bytes:
    return _ACK.pack(FRAME_METHOD, channel, 13, 60, 80, delivery_tag, 1 if multiple else 0) + b"\xce"


def encode_publish(
    channel: int,
    exchange: str,
    routing_key: str,
    body: bytes,
    *,
    persistent: bool = False,
    reply_to: str | None = None,
    frame_max: int = 131072,
) -> bytes:
    """One publish as wire bytes (method + content header + body frames), ready to be repeated."""
    props = commands.Basic.Properties(delivery_mode=2 if persistent else 1, reply_to=reply_to)
    out = [
        frame.marshal(commands.Basic.Publish(exchange=exchange, routing_key=routing_key), channel),
        frame.marshal(header.ContentHeader(0, len(body), props), channel),
    ]
    step = frame_max - 8
    for i in range(0, len(body), step):
        out.append(frame.marshal(ContentBody(body[i : i + step]), channel))
    return b"".join(out)


def split_publish(wire: bytes) -> tuple[bytes, bytes]:
    """Split a single-body-frame publish into (everything before the body payload, frame end).

    Lets a sender stamp each message (a timestamp in the first body bytes) by writing
    ``prefix + stamp + rest_of_body + b"\\xce"`` instead of re-encoding the frames.
    """
    # method frame, header frame, then the body frame header: 3 frames, the last one's payload is the body
    pos = 0
    for _ in range(2):
        _t, _c, size = _FRAME_HEADER.unpack_from(wire, pos)
        pos += 7 + size + 1
    return wire[: pos + 7], wire[-1:]


class Channel:
    """Per-channel state the hot path touches; callbacks are plain attributes the reader calls directly."""

    __slots__ = (
        "ack_every",
        "ack_mode",
        "closed",
        "conn",
        "last_tag",
        "number",
        "on_body",
        "on_confirm",
        "on_deliver",
        "on_nack",
        "pending_acks",
        "waiters",
        "want_body",
    )

    def __init__(self, conn: RawConnection, number: int) -> None:
        self.conn = conn
        self.number = number
        self.waiters: deque[asyncio.Future[Frame]] = deque()
        self.on_deliver: Callable[[int], None] | None = None
        self.on_confirm: Callable[[int, bool], None] | None = None
        self.on_nack: Callable[[int, bool], None] | None = None
        self.on_body: Callable[[bytes], None] | None = None  # first body frame payload of each delivery
        self.want_body = False
        self.ack_mode = "auto"  # auto (no-ack) | single | multiple
        self.ack_every = 0  # multiple: also ack mid-read after this many deliveries
        self.last_tag = 0
        self.pending_acks = 0
        self.closed: AMQPError | None = None

    # ------------------------------------------------------------------ synchronous RPC
    async def rpc(self, method: Frame) -> Frame:
        if self.closed is not None:
            raise self.closed
        fut: asyncio.Future[Frame] = self.conn.loop.create_future()
        self.waiters.append(fut)
        self.conn.write(frame.marshal(method, self.number))
        return await fut

    async def queue_declare(
        self,
        name: str,
        *,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        passive: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> commands.Queue.DeclareOk:
        ok = await self.rpc(
            commands.Queue.Declare(
                queue=name,
                durable=durable,
                exclusive=exclusive,
                auto_delete=auto_delete,
                passive=passive,
                arguments=arguments,
            )
        )
        assert isinstance(ok, commands.Queue.DeclareOk)
        return ok

    async def queue_delete(self, name: str) -> None:
        await self.rpc(commands.Queue.Delete(queue=name))

    async def queue_purge(self, name: str) -> None:
        await self.rpc(commands.Queue.Purge(queue=name))

    async def queue_bind(self, queue: str, exchange: str, routing_key: str) -> None:
        await self.rpc(commands.Queue.Bind(queue=queue, exchange=exchange, routing_key=routing_key))

    async def exchange_declare(
        self, name: str, kind: str, *, durable: bool = False, auto_delete: bool = False
    ) -> None:
        await self.rpc(
            commands.Exchange.Declare(
                exchange=name, exchange_type=kind, durable=durable, auto_delete=auto_delete
            )
        )

    async def exchange_delete(self, name: str) -> None:
        await self.rpc(commands.Exchange.Delete(exchange=name))

    async def qos(self, prefetch: int) -> None:
        await self.rpc(commands.Basic.Qos(prefetch_count=prefetch))

    async def confirm_select(self) -> None:
        await self.rpc(commands.Confirm.Select())

    async def consume(self, queue: str, *, no_ack: bool, tag: str = "") -> str:
        ok = await self.rpc(commands.Basic.Consume(queue=queue, consumer_tag=tag, no_ack=no_ack))
        assert isinstance(ok, commands.Basic.ConsumeOk)
        return ok.consumer_tag or tag

    async def close(self) -> None:
        if self.closed is None and not self.conn.is_closed:
            with contextlib.suppress(AMQPError, TimeoutError, ConnectionError):
                await asyncio.wait_for(self.rpc(_channel_close()), 5)
        self.conn.channels.pop(self.number, None)

    # ------------------------------------------------------------------ acks
    def flush_acks(self) -> None:
        """Acknowledge everything delivered so far with one multiple=True ack."""
        if self.pending_acks:
            self.pending_acks = 0
            self.conn.write(_ACK.pack(FRAME_METHOD, self.number, 13, 60, 80, self.last_tag, 1) + b"\xce")

    def fail(self, err: AMQPError) -> None:
        self.closed = err
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_exception(err)


class RawConnection(asyncio.Protocol):
    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.channels: dict[int, Channel] = {}
        self.conn_waiters: deque[asyncio.Future[Frame]] = deque()
        self.server_properties: dict[str, Any] = {}
        self.frame_max = 131072
        self.closed: BaseException | None = None
        self.lost = self.loop.create_future()
        self._writable = asyncio.Event()
        self._writable.set()
        self._touched: list[Channel] = []
        self.bytes_out = 0

    # ------------------------------------------------------------------ connect / close
    @classmethod
    async def connect(cls, url: str, *, name: str = "amqpd-bench", timeout: float = 10.0) -> RawConnection:
        u = URL.parse(url)
        loop = asyncio.get_running_loop()
        _t, conn = await asyncio.wait_for(loop.create_connection(cls, u.host, u.port), timeout)
        try:
            await asyncio.wait_for(conn._handshake(u, name), timeout)
        except BaseException:
            conn.abort()  # a half-open connection would keep holding one of the broker's sockets
            raise
        return conn

    async def _handshake(self, u: URL, name: str) -> None:
        start = await self._expect(header.ProtocolHeader())
        assert isinstance(start, commands.Connection.Start)
        self.server_properties = dict(start.server_properties or {})
        props: dict[str, Any] = {
            "product": name,
            "capabilities": {"publisher_confirms": True, "basic.nack": True, "consumer_cancel_notify": True},
        }
        ok = commands.Connection.StartOk(
            client_properties=props, mechanism="PLAIN", response=f"\0{u.user}\0{u.password}", locale="en_US"
        )
        tune = await self._expect(ok)
        assert isinstance(tune, commands.Connection.Tune)
        self.frame_max = min(tune.frame_max or 131072, 131072)
        # heartbeat 0: a benchmark run is short and idle connections must not cost timer wake-ups
        self.write(frame.marshal(commands.Connection.TuneOk(tune.channel_max, self.frame_max, 0), 0))
        opened = await self._expect(commands.Connection.Open(virtual_host=u.vhost))
        assert isinstance(opened, commands.Connection.OpenOk)

    async def _expect(self, out: Frame | header.ProtocolHeader) -> Frame:
        fut: asyncio.Future[Frame] = self.loop.create_future()
        self.conn_waiters.append(fut)
        self.write(frame.marshal(out, 0))
        return await fut

    async def channel(self, number: int | None = None) -> Channel:
        if number is None:
            number = max(self.channels, default=0) + 1
        ch = Channel(self, number)
        self.channels[number] = ch
        ok = await ch.rpc(commands.Channel.Open())
        assert isinstance(ok, commands.Channel.OpenOk)
        return ch

    async def close(self) -> None:
        if self.transport is None or self.closed is not None:
            return
        with contextlib.suppress(AMQPError, TimeoutError, ConnectionError):
            await asyncio.wait_for(self._expect(_connection_close()), 5)
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    @property
    def is_closed(self) -> bool:
        return self.closed is not None

    @property
    def version(self) -> str:
        v = self.server_properties.get("version", "")
        return v.decode() if isinstance(v, bytes) else str(v)

    @property
    def product(self) -> str:
        v = self.server_properties.get("product", "")
        return v.decode() if isinstance(v, bytes) else str(v)

    # ------------------------------------------------------------------ output and flow control
    def write(self, data: bytes) -> None:
        t = self.transport
        if t is None or self.closed is not None:
            raise ConnectionError(f"connection closed: {self.closed}")
        self.bytes_out += len(data)
        t.write(data)

    async def drain(self) -> None:
        if not self._writable.is_set():
            await self._writable.wait()
        if self.closed is not None:
            raise ConnectionError(f"connection closed: {self.closed}")

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # ------------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, so cast rather than check
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_LOW_WATER)

    def connection_lost(self, exc: Exception | None) -> None:
        err = self.closed or exc or ConnectionError("connection lost")
        self.closed = err
        self._writable.set()  # wake publishers so they see the error
        amqp_err = err if isinstance(err, AMQPError) else AMQPError(320, str(err))
        for ch in self.channels.values():
            ch.fail(amqp_err)
        while self.conn_waiters:
            fut = self.conn_waiters.popleft()
            if not fut.done():
                fut.set_exception(amqp_err)
        if not self.lost.done():
            self.lost.set_result(None)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        n = len(buf)
        pos = 0
        channels = self.channels
        touched = self._touched
        unpack_header = _FRAME_HEADER.unpack_from
        while n - pos >= 8:
            ftype, chan, size = unpack_header(buf, pos)
            end = pos + 7 + size
            if end >= n:
                break
            if ftype == FRAME_METHOD:
                cm = (buf[pos + 7] << 24) | (buf[pos + 8] << 16) | (buf[pos + 9] << 8) | buf[pos + 10]
                ch = channels.get(chan)
                if cm == BASIC_DELIVER and ch is not None:
                    # consumer tag (shortstr) then the delivery tag
                    tag = _U64.unpack_from(buf, pos + 12 + buf[pos + 11])[0]
                    ch.last_tag = tag
                    if ch.ack_mode != "auto":
                        if ch.ack_mode == "single":
                            self.write(_ACK.pack(FRAME_METHOD, chan, 13, 60, 80, tag, 0) + b"\xce")
                        else:
                            if not ch.pending_acks:
                                touched.append(ch)
                            ch.pending_acks += 1
                            if ch.pending_acks >= ch.ack_every > 0:
                                ch.flush_acks()
                    if ch.on_body is not None:
                        ch.want_body = True
                    cb = ch.on_deliver
                    if cb is not None:
                        cb(tag)
                elif cm == BASIC_ACK and ch is not None and ch.on_confirm is not None:
                    ch.on_confirm(_U64.unpack_from(buf, pos + 11)[0], bool(buf[pos + 19] & 1))
                elif cm == BASIC_NACK and ch is not None and ch.on_nack is not None:
                    ch.on_nack(_U64.unpack_from(buf, pos + 11)[0], bool(buf[pos + 19] & 1))
                else:
                    self._slow_frame(bytes(buf[pos : end + 1]))
            elif ftype == FRAME_BODY:
                ch = channels.get(chan)
                if ch is not None and ch.want_body and ch.on_body is not None:
                    ch.want_body = False
                    ch.on_body(bytes(buf[pos + 7 : end]))
            elif ftype == FRAME_HEARTBEAT:
                self.write(b"\x08\x00\x00\x00\x00\x00\x00\xce")
            # content headers need nothing: body size is implied by the body frames that follow
            pos = end + 1
        if pos:
            del buf[:pos]
        if touched:
            for ch in touched:
                ch.flush_acks()
            touched.clear()

    def _slow_frame(self, raw: bytes) -> None:
        _n, chan, f = frame.unmarshal(raw)
        if not isinstance(f, Frame):
            return
        if chan == 0:
            if isinstance(f, commands.Connection.Close):
                err = AMQPError(f.reply_code or 0, f.reply_text or "")
                self.write(frame.marshal(commands.Connection.CloseOk(), 0))
                self.closed = err
                if self.transport is not None:
                    self.transport.close()
                return
            if isinstance(f, commands.Connection.Blocked | commands.Connection.Unblocked):
                return
            if self.conn_waiters:
                self.conn_waiters.popleft().set_result(f)
            return
        ch = self.channels.get(chan)
        if ch is None:
            return
        if isinstance(f, commands.Channel.Close):
            self.write(frame.marshal(commands.Channel.CloseOk(), chan))
            ch.fail(AMQPError(f.reply_code or 0, f.reply_text or ""))
            self.channels.pop(chan, None)
            return
        if isinstance(f, commands.Basic.Return | commands.Basic.Cancel):
            return
        if ch.waiters:
            fut = ch.waiters.popleft()
            if not fut.done():
                fut.set_result(f)


def _channel_close() -> commands.Channel.Close:
    return commands.Channel.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0)


def _connection_close() -> commands.Connection.Close:
    return commands.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0)


def body_frame(channel: int, payload: bytes) -> bytes:
    return _BODY_HEADER.pack(FRAME_BODY, channel, len(payload)) + payload + b"\xce"
