"""TLS (amqps): pika and aio-pika over TLS, peer verification, SASL EXTERNAL, refused certificates, both
listeners at once, TLS only, and the settings that turn it on.

A throwaway PKI (tests/support/tls.py) is made once per session: the broker's certificate for 127.0.0.1 and
localhost, client certificates CN=guest and CN=nobody from the same CA, and CN=guest from a CA the broker
does not trust. The tests that talk to a broker run the in-process one with its TLS listener on a free port (and
the plain one, unless the test turns it off), on both event loops; `tls(...)` adds settings for one test.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aio_pika
import pika
import pika.credentials
import pika.exceptions
import pytest
from aiormq.exceptions import AMQPConnectionError, ProbableAuthenticationError
from pamqp import body, commands, frame, header

from amqpd.broker.server.config import PORT_OFF, Config
from amqpd.broker.server.healthcheck import check
from amqpd.broker.server.settings import ConfigError, load_config
from amqpd.broker.server.tls import TLSSettingsError, server_context
from amqpd.broker.session.peer_cert import distinguished_name, username_from_cert
from tests.support.processes import AmqpdProcess
from tests.support.raw_client import RawClient
from tests.support.server_thread import ServerThread
from tests.support.tls import Issued, Pki, make_pki
from tests.support.waiting import wait_until

REFUSED_EXTERNAL = (
    "ACCESS_REFUSED - Login was refused using authentication mechanism EXTERNAL. For details see the broker logfile."
)
CLOSE = commands.Connection.Close(200, "bye", 0, 0)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls(**settings: Any) -> pytest.MarkDecorator:
    """Run the test's broker with these settings on top of the TLS listener's; ``tls_verify="peer"`` brings our
    CA as ``tls_ca``."""
    return pytest.mark.parametrize("amqpd_settings", [settings], indirect=True, ids=["-".join(settings) or "tls"])


VERIFY_PEER = tls(tls_verify="peer")


@pytest.fixture
def amqpd_settings(request: pytest.FixtureRequest, pki: Pki) -> dict[str, object]:
    settings: dict[str, object] = {
        "tls_port": 0,
        "tls_cert": str(pki.server.cert),
        "tls_key": str(pki.server.key),
    }
    settings.update(getattr(request, "param", {}))
    if settings.get("tls_verify") == "peer":
        settings.setdefault("tls_ca", str(pki.ca))
    return settings


def amqps_url(server: ServerThread, **query: str | Path) -> str:
    url = f"amqps://guest:guest@127.0.0.1:{server.server.tls_port}/"
    return f"{url}?{urlencode({k: str(v) for k, v in query.items()})}" if query else url


def client_query(pki: Pki, client: Issued | None = None, **extra: str) -> dict[str, str | Path]:
    """aio-pika's URL options: verify the server with our CA, present `client` when given."""
    query: dict[str, str | Path] = {"cafile": pki.ca}
    if client is not None:
        query.update(certfile=client.cert, keyfile=client.key)
    query.update(extra)
    return query


async def round_trip(connection: aio_pika.abc.AbstractConnection, body: bytes = b"over tls") -> bytes:
    channel = await connection.channel()
    queue = await channel.declare_queue(exclusive=True)
    await channel.default_exchange.publish(aio_pika.Message(body), routing_key=queue.name)
    message = await queue.get(timeout=5)
    await message.ack()
    await channel.close()
    return message.body


def pika_parameters(
    server: ServerThread,
    pki: Pki,
    client: Issued | None = None,
    credentials: pika.credentials.PlainCredentials | pika.credentials.ExternalCredentials | None = None,
) -> pika.ConnectionParameters:
    return pika.ConnectionParameters(
        host="127.0.0.1",
        port=server.server.tls_port,
        credentials=credentials or pika.PlainCredentials("guest", "guest"),
        ssl_options=pika.SSLOptions(pki.client_context(client), server_hostname="127.0.0.1"),
        connection_attempts=1,
    )


def pika_round_trip(connection: pika.BlockingConnection, properties: pika.BasicProperties | None = None) -> bytes:
    channel = connection.channel()
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.basic_publish("", queue, b"over tls", properties)
    _, _, body = channel.basic_get(queue, auto_ack=True)
    channel.close()
    assert body is not None
    return body


def start_mechanisms(server: ServerThread, context: ssl.SSLContext | None) -> str:
    """What Connection.Start offers on the TLS listener (with `context`) or the plain one (None)."""
    url = amqps_url(server) if context is not None else server.url
    with RawClient(url, tls=context) as client:
        client.send_frame(b"AMQP\x00\x00\x09\x01")
        start = client.expect(0, commands.Connection.Start)
        return start.mechanisms


def tls_error_after_handshake(server: ServerThread, context: ssl.SSLContext) -> ssl.SSLError:
    """The error a client gets when the broker refuses its certificate. With TLS 1.3 the client's side of the
    handshake completes before the server has checked the certificate, so the refusal (a TLS alert) arrives on
    the first read."""
    try:
        with RawClient(amqps_url(server), tls=context) as client:
            client.send_frame(b"AMQP\x00\x00\x09\x01")
            got = client.read_frame()
    except ssl.SSLError as exc:
        return exc
    raise AssertionError(f"the broker accepted the client and sent {got!r}")


@pytest.fixture
def amqpd_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG, logger="amqpd")
    caplog.set_level(logging.DEBUG, logger="asyncio")
    yield caplog


def warnings_and_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        f"{r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.startswith(("amqpd", "asyncio"))
    ]


# ------------------------------------------------------------------------------------------ clients over TLS


async def test_aio_pika_round_trips_over_amqps_without_verifying_either_side(broker_server: ServerThread) -> None:
    url = amqps_url(broker_server, no_verify_ssl="1")
    async with await aio_pika.connect(url) as connection:
        assert await round_trip(connection) == b"over tls"


async def test_aio_pika_verifies_the_broker_certificate_with_the_test_ca(
    broker_server: ServerThread, pki: Pki
) -> None:
    async with await aio_pika.connect(amqps_url(broker_server, **client_query(pki))) as connection:
        assert await round_trip(connection) == b"over tls"


async def test_aio_pika_refuses_a_broker_its_ca_file_does_not_vouch_for(
    broker_server: ServerThread, pki: Pki
) -> None:
    url = amqps_url(broker_server, cafile=pki.other_ca)
    with pytest.raises(AMQPConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        await aio_pika.connect(url)


@VERIFY_PEER
async def test_with_peer_verification_a_client_certificate_from_the_ca_may_log_in_with_a_password(
    broker_server: ServerThread, pki: Pki
) -> None:
    async with await aio_pika.connect(amqps_url(broker_server, **client_query(pki, pki.guest))) as connection:
        assert await round_trip(connection) == b"over tls"


@VERIFY_PEER
async def test_with_peer_verification_a_client_without_a_certificate_is_still_served(
    broker_server: ServerThread, pki: Pki
) -> None:
    async with await aio_pika.connect(amqps_url(broker_server, **client_query(pki))) as connection:
        assert await round_trip(connection) == b"over tls"


def test_pika_round_trips_over_tls(broker_server: ServerThread, pki: Pki, loop_kind: str) -> None:
    connection = pika.BlockingConnection(pika_parameters(broker_server, pki))
    try:
        assert pika_round_trip(connection) == b"over tls"
    finally:
        connection.close()


async def test_the_server_exposes_the_port_and_url_of_each_listener(broker_server: ServerThread) -> None:
    server = broker_server.server
    assert server.port > 0 and server.tls_port > 0 and server.port != server.tls_port
    assert server.url.startswith("amqp://") and server.tls_url.startswith("amqps://")


# ------------------------------------------------------------------------------------------ SASL EXTERNAL


@VERIFY_PEER
def test_pika_logs_in_with_external_as_the_cn_of_its_certificate(
    broker_server: ServerThread, pki: Pki, loop_kind: str
) -> None:
    params = pika_parameters(broker_server, pki, pki.guest, pika.credentials.ExternalCredentials())
    connection = pika.BlockingConnection(params)
    try:
        # user_id must name the authenticated user: the certificate's CN, as RabbitMQ checks it.
        assert pika_round_trip(connection, pika.BasicProperties(user_id="guest")) == b"over tls"
    finally:
        connection.close()


@VERIFY_PEER
async def test_aio_pika_logs_in_with_external(broker_server: ServerThread, pki: Pki) -> None:
    url = amqps_url(broker_server, **client_query(pki, pki.guest, auth="external"))
    async with await aio_pika.connect(url) as connection:
        assert await round_trip(connection) == b"over tls"


@VERIFY_PEER
async def test_external_login_of_a_user_that_does_not_exist_is_refused_with_403(
    broker_server: ServerThread, amqpd_logs: pytest.LogCaptureFixture, pki: Pki
) -> None:
    url = amqps_url(broker_server, **client_query(pki, pki.nobody, auth="external"))
    with pytest.raises(ProbableAuthenticationError) as refused:
        await aio_pika.connect(url)
    assert refused.value.args[0] == REFUSED_EXTERNAL
    assert "login refused for user 'nobody' (mechanism EXTERNAL)" in "\n".join(warnings_and_errors(amqpd_logs))


@VERIFY_PEER
def test_pika_sees_the_403_of_a_refused_external_login(
    broker_server: ServerThread, pki: Pki, loop_kind: str
) -> None:
    params = pika_parameters(broker_server, pki, pki.nobody, pika.credentials.ExternalCredentials())
    with pytest.raises(pika.exceptions.ProbableAuthenticationError, match="403") as refused:
        pika.BlockingConnection(params)
    assert REFUSED_EXTERNAL in str(refused.value)


@VERIFY_PEER
def test_external_is_offered_only_over_tls_with_a_verified_client_certificate(
    broker_server: ServerThread, pki: Pki
) -> None:
    assert start_mechanisms(broker_server, pki.client_context(pki.guest)) == "EXTERNAL AMQPLAIN PLAIN"
    assert start_mechanisms(broker_server, pki.client_context()) == "AMQPLAIN PLAIN"
    assert start_mechanisms(broker_server, None) == "AMQPLAIN PLAIN"


async def test_without_peer_verification_a_client_certificate_is_not_asked_for_and_external_not_offered(
    broker_server: ServerThread, pki: Pki
) -> None:
    mechanisms = await asyncio.to_thread(start_mechanisms, broker_server, pki.client_context(pki.guest))
    assert mechanisms == "AMQPLAIN PLAIN"


@VERIFY_PEER
def test_a_client_that_asks_for_external_when_it_is_not_offered_is_hung_up_on(
    broker_server: ServerThread, pki: Pki
) -> None:
    with RawClient(amqps_url(broker_server), tls=pki.client_context()) as client:
        client.send_frame(b"AMQP\x00\x00\x09\x01")
        client.expect(0, commands.Connection.Start)
        client.send_method(0, commands.Connection.StartOk(client_properties={}, mechanism="EXTERNAL", response=""))
        assert client.read_frame() is None


@tls(tls_verify="peer", tls_cert_login_from="distinguished_name")
def test_external_can_take_the_whole_distinguished_name_as_the_user_name(
    broker_server: ServerThread, pki: Pki, amqpd_logs: pytest.LogCaptureFixture
) -> None:
    with RawClient(amqps_url(broker_server), tls=pki.client_context(pki.guest)) as client:
        client.send_frame(b"AMQP\x00\x00\x09\x01")
        client.expect(0, commands.Connection.Start)
        client.send_method(
            0,
            commands.Connection.StartOk(
                client_properties={"capabilities": {"authentication_failure_close": True}},
                mechanism="EXTERNAL",
                response="",
            ),
        )
        close = client.expect(0, commands.Connection.Close)
        client.send_method(0, commands.Connection.CloseOk())
    assert close.reply_text == REFUSED_EXTERNAL  # no user is called that
    assert "login refused for user 'CN=guest,O=amqpd tests'" in "\n".join(warnings_and_errors(amqpd_logs))


# ------------------------------------------------------------------------------------------ refused certificates


@VERIFY_PEER
async def test_a_certificate_from_another_ca_is_refused_at_the_tls_handshake(
    broker_server: ServerThread, amqpd_logs: pytest.LogCaptureFixture, pki: Pki
) -> None:
    error = await asyncio.to_thread(tls_error_after_handshake, broker_server, pki.client_context(pki.stranger))
    assert error.reason == "TLSV1_ALERT_UNKNOWN_CA"
    url = amqps_url(broker_server, **client_query(pki, pki.stranger, auth="external"))
    with pytest.raises(AMQPConnectionError, match="TLSV1_ALERT_UNKNOWN_CA"):
        await aio_pika.connect(url)
    logged = warnings_and_errors(amqpd_logs)
    assert "amqpd.tls: TLS handshake refused: client certificate not accepted: unable to get local issuer " in (
        "\n".join(logged)
    )
    # The broker is still there for everybody else.
    async with await aio_pika.connect(amqps_url(broker_server, **client_query(pki, pki.guest))) as connection:
        assert await round_trip(connection) == b"over tls"


@VERIFY_PEER
def test_pika_sees_the_tls_alert_when_its_certificate_is_refused(
    broker_server: ServerThread, pki: Pki, loop_kind: str
) -> None:
    params = pika_parameters(broker_server, pki, pki.stranger)
    # pika files a connection lost during its handshake under "incompatible protocol"; the SSL error is inside.
    with pytest.raises(pika.exceptions.AMQPConnectionError, match="TLSV1_ALERT_UNKNOWN_CA"):
        pika.BlockingConnection(params)


@tls(tls_verify="peer", tls_fail_if_no_peer_cert=True)
async def test_fail_if_no_peer_cert_refuses_a_client_without_a_certificate(
    broker_server: ServerThread, amqpd_logs: pytest.LogCaptureFixture, pki: Pki
) -> None:
    error = await asyncio.to_thread(tls_error_after_handshake, broker_server, pki.client_context())
    assert error.reason == "TLSV13_ALERT_CERTIFICATE_REQUIRED"
    with pytest.raises(AMQPConnectionError, match="CERTIFICATE_REQUIRED"):
        await aio_pika.connect(amqps_url(broker_server, **client_query(pki)))
    assert "amqpd.tls: TLS handshake refused: peer did not return a certificate" in warnings_and_errors(amqpd_logs)
    async with await aio_pika.connect(amqps_url(broker_server, **client_query(pki, pki.guest))) as connection:
        assert await round_trip(connection) == b"over tls"


@tls(tls_verify="peer", tls_fail_if_no_peer_cert=True)
def test_fail_if_no_peer_cert_refuses_a_tls_1_2_client_during_the_handshake(
    broker_server: ServerThread, pki: Pki
) -> None:
    context = pki.client_context()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError, match="HANDSHAKE_FAILURE"):
        RawClient(amqps_url(broker_server), tls=context)


async def test_a_plain_amqp_client_on_the_tls_port_is_refused_and_logged(
    broker_server: ServerThread, amqpd_logs: pytest.LogCaptureFixture
) -> None:
    url = f"amqp://guest:guest@127.0.0.1:{broker_server.server.tls_port}/"
    with pytest.raises(AMQPConnectionError):
        await aio_pika.connect(url, timeout=5)
    await asyncio.to_thread(wait_until, lambda: warnings_and_errors(amqpd_logs))
    logged = warnings_and_errors(amqpd_logs)[0]
    assert logged.startswith("amqpd.tls: TLS handshake refused: ")
    assert logged.endswith("(the client does not speak TLS: a plain amqp:// client on the amqps port?)")


# ------------------------------------------------------------------------------------------ listeners


async def test_plain_and_tls_clients_talk_to_each_other_through_one_broker(
    broker_server: ServerThread, pki: Pki
) -> None:
    async with (
        await aio_pika.connect(broker_server.url) as plain,
        await aio_pika.connect(amqps_url(broker_server, **client_query(pki))) as secure,
    ):
        plain_channel = await plain.channel()
        queue = await plain_channel.declare_queue("tls-and-plain", auto_delete=True)
        secure_channel = await secure.channel()
        await secure_channel.default_exchange.publish(aio_pika.Message(b"from tls"), routing_key=queue.name)
        message = await queue.get(timeout=5)
        await message.ack()
        assert message.body == b"from tls"
        await queue.delete()


@tls(port=PORT_OFF)
async def test_port_off_listens_on_tls_only(broker_server: ServerThread, pki: Pki) -> None:
    server = broker_server.server
    assert server.port == 0 and server.tls_port > 0
    assert server.url.startswith("amqps://")  # the default URL is the TLS one
    async with await aio_pika.connect(amqps_url(broker_server, **client_query(pki))) as connection:
        assert await round_trip(connection) == b"over tls"


def test_startup_line_shows_both_listeners_and_the_tls_port(pki: Pki) -> None:
    args = ("--store", "memory://", "--tls-port", "0", "--tls-cert", str(pki.server.cert), "--tls-key")
    with AmqpdProcess(*args, str(pki.server.key)) as broker:
        line = next(line for line in broker.lines if "listening on" in line)
        assert f"listening on 127.0.0.1:{broker.port} (amqp), 127.0.0.1:" in line
        tls_port = int(line.split("(amqp), 127.0.0.1:")[1].split()[0])
        assert tls_port not in (0, broker.port) and "(amqps)" in line
        ok, message = check(f"amqps://guest:guest@127.0.0.1:{tls_port}/?cafile={pki.ca}")
        assert ok, message
        assert broker.signal(signal.SIGTERM) == 0


def test_port_off_starts_a_tls_only_broker_that_its_own_health_check_finds(pki: Pki) -> None:
    tls_args = ["--tls-port", "0", "--tls-cert", str(pki.server_combined)]  # key in the certificate file
    with AmqpdProcess("--store", "memory://", "--port", "off", *tls_args) as broker:
        line = next(line for line in broker.lines if "listening on" in line)
        assert f"listening on 127.0.0.1:{broker.port} (amqps) (loop" in line  # the one port is the TLS one
        # `amqpd --check` with the broker's own settings finds the TLS listener (without verifying it).
        probe = [sys.executable, "-m", "amqpd", "--check", "--host", "127.0.0.1", "--port", "off", *tls_args]
        probe[probe.index("--tls-port") + 1] = str(broker.port)
        done = subprocess.run(probe, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("healthy: amqpd ")
        assert broker.signal(signal.SIGTERM) == 0


def test_a_tls_port_in_use_exits_1_naming_the_tls_port(pki: Pki) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        argv = ["--host", "127.0.0.1", "--port", "0", "--store", "memory://", "--tls-port", str(port)]
        done = subprocess.run(
            [sys.executable, "-m", "amqpd", *argv, "--tls-cert", str(pki.server_combined)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 1, done.stderr
    assert f"amqpd: cannot start on 127.0.0.1:{port}: " in done.stderr
    assert done.stderr.endswith("; pick another --tls-port/--host\n")


# ------------------------------------------------------------------------------------------ closing over TLS


@VERIFY_PEER
@pytest.mark.parametrize("after_close", [0, 2000], ids=["close-last", "publishing-after-close"])
def test_a_close_over_tls_gets_close_ok_and_a_clean_end_and_logs_nothing(
    broker_server: ServerThread, pki: Pki, amqpd_logs: pytest.LogCaptureFixture, loop_kind: str, after_close: int
) -> None:
    # TLS has no half-close (can_write_eof is False): the broker closes the TLS session after its Close-Ok
    # instead, and must still send the Close-Ok first and end with close_notify, not a reset.
    publish = b"".join(
        frame.marshal(value, 1)
        for value in (
            commands.Basic.Publish(exchange="", routing_key="amqpd-test-tls-nowhere"),
            header.ContentHeader(0, 10, commands.Basic.Properties()),
            body.ContentBody(b"0123456789"),
        )
    )
    for context in (pki.client_context(), pki.client_context(pki.guest)):
        with RawClient.open(amqps_url(broker_server), tls=context) as client:
            client.reset_is_eof = False
            client.open_channel(1)
            client.send_frame(publish * 2000 + frame.marshal(CLOSE, 0) + publish * after_close)
            client.expect(0, commands.Connection.CloseOk)
            assert client.read_frame() is None  # a clean end of the stream: a reset would raise
    wait_until(lambda: broker_server.stats()["connections"] == 0, timeout=1.5)
    assert warnings_and_errors(amqpd_logs) == []


async def test_aio_pika_close_over_tls_frees_the_connection_at_once(
    broker_server: ServerThread, amqpd_logs: pytest.LogCaptureFixture, pki: Pki
) -> None:
    connection = await aio_pika.connect(amqps_url(broker_server, **client_query(pki)))
    await connection.channel()
    await connection.close()
    await asyncio.to_thread(wait_until, lambda: broker_server.stats()["connections"] == 0, 1.5)
    assert warnings_and_errors(amqpd_logs) == []


def test_shutdown_closes_tls_clients_with_320_and_both_listeners(pki: Pki, loop_kind: str) -> None:
    config = Config(host="127.0.0.1", port=0, store="memory://", tls_port=0, tls_cert=str(pki.server_combined))
    thread = ServerThread(config, loop_kind).start()
    try:
        client = RawClient.open(amqps_url(thread), tls=pki.client_context())
    except BaseException:
        thread.stop()
        raise
    with client:
        ports = (thread.server.port, thread.server.tls_port)
        stopping = threading.Thread(target=thread.stop, args=("tls test",))
        stopping.start()
        close = client.expect(0, commands.Connection.Close)
        assert (close.reply_code, close.reply_text) == (
            320,
            "CONNECTION_FORCED - broker forced connection closure with reason 'tls test'",
        )
        client.send_method(0, commands.Connection.CloseOk())
        stopping.join(15)
    for port in ports:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()


# ------------------------------------------------------------------------------------------ health check


@VERIFY_PEER
def test_health_check_over_amqps_with_a_password_or_a_client_certificate(
    broker_server: ServerThread, pki: Pki
) -> None:
    ok, message = check(amqps_url(broker_server, cafile=pki.ca))
    assert ok, message
    ok, message = check(amqps_url(broker_server, **client_query(pki, pki.guest, auth="external")))
    assert ok, message
    ok, message = check(amqps_url(broker_server, **client_query(pki, pki.stranger)))
    assert not ok and "TLSV1_ALERT_UNKNOWN_CA" in message
    ok, message = check(amqps_url(broker_server, cafile=pki.other_ca))
    assert not ok and "CERTIFICATE_VERIFY_FAILED" in message


# ------------------------------------------------------------------------------------------ settings


def config_for(pki: Pki, **settings: Any) -> Config:
    base: dict[str, Any] = {"tls_cert": str(pki.server.cert), "tls_key": str(pki.server.key)}
    return Config(**{**base, **settings})


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "off"], "--port off leaves no listener: give --tls-cert"),
        (["--tls-key", "k.pem"], "--tls-key without --tls-cert: give the server certificate with --tls-cert"),
        (["--tls-verify", "peer"], "--tls-verify peer without --tls-cert"),
        (["--tls-cert", "c.pem", "--tls-verify", "peer"], "--tls-verify peer needs --tls-ca"),
        (
            ["--tls-cert", "c.pem", "--tls-fail-if-no-peer-cert"],
            "--tls-fail-if-no-peer-cert needs --tls-verify peer",
        ),
        (["--tls-cert", "c.pem", "--port", "5671"], "--port and --tls-port are both 5671"),
        (["--tls-verify", "always"], "--tls-verify must be one of none, peer, got 'always'"),
        (["--tls-cert-login-from", "email"], "--tls-cert-login-from must be one of common_name, distinguished_name"),
        (["--tls-fail-if-no-peer-cert", "maybe"], "--tls-fail-if-no-peer-cert: expected true or false, got 'maybe'"),
        (["--tls-port", "65536"], "--tls-port must be 0-65535, got 65536"),
        (["--port", "-1"], "--port must be 0-65535 or off, got -1"),
    ],
)
def test_tls_settings_that_cannot_work_are_refused_with_what_to_do(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(argv, {})
    assert message in str(refused.value)


def test_port_off_and_tls_settings_come_from_flags_environment_and_toml(tmp_path: Path) -> None:
    env = {"AMQPD_TLS_VERIFY": "Peer", "AMQPD_TLS_CA": "ca.pem", "AMQPD_TLS_FAIL_IF_NO_PEER_CERT": "yes"}
    config = load_config(["--port", "OFF", "--tls-cert", "c.pem"], env)
    assert (config.tls_verify, config.tls_ca, config.tls_fail_if_no_peer_cert) == ("peer", "ca.pem", True)
    assert config.port == PORT_OFF and not config.plain_listener and config.tls_listener
    toml = tmp_path / "amqpd.toml"
    toml.write_text('port = "off"\ntls_cert = "c.pem"\ntls_ca = "ca.pem"\ntls_verify = "peer"\n')
    config = load_config(["--config", str(toml), "--tls-fail-if-no-peer-cert"], {})
    assert (config.port, config.tls_verify, config.tls_fail_if_no_peer_cert) == (PORT_OFF, "peer", True)
    toml.write_text("tls_fail_if_no_peer_cert = false\n")
    assert load_config(["--config", str(toml)], {}).tls_fail_if_no_peer_cert is False


def test_unreadable_or_mismatched_files_stop_the_start_with_the_setting_named(pki: Pki, tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.pem")
    cases = [
        (config_for(pki, tls_cert=missing), f"--tls-cert: cannot read {missing!r}: No such file or directory"),
        (config_for(pki, tls_key=missing), f"--tls-key: cannot read {missing!r}"),
        (config_for(pki, tls_ca=missing, tls_verify="peer"), f"--tls-ca: cannot read {missing!r}"),
        (config_for(pki, tls_key=str(pki.guest.key)), "check both are PEM and that the key belongs to the cert"),
        (config_for(pki, tls_key=""), "--tls-cert (certificate and key in one file)"),
        (config_for(pki, tls_ca=str(pki.guest.key), tls_verify="peer"), "--tls-ca: no PEM CA certificate in"),
    ]
    for config, message in cases:
        with pytest.raises(TLSSettingsError) as refused:
            server_context(config)
        assert message in str(refused.value)


def test_an_encrypted_key_is_refused_rather_than_prompted_for(pki: Pki, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(pki.server.key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(TLSSettingsError, match="--tls-key is encrypted"):
        server_context(config_for(pki, tls_key=str(encrypted)))


def test_a_bad_certificate_file_makes_amqpd_exit_2_with_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    done = subprocess.run(
        [sys.executable, "-m", "amqpd", "--port", "0", "--store", "memory://", "--tls-cert", str(missing)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.endswith(f"amqpd: --tls-cert: cannot read {str(missing)!r}: No such file or directory\n")


@pytest.mark.parametrize(
    ("verify", "fail_if_no_peer_cert", "mode"),
    [("none", False, ssl.CERT_NONE), ("peer", False, ssl.CERT_OPTIONAL), ("peer", True, ssl.CERT_REQUIRED)],
)
def test_the_server_context_is_tls_1_2_or_later_and_verifies_as_configured(
    pki: Pki, verify: str, fail_if_no_peer_cert: bool, mode: ssl.VerifyMode
) -> None:
    context = server_context(
        config_for(pki, tls_ca=str(pki.ca), tls_verify=verify, tls_fail_if_no_peer_cert=fail_if_no_peer_cert)
    )
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == mode


# ------------------------------------------------------------------------------------------ names from certificates


SUBJECT = ((("countryName", "GB"),), (("organizationName", "Acme, Inc."),), (("commonName", "app-1"),))


def test_the_user_name_is_the_common_name_by_default() -> None:
    assert username_from_cert({"subject": SUBJECT}) == "app-1"
    two = ((("commonName", "a"),), (("commonName", "b"),))
    assert username_from_cert({"subject": two}) == "a,b"  # RabbitMQ joins several CNs with a comma
    assert username_from_cert({"subject": ((("organizationName", "x"),),)}) is None
    assert username_from_cert(None) is None and username_from_cert({}) is None


def test_the_distinguished_name_is_rfc_4514_most_specific_first_as_rabbitmq_writes_it() -> None:
    assert distinguished_name({"subject": SUBJECT}) == "CN=app-1,O=Acme\\, Inc.,C=GB"
    odd = ((("commonName", " #José+1 "), ("userId", "u~")),)
    assert distinguished_name({"subject": odd}) == "CN=\\ #Jos\\C3\\A9\\+1\\ +UID=u\\7E"
    assert username_from_cert({"subject": SUBJECT}, "distinguished_name") == "CN=app-1,O=Acme\\, Inc.,C=GB"
