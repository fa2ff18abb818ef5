"""The health check does a full AMQP handshake and reports clearly when any step fails.

Most tests talk to `FakeBroker`, a few-line AMQP peer built on pamqp that plays the broker's side of the
handshake and can be told to misbehave; the integration tests at the end talk to the real broker.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from pamqp import commands

from broker.healthcheck import check, main, parse_url
from tests.helpers import FramedSocket

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


@pytest.fixture
def fake() -> Iterator[FakeBroker]:
    with FakeBroker() as broker:
        yield broker


def free_port() -> int:
    """A port nothing listens on: bound and released at once (the kernel will not hand it out again soon)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_healthy_broker_passes_and_is_named_in_the_message(fake: FakeBroker) -> None:
    ok, message = check(fake.url())
    assert ok, message
    assert message.startswith("healthy: FakeBroker 9.9 at 127.0.0.1:")


def test_check_walks_the_whole_handshake_and_closes_politely(fake: FakeBroker) -> None:
    check(fake.url())
    kinds = [type(f).__name__ for f in fake.seen]
    assert kinds == ["ProtocolHeader", "StartOk", "TuneOk", "Open", "Close"]
    tune_ok = fake.seen[2]
    assert isinstance(tune_ok, commands.Connection.TuneOk)
    assert tune_ok.heartbeat == 0  # a short-lived check must not make the broker expect heartbeats


def test_check_logs_in_with_plain_and_the_url_credentials(fake: FakeBroker) -> None:
    check(fake.url())
    start_ok = fake.seen[1]
    assert isinstance(start_ok, commands.Connection.StartOk)
    assert start_ok.mechanism == "PLAIN"
    assert start_ok.response == "\0guest\0guest"


def test_refused_port_fails_with_connection_refused() -> None:
    ok, message = check(f"amqp://guest:guest@127.0.0.1:{free_port()}/")
    assert not ok
    assert "cannot connect to 127.0.0.1:" in message
    assert "refused" in message


def test_wrong_credentials_fail_with_the_brokers_403() -> None:
    with FakeBroker("refuse_login") as fake:
        ok, message = check(fake.url(password="wrong"))
        assert not ok
        assert "login as 'guest' refused: 403 ACCESS_REFUSED" in message
        # The check acknowledged the broker's Close, so the broker can free the socket at once.
        assert isinstance(fake.seen[-1], commands.Connection.CloseOk)


def test_hang_up_after_login_is_reported_as_probable_bad_credentials() -> None:
    with FakeBroker("hang_up_on_login") as fake:
        ok, message = check(fake.url(password="wrong"))
        assert not ok
        assert "bad credentials?" in message


def test_unknown_vhost_fails_with_the_brokers_530(fake: FakeBroker) -> None:
    ok, message = check(fake.url(vhost="nope"))
    assert not ok
    assert "530 NOT_ALLOWED - vhost nope not found" in message


def test_silent_server_fails_within_the_timeout() -> None:
    with FakeBroker("silent") as fake:
        ok, message = check(fake.url(), timeout=0.3)
        assert not ok
        assert "within 0.3 s" in message


def test_server_speaking_another_protocol_is_named() -> None:
    with FakeBroker("wrong_protocol") as fake:
        ok, message = check(fake.url())
        assert not ok
        assert "does not speak AMQP 0-9-1" in message


def test_password_never_appears_in_a_timeout_message() -> None:
    with FakeBroker("silent") as fake:
        _, message = check(fake.url(password="s3cret"), timeout=0.2)
        assert "s3cret" not in message


@pytest.mark.parametrize(
    ("url", "vhost"),
    [
        ("amqp://u:p@h:1/", "/"),
        ("amqp://u:p@h:1", "/"),
        ("amqp://u:p@h:1/%2F", "/"),
        ("amqp://u:p@h:1/prod", "prod"),
    ],
)
def test_url_vhost_follows_client_library_conventions(url: str, vhost: str) -> None:
    assert parse_url(url).vhost == vhost


def test_percent_encoded_credentials_are_decoded() -> None:
    target = parse_url("amqp://us%40er:p%3Ass@host/")
    assert (target.user, target.password, target.port) == ("us@er", "p:ss", 5672)


@pytest.mark.parametrize("url", ["http://h/", "amqps://h/", "amqp://h:notaport/"])
def test_unusable_urls_fail_without_connecting(url: str) -> None:
    ok, message = check(url)
    assert not ok
    assert message.startswith("unhealthy: ")


def test_module_main_exits_0_when_healthy_and_1_otherwise(
    fake: FakeBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([fake.url()]) == 0
    assert "healthy" in capsys.readouterr().out
    assert main([f"amqp://guest:guest@127.0.0.1:{free_port()}/", "--timeout", "1"]) == 1
    assert "unhealthy" in capsys.readouterr().err


def test_python_dash_m_broker_healthcheck_runs(fake: FakeBroker) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "broker.healthcheck", fake.url()], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("healthy: FakeBroker")


# ------------------------------------------------------------------------------ against the real broker


@pytest.mark.integration
def test_running_broker_is_healthy(amqp_url: str) -> None:
    ok, message = check(amqp_url)
    assert ok, message


@pytest.mark.integration
def test_running_broker_refuses_a_wrong_password(amqp_url: str) -> None:
    parts = urlsplit(amqp_url)
    netloc = f"{parts.username}:definitely-wrong@{parts.hostname}:{parts.port or 5672}"
    ok, message = check(parts._replace(netloc=netloc).geturl())
    assert not ok
    assert "403" in message or "bad credentials" in message
