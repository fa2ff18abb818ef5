"""Logging in and opening a vhost: who gets in where, and exactly how RabbitMQ 3.10.8 refuses the others
(rabbit_reader.erl, rabbit_access_control.erl, rabbit_auth_backend_internal.erl).

- A user opens a vhost only with a permissions entry there, whatever its tags: 530 NOT_ALLOWED on
  Connection.Open (class 10, method 40), connection level. A missing vhost is 530 with its own text.
- A failed login (wrong or blank password, unknown user; PLAIN or AMQPLAIN) is 403 ACCESS_REFUSED with a text
  that hides the reason, on channel 0 with class and method 0, for a client that announces the
  authentication_failure_close capability; any other client is simply disconnected.
- The loopback-only user guest is refused from a non-loopback address (in-process amqpd only: the reference
  broker listens on 127.0.0.1).
"""

from __future__ import annotations

from collections.abc import Iterator

import aio_pika
import pika
import pika.exceptions
import pytest
from aiormq.exceptions import AMQPError, ProbableAuthenticationError

from tests.support import access_world as w
from tests.support.access_checks import amqplain_response, connection_close, connection_refusal
from tests.support.raw_client import EOF
from tests.support.server_thread import ServerThread

pytestmark = pytest.mark.integration


def login_refused(mechanism: str = "PLAIN") -> str:
    return (
        f"ACCESS_REFUSED - Login was refused using authentication mechanism {mechanism}. "
        "For details see the broker logfile."
    )


def vhost_refused(vhost: str, user: w.User) -> str:
    return f"NOT_ALLOWED - access to vhost '{vhost}' refused for user '{user.name}'"


MISSING_VHOST = f"NOT_ALLOWED - vhost {w.MISSING_VHOST} not found"


@pytest.fixture
def amqpd_settings() -> dict[str, object]:
    return dict(w.AMQPD_SETTINGS)


@pytest.fixture
def broker(amqp_url: str) -> w.Broker:
    return w.Broker.from_url(amqp_url)


# ------------------------------------------------------------------------------------------- who gets in where
ADMITTED = [
    (w.GUEST, w.DEFAULT_VHOST),
    (w.GUEST, w.ACCESS_VHOST),
    (w.GUEST, w.LIMITS_VHOST),
    (w.REGEX, w.ACCESS_VHOST),  # its password needs percent-encoding in the URL
    (w.DENY, w.ACCESS_VHOST),  # ^$ everywhere is still a permissions entry
    (w.CONFIGURE_ONLY, w.ACCESS_VHOST),
    (w.STRANGER, w.DEFAULT_VHOST),
    (w.MONITOR, w.ACCESS_VHOST),
    (w.BARE_ADMIN, w.DEFAULT_VHOST),
    (w.IMPERSONATOR, w.ACCESS_VHOST),
    (w.TOPIC_USER, w.ACCESS_VHOST),
    (w.LIMITED, w.ACCESS_VHOST),
]


@pytest.mark.parametrize(("user", "vhost"), ADMITTED, ids=[f"{u.name}@{v}" for u, v in ADMITTED])
async def test_a_user_opens_a_vhost_it_has_permissions_on(user: w.User, vhost: str, broker: w.Broker) -> None:
    async with await aio_pika.connect(broker.url(user, vhost)) as connection:
        channel = await connection.channel()
        await channel.close()


REFUSED_VHOSTS = [
    (w.STRANGER, w.ACCESS_VHOST),  # permissions on "/" only
    (w.MANAGER, w.ACCESS_VHOST),  # tag management, no permissions
    (w.MANAGER, w.DEFAULT_VHOST),
    (w.BARE_ADMIN, w.ACCESS_VHOST),  # tag administrator, permissions on "/" only
    (w.MONITOR, w.DEFAULT_VHOST),  # tag monitoring, permissions on access-test only
    (w.REGEX, w.DEFAULT_VHOST),
    (w.REGEX, w.LIMITS_VHOST),
]


@pytest.mark.parametrize(("user", "vhost"), REFUSED_VHOSTS, ids=[f"{u.name}@{v}" for u, v in REFUSED_VHOSTS])
def test_connection_open_without_permissions_on_the_vhost_is_refused_with_530(
    user: w.User, vhost: str, broker: w.Broker, loop_kind: str
) -> None:
    assert connection_refusal(broker.url(user, vhost)) == connection_close(530, vhost_refused(vhost, user), 10, 40)


@pytest.mark.parametrize("user", [w.GUEST, w.MANAGER], ids=lambda u: u.name)
def test_connection_open_of_a_missing_vhost_is_refused_with_530_whoever_asks(
    user: w.User, broker: w.Broker, loop_kind: str
) -> None:
    assert connection_refusal(broker.url(user, w.MISSING_VHOST)) == connection_close(530, MISSING_VHOST, 10, 40)


@pytest.mark.parametrize(
    ("user", "vhost", "text"),
    [
        (w.STRANGER, w.ACCESS_VHOST, vhost_refused(w.ACCESS_VHOST, w.STRANGER)),
        (w.GUEST, w.MISSING_VHOST, MISSING_VHOST),
    ],
    ids=["no permissions", "missing vhost"],
)
def test_pika_reports_a_refused_vhost_as_access_denied(
    user: w.User, vhost: str, text: str, broker: w.Broker, loop_kind: str
) -> None:
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as info:
        pika.BlockingConnection(pika.URLParameters(broker.url(user, vhost)))
    assert info.value.args == (f"ConnectionClosedByBroker: (530) {text!r}",)


async def test_aio_pika_fails_to_connect_to_a_vhost_without_permissions(broker: w.Broker) -> None:
    # aiormq reports a Connection.Close in answer to Connection.Open as an unexpected frame, without its text.
    with pytest.raises(AMQPError):
        await aio_pika.connect(broker.url(w.STRANGER, w.ACCESS_VHOST))


# ---------------------------------------------------------------------------------------------- failed logins
BAD_LOGINS = {
    "wrong password": (w.REGEX.name, "wrong-password"),
    "unknown user": (w.NOBODY.name, w.NOBODY.password),
    "another user's password": (w.DENY.name, w.CONFIGURE_ONLY.password),
}


@pytest.mark.parametrize("mechanism", ["PLAIN", "AMQPLAIN"])
@pytest.mark.parametrize("login", list(BAD_LOGINS))
def test_a_failed_login_is_refused_with_403_on_channel_zero(
    login: str, mechanism: str, broker: w.Broker, loop_kind: str
) -> None:
    user, password = BAD_LOGINS[login]
    url = w.url_for(broker.host, broker.port, user, password, w.ACCESS_VHOST)
    response = amqplain_response(user, password) if mechanism == "AMQPLAIN" else None
    outcome = connection_refusal(url, mechanism=mechanism, response=response)
    assert outcome == connection_close(403, login_refused(mechanism), 0, 0)


def test_a_blank_password_is_refused_with_403(broker: w.Broker, loop_kind: str) -> None:
    url = w.url_for(broker.host, broker.port, w.DENY.name, "", w.ACCESS_VHOST)
    assert connection_refusal(url) == connection_close(403, login_refused(), 0, 0)


def test_amqplain_logs_a_fixture_user_in(broker: w.Broker, loop_kind: str) -> None:
    response = amqplain_response(w.DENY.name, w.DENY.password)
    assert connection_refusal(broker.url(w.DENY), mechanism="AMQPLAIN", response=response) is None


def test_a_failed_login_without_the_capability_is_a_plain_disconnect(broker: w.Broker) -> None:
    """No authentication_failure_close in the client properties: no Connection.Close, the socket just closes
    (RabbitMQ waits a few seconds first)."""
    url = w.url_for(broker.host, broker.port, w.NOBODY.name, w.NOBODY.password, w.ACCESS_VHOST)
    assert connection_refusal(url, capabilities=False) == EOF


@pytest.mark.parametrize("mechanism", ["PLAIN", "AMQPLAIN"])
def test_a_malformed_login_response_is_a_plain_disconnect(mechanism: str, broker: w.Broker) -> None:
    """A response that does not parse (PLAIN without its NUL separators, AMQPLAIN that is not a field table)
    never logs in. RabbitMQ hangs up without Connection.Close (a few seconds later); amqpd answers, on purpose,
    as to any refused login (the client asked for authentication_failure_close), so the client learns why."""
    outcome = connection_refusal(broker.url(w.DENY), mechanism=mechanism, response="garbage")
    assert outcome in (EOF, connection_close(403, login_refused(mechanism), 0, 0))


async def test_aio_pika_reports_a_failed_login_as_an_authentication_error(broker: w.Broker) -> None:
    with pytest.raises(ProbableAuthenticationError) as info:
        await aio_pika.connect(broker.url(w.REGEX, password="wrong-password"))
    assert info.value.args == (login_refused(),)


@pytest.mark.parametrize("user", [w.REGEX, w.NOBODY], ids=["wrong password", "unknown user"])
def test_pika_reports_a_failed_login_as_an_authentication_error(user: w.User, broker: w.Broker, loop_kind: str) -> None:
    password = "wrong-password" if user is w.REGEX else user.password
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as info:
        pika.BlockingConnection(pika.URLParameters(broker.url(user, password=password)))
    assert info.value.args == (f"ConnectionClosedByBroker: (403) {login_refused()!r}",)


def test_pika_logs_in_with_a_password_that_needs_percent_encoding(broker: w.Broker, loop_kind: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(broker.url(w.REGEX)))
    try:
        assert connection.channel().is_open
    finally:
        connection.close()


# ---------------------------------------------------------------------------------------------- loopback users
@pytest.fixture
def broker_on_all_interfaces(loop_kind: str) -> Iterator[tuple[ServerThread, str]]:
    """An in-process amqpd with the access definitions, listening on every interface, and a non-loopback
    address of this machine to reach it by."""
    if w.EXTERNAL:
        pytest.skip("needs a broker reachable from a non-loopback address; the reference listens on 127.0.0.1 only")
    address = w.non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    from amqpd.broker.server.config import Config

    config = Config(host="", port=0, store="memory://", **w.AMQPD_SETTINGS)  # type: ignore[arg-type]
    thread = ServerThread(config, loop_kind).start()
    try:
        yield thread, address
        assert thread.wait_idle()["connections"] == 0
    finally:
        thread.stop()


def test_guest_is_refused_from_a_non_loopback_address(
    broker_on_all_interfaces: tuple[ServerThread, str], loop_kind: str
) -> None:
    thread, address = broker_on_all_interfaces
    url = w.url_for(address, thread.port, w.GUEST.name, w.GUEST.password, w.ACCESS_VHOST)
    assert connection_refusal(url) == connection_close(403, login_refused(), 0, 0)


def test_guest_logs_in_through_loopback_on_a_broker_listening_everywhere(
    broker_on_all_interfaces: tuple[ServerThread, str], loop_kind: str
) -> None:
    thread, _ = broker_on_all_interfaces
    url = w.url_for("127.0.0.1", thread.port, w.GUEST.name, w.GUEST.password, w.ACCESS_VHOST)
    assert connection_refusal(url) is None


def test_other_users_log_in_from_a_non_loopback_address(
    broker_on_all_interfaces: tuple[ServerThread, str], loop_kind: str
) -> None:
    thread, address = broker_on_all_interfaces
    url = w.url_for(address, thread.port, w.BARE_ADMIN.name, w.BARE_ADMIN.password, w.DEFAULT_VHOST)
    assert connection_refusal(url) is None
