"""User limits (max-connections, max-channels) and vhost limits (max-connections, max-queues), with RabbitMQ
3.10.8's exact answers (rabbit_reader.erl, rabbit_channel.erl):

- a connection over a user's or a vhost's max-connections: 530 NOT_ALLOWED on Connection.Open (class 10,
  method 40); the vhost limit is checked first, then the user limit, then the vhost permission;
- a channel over the user's max-channels (counted over all its connections): 530 NOT_ALLOWED that closes the
  whole connection, with class and method 0;
- a queue over the vhost's max-queues: 406 PRECONDITION_FAILED on queue.declare, channel level; only new
  queues count, so redeclaring an existing queue at the limit is fine.

limited-user has max-connections 2 and max-channels 2; limits-test has max-connections 3 and max-queues 2.
RabbitMQ forgets closed connections and channels a moment after they close, so a test that needs a place a
previous one freed waits for it (`open_when_allowed`).
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator

import aio_pika
import pika
import pika.exceptions
import pytest
from aiormq.exceptions import AMQPError, ConnectionNotAllowed
from pamqp import commands

from tests.support import access_world as w
from tests.support.access_checks import attempt, channel_refusal, close_info, connection_close, connection_refusal
from tests.support.raw_client import CloseInfo, RawClient
from tests.support.waiting import wait_for, wait_until

pytestmark = pytest.mark.integration

L = w.LIMITED
LV = w.LIMITS_VHOST
USER_LIMIT = (
    f"NOT_ALLOWED - connection refused for user '{L.name}': user connection limit ({w.USER_MAX_CONNECTIONS}) is reached"
)
CHANNEL_LIMIT = (
    f"NOT_ALLOWED - number of channels opened for user '{L.name}' has reached the maximum allowed user limit of "
    f"({w.USER_MAX_CHANNELS})"
)


def vhost_limit(user: w.User) -> str:
    return (
        f"NOT_ALLOWED - access to vhost '{LV}' refused for user '{user.name}': "
        f"connection limit ({w.VHOST_MAX_CONNECTIONS}) is reached"
    )


def queue_limit(queue: str) -> str:
    limit = f"queue limit in vhost '{LV}' ({w.VHOST_MAX_QUEUES}) is reached"
    return f"PRECONDITION_FAILED - cannot declare queue '{queue}': {limit}"


@pytest.fixture
def amqpd_settings() -> dict[str, object]:
    return dict(w.AMQPD_SETTINGS)


@pytest.fixture
def broker(amqp_url: str) -> w.Broker:
    return w.Broker.from_url(amqp_url)


def open_when_allowed(url: str, channels: int = 0, timeout: float = 5.0) -> RawClient:
    """A connection (with `channels` channels open, numbered from 1) as soon as the limits let it open: the
    broker may still count connections and channels that a previous step closed."""

    def try_open() -> RawClient | None:
        client = RawClient(url)
        try:
            client.handshake()
            for number in range(1, channels + 1):
                client.open_channel(number)
        except AssertionError:  # refused: Connection.Close instead of Connection.Open-Ok or Channel.Open-Ok
            client.close()
            return None
        return client

    opened: RawClient = wait_until(try_open, timeout, interval=0.05)
    return opened


@contextlib.contextmanager
def held(*urls: str, channels: int = 0) -> Iterator[list[RawClient]]:
    """Open connections that the test holds, closed politely at the end."""
    clients: list[RawClient] = []
    try:
        for url in urls:
            clients.append(open_when_allowed(url, channels))
        yield clients
    finally:
        for client in clients:
            with contextlib.suppress(OSError, AssertionError):
                client.close_connection()


def still_serves(client: RawClient, channel: int = 1) -> None:
    client.send_method(channel, commands.Basic.Qos(prefetch_count=1))
    client.expect(channel, commands.Basic.QosOk)


# --------------------------------------------------------------------------------------- user max-connections
def test_a_connection_over_the_user_max_connections_is_refused_with_530(broker: w.Broker, loop_kind: str) -> None:
    with held(*[broker.url(L)] * w.USER_MAX_CONNECTIONS):
        assert connection_refusal(broker.url(L)) == connection_close(530, USER_LIMIT, 10, 40)


def test_the_user_connection_limit_counts_connections_to_every_vhost(broker: w.Broker, loop_kind: str) -> None:
    with held(broker.url(L, w.ACCESS_VHOST), broker.url(L, LV)):
        assert connection_refusal(broker.url(L, w.ACCESS_VHOST)) == connection_close(530, USER_LIMIT, 10, 40)


def test_the_user_connection_limit_leaves_other_users_alone(broker: w.Broker, loop_kind: str) -> None:
    with held(*[broker.url(L)] * w.USER_MAX_CONNECTIONS):
        assert connection_refusal(broker.url(w.GUEST)) is None


def test_a_closed_connection_gives_its_place_back(broker: w.Broker, loop_kind: str) -> None:
    with held(*[broker.url(L)] * w.USER_MAX_CONNECTIONS) as clients:
        assert connection_refusal(broker.url(L)) == connection_close(530, USER_LIMIT, 10, 40)
        clients.pop().close_connection()
        open_when_allowed(broker.url(L)).close_connection()


def test_pika_reports_the_user_connection_limit_as_access_denied(broker: w.Broker, loop_kind: str) -> None:
    with (
        held(*[broker.url(L)] * w.USER_MAX_CONNECTIONS),
        pytest.raises(pika.exceptions.ProbableAccessDeniedError) as info,
    ):
        pika.BlockingConnection(pika.URLParameters(broker.url(L)))
    assert info.value.args == (f"ConnectionClosedByBroker: (530) {USER_LIMIT!r}",)


# ------------------------------------------------------------------------------------------ user max-channels
def open_channel(client: RawClient, number: int) -> CloseInfo | None:
    """Channel.Open; None when Open-Ok came, else how the broker closed (answered with Close-Ok)."""
    client.send_method(number, commands.Channel.Open())
    got = client.read_frame()
    assert got is not None, "the broker hung up without a word"
    channel, value = got
    if isinstance(value, commands.Channel.OpenOk) and channel == number:
        return None
    assert isinstance(value, commands.Connection.Close), f"unexpected {value!r} on channel {channel}"
    client.send_method(0, commands.Connection.CloseOk())
    assert client.read_frame() is None, "the broker did not hang up after Connection.Close-Ok"
    return close_info(value, 0)


def test_a_channel_over_the_user_max_channels_closes_the_connection_with_530(broker: w.Broker, loop_kind: str) -> None:
    client = open_when_allowed(broker.url(L), channels=w.USER_MAX_CHANNELS)
    with client:
        assert open_channel(client, w.USER_MAX_CHANNELS + 1) == connection_close(530, CHANNEL_LIMIT, 0, 0)


def test_the_user_channel_limit_counts_the_channels_of_all_its_connections(broker: w.Broker, loop_kind: str) -> None:
    with held(broker.url(L), broker.url(L), channels=1) as (first, second):
        assert open_channel(second, 2) == connection_close(530, CHANNEL_LIMIT, 0, 0)
        second.close()
        still_serves(first)


def test_a_closed_channel_gives_its_place_back(broker: w.Broker, loop_kind: str) -> None:
    with held(broker.url(L), channels=w.USER_MAX_CHANNELS) as (client,):
        client.send_method(2, commands.Channel.Close(200, "done", 0, 0))
        client.expect(2, commands.Channel.CloseOk)
        # A refused Channel.Open costs the connection: try on a second one until the broker has let go of channel 2.
        with held(broker.url(L), channels=1):
            pass
        still_serves(client)


async def test_aio_pika_reports_the_channel_limit_as_connection_not_allowed(broker: w.Broker) -> None:
    async def connection_with_all_its_channels() -> aio_pika.abc.AbstractConnection | None:
        try:
            connection = await aio_pika.connect(broker.url(L))
        except AMQPError:  # refused at Connection.Open: connections of an earlier test still counted
            return None
        try:
            for _ in range(w.USER_MAX_CHANNELS):
                await connection.channel()
        except ConnectionNotAllowed:  # channels of an earlier test still counted: try again
            await connection.close()
            return None
        return connection

    connection: aio_pika.abc.AbstractConnection = await wait_for(connection_with_all_its_channels, interval=0.05)
    async with connection:
        with pytest.raises(ConnectionNotAllowed) as info:
            await connection.channel()
        assert info.value.args == (CHANNEL_LIMIT,)
        await wait_for(lambda: not connection.connected.is_set())  # the broker closed the whole connection


# -------------------------------------------------------------------------------------- vhost max-connections
def test_a_connection_over_the_vhost_max_connections_is_refused_with_530(broker: w.Broker, loop_kind: str) -> None:
    with held(*[broker.url(w.GUEST, LV)] * w.VHOST_MAX_CONNECTIONS):
        assert connection_refusal(broker.url(w.GUEST, LV)) == connection_close(530, vhost_limit(w.GUEST), 10, 40)


def test_the_vhost_connection_limit_counts_every_user(broker: w.Broker, loop_kind: str) -> None:
    with held(broker.url(w.GUEST, LV), broker.url(w.GUEST, LV), broker.url(L, LV)):
        assert connection_refusal(broker.url(L, LV)) == connection_close(530, vhost_limit(L), 10, 40)
        assert connection_refusal(broker.url(w.GUEST, LV)) == connection_close(530, vhost_limit(w.GUEST), 10, 40)


def test_the_vhost_connection_limit_leaves_other_vhosts_alone(broker: w.Broker, loop_kind: str) -> None:
    with held(*[broker.url(w.GUEST, LV)] * w.VHOST_MAX_CONNECTIONS):
        assert connection_refusal(broker.url(w.GUEST, w.ACCESS_VHOST)) is None


def test_the_vhost_connection_limit_is_checked_before_the_user_limit(broker: w.Broker, loop_kind: str) -> None:
    with held(*[broker.url(L)] * w.USER_MAX_CONNECTIONS), held(*[broker.url(w.GUEST, LV)] * w.VHOST_MAX_CONNECTIONS):
        assert connection_refusal(broker.url(L, LV)) == connection_close(530, vhost_limit(L), 10, 40)


def test_the_vhost_connection_limit_is_checked_before_the_vhost_permission(broker: w.Broker, loop_kind: str) -> None:
    with held(*[broker.url(w.GUEST, LV)] * w.VHOST_MAX_CONNECTIONS):
        assert connection_refusal(broker.url(w.STRANGER, LV)) == connection_close(530, vhost_limit(w.STRANGER), 10, 40)


# ------------------------------------------------------------------------------------------ vhost max-queues
def declare(client: RawClient, queue: str, *, exclusive: bool = False, passive: bool = False) -> CloseInfo | str:
    """queue.declare on channel 1: the queue's name, or the Channel.Close (answered) that refused it."""
    client.send_method(1, commands.Queue.Declare(queue=queue, exclusive=exclusive, passive=passive))
    got = client.read_frame()
    assert got is not None
    value = got[1]
    if isinstance(value, commands.Queue.DeclareOk):
        return value.queue or ""
    assert isinstance(value, commands.Channel.Close), f"unexpected {value!r}"
    client.send_method(1, commands.Channel.CloseOk())
    client.open_channel(1)  # the connection outlives the refusal
    return close_info(value, 1)


@pytest.fixture
def full_limits_vhost(broker: w.Broker) -> Iterator[tuple[RawClient, list[str]]]:
    """A guest connection to limits-test holding max-queues exclusive queues (gone with the connection)."""
    names = [f"limited-{uuid.uuid4().hex[:8]}" for _ in range(w.VHOST_MAX_QUEUES)]
    with held(broker.url(w.GUEST, LV), channels=1) as (client,):
        for name in names:
            assert declare(client, name, exclusive=True) == name
        yield client, names


def test_a_queue_over_the_vhost_max_queues_is_refused_with_406(
    full_limits_vhost: tuple[RawClient, list[str]], loop_kind: str
) -> None:
    client, _ = full_limits_vhost
    name = f"limited-{uuid.uuid4().hex[:8]}"
    assert declare(client, name, exclusive=True) == channel_refusal(406, queue_limit(name), 50, 10)


def test_a_server_named_queue_over_the_vhost_max_queues_is_refused_with_406(
    full_limits_vhost: tuple[RawClient, list[str]], loop_kind: str
) -> None:
    client, _ = full_limits_vhost
    outcome = declare(client, "", exclusive=True)
    assert isinstance(outcome, CloseInfo)
    assert (outcome.kind, outcome.reply_code, outcome.class_id, outcome.method_id) == ("channel", 406, 50, 10)
    pattern = re.escape(queue_limit("@")).replace("@", r"amq\.gen-[A-Za-z0-9_-]{22}")
    assert re.fullmatch(pattern, outcome.reply_text), outcome.reply_text


def test_redeclaring_an_existing_queue_at_the_vhost_max_queues_is_allowed(
    full_limits_vhost: tuple[RawClient, list[str]], loop_kind: str
) -> None:
    client, names = full_limits_vhost
    assert declare(client, names[0], exclusive=True) == names[0]
    assert declare(client, names[1], passive=True) == names[1]


def test_a_deleted_queue_gives_its_place_back(full_limits_vhost: tuple[RawClient, list[str]], loop_kind: str) -> None:
    client, names = full_limits_vhost
    client.send_method(1, commands.Queue.Delete(queue=names[0]))
    client.expect(1, commands.Queue.DeleteOk)
    name = f"limited-{uuid.uuid4().hex[:8]}"
    assert declare(client, name, exclusive=True) == name


def test_the_vhost_queue_limit_leaves_other_vhosts_alone(
    full_limits_vhost: tuple[RawClient, list[str]], broker: w.Broker, loop_kind: str
) -> None:
    assert attempt(broker.url(w.GUEST), commands.Queue.Declare(queue="", exclusive=True)) == commands.Queue.DeclareOk
