"""Health check: a real AMQP 0-9-1 handshake over a plain blocking socket.

A TCP connect alone would call a broker healthy while it refuses logins or has lost its vhost; this walks
the whole handshake a client does (Start/StartOk with PLAIN, Tune/TuneOk, Open/OpenOk) and then closes
politely, so it works against amqpd and RabbitMQ alike. Blocking I/O on purpose: it runs as a short-lived
command (Docker's HEALTHCHECK, ``amqpd --check``), not inside the broker's event loop.

Usage: ``python -m broker.healthcheck amqp://user:pass@host:5672/vhost`` exits 0 when healthy, 1 otherwise.
``amqps://`` URLs go over TLS and take aio-pika's query options: ``cafile`` (CA certificates to verify the
server with; default: the system's), ``certfile`` and ``keyfile`` (a client certificate), ``no_verify_ssl=1``
(do not verify the server) and ``auth=external`` (log in with SASL EXTERNAL, as the client certificate says).
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import ssl
import struct
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from pamqp import commands, common, constants, frame, header, heartbeat
from pamqp.base import Frame
from pamqp.exceptions import PAMQPException

FRAME_HEADER = struct.Struct(">BHI")
CLIENT_PROPERTIES: common.FieldTable = {
    "product": "amqpd-healthcheck",
    "platform": "Python",
    # Asking for a Connection.Close on bad credentials turns "socket closed" into a clear 403 message.
    "capabilities": {"authentication_failure_close": True},
}


class CheckFailed(Exception):
    """The handshake did not complete; the message says why, in words for an operator."""


@dataclass(frozen=True, slots=True)
class TLSOptions:
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    verify: bool = True

    def context(self) -> ssl.SSLContext:
        try:
            context = ssl.create_default_context(cafile=self.cafile)
            if not self.verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            if self.certfile:
                context.load_cert_chain(self.certfile, self.keyfile)
        except (OSError, ssl.SSLError) as exc:
            raise CheckFailed(f"cannot set TLS up: {exc}") from exc
        return context


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int
    user: str
    password: str
    vhost: str
    tls: TLSOptions | None = None
    mechanism: str = "PLAIN"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_url(url: str) -> Target:
    """Split an ``amqp://`` URL the way pika and aio-pika do: empty path means vhost ``/``."""
    parts = urlsplit(url)
    if parts.scheme not in ("amqp", "amqps"):
        raise CheckFailed(f"not an AMQP URL: {url!r} (expected amqp[s]://user:pass@host:port/vhost)")
    try:
        port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
    except ValueError as exc:
        raise CheckFailed(f"bad port in URL {url!r}: {exc}") from exc
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    tls = None
    if parts.scheme == "amqps":
        tls = TLSOptions(
            cafile=query.get("cafile"),
            certfile=query.get("certfile"),
            keyfile=query.get("keyfile"),
            verify=query.get("no_verify_ssl", "0") == "0",
        )
    return Target(
        host=parts.hostname or "127.0.0.1",
        port=port,
        user=unquote(parts.username) if parts.username is not None else "guest",
        password=unquote(parts.password) if parts.password is not None else "guest",
        vhost=unquote(path) if path else "/",
        tls=tls,
        mechanism=query.get("auth", "plain").upper(),
    )


class _Conversation:
    """One blocking socket with a single overall deadline, reading whole frames."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.buffer = bytearray()

    def _arm(self) -> None:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        self.sock.settimeout(remaining)

    def send(self, channel: int, *values: Frame) -> None:
        self._arm()
        self.sock.sendall(b"".join(frame.marshal(value, channel) for value in values))

    def _fill(self, size: int) -> bool:
        while len(self.buffer) < size:
            self._arm()
            chunk = self.sock.recv(65536)
            if not chunk:
                return False
            self.buffer += chunk
        return True

    def read(self) -> Frame | None:
        """The next method frame (heartbeats skipped); None on EOF. Raises CheckFailed on garbage."""
        while True:
            if not self._fill(8):
                return None
            if self.buffer.startswith(b"AMQP"):
                # A broker answers with its own protocol header when it does not speak our version.
                version = ".".join(str(b) for b in self.buffer[5:8])
                raise CheckFailed(f"server does not speak AMQP 0-9-1 (it offered protocol {version})")
            _, _, size = FRAME_HEADER.unpack_from(self.buffer)
            total = FRAME_HEADER.size + size + 1
            if not self._fill(total):
                return None
            raw = bytes(self.buffer[:total])
            del self.buffer[:total]
            try:
                _, _, value = frame.unmarshal(raw)
            except PAMQPException as exc:
                raise CheckFailed(f"undecodable frame from server: {exc}") from exc
            if isinstance(value, heartbeat.Heartbeat):
                continue
            if not isinstance(value, Frame):
                raise CheckFailed(f"unexpected {type(value).__name__} frame during the handshake")
            return value

    def expect(self, wanted: type[Frame], step: str) -> Frame:
        value = self.read()
        if value is None:
            raise CheckFailed(f"server closed the connection {step}")
        if isinstance(value, commands.Connection.Close):
            # Acknowledge so the server can release the connection at once instead of waiting for a timeout.
            self.send(0, commands.Connection.CloseOk())
            raise CheckFailed(f"server refused {step}: {value.reply_code} {value.reply_text}")
        if not isinstance(value, wanted):
            raise CheckFailed(f"expected {wanted.name} {step}, got {value.name}")
        return value


def _handshake(target: Target, timeout: float) -> str:
    started = time.monotonic()
    deadline = started + timeout
    if target.mechanism not in ("PLAIN", "EXTERNAL"):
        raise CheckFailed(f"unsupported login mechanism {target.mechanism!r} (auth=plain or auth=external)")
    tls = target.tls.context() if target.tls is not None else None
    try:
        raw = socket.create_connection((target.host, target.port), timeout=timeout)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise CheckFailed(f"cannot connect to {target}: {reason.lower()}") from exc
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock = raw
    if tls is not None:
        try:
            sock = tls.wrap_socket(raw, server_hostname=target.host)
        except ssl.SSLError as exc:
            raw.close()
            raise CheckFailed(f"TLS handshake with {target} failed: {exc.reason or exc}") from exc
        except BaseException:
            raw.close()
            raise
    with sock:
        talk = _Conversation(sock, deadline)
        sock.sendall(header.ProtocolHeader().marshal())
        start = talk.expect(commands.Connection.Start, "before Connection.Start")
        assert isinstance(start, commands.Connection.Start)
        mechanisms = start.mechanisms.split()
        if target.mechanism not in mechanisms:
            raise CheckFailed(f"server does not offer {target.mechanism} login (offers {start.mechanisms!r})")
        response = "" if target.mechanism == "EXTERNAL" else f"\0{target.user}\0{target.password}"
        talk.send(
            0,
            commands.Connection.StartOk(
                client_properties=CLIENT_PROPERTIES,
                mechanism=target.mechanism,
                response=response,
                locale="en_US",
            ),
        )
        tune = talk.read()
        if tune is None:
            # Without authentication_failure_close support a broker signals bad credentials by hanging up.
            raise CheckFailed(
                f"server closed the connection after login as {target.user!r} (bad credentials?)"
            )
        if isinstance(tune, commands.Connection.Close):
            talk.send(0, commands.Connection.CloseOk())
            raise CheckFailed(f"login as {target.user!r} refused: {tune.reply_code} {tune.reply_text}")
        if not isinstance(tune, commands.Connection.Tune):
            raise CheckFailed(f"expected Connection.Tune after login, got {tune.name}")
        frame_max = tune.frame_max or constants.FRAME_MAX_SIZE
        tune_ok = commands.Connection.TuneOk(channel_max=tune.channel_max, frame_max=frame_max, heartbeat=0)
        # One write: as two small segments, Nagle plus delayed ACK would stall the second by ~40 ms.
        talk.send(0, tune_ok, commands.Connection.Open(virtual_host=target.vhost))
        talk.expect(commands.Connection.OpenOk, f"opening vhost {target.vhost!r}")
        talk.send(0, commands.Connection.Close(200, "health check done", 0, 0))
        # The broker is healthy once OpenOk arrived; a missing Close-Ok is not worth failing the check for.
        with contextlib.suppress(OSError, CheckFailed):
            talk.read()
    props = start.server_properties or {}
    product = _text(props.get("product")) or "AMQP broker"
    version = _text(props.get("version"))
    elapsed_ms = (time.monotonic() - started) * 1000
    name = f"{product} {version}".strip()
    return f"healthy: {name} at {target}, vhost {target.vhost!r}, handshake {elapsed_ms:.1f} ms"


def _text(value: object) -> str:
    # pamqp hands back long strings as bytes when they are not valid UTF-8.
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def check(url: str, timeout: float = 5.0) -> tuple[bool, str]:
    """Do a full AMQP 0-9-1 handshake with the broker at `url` within `timeout` seconds.

    Returns ``(True, "healthy: ...")`` or ``(False, reason)``; never raises for network or protocol trouble.
    """
    try:
        target = parse_url(url)
        return True, _handshake(target, timeout)
    except CheckFailed as exc:
        return False, f"unhealthy: {exc}"
    except TimeoutError:
        where = url_without_password(url)
        return False, f"unhealthy: no complete handshake with {where} within {timeout:g} s"
    except ssl.SSLError as exc:  # an alert after a TLS 1.3 handshake, e.g. our client certificate refused
        return False, f"unhealthy: TLS error with {url_without_password(url)}: {exc.reason or exc}"
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        return False, f"unhealthy: connection to {url_without_password(url)} failed: {reason.lower()}"


def url_without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m broker.healthcheck",
        description="Check an AMQP 0-9-1 broker with a full handshake; exit 0 when healthy, 1 otherwise.",
    )
    parser.add_argument(
        "url", help="amqp://user:pass@host:port/vhost, or amqps://...?cafile=..&certfile=..&keyfile=..&auth=external"
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="overall deadline in seconds (default: 5)")
    args = parser.parse_args(argv)
    ok, message = check(args.url, args.timeout)
    print(message, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
