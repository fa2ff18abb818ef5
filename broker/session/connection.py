"""The asyncio shell around one client connection: socket I/O, timers and flow control.

Reads go straight into the sans-IO protocol layer; everything it (and the channels) produce is written with one
``transport.write`` per event-loop turn. Frames for *other* connections (deliveries) schedule their own flush with
``call_soon``, so a publish that fans out to many consumers still costs one write per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from pamqp.base import Frame

from amqpd.broker.model.queue import Queue
from amqpd.broker.session.channel import Channel
from amqpd.broker.session.flow import STORE_BEHIND, FlowControl
from amqpd.broker.session.peer_cert import username_from_cert
from amqpd.protocol.connection import CLOSING, RUNNING, WITH_EXTERNAL, AMQPConnection
from amqpd.protocol.errors import NOT_ALLOWED, ConnectionError_
from amqpd.protocol.framing import ProtocolHeaderMismatch

if TYPE_CHECKING:
    from amqpd.broker.access.users import User
    from amqpd.broker.model.vhost import VHost
    from amqpd.broker.session.host import SessionHost

log = logging.getLogger("amqpd.connection")

WRITE_HIGH_WATER = 1024 * 1024
WRITE_LOW_WATER = 256 * 1024
CLOSE_OK_TIMEOUT = 3.0
# Seconds a finished connection keeps reading, and discarding, what the peer still sends before the socket closes.
# Closing a socket with unread bytes in its receive buffer (or receiving more after the close) makes the kernel
# send RST, and a client that pipelined publishes behind its Close, or whose frames crossed ours, would see
# ECONNRESET instead of the Close-Ok it is owed. So, as careful servers do: stop processing, send our last
# bytes, half-close (FIN), and drain until the peer's EOF or this bound.
LINGER_TIMEOUT = 2.0
YIELD_AFTER_BYTES = 32 * 1024
FLOW_MAX_PAUSE = 0.05  # seconds a publisher stays paused by one queue's backlog before it is read again


def is_loopback_peer(peername: object) -> bool:
    """Whether a transport's ``peername`` is this host: 127.0.0.0/8, ::1, their IPv4-mapped forms, or a unix
    socket (whose peername is not an address tuple). Decides whether ``guest`` may log in."""
    if not isinstance(peername, tuple):
        return True
    try:
        address = ipaddress.ip_address(str(peername[0]).split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


class BrokerConnection(asyncio.Protocol):
    def __init__(self, server: SessionHost) -> None:
        cfg = server.config
        self.server = server
        self.loop = server.loop
        self.proto = AMQPConnection(
            self,
            version=server.version,
            channel_max=cfg.channel_max,
            frame_max=cfg.frame_max,
            heartbeat=cfg.heartbeat,
            max_message_size=cfg.max_message_size,
        )
        self.proto.on_output = self._schedule_flush
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        # The user a verified TLS client certificate names (what SASL EXTERNAL logs in as); None without one.
        self.cert_username: str | None = None
        self.vhost: VHost | None = None
        self.user: User | None = None  # set by a successful login
        self.channels: dict[int, Channel] = {}
        self.exclusive_queues: set[Queue] = set()
        self.writable = True
        self._in_receive = False
        self._flush_scheduled = False
        self._confirm_channels: list[Channel] = []
        self._received = True
        self._sent = False
        self._missed_ticks = 0
        self._timer: asyncio.TimerHandle | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._handshake_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._draining = False  # a close is under way: read (to find Close-Ok, or to discard) whatever the flow
        self.lingering = False  # the AMQP connection is over; reading only to discard, until the peer's EOF
        self._write_closed = False  # our side is half-closed (write_eof) or being closed: write nothing more
        self.discarded_bytes = 0  # read and thrown away while lingering
        self._heartbeat_started = False
        self.published_persistent = False  # paused when the store falls behind
        self._held: list[bytes] | None = None  # output waiting for the store (see hold_output_until_durable)
        self._holds = 0
        self.reading_paused = False
        self.flow = FlowControl()  # why reading is paused, if it is
        # Notifications a method caused on this connection, sent once its reply is out (see after_reply).
        self._after_reply: list[Callable[[], None]] | None = None

    # ------------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio.Transport subclasses
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_LOW_WATER)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        if len(self.server.connections) >= self.server.connection_limit:
            # Refused before a byte is exchanged, so an overloaded broker spends no file descriptor or memory
            # on it (RabbitMQ leaves it waiting in the accept backlog until a slot frees).
            log.warning(
                "%s: connection refused: the broker's connection limit (%d) is reached",
                self.peer,
                self.server.connection_limit,
            )
            self.proto.abandon()
            self.lingering = True
            transport.abort()
            return
        if transport.get_extra_info("ssl_object") is not None:
            # A TLS connection arrives here with its handshake done, so a client certificate is known now, before
            # Connection.Start goes out. The transport only reports one that the handshake verified: the server
            # asks for a certificate only with --tls-verify peer, and refuses one its CAs do not vouch for.
            peercert = transport.get_extra_info("peercert")
            if peercert:
                self.cert_username = username_from_cert(peercert, self.server.config.tls_cert_login_from)
                self.proto.mechanisms = WITH_EXTERNAL
        self.server.connections.add(self)
        self._handshake_timer = self.loop.call_later(self.server.config.handshake_timeout, self._handshake_timeout)

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            self.discarded_bytes += len(data)
            return
        self._received = True
        self._in_receive = True
        try:
            self.proto.receive_data(data)
        except ProtocolHeaderMismatch:
            log.info("%s: not an AMQP 0-9-1 client; sent our protocol header and closing", self.peer)
            self._linger()
        finally:
            self._in_receive = False
        if self.proto.state == RUNNING and not self._heartbeat_started:
            self._start_heartbeat()
        self.flush()
        if len(data) >= YIELD_AFTER_BYTES and self.transport is not None and not self._draining:
            # libuv (and asyncio's selector loop, to a lesser degree) keeps reading a busy socket many times per
            # loop turn; a flat-out publisher would then starve the consumers whose acks free prefetch capacity.
            # Skip one turn so every other connection is read before this one again.
            self.transport.pause_reading()
            self.loop.call_soon(self._resume_after_yield)

    def _resume_after_yield(self) -> None:
        if self.transport is not None and not self.reading_paused:
            self.transport.resume_reading()

    def eof_received(self) -> bool | None:
        # The peer is done writing: whether we were lingering or it left without a Close, the transport now
        # closes once our own last bytes are out (returning False asks for exactly that).
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._timer, self._close_timer, self._handshake_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        if self.discarded_bytes:
            log.debug("%s: discarded %d bytes received after the close", self.peer, self.discarded_bytes)
        self._release_all()
        self.server.connections.discard(self)
        self.transport = None

    def pause_writing(self) -> None:
        self.writable = False
        for ch in self.channels.values():
            ch.set_deliverable()

    def resume_writing(self) -> None:
        self.writable = True
        for ch in list(self.channels.values()):
            ch.set_deliverable()

    # ------------------------------------------------------------------ output
    def _schedule_flush(self) -> None:
        if not self._in_receive and not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self.flush)

    def want_confirm_flush(self, channel: Channel) -> None:
        confirm = self._confirm_channels
        if not confirm or confirm[-1] is not channel:
            confirm.append(channel)
            self._schedule_flush()

    def flush(self) -> None:
        self._flush_scheduled = False
        if self._confirm_channels:
            chans, self._confirm_channels = self._confirm_channels, []
            for ch in chans:
                if not ch.closed:
                    ch.flush_confirms()
        data = self.proto.data_to_send()
        if self._held is not None:
            if data:
                self._held.append(data)
            return
        transport = self.transport
        if data and transport is not None and not self._write_closed and not transport.is_closing():
            transport.write(data)
            self._sent = True
        if self.lingering:
            self._close_write_side()  # our last bytes are queued: FIN follows them
        elif self.proto.state == CLOSING and self._close_timer is None and transport is not None:
            # We sent Connection.Close: keep reading, whatever paused it, or its Close-Ok could never arrive.
            self._close_timer = self.loop.call_later(CLOSE_OK_TIMEOUT, self._close_ok_timeout)
            self._drain()

    def hold_output_until_durable(self) -> None:
        """Write nothing more until everything handed to the store so far is durable.

        Used after a durable declare/delete/bind: its -Ok must not reach the client before the definition is on
        disk, and holding the whole output stream (rather than one frame) keeps every reply in order.
        """
        committer = self.vhost.committer if self.vhost is not None else None
        if committer is None:
            return
        if self._held is None:
            self._held = []
        self._holds += 1
        committer.on_durable(self._release_held)

    def _release_held(self) -> None:
        self._holds -= 1
        if self._holds > 0 or self._held is None:
            return
        held, self._held = self._held, None
        transport = self.transport
        if held and transport is not None and not self._write_closed and not transport.is_closing():
            transport.write(b"".join(held))
            self._sent = True
        self.flush()  # then whatever was queued after the hold

    def pause_reading_for_store(self, paused: bool) -> None:
        if self.flow.add(STORE_BEHIND) if paused else self.flow.discard(STORE_BEHIND):
            self._update_reading()

    def throttle(self, queue: Queue) -> None:
        """Credit flow, RabbitMQ style: stop reading this publisher while ``queue`` has consumers and a backlog
        they are not keeping up with; the queue calls :meth:`unthrottle` once it has drained to its low mark.
        Without it a flat-out publisher takes the whole CPU and the consumers fall ever further behind.

        Two rules keep it from ever deadlocking: a connection that itself consumes from the queue is not paused
        (its acks are what drains the queue), and a pause lasts at most FLOW_MAX_PAUSE, so that acks from
        publishers that also consume elsewhere (request/reply in both directions) still get through."""
        blocked = queue.flow_blocked
        if blocked is None:
            blocked = queue.flow_blocked = set()
        if self in blocked:
            return
        for consumer in queue.consumers:
            if consumer.session is self:
                return
        blocked.add(self)
        queue.flow_low = self.server.config.flow_low
        if self.flow.add(queue):
            self._update_reading()
            self.loop.call_later(FLOW_MAX_PAUSE, self._flow_expired, queue)

    def _flow_expired(self, queue: Queue) -> None:
        blocked = queue.flow_blocked
        if blocked is not None:
            blocked.discard(self)
        self.unthrottle(queue)

    def unthrottle(self, queue: Queue) -> None:
        if self.flow.discard(queue):
            self._update_reading()

    @property
    def flow_pauses(self) -> int:
        return self.flow.pauses

    def _update_reading(self) -> None:
        paused = self.flow.paused and not self._draining
        transport = self.transport
        if transport is None or paused == self.reading_paused:
            return
        self.reading_paused = paused
        if paused:
            transport.pause_reading()
        else:
            transport.resume_reading()

    # ------------------------------------------------------------------ closing
    def _drain(self) -> None:
        """From now on read whatever arrives, flow control notwithstanding: a closing connection processes
        nothing that could need pausing, and unread bytes would turn our close into a reset."""
        if self._draining:
            return
        self._draining = True
        self._update_reading()
        if self.transport is not None and not self.reading_paused:
            self.transport.resume_reading()  # also undoes a yield pause (see data_received)

    def _linger(self) -> None:
        """The AMQP connection is over (Close-Ok sent or received, or nothing more to say): send what is left,
        half-close, and discard input until the peer's EOF or LINGER_TIMEOUT, then close."""
        if self.lingering:
            return
        self.lingering = True
        for timer in (self._timer, self._close_timer, self._handshake_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._close_timer = self._handshake_timer = None
        self._release_all()
        transport = self.transport
        if transport is None:
            return
        self._linger_timer = self.loop.call_later(LINGER_TIMEOUT, self._linger_expired)
        self._drain()
        if not self._in_receive:  # else data_received flushes (and so half-closes) when the frames are handled
            self.flush()

    def _close_write_side(self) -> None:
        if self._write_closed or self._held is not None:
            return  # already done, or our last bytes still wait for the store (_release_held flushes again)
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self._write_closed = True
        if transport.can_write_eof():
            transport.write_eof()  # sent once the write buffer is empty
        else:
            transport.close()  # no half-close on this transport (TLS): the best left is to close after the flush

    def _close_ok_timeout(self) -> None:
        self._close_timer = None
        log.info("%s: no Close-Ok within %.0f s; closing", self.peer, CLOSE_OK_TIMEOUT)
        self._linger()

    def _linger_expired(self) -> None:
        self._linger_timer = None
        transport = self.transport
        if transport is None:
            return
        if transport.is_closing():
            # TLS (no half-close): the transport was closed after our last bytes and waits for the peer's
            # close_notify or EOF; a peer that sends neither does not hold the connection any longer than this.
            log.debug("%s: no TLS close from the peer %.0f s after ours; aborting", self.peer, LINGER_TIMEOUT)
            transport.abort()
            return
        log.info(
            "%s: peer still sending %.0f s after the close (%d bytes discarded); closing",
            self.peer,
            LINGER_TIMEOUT,
            self.discarded_bytes,
        )
        transport.close()

    # ------------------------------------------------------------------ timers
    def _handshake_timeout(self) -> None:
        self._handshake_timer = None
        if self.proto.state != RUNNING and self.transport is not None:
            log.info(
                "%s: handshake not completed within %.0f s; closing",
                self.peer,
                self.server.config.handshake_timeout,
            )
            self.proto.abandon()
            self._linger()  # a stalled handshake may still be trickling in

    def _start_heartbeat(self) -> None:
        self._heartbeat_started = True
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        hb = self.proto.heartbeat
        if hb > 0:
            self._timer = self.loop.call_later(hb / 2, self._heartbeat_tick)

    def _heartbeat_tick(self) -> None:
        """Every half interval: send a heartbeat if we were silent; drop the peer after two silent intervals."""
        hb = self.proto.heartbeat
        if self.transport is None:
            return
        if self._received or self.reading_paused:
            # While we hold the client's bytes back (store pressure) its heartbeats sit unread in the socket:
            # silence we caused is not the client's fault, so it does not count (RabbitMQ pauses its monitor).
            self._received = False
            self._missed_ticks = 0
        else:
            self._missed_ticks += 1
            if self._missed_ticks >= 4:
                log.warning("%s: missed heartbeats from client, timeout: %ds", self.peer, hb)
                self.transport.close()
                return
        if not self._sent:
            self.proto.send_heartbeat()
            self.flush()
        self._sent = False
        self._timer = self.loop.call_later(hb / 2, self._heartbeat_tick)

    # ------------------------------------------------------------------ ConnectionHandler
    def on_login(self, mechanism: str, username: str, password: str, client_properties: dict[str, Any]) -> bool:
        if mechanism == "EXTERNAL":
            name = self.cert_username
            if name is None:
                log.warning("%s: EXTERNAL login refused: the client certificate names no user", self.peer)
                return False
            self.proto.username = name  # what user_id must match, and what the logs call the connection
            self.user = self.server.login(mechanism, name, None, self.peer_is_loopback())
        else:
            self.user = self.server.login(mechanism, username, password, self.peer_is_loopback())
        return self.user is not None

    def peer_is_loopback(self) -> bool:
        if self.transport is None:
            return False
        return is_loopback_peer(self.transport.get_extra_info("peername"))

    def on_open_vhost(self, vhost: str) -> None:
        """RabbitMQ's order: the vhost exists, its connection limit, the user's, then the user's permission."""
        user = self.user
        assert user is not None
        vh = self.server.vhosts.get(vhost)
        if vh is None:
            raise ConnectionError_(NOT_ALLOWED, f"vhost {vhost} not found", 10, 40)
        access = self.server.access
        limit = access.vhost_limit(vhost, "max-connections")
        if limit is not None and sum(1 for c in self.server.connections if c.vhost is vh) >= limit:
            raise ConnectionError_(
                NOT_ALLOWED,
                f"access to vhost '{vhost}' refused for user '{user.name}': connection limit ({limit}) is reached",
                10,
                40,
            )
        limit = user.limit("max-connections")
        # By name: the User object is replaced when the user is updated, and older connections hold the old one.
        name = user.name
        opened = sum(1 for c in self.server.connections if c.user is not None and c.user.name == name and c.vhost)
        if limit is not None and opened >= limit:
            raise ConnectionError_(
                NOT_ALLOWED,
                f"connection refused for user '{user.name}': user connection limit ({limit}) is reached",
                10,
                40,
            )
        if not access.has_vhost_access(user.name, vhost):
            raise ConnectionError_(NOT_ALLOWED, f"access to vhost '{vhost}' refused for user '{user.name}'", 10, 40)
        self.vhost = vh

    def on_channel_open(self, channel: int) -> None:
        assert self.vhost is not None and self.user is not None
        name = self.user.name
        # The user as it is now: limits set after this connection logged in apply to it too.
        limit = self.server.access.users.get(name, self.user).limit("max-channels")
        if limit is not None:
            opened = sum(len(c.channels) for c in self.server.connections if c.user and c.user.name == name)
            if opened >= limit:
                raise ConnectionError_(
                    NOT_ALLOWED,
                    f"number of channels opened for user '{name}' has reached the maximum allowed user limit "
                    f"of ({limit})",
                    0,
                    0,
                )
        ch = Channel(self, channel, self.vhost)
        ch.deliverable = self.writable
        self.channels[channel] = ch

    def on_channel_closed(self, channel: int) -> None:
        ch = self.channels.pop(channel, None)
        if ch is not None:
            ch.close()

    def on_method(self, channel: int, method: Frame) -> None:
        pending: list[Callable[[], None]] = []
        self._after_reply = pending
        try:
            self.channels[channel].handle(method)
        finally:
            self._after_reply = None
            for notify in pending:
                notify()

    def after_reply(self, notify: Callable[[], None]) -> None:
        """Send an asynchronous notification (a server-sent basic.cancel) caused by the method being handled
        on this connection only after that method's reply, as RabbitMQ does: its queue answers the channel
        first and the channels hear of the queue's end afterwards. py-amqp (kombu, Celery) raises
        ConsumerCancelled when its own queue.delete meets a basic.cancel before the delete-ok. Outside a
        method (a timer, another connection's request) ``notify`` runs at once."""
        pending = self._after_reply
        if pending is None:
            notify()
        else:
            pending.append(notify)

    def on_publish(
        self, channel: int, exchange: str, routing_key: str, mandatory: bool, header: bytes, body: bytes
    ) -> None:
        self.channels[channel].publish(exchange, routing_key, mandatory, header, body)

    def on_ack(self, channel: int, delivery_tag: int, multiple: bool) -> None:
        self.channels[channel].ack(delivery_tag, multiple)

    def on_nack(self, channel: int, delivery_tag: int, multiple: bool, requeue: bool) -> None:
        self.channels[channel].nack(delivery_tag, multiple, requeue)

    def on_reject(self, channel: int, delivery_tag: int, requeue: bool) -> None:
        self.channels[channel].reject(delivery_tag, requeue)

    def on_close(self) -> None:
        self._linger()

    # ------------------------------------------------------------------ teardown
    def _release_all(self) -> None:
        channels = list(self.channels.values())
        self.channels.clear()
        for ch in channels:
            ch.close()
        queues = list(self.exclusive_queues)
        self.exclusive_queues.clear()
        for q in queues:
            vh = self.server.vhosts.get(q.vhost)
            if vh is not None:
                vh.delete_queue(q)

    def close(self, code: int, text: str) -> None:
        """Server-initiated close (shutdown, operator)."""
        state = self.proto.state
        if state == RUNNING:
            self.proto.close(code, text)
            self.flush()
        elif state != CLOSING and not self.lingering:
            # Still in the handshake: no Connection.Close to send (RabbitMQ just hangs up), but the peer may be
            # mid-write, so the socket closes the careful way all the same.
            self.proto.abandon()
            self._linger()

    def stats(self) -> tuple[int, int]:
        return len(self.channels), sum(len(ch.consumers) for ch in self.channels.values())
