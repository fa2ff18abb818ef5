"""Vhosts and users changed while the broker runs: a new vhost is usable once permissions are set, deleting a
vhost or a user closes their connections with RabbitMQ's 320 texts, and the broker-wide, vhost and user limits
are enforced from the moment they are set.

The changes are made inside the in-process broker (there is no management API yet); what they do is observed
with real clients: aio-pika, pika, and the raw client where the exact Connection.Close matters."""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Callable, Iterator
from typing import TypeVar
from urllib.parse import quote

import aio_pika
import aiormq
import pika
import pika.exceptions
import pytest
from aiormq.exceptions import ChannelPreconditionFailed
from pamqp import commands

from amqpd.broker.server.server import FD_RESERVE, UNLIMITED_FDS, Server, raise_fd_limit
from tests.support.amqp import uniq
from tests.support.raw_client import CLIENT_CAPABILITIES, PROTOCOL_HEADER, CloseInfo, RawClient
from tests.support.server_thread import ServerThread
from tests.support.waiting import wait_for, wait_until

T = TypeVar("T")
CLOSE_DEADLINE = 10.0


def on_server(thread: ServerThread, action: Callable[[Server], T]) -> T:
    """Run ``action(server)`` on the broker's own loop, as an operator's command would."""
    return thread.call(lambda: action(thread.server))


def url_for(thread: ServerThread, user: str, password: str, vhost: str = "/") -> str:
    return f"amqp://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{thread.port}/{quote(vhost, safe='')}"


def new_vhost(thread: ServerThread, name: str, *users: str) -> None:
    """A vhost where each of ``users`` has every permission."""

    def add(server: Server) -> None:
        server.add_vhost(name)
        for user in users:
            server.set_permissions(user, name, ".*", ".*", ".*")

    on_server(thread, add)


def new_user(thread: ServerThread, name: str, password: str, vhost: str = "/") -> None:
    def add(server: Server) -> None:
        server.access.add_user(name, password)
        server.set_permissions(name, vhost, ".*", ".*", ".*")

    on_server(thread, add)


OPENED = CloseInfo("opened", 0, "the broker answered Connection.OpenOk", 10, 41)


def open_refusal(url: str) -> CloseInfo:
    """Log in, tune, send Connection.Open and return the broker's Connection.Close for it (`OPENED` if none)."""
    with RawClient(url) as client:
        client.send_frame(PROTOCOL_HEADER)
        client.expect(0, commands.Connection.Start)
        client.send_method(
            0,
            commands.Connection.StartOk(
                client_properties={"product": "amqpd-tests", "capabilities": CLIENT_CAPABILITIES},
                mechanism="PLAIN",
                response=f"\0{client.user}\0{client.password}",
                locale="en_US",
            ),
        )
        tune = client.expect(0, commands.Connection.Tune)
        client.send_method(0, commands.Connection.TuneOk(tune.channel_max, tune.frame_max, 0))
        client.send_method(0, commands.Connection.Open(virtual_host=client.vhost))
        got = client.read_frame()
        if got is not None and isinstance(got[1], commands.Connection.OpenOk):
            client.close_connection()
            return OPENED
        if got is not None and isinstance(got[1], commands.Connection.Close):
            close = got[1]
            client.send_method(0, commands.Connection.CloseOk())
            code, text = close.reply_code or 0, close.reply_text or ""
            return CloseInfo("connection", code, text, close.class_id or 0, close.method_id or 0)
        return client.read_until_close()


def refused_open(code: int, text: str) -> CloseInfo:
    return CloseInfo("connection", code, text, 10, 40, 0)


async def closed_reason(connection: aio_pika.abc.AbstractConnection) -> asyncio.Future[BaseException | None]:
    """A future set with the exception aio-pika reports when the broker closes ``connection``."""
    closed: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    def on_close(_: object, exc: BaseException | None = None) -> None:
        if not closed.done():
            closed.set_result(exc)

    connection.close_callbacks.add(on_close)
    return closed


def pika_closed_by_broker(connection: pika.BlockingConnection) -> pika.exceptions.ConnectionClosedByBroker:
    """Run pika's I/O loop until the broker's Connection.Close arrives (pika answers it with Close-Ok)."""
    deadline = time.monotonic() + CLOSE_DEADLINE
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
        while time.monotonic() < deadline:
            connection.process_data_events(time_limit=0.05)
    return closed.value


# ------------------------------------------------------------------------------ vhosts created at run time


async def test_a_vhost_created_at_run_time_is_usable_once_permissions_are_set(broker_server: ServerThread) -> None:
    vhost, user = uniq("rt-vhost"), uniq("alice")
    on_server(broker_server, lambda s: (s.add_vhost(vhost), s.access.add_user(user, "pw")))
    url = url_for(broker_server, user, "pw", vhost)
    refusal = await asyncio.to_thread(open_refusal, url)
    assert refusal == refused_open(530, f"NOT_ALLOWED - access to vhost '{vhost}' refused for user '{user}'")

    on_server(broker_server, lambda s: s.set_permissions(user, vhost, ".*", ".*", ".*"))
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(uniq("q"), durable=True)
        topic = await channel.get_exchange("amq.topic")  # a new vhost has the standard exchanges
        await queue.bind(topic, "k.#")
        await topic.publish(aio_pika.Message(b"hello"), routing_key="k.1")
        message = await queue.get(timeout=5)
        assert message.body == b"hello"
        await message.ack()
        await queue.delete()
    assert on_server(broker_server, lambda s: list(s.vhosts[vhost].queues)) == []


def test_a_new_vhost_grants_nothing_to_the_default_user(broker_server: ServerThread, loop_kind: str) -> None:
    vhost = uniq("rt-vhost")
    on_server(broker_server, lambda s: s.add_vhost(vhost))
    assert open_refusal(url_for(broker_server, "guest", "guest", vhost)) == refused_open(
        530, f"NOT_ALLOWED - access to vhost '{vhost}' refused for user 'guest'"
    )


def test_adding_an_existing_vhost_keeps_what_it_holds(broker_server: ServerThread, loop_kind: str) -> None:
    vhost = uniq("rt-vhost")
    new_vhost(broker_server, vhost, "guest")
    connection = pika.BlockingConnection(pika.URLParameters(url_for(broker_server, "guest", "guest", vhost)))
    try:
        channel = connection.channel()
        queue = uniq("q")
        channel.queue_declare(queue)
        channel.basic_publish("", queue, b"kept")
        assert on_server(broker_server, lambda s: s.add_vhost(vhost).queues[queue].message_count) == 1
        assert channel.basic_get(queue, auto_ack=True)[2] == b"kept"
        channel.queue_delete(queue)
    finally:
        connection.close()


# ------------------------------------------------------------------------------ deleting a vhost


async def test_deleting_a_vhost_closes_its_connections_with_320_and_removes_its_queues(
    broker_server: ServerThread, amqp_url: str
) -> None:
    vhost = uniq("doomed")
    new_vhost(broker_server, vhost, "guest")
    async with await aio_pika.connect(amqp_url) as bystander:
        victim = await aio_pika.connect(url_for(broker_server, "guest", "guest", vhost))
        closed = await closed_reason(victim)
        channel = await victim.channel()
        await channel.declare_queue("durable-q", durable=True)
        await channel.declare_queue("transient-q")
        await channel.declare_queue("exclusive-q", exclusive=True)
        await channel.default_exchange.publish(aio_pika.Message(b"lost", delivery_mode=2), "durable-q")
        assert on_server(broker_server, lambda s: sorted(s.vhosts[vhost].queues)) == [
            "durable-q",
            "exclusive-q",
            "transient-q",
        ]

        assert on_server(broker_server, lambda s: s.delete_vhost(vhost))
        reason = await asyncio.wait_for(closed, CLOSE_DEADLINE)
        assert isinstance(reason, aiormq.exceptions.ConnectionClosed)
        assert reason.args == (320, f"CONNECTION_FORCED - vhost '{vhost}' is deleted")
        await victim.close()

        assert not on_server(broker_server, lambda s: vhost in s.vhosts)
        assert not on_server(broker_server, lambda s: s.delete_vhost(vhost))  # already gone
        # Connections to other vhosts carry on.
        other = await bystander.channel()
        queue = await other.declare_queue(uniq("q"), exclusive=True)
        await other.default_exchange.publish(aio_pika.Message(b"fine"), queue.name)
        assert (await queue.get(timeout=5, no_ack=True)).body == b"fine"
    await wait_for(lambda: broker_server.stats()["connections"] == 0)


def test_pika_sees_the_vhost_deletion_as_connection_closed_by_broker(
    broker_server: ServerThread, loop_kind: str
) -> None:
    vhost = uniq("doomed")
    new_vhost(broker_server, vhost, "guest")
    connection = pika.BlockingConnection(pika.URLParameters(url_for(broker_server, "guest", "guest", vhost)))
    try:
        connection.channel().queue_declare("q", durable=True)
        on_server(broker_server, lambda s: s.delete_vhost(vhost))
        closed = pika_closed_by_broker(connection)
        assert (closed.reply_code, closed.reply_text) == (320, f"CONNECTION_FORCED - vhost '{vhost}' is deleted")
    finally:
        if connection.is_open:
            connection.close()
    wait_until(lambda: broker_server.stats()["connections"] == 0)


def test_a_deleted_vhost_cannot_be_opened(broker_server: ServerThread, loop_kind: str) -> None:
    vhost = uniq("doomed")
    new_vhost(broker_server, vhost, "guest")
    on_server(broker_server, lambda s: s.delete_vhost(vhost))
    assert open_refusal(url_for(broker_server, "guest", "guest", vhost)) == refused_open(
        530, f"NOT_ALLOWED - vhost {vhost} not found"
    )
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError, match=f"vhost {vhost} not found"):
        pika.BlockingConnection(pika.URLParameters(url_for(broker_server, "guest", "guest", vhost)))


def test_a_vhost_created_again_after_deletion_starts_empty_and_without_permissions(
    broker_server: ServerThread, loop_kind: str
) -> None:
    vhost = uniq("again")
    new_vhost(broker_server, vhost, "guest")
    on_server(broker_server, lambda s: s.set_vhost_limits(vhost, {"max-queues": 1}))
    connection = pika.BlockingConnection(pika.URLParameters(url_for(broker_server, "guest", "guest", vhost)))
    try:
        channel = connection.channel()
        channel.exchange_declare("x", "topic", durable=True)
        channel.queue_declare("q", durable=True)
        on_server(broker_server, lambda s: s.delete_vhost(vhost))
        pika_closed_by_broker(connection)
    finally:
        if connection.is_open:
            connection.close()

    on_server(broker_server, lambda s: s.add_vhost(vhost))
    assert open_refusal(url_for(broker_server, "guest", "guest", vhost)).reply_code == 530
    assert on_server(broker_server, lambda s: s.access.vhost_limits.get(vhost)) is None
    on_server(broker_server, lambda s: s.set_permissions("guest", vhost, ".*", ".*", ".*"))
    connection = pika.BlockingConnection(pika.URLParameters(url_for(broker_server, "guest", "guest", vhost)))
    try:
        channel = connection.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="no queue 'q'"):
            channel.queue_declare("q", passive=True)
        channel = connection.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="no exchange 'x'"):
            channel.exchange_declare("x", passive=True)
        channel = connection.channel()
        channel.queue_declare("q1")
        channel.queue_declare("q2")  # the old max-queues limit went with the old vhost
        channel.queue_delete("q1")
        channel.queue_delete("q2")
    finally:
        connection.close()


# ------------------------------------------------------------------------------ deleting a user


async def test_deleting_a_user_closes_their_connections_with_320(broker_server: ServerThread, amqp_url: str) -> None:
    user = uniq("leaver")
    new_user(broker_server, user, "pw")
    async with await aio_pika.connect(amqp_url) as bystander:
        first = await aio_pika.connect(url_for(broker_server, user, "pw"))
        second = await aio_pika.connect(url_for(broker_server, user, "pw"))
        reasons = [await closed_reason(first), await closed_reason(second)]
        await first.channel()

        assert on_server(broker_server, lambda s: s.delete_user(user))
        for closed in reasons:
            reason = await asyncio.wait_for(closed, CLOSE_DEADLINE)
            assert isinstance(reason, aiormq.exceptions.ConnectionClosed)
            assert reason.args == (320, f"CONNECTION_FORCED - user '{user}' is deleted")
        await first.close()
        await second.close()
        assert not bystander.is_closed
        await (await bystander.channel()).close()

    with pytest.raises(aiormq.exceptions.ProbableAuthenticationError, match="ACCESS_REFUSED"):
        await aio_pika.connect(url_for(broker_server, user, "pw"))
    assert not on_server(broker_server, lambda s: s.delete_user(user))
    assert on_server(broker_server, lambda s: [k for k in s.access.permissions if k[0] == user]) == []


def test_pika_sees_the_user_deletion_as_connection_closed_by_broker(
    broker_server: ServerThread, loop_kind: str
) -> None:
    user = uniq("leaver")
    new_user(broker_server, user, "pw")
    connection = pika.BlockingConnection(pika.URLParameters(url_for(broker_server, user, "pw")))
    try:
        on_server(broker_server, lambda s: s.delete_user(user))
        closed = pika_closed_by_broker(connection)
        assert (closed.reply_code, closed.reply_text) == (320, f"CONNECTION_FORCED - user '{user}' is deleted")
    finally:
        if connection.is_open:
            connection.close()


# ------------------------------------------------------------------------------ the broker-wide connection limit

LIMITED = pytest.mark.parametrize("amqpd_settings", [{"max_connections": 2}], ids=["max_connections=2"])


@LIMITED
async def test_one_connection_over_the_broker_limit_is_refused_and_the_others_carry_on(
    broker_server: ServerThread, amqp_url: str
) -> None:
    assert on_server(broker_server, lambda s: s.connection_limit) == 2
    first = await aio_pika.connect(amqp_url)
    second = await aio_pika.connect(amqp_url)
    try:
        started = time.monotonic()
        # A plain socket, not aio-pika: aiormq answers this refusal with AMQPConnectionError or, when it sees the
        # EOF before it reads Connection.Start (often on uvloop), with StopAsyncIteration, and then leaves an
        # un-awaited Connection.close() to the garbage collector, a warning that fails a later test.
        reader, writer = await asyncio.open_connection("127.0.0.1", broker_server.port)
        writer.write(PROTOCOL_HEADER)
        try:
            answer = await asyncio.wait_for(reader.read(), CLOSE_DEADLINE)
        except ConnectionResetError:
            answer = b""
        finally:
            writer.close()
        assert answer == b""  # closed without a word: not even Connection.Start
        assert time.monotonic() - started < CLOSE_DEADLINE / 2  # refused at once, not by a timeout
        assert broker_server.stats()["connections"] == 2

        for connection in (first, second):  # the broker keeps serving the ones it has
            channel = await connection.channel()
            queue = await channel.declare_queue(exclusive=True)
            await channel.default_exchange.publish(aio_pika.Message(b"still here"), queue.name)
            assert (await queue.get(timeout=5, no_ack=True)).body == b"still here"
            await channel.close()

        await first.close()
        await wait_for(lambda: broker_server.stats()["connections"] == 1)
        async with await aio_pika.connect(amqp_url) as third:  # a freed slot is taken again
            await (await third.channel()).close()
    finally:
        await first.close()
        await second.close()


@LIMITED
def test_pika_gets_a_connection_error_at_once_over_the_broker_limit(
    broker_server: ServerThread, loop_kind: str
) -> None:
    url = broker_server.url
    held = [pika.BlockingConnection(pika.URLParameters(url)) for _ in range(2)]
    try:
        params = pika.URLParameters(url)
        params.socket_timeout = params.blocked_connection_timeout = 5
        with pytest.raises(pika.exceptions.AMQPConnectionError):
            pika.BlockingConnection(params)
        assert all(c.channel().is_open for c in held)
        held.pop().close()
        wait_until(lambda: broker_server.stats()["connections"] == 1)
        held.append(pika.BlockingConnection(pika.URLParameters(url)))
    finally:
        for connection in held:
            connection.close()


def test_the_connection_limit_defaults_to_the_open_files_limit_less_a_reserve(
    broker_server: ServerThread, loop_kind: str
) -> None:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert on_server(broker_server, lambda s: s.connection_limit) == max(soft - FD_RESERVE, 1)


class FakeLimits:
    """resource.getrlimit / setrlimit for RLIMIT_NOFILE over a (soft, hard) pair; setrlimit may refuse."""

    def __init__(self, soft: int, hard: int, refuse: bool = False) -> None:
        self.limits = (soft, hard)
        self.refuse = refuse

    def getrlimit(self, which: int) -> tuple[int, int]:
        return self.limits

    def setrlimit(self, which: int, limits: tuple[int, int]) -> None:
        if self.refuse:
            raise ValueError("not allowed to raise the maximum limit")
        self.limits = limits


@pytest.mark.parametrize(
    ("soft", "hard", "refuse", "expected"),
    [
        (1024, 4096, False, 4096),  # raised to the hard limit
        (4096, 4096, False, 4096),
        (65536, resource.RLIM_INFINITY, False, UNLIMITED_FDS),
        (65536, 1 << 21, True, 65536),  # cannot be raised: the limit in force, not a guess
        (resource.RLIM_INFINITY, resource.RLIM_INFINITY, False, UNLIMITED_FDS),
    ],
)
def test_the_open_files_limit_is_raised_to_the_hard_limit_when_it_can_be(
    monkeypatch: pytest.MonkeyPatch, soft: int, hard: int, refuse: bool, expected: int
) -> None:
    fake = FakeLimits(soft, hard, refuse)
    monkeypatch.setattr(resource, "getrlimit", fake.getrlimit)
    monkeypatch.setattr(resource, "setrlimit", fake.setrlimit)
    assert raise_fd_limit() == expected
    assert fake.limits[0] in (expected, soft)


# ------------------------------------------------------------------------------ vhost and user limits


@pytest.fixture
def limited_vhost(broker_server: ServerThread) -> Iterator[str]:
    vhost = uniq("limited")
    new_vhost(broker_server, vhost, "guest")
    yield vhost
    on_server(broker_server, lambda s: s.delete_vhost(vhost))


def test_a_vhost_connection_limit_set_at_run_time_refuses_the_next_connection(
    broker_server: ServerThread, limited_vhost: str, loop_kind: str
) -> None:
    url = url_for(broker_server, "guest", "guest", limited_vhost)
    first = pika.BlockingConnection(pika.URLParameters(url))
    try:
        on_server(broker_server, lambda s: s.set_vhost_limits(limited_vhost, {"max-connections": 1}))
        assert first.channel().is_open  # connections already open are not affected
        assert open_refusal(url) == refused_open(
            530,
            f"NOT_ALLOWED - access to vhost '{limited_vhost}' refused for user 'guest': "
            "connection limit (1) is reached",
        )
        pika.BlockingConnection(pika.URLParameters(broker_server.url)).close()  # other vhosts are not limited
        on_server(broker_server, lambda s: s.set_vhost_limits(limited_vhost, {"max-connections": -1}))
        pika.BlockingConnection(pika.URLParameters(url)).close()
        on_server(broker_server, lambda s: s.set_vhost_limits(limited_vhost, {"max-connections": 0}))
        assert open_refusal(url).reply_code == 530  # 0: no connections at all
    finally:
        first.close()


def test_a_vhost_queue_limit_set_at_run_time_refuses_the_next_queue(
    broker_server: ServerThread, limited_vhost: str, loop_kind: str
) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url_for(broker_server, "guest", "guest", limited_vhost)))
    try:
        channel = connection.channel()
        channel.queue_declare("a")
        on_server(broker_server, lambda s: s.set_vhost_limits(limited_vhost, {"max-queues": 2}))
        channel.queue_declare("b")
        channel.queue_declare("a")  # redeclaring an existing queue is not a new queue
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            channel.queue_declare("c")
        assert (refused.value.reply_code, refused.value.reply_text) == (
            406,
            f"PRECONDITION_FAILED - cannot declare queue 'c': queue limit in vhost '{limited_vhost}' (2) is reached",
        )
        channel = connection.channel()
        channel.queue_delete("b")
        channel.queue_declare("c")  # a slot freed
        on_server(broker_server, lambda s: s.set_vhost_limits(limited_vhost, {}))
        channel.queue_declare("d")
        for name in ("a", "c", "d"):
            channel.queue_delete(name)
    finally:
        connection.close()


async def test_a_queue_limit_counts_server_named_queues(broker_server: ServerThread, limited_vhost: str) -> None:
    on_server(broker_server, lambda s: s.set_vhost_limits(limited_vhost, {"max-queues": 1}))
    async with await aio_pika.connect(url_for(broker_server, "guest", "guest", limited_vhost)) as connection:
        channel = await connection.channel()
        await channel.declare_queue(exclusive=True)
        with pytest.raises(ChannelPreconditionFailed, match="queue limit in vhost"):
            await channel.declare_queue(exclusive=True)


def test_a_user_connection_limit_set_at_run_time_refuses_the_next_connection(
    broker_server: ServerThread, loop_kind: str
) -> None:
    user = uniq("limited-user")
    new_user(broker_server, user, "pw")
    url = url_for(broker_server, user, "pw")
    held = [pika.BlockingConnection(pika.URLParameters(url))]
    try:
        on_server(broker_server, lambda s: s.access.set_user_limits(user, {"max-connections": 2}))
        held.append(pika.BlockingConnection(pika.URLParameters(url)))
        assert open_refusal(url) == refused_open(
            530, f"NOT_ALLOWED - connection refused for user '{user}': user connection limit (2) is reached"
        )
        pika.BlockingConnection(pika.URLParameters(broker_server.url)).close()  # guest is not limited
        held.pop().close()
        wait_until(lambda: broker_server.stats()["connections"] == 1)
        held.append(pika.BlockingConnection(pika.URLParameters(url)))
    finally:
        for connection in held:
            connection.close()


def test_a_user_connection_limit_counts_connections_opened_before_the_user_was_updated(
    broker_server: ServerThread, loop_kind: str
) -> None:
    user = uniq("updated-user")
    new_user(broker_server, user, "pw")
    url = url_for(broker_server, user, "pw")
    first = pika.BlockingConnection(pika.URLParameters(url))
    try:
        # Replacing the user (new tags, same password) and then limiting it: the open connection still counts.
        on_server(broker_server, lambda s: s.access.add_user(user, "pw", tags=["monitoring"]))
        on_server(broker_server, lambda s: s.access.set_user_limits(user, {"max-connections": 1}))
        assert open_refusal(url).reply_text.endswith("user connection limit (1) is reached")
    finally:
        first.close()


def test_a_user_channel_limit_counts_channels_on_all_their_connections(
    broker_server: ServerThread, loop_kind: str
) -> None:
    user = uniq("channel-user")
    new_user(broker_server, user, "pw")
    on_server(broker_server, lambda s: s.access.set_user_limits(user, {"max-channels": 2}))
    url = url_for(broker_server, user, "pw")
    with RawClient.open(url) as one, RawClient.open(url) as two:
        one.open_channel(1)
        two.open_channel(1)
        two.send_method(2, commands.Channel.Open())
        assert two.read_until_close() == CloseInfo(
            "connection",
            530,
            f"NOT_ALLOWED - number of channels opened for user '{user}' has reached the maximum allowed user "
            "limit of (2)",
            0,
            0,
        )
        wait_until(lambda: broker_server.stats()["channels"] == 1)
        one.open_channel(2)  # the refused connection's channel was given back
        one.close_connection()


def test_a_user_channel_limit_applies_to_connections_opened_before_it_was_set(
    broker_server: ServerThread, loop_kind: str
) -> None:
    user = uniq("channel-user")
    new_user(broker_server, user, "pw")
    with RawClient.open(url_for(broker_server, user, "pw")) as client:
        client.open_channel(1)
        on_server(broker_server, lambda s: s.access.add_user(user, "pw", tags=["monitoring"]))  # a new User object
        on_server(broker_server, lambda s: s.access.set_user_limits(user, {"max-channels": 1}))
        client.send_method(2, commands.Channel.Open())
        info = client.read_until_close()
        assert (info.kind, info.reply_code) == ("connection", 530)
        assert info.reply_text.endswith("maximum allowed user limit of (1)")


def test_limits_of_a_deleted_user_do_not_outlive_it(broker_server: ServerThread, loop_kind: str) -> None:
    user = uniq("short-lived")
    new_user(broker_server, user, "pw")
    on_server(broker_server, lambda s: s.access.set_user_limits(user, {"max-connections": 0}))
    assert open_refusal(url_for(broker_server, user, "pw")).reply_code == 530
    on_server(broker_server, lambda s: s.delete_user(user))
    new_user(broker_server, user, "pw")
    pika.BlockingConnection(pika.URLParameters(url_for(broker_server, user, "pw"))).close()
