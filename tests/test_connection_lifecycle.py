"""Real clients connect, open channels, close them and disconnect cleanly; who may log in, and from where.

pika (BlockingConnection) and aio-pika (connect_robust) talk to the broker through `amqp_url`, so these run
against the reference RabbitMQ too; checks that look inside amqpd run only when the broker is in-process.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator

import aio_pika
import pika
import pytest
from pamqp import commands

from amqpd.broker.server.config import Config
from amqpd.broker.server.server import Server
from amqpd.broker.session.connection import is_loopback_peer
from tests.support.processes import AmqpdProcess
from tests.support.raw_client import CLIENT_CAPABILITIES, PROTOCOL_HEADER, CloseInfo, RawClient
from tests.support.server_thread import ServerThread
from tests.support.waiting import wait_for

EXTERNAL = bool(os.environ.get("AMQP_URL"))
CHANNELS = 10


# ------------------------------------------------------------------------------------- clients, any broker


@pytest.mark.integration
def test_pika_opens_ten_channels_closes_them_and_disconnects(
    amqp_url: str, amqpd_instance: ServerThread | None, loop_kind: str
) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channels = [connection.channel() for _ in range(CHANNELS)]
        assert len({ch.channel_number for ch in channels}) == CHANNELS
        assert all(ch.is_open for ch in channels)
        if amqpd_instance is not None:
            assert amqpd_instance.stats()["channels"] == CHANNELS
        for ch in channels:
            ch.close()
        assert all(ch.is_closed for ch in channels)
        if amqpd_instance is not None:
            assert amqpd_instance.stats()["channels"] == 0
        assert connection.is_open
    finally:
        connection.close()
    assert connection.is_closed
    # The fixture's leak check then waits for the broker to count zero connections.


@pytest.mark.integration
async def test_aio_pika_robust_opens_ten_channels_closes_them_and_disconnects(
    amqp_url: str, amqpd_instance: ServerThread | None
) -> None:
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        channels = [await connection.channel() for _ in range(CHANNELS)]
        assert all(not ch.is_closed for ch in channels)
        if amqpd_instance is not None:
            assert (await amqpd_instance.arun(_stats(amqpd_instance)))["channels"] == CHANNELS
        await asyncio.gather(*(ch.close() for ch in channels))
        assert all(ch.is_closed for ch in channels)
        if amqpd_instance is not None:
            await wait_for(lambda: amqpd_instance.arun(_no_channels(amqpd_instance)))
    finally:
        await connection.close()
    assert connection.is_closed


async def _stats(thread: ServerThread) -> dict[str, int]:
    return dict(thread.server.stats())


async def _no_channels(thread: ServerThread) -> bool:
    return thread.server.stats()["channels"] == 0


@pytest.mark.integration
def test_a_client_close_is_answered_with_close_ok_and_then_the_socket_closes(
    amqp_url: str, loop_kind: str
) -> None:
    with RawClient.open(amqp_url) as client:
        client.open_channel(1)
        client.open_channel(2)
        client.send_method(0, commands.Connection.Close(200, "bye", 0, 0))
        client.expect(0, commands.Connection.CloseOk)
        if not EXTERNAL:  # RabbitMQ leaves the hang-up to the client once Close-Ok is sent
            assert client.read_frame() is None


# ------------------------------------------------------------------------------------------ the default user


@pytest.fixture
def broker_with_alice(loop_kind: str) -> Iterator[ServerThread]:
    """In-process amqpd whose default user is alice, as `--default-user alice --default-pass s3cret` sets."""
    if EXTERNAL:
        pytest.skip("configures its own in-process amqpd")
    config = Config(host="127.0.0.1", port=0, store="memory://", default_user="alice", default_pass="s3cret")
    thread = ServerThread(config, loop_kind).start()
    try:
        yield thread
        assert thread.wait_idle()["connections"] == 0
    finally:
        thread.stop()


def url_for(thread: ServerThread, user: str, password: str) -> str:
    return f"amqp://{user}:{password}@127.0.0.1:{thread.port}/"


def test_the_configured_default_user_logs_in_over_the_wire(
    broker_with_alice: ServerThread, loop_kind: str
) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url_for(broker_with_alice, "alice", "s3cret")))
    try:
        assert connection.channel().is_open
    finally:
        connection.close()


@pytest.mark.parametrize(("user", "password"), [("guest", "guest"), ("alice", "guest"), ("alice", "")])
def test_other_credentials_are_refused_when_a_default_user_is_configured(
    user: str, password: str, broker_with_alice: ServerThread, loop_kind: str
) -> None:
    with RawClient(url_for(broker_with_alice, user, password)) as client:
        client.send_frame(PROTOCOL_HEADER)
        client.expect(0, commands.Connection.Start)
        client.send_method(
            0,
            commands.Connection.StartOk(
                client_properties={"capabilities": CLIENT_CAPABILITIES},
                mechanism="PLAIN",
                response=f"\0{user}\0{password}",
            ),
        )
        assert client.read_until_close() == CloseInfo(
            "connection",
            403,
            "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. "
            "For details see the broker logfile.",
            0,
            0,
        )


def test_the_default_user_flags_set_the_login_of_the_amqpd_command() -> None:
    with AmqpdProcess("--store", "memory://", "--default-user", "alice", "--default-pass", "s3cret") as amqpd:
        connection = pika.BlockingConnection(
            pika.URLParameters(f"amqp://alice:s3cret@127.0.0.1:{amqpd.port}/")
        )
        try:
            assert connection.channel().is_open
        finally:
            connection.close()
        with pytest.raises(pika.exceptions.ProbableAuthenticationError):
            pika.BlockingConnection(pika.URLParameters(f"amqp://guest:guest@127.0.0.1:{amqpd.port}/"))
        assert amqpd.signal(signal.SIGTERM) == 0


# ------------------------------------------------------------------------------------ Server.login


def server(user: str = "guest", password: str = "guest") -> Server:
    return Server(Config(store="memory://", default_user=user, default_pass=password))


def test_guest_logs_in_from_loopback() -> None:
    assert server().login("PLAIN", "guest", "guest", from_loopback=True)


def test_guest_is_refused_from_another_host_even_with_the_right_password() -> None:
    assert not server().login("PLAIN", "guest", "guest", from_loopback=False)


def test_a_configured_user_logs_in_from_any_host() -> None:
    alice = server("alice", "s3cret")
    assert alice.login("PLAIN", "alice", "s3cret", from_loopback=False)
    assert alice.login("PLAIN", "alice", "s3cret", from_loopback=True)


@pytest.mark.parametrize(
    ("user", "password"), [("guest", "wrong"), ("nobody", "guest"), ("guest", ""), ("", "")]
)
def test_wrong_user_or_password_is_refused(user: str, password: str) -> None:
    assert not server().login("PLAIN", user, password, from_loopback=True)


def test_a_non_ascii_password_is_compared_exactly() -> None:
    alice = server("alice", "pässwört")
    assert alice.login("PLAIN", "alice", "pässwört", from_loopback=False)
    assert not alice.login("PLAIN", "alice", "passwort", from_loopback=False)


@pytest.mark.parametrize(
    ("peername", "loopback"),
    [
        (("127.0.0.1", 5000), True),
        (("127.1.2.3", 5000), True),
        (("::1", 5000, 0, 0), True),
        (("::ffff:127.0.0.1", 5000, 0, 0), True),
        ("/run/amqpd.sock", True),  # a unix socket's peername is a path (or empty), never an address
        ("", True),
        (("10.0.0.7", 5000), False),
        (("192.168.1.20", 5000), False),
        (("::ffff:10.0.0.7", 5000, 0, 0), False),
        (("2001:db8::1", 5000, 0, 0), False),
        (("fe80::1%eth0", 5000, 0, 2), False),
        (("127.evil.example", 5000), False),
    ],
)
def test_loopback_peers_are_recognised_by_address(peername: object, loopback: bool) -> None:
    assert is_loopback_peer(peername) is loopback


# ------------------------------------------------------------------------------------ Server.login with EXTERNAL


def test_external_logs_in_an_existing_user_without_a_password() -> None:
    alice = server("alice", "s3cret")
    assert alice.login("EXTERNAL", "alice", None, from_loopback=False)
    assert not alice.login("EXTERNAL", "bob", None, from_loopback=True)
    assert not alice.login("EXTERNAL", "", None, from_loopback=True)


def test_external_keeps_guest_to_loopback_as_rabbitmq_does() -> None:
    assert server().login("EXTERNAL", "guest", None, from_loopback=True)
    assert not server().login("EXTERNAL", "guest", None, from_loopback=False)
