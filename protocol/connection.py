"""The AMQP 0-9-1 connection state machine, sans-IO.

Bytes go in through :meth:`AMQPConnection.receive_data`; bytes to send collect in an output list that the I/O shell
drains with :meth:`data_to_send`. Semantics (login check, vhosts, exchanges, queues) live in a handler object.

Why a handler with methods rather than a list of event objects (as h11 does): the publish → ack hot path runs
hundreds of thousands of times a second, and a direct call per complete command saves an allocation and a dispatch
per frame; the layer is still free of I/O and is tested byte by byte with a recording handler.

This layer owns everything the spec fixes regardless of semantics: handshake, tune negotiation, channel lifecycle
(including discarding frames on a channel we closed until its Close-Ok), content assembly with size limits, close
handshakes, and turning every :class:`AMQPError` raised by the handler into Channel.Close or Connection.Close.
"""

from __future__ import annotations

import enum
import logging
import platform
import struct
from collections.abc import Callable
from typing import Any, Protocol

from pamqp import commands, exceptions
from pamqp import frame as pamqp_frame
from pamqp.base import Frame

from amqpd.protocol import fastcodec
from amqpd.protocol.constants import (
    BASIC_ACK_ID,
    BASIC_NACK_ID,
    BASIC_PUBLISH,
    BASIC_PUBLISH_ID,
    BASIC_REJECT_ID,
    CHANNEL_CLOSE_ID,
    CHANNEL_CLOSE_OK_ID,
    CHANNEL_OPEN,
    CHANNEL_OPEN_ID,
    CLASS_BASIC,
    CLASS_CHANNEL,
    CLASS_CONNECTION,
    CONNECTION_CLOSE_ID,
    CONNECTION_CLOSE_OK_ID,
    CONNECTION_TUNE_OK,
    CONTENT_HEADER_MIN_SIZE,
    FRAME_BODY,
    FRAME_HEADER,
    FRAME_HEARTBEAT,
    FRAME_METHOD,
    FRAME_MIN_SIZE,
    HEARTBEAT_FRAME,
    PROTOCOL_HEADER,
    split_method_id,
)
from amqpd.protocol.errors import (
    ACCESS_REFUSED,
    CHANNEL_ERROR,
    COMMAND_INVALID,
    FRAME_ERROR,
    INTERNAL_ERROR,
    NOT_ALLOWED,
    NOT_IMPLEMENTED,
    PRECONDITION_FAILED,
    SYNTAX_ERROR,
    UNEXPECTED_FRAME,
    AMQPError,
    ChannelError,
    ConnectionError_,
)
from amqpd.protocol.framing import FRAME_PUBLISH, FrameReader, ProtocolHeaderMismatch, erlang_octets

log = logging.getLogger("amqpd.protocol")


class ConnectionState(enum.StrEnum):
    """Named as RabbitMQ names them in its error texts; being strings, they compare equal to those texts."""

    STARTING = "starting"
    TUNING = "tuning"
    OPENING = "opening"
    RUNNING = "running"
    CLOSING = "closing"
    CLOSED = "closed"


# Module-level names, as the broker imports them (``from protocol.connection import RUNNING``).
STARTING = ConnectionState.STARTING
TUNING = ConnectionState.TUNING
OPENING = ConnectionState.OPENING
RUNNING = ConnectionState.RUNNING
CLOSING = ConnectionState.CLOSING
CLOSED = ConnectionState.CLOSED

_METHOD_ID = struct.Struct(">I")
_CONTENT_HEADER = struct.Struct(">HHQ")  # class id, weight, body size

# Methods only a server sends: a client sending one gets 503 as RabbitMQ's channel does.
_SERVER_ONLY = frozenset(
    cls.index
    for cls in (
        commands.Basic.Deliver,
        commands.Basic.GetOk,
        commands.Basic.GetEmpty,
        commands.Basic.Return,
        commands.Basic.ConsumeOk,
        commands.Basic.QosOk,
        commands.Basic.RecoverOk,
        commands.Exchange.DeclareOk,
        commands.Exchange.DeleteOk,
        commands.Exchange.BindOk,
        commands.Exchange.UnbindOk,
        commands.Queue.DeclareOk,
        commands.Queue.BindOk,
        commands.Queue.UnbindOk,
        commands.Queue.PurgeOk,
        commands.Queue.DeleteOk,
        commands.Tx.SelectOk,
        commands.Tx.CommitOk,
        commands.Tx.RollbackOk,
        commands.Confirm.SelectOk,
        commands.Channel.OpenOk,
    )
)
_KNOWN_CLASSES = frozenset(index >> 16 for index in commands.INDEX_MAPPING)
_FIXED_ONLY_SIZES = fastcodec.FIXED_ONLY_SIZES
_TAG_METHOD_SIZE = 4 + 8 + 1  # method id, delivery tag, one bit octet (Ack, Nack, Reject)
_U8 = struct.Struct(">B")
_U32 = struct.Struct(">I")
_ARGUMENT_TYPES: dict[type[Frame], tuple[str, ...]] = {}


def arguments_size(method: Frame, data: bytes) -> int:
    """How many octets of ``data`` the arguments of ``method`` span, read from the lengths on the wire (pamqp
    decoded them already; this only says where they end). Consecutive bits share an octet."""
    types = _ARGUMENT_TYPES.get(type(method))
    if types is None:
        types = _ARGUMENT_TYPES[type(method)] = tuple(method.amqp_type(name) for name in method.__slots__)
    pos = 0
    bits = 0
    for kind in types:
        if kind == "bit":
            if bits == 0 or bits == 8:
                pos += 1
                bits = 0
            bits += 1
            continue
        bits = 0
        if kind == "shortstr":
            pos += 1 + _U8.unpack_from(data, pos)[0]
        elif kind in ("longstr", "table"):
            pos += 4 + _U32.unpack_from(data, pos)[0]
        else:
            pos += _FIXED_ARGUMENT_SIZES[kind]
    return pos


_FIXED_ARGUMENT_SIZES = {"octet": 1, "short": 2, "long": 4, "longlong": 8, "timestamp": 8}


class ConnectionHandler(Protocol):
    """What the protocol layer asks of the broker. Any method may raise :class:`AMQPError`."""

    def on_login(self, mechanism: str, username: str, password: str, client_properties: dict[str, Any]) -> bool:
        """Whether the login may go ahead. For EXTERNAL, username and password are empty: the identity comes
        from outside AMQP (the TLS client certificate), and the handler sets `AMQPConnection.username`."""
        ...

    def on_open_vhost(self, vhost: str) -> None: ...
    def on_channel_open(self, channel: int) -> None: ...
    def on_channel_closed(self, channel: int) -> None: ...
    def on_method(self, channel: int, method: Frame) -> None: ...
    def on_publish(
        self, channel: int, exchange: str, routing_key: str, mandatory: bool, header: bytes, body: bytes
    ) -> None: ...
    def on_ack(self, channel: int, delivery_tag: int, multiple: bool) -> None: ...
    def on_nack(self, channel: int, delivery_tag: int, multiple: bool, requeue: bool) -> None: ...
    def on_reject(self, channel: int, delivery_tag: int, requeue: bool) -> None: ...
    def on_close(self) -> None: ...


class _Channel:
    """Per-channel framing state: content assembly and the 'closed by us, awaiting Close-Ok' flag."""

    __slots__ = (
        "body_size",
        "closing",
        "exchange",
        "header",
        "mandatory",
        "parts",
        "received",
        "routing_key",
    )

    def __init__(self) -> None:
        self.closing = False
        self.exchange: str | None = None  # not None while a publish awaits its content
        self.routing_key = ""
        self.mandatory = False
        self.header: bytes | None = None
        self.body_size = 0
        self.received = 0
        self.parts: list[bytes] = []


def server_properties(version: str, product: str = "amqpd") -> dict[str, Any]:
    return {
        "product": product,
        "version": version,
        "platform": f"Python {platform.python_version()}",
        "copyright": "amqpd contributors",
        "information": "Licensed under the MIT license",
        "cluster_name": "amqpd@localhost",
        "capabilities": {
            "publisher_confirms": True,
            "exchange_exchange_bindings": True,
            "basic.nack": True,
            "consumer_cancel_notify": True,
            "connection.blocked": True,
            "consumer_priorities": True,
            "authentication_failure_close": True,
            "per_consumer_qos": True,
            "direct_reply_to": True,
        },
    }


# What Connection.Start offers: by default what RabbitMQ 3.10 offers; a handler that can vouch for the peer by
# other means (a verified TLS client certificate) offers EXTERNAL as well (see AMQPConnection.mechanisms).
# RabbitMQ's order comes from an unordered registry table; clients pick by their own preference anyway.
PASSWORD_MECHANISMS = "AMQPLAIN PLAIN"
WITH_EXTERNAL = "EXTERNAL AMQPLAIN PLAIN"


def parse_credentials(mechanism: str, response: str | bytes) -> tuple[str, str] | None:
    """PLAIN (``authzid\\0user\\0pass``) or AMQPLAIN (a field table without its length prefix)."""
    raw = response.encode("utf-8", "surrogateescape") if isinstance(response, str) else bytes(response)
    if mechanism == "PLAIN":
        parts = raw.split(b"\x00")
        if len(parts) != 3:
            return None
        return parts[1].decode("utf-8", "replace"), parts[2].decode("utf-8", "replace")
    if mechanism == "AMQPLAIN":
        from pamqp import decode

        try:
            _, table = decode.field_table(struct.pack(">I", len(raw)) + raw)
        except (ValueError, struct.error):
            return None
        user, password = table.get("LOGIN"), table.get("PASSWORD")
        if isinstance(user, bytes):
            user = user.decode("utf-8", "replace")
        if isinstance(password, bytes):
            password = password.decode("utf-8", "replace")
        if not isinstance(user, str) or not isinstance(password, str):
            return None
        return user, password
    return None


class AMQPConnection:
    """One client connection's protocol state. Not thread-safe; driven by the I/O shell."""

    def __init__(
        self,
        handler: ConnectionHandler,
        *,
        version: str = "0",
        channel_max: int = 2047,
        frame_max: int = 131072,
        heartbeat: int = 60,
        max_message_size: int = 128 * 1024 * 1024,
        mechanisms: str = PASSWORD_MECHANISMS,
    ) -> None:
        self.handler = handler
        # The SASL mechanisms Connection.Start offers, space-separated; may change until Start is sent, which
        # happens when the client's protocol header arrives (the I/O shell sets it on connection_made).
        self.mechanisms = mechanisms
        self.version = version
        self.server_channel_max = channel_max
        self.server_frame_max = frame_max
        self.server_heartbeat = heartbeat
        self.max_message_size = max_message_size
        self.state: ConnectionState = STARTING
        # Spec (frame-max): until Tune-Ok, frames are at most frame-min-size (4096), as RabbitMQ enforces too;
        # an unauthenticated peer cannot make us buffer more than that.
        self.reader = FrameReader(FRAME_MIN_SIZE)
        self.channel_max = channel_max
        self.frame_max = frame_max
        self.heartbeat = heartbeat
        self.client_properties: dict[str, Any] = {}
        self.capabilities: dict[str, Any] = {}
        self.mechanism = ""
        self.username = ""
        self.vhost = ""
        self.close_reason: AMQPError | None = None
        self.channels: dict[int, _Channel] = {}
        self.out: list[bytes] = []
        self.on_output: Callable[[], None] | None = None

    # ------------------------------------------------------------------ output
    def send(self, data: bytes) -> None:
        out = self.out
        if not out and self.on_output is not None:
            self.on_output()
        out.append(data)

    def send_method(self, channel: int, method: Frame) -> None:
        self.send(pamqp_frame.marshal(method, channel))

    def send_heartbeat(self) -> None:
        self.send(HEARTBEAT_FRAME)

    def data_to_send(self) -> bytes:
        out = self.out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        return data

    # ------------------------------------------------------------------ input
    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the socket. Raises ProtocolHeaderMismatch for a non-AMQP-0-9-1 peer."""
        if self.state is CLOSED:
            return
        reader = self.reader
        try:
            frames = reader.feed(data)
        except ProtocolHeaderMismatch:
            self.send(PROTOCOL_HEADER)
            self.state = CLOSED
            raise
        if not self._start_sent:
            if not self.reader.header_seen:
                return
            self._send_start()
        for ftype, channel, payload, content_header, body in frames:
            state = self.state
            if state is RUNNING and channel:
                if ftype == FRAME_PUBLISH:
                    self._publish(channel, payload, content_header, body)
                else:
                    self._channel_frame(ftype, channel, payload)
            elif state is CLOSED:
                return
            elif ftype == FRAME_PUBLISH:
                # A publish outside a running channel: treat its three frames one by one, as they arrived.
                for sub_type, sub_payload in (
                    (FRAME_METHOD, payload),
                    (FRAME_HEADER, content_header),
                    (FRAME_BODY, body),
                ):
                    if sub_type == FRAME_BODY and not sub_payload:
                        break
                    if self.state is CLOSING:
                        self._closing_frame(sub_type, channel, sub_payload)
                    elif self.state is not CLOSED:
                        self._connection_frame(sub_type, channel, sub_payload)
            elif state is CLOSING:
                self._closing_frame(ftype, channel, payload)
            else:
                self._connection_frame(ftype, channel, payload)
        if reader.error is not None:
            err, reader.error = reader.error, None
            self._connection_error(err)

    _start_sent = False

    def _send_start(self) -> None:
        self._start_sent = True
        self.send_method(
            0,
            commands.Connection.Start(
                version_major=0,
                version_minor=9,
                server_properties=server_properties(self.version),
                mechanisms=self.mechanisms,
                locales="en_US",
            ),
        )

    # ------------------------------------------------------------------ channel frames (hot)
    def _publish(self, channel: int, method: bytes, header: bytes, body: bytes) -> None:
        """A complete publish cut in one piece by the frame reader (see FRAME_PUBLISH): the common case.

        Only the well-formed case is handled here; anything that needs an error reply is replayed through the
        one-frame-at-a-time path, which knows every error's exact code and text."""
        chan = self.channels.get(channel)
        # The class id is a big-endian short; Basic's fits in its low octet, so two index reads check it.
        if (
            chan is not None
            and not chan.closing
            and chan.exchange is None
            and header[0] == 0
            and header[1] == CLASS_BASIC
            and header[2] == 0
            and header[3] == 0  # weight: anything else is refused (505) on the slow path
            and (
                _FIXED_ONLY_SIZES.get(header[12] << 8 | header[13]) == len(header)
                or fastcodec.check_properties(header) is None
            )
        ):
            try:
                exchange, routing_key, mandatory, immediate = fastcodec.decode_publish(method)
                n = method[6]  # no octet may follow the arguments (publish_size, inline)
                exact = len(method) == 9 + n + method[7 + n]
            except ValueError:
                exact = False  # replayed below, to get the precise decode error
            if exact and not immediate and len(body) <= self.max_message_size:
                try:
                    self.handler.on_publish(channel, exchange, routing_key, mandatory, header, body)
                except AMQPError as err:
                    self._error(channel, err.with_method(*BASIC_PUBLISH))
                except Exception as exc:  # a bug in the broker must not take the process down
                    log.exception("internal error on channel %d", channel)
                    self._connection_error(ConnectionError_(INTERNAL_ERROR, f"internal error: {type(exc).__name__}"))
                return
        self._channel_frame(FRAME_METHOD, channel, method)
        if self.state is RUNNING:
            self._channel_frame(FRAME_HEADER, channel, header)
        if body and self.state is RUNNING:
            self._channel_frame(FRAME_BODY, channel, body)

    def _channel_frame(self, ftype: int, channel: int, payload: bytes) -> None:
        chan = self.channels.get(channel)
        try:
            if ftype == FRAME_METHOD:
                mid = _METHOD_ID.unpack_from(payload)[0] if len(payload) >= 4 else -1
                if chan is None:
                    self._unopened_channel_method(channel, mid, payload)
                    return
                if chan.closing:
                    self._closing_channel_method(channel, mid)
                    return
                if chan.exchange is not None:
                    # RabbitMQ names the publish whose content was cut short (class 60, method 40).
                    raise ConnectionError_(
                        UNEXPECTED_FRAME,
                        f"expected content header for class {CLASS_BASIC}, got non content header frame instead"
                        if chan.header is None
                        else "expected content body, got non content body frame instead",
                        *BASIC_PUBLISH,
                    )
                if mid == BASIC_PUBLISH_ID:
                    try:
                        exchange, routing_key, mandatory, immediate = fastcodec.decode_publish(payload)
                        if len(payload) != fastcodec.publish_size(payload):
                            raise ValueError("octets left over after the arguments")
                    except UnicodeDecodeError:
                        raise ConnectionError_(FRAME_ERROR, "Malformed UTF-8 in shortstr") from None
                    except (ValueError, struct.error, IndexError):
                        raise ConnectionError_(
                            FRAME_ERROR, f"cannot decode {erlang_octets(payload[4:])}", *BASIC_PUBLISH
                        ) from None
                    if immediate:
                        raise ConnectionError_(NOT_IMPLEMENTED, "immediate=true", *BASIC_PUBLISH)
                    chan.exchange = exchange
                    chan.routing_key = routing_key
                    chan.mandatory = mandatory
                    return
                if mid == BASIC_ACK_ID:
                    tag, multiple = self._decode_small(fastcodec.decode_ack, payload)
                    self.handler.on_ack(channel, tag, multiple)
                    return
                if mid == BASIC_NACK_ID:
                    tag, multiple, requeue = self._decode_small(fastcodec.decode_nack, payload)
                    self.handler.on_nack(channel, tag, multiple, requeue)
                    return
                if mid == BASIC_REJECT_ID:
                    tag, requeue = self._decode_small(fastcodec.decode_reject, payload)
                    self.handler.on_reject(channel, tag, requeue)
                    return
                method = self._decode_method(mid, payload)
                self._channel_method(channel, chan, method)
            elif ftype == FRAME_HEADER:
                if chan is None:
                    # RabbitMQ checks the frame type before the channel: no method, so no channel.open either.
                    raise ConnectionError_(UNEXPECTED_FRAME, "expected method frame, got non method frame instead")
                if chan.closing:
                    return
                self._content_header(channel, chan, payload)
            elif ftype == FRAME_BODY:
                if chan is None:
                    raise ConnectionError_(UNEXPECTED_FRAME, "expected method frame, got non method frame instead")
                if chan.closing:
                    return
                if chan.exchange is None or chan.header is None:
                    if chan.exchange is None:
                        raise ConnectionError_(UNEXPECTED_FRAME, "expected method frame, got non method frame instead")
                    raise ConnectionError_(
                        UNEXPECTED_FRAME,
                        f"expected content header for class {CLASS_BASIC}, got non content header frame instead",
                        *BASIC_PUBLISH,
                    )
                received = chan.received + len(payload)
                if received > chan.body_size:
                    raise ConnectionError_(FRAME_ERROR, "content body frame exceeds remaining content size")
                chan.received = received
                chan.parts.append(payload)
                if received == chan.body_size:
                    parts = chan.parts
                    body = parts[0] if len(parts) == 1 else b"".join(parts)
                    self._complete_publish(channel, chan, body)
            else:  # heartbeat on channel != 0 is rejected by the frame reader
                raise ConnectionError_(UNEXPECTED_FRAME, f"type {ftype}, all octets = <<>>")
        except AMQPError as err:
            self._error(channel, err)
        except Exception as exc:  # a bug in the broker must not take the process down
            log.exception("internal error on channel %d", channel)
            self._connection_error(ConnectionError_(INTERNAL_ERROR, f"internal error: {type(exc).__name__}"))

    def _decode_small(self, decoder: Callable[[bytes], Any], payload: bytes) -> Any:
        """Ack, Nack, Reject: a delivery tag and one bit octet, exactly (RabbitMQ refuses left-over octets)."""
        try:
            if len(payload) != _TAG_METHOD_SIZE:
                raise ValueError("not a tag method's size")
            return decoder(payload)
        except (ValueError, struct.error, IndexError):
            mid = _METHOD_ID.unpack_from(payload)[0]
            raise ConnectionError_(
                FRAME_ERROR, f"cannot decode {erlang_octets(payload[4:])}", *split_method_id(mid)
            ) from None

    def _decode_method(self, mid: int, payload: bytes) -> Frame:
        if mid < 0:
            # Too short to name a method: RabbitMQ's frame parser does not recognise it as a method frame.
            raise ConnectionError_(
                FRAME_ERROR, f"type {FRAME_METHOD}, all octets = {erlang_octets(payload)}: unknown_frame"
            )
        if mid not in commands.INDEX_MAPPING:
            class_id, method_id = split_method_id(mid)
            if class_id not in _KNOWN_CLASSES:
                raise ConnectionError_(NOT_IMPLEMENTED, f"unknown class {class_id}", class_id, method_id)
            raise ConnectionError_(
                COMMAND_INVALID, f"unknown method {method_id} of class {class_id}", class_id, method_id
            )
        cls: type[Frame] = commands.INDEX_MAPPING[mid]
        # Not cls(): unmarshal sets every argument anyway, and the constructor of a deprecated method
        # (Basic.RecoverAsync) warns, which under warnings-as-errors would turn a client's frame into a 541.
        method: Frame = cls.__new__(cls)
        try:
            arguments = payload[4:]
            method.unmarshal(arguments)
            # pamqp ignores octets after the last argument and cuts a short string that runs past the end short;
            # RabbitMQ refuses both (501 "cannot decode").
            if arguments_size(method, arguments) != len(arguments):
                raise ValueError("arguments do not fill the frame exactly")
        except UnicodeDecodeError:
            raise ConnectionError_(FRAME_ERROR, "Malformed UTF-8 in shortstr") from None
        except (ValueError, struct.error, IndexError, RecursionError, exceptions.PAMQPException) as exc:
            code = SYNTAX_ERROR if "Unknown type" in str(exc) else FRAME_ERROR
            detail = (
                f"cannot decode field table in {method.name}"
                if code == SYNTAX_ERROR
                else f"cannot decode {erlang_octets(payload[4:])}"
            )
            raise ConnectionError_(code, detail, *split_method_id(mid)) from None
        return method

    def _unopened_channel_method(self, channel: int, mid: int, payload: bytes) -> None:
        if mid == CHANNEL_OPEN_ID:
            if len(self.channels) >= self.channel_max:
                raise ConnectionError_(
                    NOT_ALLOWED,
                    f"number of channels opened ({len(self.channels)}) has reached the negotiated "
                    f"channel_max ({self.channel_max})",
                )
            self.channels[channel] = _Channel()
            self.handler.on_channel_open(channel)
            self.send_method(channel, commands.Channel.OpenOk())
            return
        self._decode_method(mid, payload)  # unknown ids get their own error first
        raise ConnectionError_(CHANNEL_ERROR, "expected 'channel.open'", *split_method_id(mid))

    def _closing_channel_method(self, channel: int, mid: int) -> None:
        """We closed this channel: drop everything but Close / Close-Ok (spec 2.3.6, RabbitMQ does the same).

        A Close here crossed ours on the wire (the client closed the channel while our Close was in flight): it
        gets its Close-Ok, and the channel stays ours to discard until the Close-Ok for *our* Close arrives, which
        the client sends next. Freeing it now would turn that Close-Ok into a frame on an unopened channel (504)."""
        if mid == CHANNEL_CLOSE_OK_ID:
            del self.channels[channel]
        elif mid == CHANNEL_CLOSE_ID:
            self.send_method(channel, commands.Channel.CloseOk())

    def _channel_method(self, channel: int, chan: _Channel, method: Frame) -> None:
        index = method.index
        class_id = index >> 16
        if class_id == CLASS_CONNECTION:
            raise ConnectionError_(COMMAND_INVALID, "unimplemented method", *split_method_id(index))
        if class_id == CLASS_CHANNEL:
            if isinstance(method, commands.Channel.Close):
                self._release_channel(channel)
                self.send_method(channel, commands.Channel.CloseOk())
                return
            if isinstance(method, commands.Channel.CloseOk):
                return  # a Close-Ok we did not ask for: nothing to do
            if isinstance(method, commands.Channel.Open):
                raise ConnectionError_(CHANNEL_ERROR, "second 'channel.open' seen", *CHANNEL_OPEN)
            if isinstance(method, commands.Channel.FlowOk):
                return
        if index in _SERVER_ONLY:
            raise ConnectionError_(COMMAND_INVALID, "unimplemented method", *split_method_id(index))
        try:
            self.handler.on_method(channel, method)
        except AMQPError as err:
            raise err.with_method(*split_method_id(index)) from None

    def _release_channel(self, channel: int) -> None:
        self.channels.pop(channel, None)
        self.handler.on_channel_closed(channel)

    def _content_header(self, channel: int, chan: _Channel, payload: bytes) -> None:
        if chan.exchange is None:
            raise ConnectionError_(UNEXPECTED_FRAME, "expected method frame, got non method frame instead")
        if chan.header is not None:
            raise ConnectionError_(
                UNEXPECTED_FRAME, "expected content body, got non content body frame instead", *BASIC_PUBLISH
            )
        if len(payload) < CONTENT_HEADER_MIN_SIZE:
            raise ConnectionError_(FRAME_ERROR, f"cannot decode content header {erlang_octets(payload)}")
        class_id, weight, body_size = _CONTENT_HEADER.unpack_from(payload)
        if class_id != CLASS_BASIC:
            raise ConnectionError_(
                UNEXPECTED_FRAME,
                f"expected content header for class {CLASS_BASIC}, got one for class {class_id} instead",
                *BASIC_PUBLISH,
            )
        if weight:
            # RabbitMQ's frame parser only recognises a content header of weight 0.
            raise ConnectionError_(
                UNEXPECTED_FRAME,
                f"expected content header for class {CLASS_BASIC}, got non content header frame instead",
                *BASIC_PUBLISH,
            )
        problem = fastcodec.check_properties(payload)
        if problem is not None:
            chan.exchange = None
            raise ConnectionError_(SYNTAX_ERROR, f"malformed content header properties: {problem}", *BASIC_PUBLISH)
        if body_size > self.max_message_size:
            chan.exchange = None
            raise ChannelError(
                PRECONDITION_FAILED,
                f"message size {body_size} is larger than configured max size {self.max_message_size}",
                *BASIC_PUBLISH,
            )
        chan.header = payload
        chan.body_size = body_size
        chan.received = 0
        if body_size == 0:
            self._complete_publish(channel, chan, b"")

    def _complete_publish(self, channel: int, chan: _Channel, body: bytes) -> None:
        exchange = chan.exchange
        header = chan.header
        assert exchange is not None and header is not None
        chan.exchange = None
        chan.header = None
        if chan.parts:
            chan.parts = []
        try:
            self.handler.on_publish(channel, exchange, chan.routing_key, chan.mandatory, header, body)
        except AMQPError as err:
            raise err.with_method(*BASIC_PUBLISH) from None

    # ------------------------------------------------------------------ errors and closing
    def close_channel(self, channel: int, err: AMQPError) -> None:
        """Close one channel on the broker's own initiative, outside any client frame (a consumer ack timeout):
        released and answered with Channel.Close exactly as if handling one of its frames had raised ``err``."""
        self._error(channel, err)

    def _error(self, channel: int, err: AMQPError) -> None:
        if err.is_connection_error or channel == 0:
            self._connection_error(err)
            return
        chan = self.channels.get(channel)
        if chan is None:
            return
        chan.closing = True
        chan.exchange = None
        chan.header = None
        chan.parts = []
        self.handler.on_channel_closed(channel)
        self.send_method(
            channel,
            commands.Channel.Close(
                reply_code=err.code, reply_text=err.reply_text, class_id=err.class_id, method_id=err.method_id
            ),
        )

    def _connection_error(self, err: AMQPError) -> None:
        if self.state is CLOSING or self.state is CLOSED:
            return
        log.info("closing connection %s: %s", self.username or "(unauthenticated)", err)
        self.close(err.code, err.reply_text, err.class_id, err.method_id)
        self.close_reason = err

    def close(self, code: int, text: str, class_id: int = 0, method_id: int = 0) -> None:
        """Start a server-initiated close: send Connection.Close and discard all but Close-Ok."""
        if self.state is CLOSING or self.state is CLOSED:
            return
        if self.state is STARTING and not self._start_sent:
            self.state = CLOSED
            self.handler.on_close()
            return
        self.state = CLOSING
        self.send_method(
            0,
            commands.Connection.Close(reply_code=code, reply_text=text, class_id=class_id, method_id=method_id),
        )

    def abandon(self) -> None:
        """Stop here without a close handshake (the I/O shell hangs up on a handshake that stalled or that a
        shutdown interrupts): every later byte is ignored. The handler is not called back."""
        self.state = CLOSED

    def _closing_frame(self, ftype: int, channel: int, payload: bytes) -> None:
        if ftype != FRAME_METHOD or channel != 0 or len(payload) < 4:
            return
        mid = _METHOD_ID.unpack_from(payload)[0]
        if mid == CONNECTION_CLOSE_OK_ID:
            self.state = CLOSED
            self.handler.on_close()
        elif mid == CONNECTION_CLOSE_ID:
            # The client's Close crossed ours: spec (connection.close) says answer it with Close-Ok, and both
            # sides are then done; its Close-Ok for our Close, if it still sends one, is read and discarded by
            # the I/O shell's lingering close. (RabbitMQ 3.10 ignores the crossing Close and waits for Close-Ok.)
            self.send_method(0, commands.Connection.CloseOk())
            self.state = CLOSED
            self.handler.on_close()

    # ------------------------------------------------------------------ channel 0 and handshake
    def _connection_frame(self, ftype: int, channel: int, payload: bytes) -> None:
        try:
            if channel and self.state is not RUNNING:
                # Before Connection.Open-Ok only channel 0 exists: RabbitMQ's reader does not recognise the frame.
                raise ConnectionError_(UNEXPECTED_FRAME, f"type {ftype}, all octets = {erlang_octets(payload)}")
            if ftype != FRAME_METHOD:
                if ftype == FRAME_HEARTBEAT:
                    return
                raise ConnectionError_(UNEXPECTED_FRAME, "expected method frame, got non method frame instead")
            mid = _METHOD_ID.unpack_from(payload)[0] if len(payload) >= 4 else -1
            method = self._decode_method(mid, payload)
            if isinstance(method, commands.Connection.Close):
                self.send_method(0, commands.Connection.CloseOk())
                self.state = CLOSED
                self.handler.on_close()
                return
            if channel != 0 or (mid >> 16) != CLASS_CONNECTION:
                raise ConnectionError_(
                    CHANNEL_ERROR, f"unexpected method in connection state {self.state}", *split_method_id(mid)
                )
            if self.state is STARTING and isinstance(method, commands.Connection.StartOk):
                self._start_ok(method)
            elif self.state is TUNING and isinstance(method, commands.Connection.TuneOk):
                self._tune_ok(method)
            elif self.state is OPENING and isinstance(method, commands.Connection.Open):
                self._open(method)
            elif self.state is RUNNING and isinstance(
                method, commands.Connection.CloseOk | commands.Connection.Blocked | commands.Connection.Unblocked
            ):
                return  # nothing to do: an unrequested Close-Ok, or a client's view of its own flow
            elif self.state is RUNNING and isinstance(method, commands.Connection.UpdateSecret):
                # Like RabbitMQ's internal user database: no token backend re-checks the secret, so it is
                # accepted as is (pika's and aio-pika's token-refresh calls expect Update-Secret-Ok).
                self.send_method(0, commands.Connection.UpdateSecretOk())
            else:
                raise ConnectionError_(
                    CHANNEL_ERROR, f"unexpected method in connection state {self.state}", *split_method_id(mid)
                )
        except AMQPError as err:
            self._connection_error(err)
        except Exception as exc:
            log.exception("internal error on connection")
            self._connection_error(ConnectionError_(INTERNAL_ERROR, f"internal error: {type(exc).__name__}"))

    def _start_ok(self, method: commands.Connection.StartOk) -> None:
        self.client_properties = dict(method.client_properties or {})
        caps = self.client_properties.get("capabilities")
        self.capabilities = dict(caps) if isinstance(caps, dict) else {}
        self.mechanism = method.mechanism
        if method.mechanism not in self.mechanisms.split():
            # Spec: a mechanism the server did not offer closes the socket (RabbitMQ waits 3 s first).
            log.warning("unknown authentication mechanism %r: closing the socket", method.mechanism)
            self.state = CLOSED
            self.handler.on_close()
            return
        ok = False
        if method.mechanism == "EXTERNAL":
            # The response is ignored, as RabbitMQ's rabbit_auth_mechanism_ssl does; the handler names the user.
            ok = self.handler.on_login("EXTERNAL", "", "", self.client_properties)
            user = self.username or "?"
        else:
            creds = parse_credentials(method.mechanism, method.response or "")
            user = creds[0] if creds else "?"
            if creds is not None:
                self.username = creds[0]
                ok = self.handler.on_login(method.mechanism, creds[0], creds[1], self.client_properties)
        if not ok:
            log.warning("login refused for user %r (mechanism %s)", user, method.mechanism)
            if self.capabilities.get("authentication_failure_close"):
                self.close(
                    ACCESS_REFUSED,
                    f"ACCESS_REFUSED - Login was refused using authentication mechanism {method.mechanism}. "
                    "For details see the broker logfile.",
                )
            else:
                self.state = CLOSED
                self.handler.on_close()
            return
        self.state = TUNING
        self.send_method(
            0,
            commands.Connection.Tune(
                channel_max=self.server_channel_max,
                frame_max=self.server_frame_max,
                heartbeat=self.server_heartbeat,
            ),
        )

    def _tune_ok(self, method: commands.Connection.TuneOk) -> None:
        frame_max = method.frame_max
        channel_max = method.channel_max
        if frame_max == 0 or frame_max > self.server_frame_max:
            shown = "0 (no limit)" if frame_max == 0 else str(frame_max)
            raise ConnectionError_(
                NOT_ALLOWED,
                f"negotiated frame_max = {shown} is higher than the maximum allowed value ({self.server_frame_max})",
                *CONNECTION_TUNE_OK,
            )
        if frame_max < FRAME_MIN_SIZE:
            raise ConnectionError_(
                NOT_ALLOWED,
                f"negotiated frame_max = {frame_max} is lower than the minimum allowed value ({FRAME_MIN_SIZE})",
                *CONNECTION_TUNE_OK,
            )
        if channel_max == 0 or channel_max > self.server_channel_max:
            shown = "0 (no limit)" if channel_max == 0 else str(channel_max)
            raise ConnectionError_(
                NOT_ALLOWED,
                f"negotiated channel_max = {shown} is higher than the maximum allowed value "
                f"({self.server_channel_max})",
                *CONNECTION_TUNE_OK,
            )
        self.frame_max = frame_max
        self.reader.frame_max = frame_max
        self.channel_max = channel_max
        self.heartbeat = method.heartbeat
        self.state = OPENING

    def _open(self, method: commands.Connection.Open) -> None:
        self.handler.on_open_vhost(method.virtual_host)
        self.vhost = method.virtual_host
        self.state = RUNNING
        self.send_method(0, commands.Connection.OpenOk())
