"""The health check does a full AMQP handshake and reports clearly when any step fails.

Most tests talk to `tests.support.fake_broker.FakeBroker`, a small AMQP peer built on pamqp that plays the broker's side
of the handshake and can be told to misbehave; the integration tests at the end talk to the real broker.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from pamqp import commands

from amqpd.broker.server.healthcheck import check, main, parse_url
from tests.support.fake_broker import FakeBroker
from tests.support.processes import free_port
from tests.support.waiting import wait_until


@pytest.fixture
def fake() -> Iterator[FakeBroker]:
    with FakeBroker() as broker:
        yield broker


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
        wait_until(lambda: isinstance(fake.seen[-1], commands.Connection.CloseOk))


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


@pytest.mark.parametrize("url", ["http://h/", "amqp://h:notaport/", "amqps://h/?auth=cram-md5"])
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
        [sys.executable, "-m", "amqpd.broker.server.healthcheck", fake.url()],
        capture_output=True,
        text=True,
        timeout=30,
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
