"""Resource permissions (configure / write / read regexes per user and vhost), row by row of RabbitMQ's
access-control table, each allowed and refused, with the exact reply: code, level (channel), class and method ids
and text, as RabbitMQ 3.10.8 answers (rabbit_channel.erl, rabbit_access_control.erl).

- exchange.declare: configure on the exchange; when it creates one with an alternate-exchange, also read on
  the new exchange and write on the alternate.
- exchange.declare passive, queue.declare passive: nothing.
- exchange.delete, queue.delete: configure.
- queue.declare: configure on the queue (the generated amq.gen-* name of a server-named one); when it creates
  one with x-dead-letter-exchange, also read on the new queue and write on that exchange.
- queue.bind / queue.unbind: write on the queue (checked first), read on the exchange.
- exchange.bind / exchange.unbind: write on the destination (checked first), read on the source.
- basic.publish: write on the exchange; the default exchange is checked as 'amq.default'.
- basic.get, basic.consume, queue.purge: read on the queue.

Permissions are checked before existence: a missing resource the user may not touch is 403, not 404. The users,
vhosts and topology are in tests/support/access_world.py and tests/fixtures/access/definitions.json.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import aio_pika
import pytest
from aiormq.exceptions import ChannelAccessRefused
from pamqp import commands
from pamqp.base import Frame
from pamqp.common import FieldTable

from tests.support import access_world as w
from tests.support.access_checks import Outcome, Publish, Step, attempt, channel_refusal
from tests.support.amqp import drain
from tests.support.raw_client import RawClient

pytestmark = pytest.mark.integration

V = w.ACCESS_VHOST
T = uuid.uuid4().hex[:8]  # names this run creates; an autouse fixture deletes them after each test
NEW_CFG_X, NEW_WR_X, NEW_AE_X = f"cfg-{T}-x", f"wr-{T}-x", f"ae-{T}-x"
NEW_CFG_Q, NEW_WR_Q, NEW_DL_Q = f"cfg-{T}-q", f"wr-{T}-q", f"dl-{T}-q"
MISSING_CFG, MISSING_WR, MISSING_RD, MISSING_OTHER = (f"{p}-{T}-missing" for p in ("cfg", "wr", "rd", "other"))
CREATED_EXCHANGES = (NEW_CFG_X, NEW_WR_X, NEW_AE_X)
CREATED_QUEUES = (NEW_CFG_Q, NEW_WR_Q, NEW_DL_Q)
DEFAULT_EXCHANGE = "ACCESS_REFUSED - operation not permitted on the default exchange"


def denied(kind: str, name: str, user: w.User) -> str:
    return f"ACCESS_REFUSED - access to {kind} '{name}' in vhost '{V}' refused for user '{user.name}'"


def no_such(kind: str, name: str) -> str:
    return f"NOT_FOUND - no {kind} '{name}' in vhost '{V}'"


def inequivalent(arg: str, kind: str, name: str, value: str) -> str:
    return (
        f"PRECONDITION_FAILED - inequivalent arg '{arg}' for {kind} '{name}' in vhost '{V}': "
        f"received the value '{value}' of type 'longstr' but current is none"
    )


# ---------------------------------------------------------------------------------------- method shorthands
def x_declare(
    name: str, *, passive: bool = False, ae: str | None = None, durable: bool = False
) -> commands.Exchange.Declare:
    arguments: FieldTable = {} if ae is None else {"alternate-exchange": ae}
    return commands.Exchange.Declare(
        exchange=name, exchange_type="direct", passive=passive, durable=durable, arguments=arguments
    )


def q_declare(
    name: str, *, passive: bool = False, dlx: str | None = None, durable: bool = False, exclusive: bool = False
) -> commands.Queue.Declare:
    arguments: FieldTable = {} if dlx is None else {"x-dead-letter-exchange": dlx}
    return commands.Queue.Declare(
        queue=name, passive=passive, durable=durable, exclusive=exclusive, arguments=arguments
    )


def q_bind(queue: str, exchange: str, key: str = "k") -> commands.Queue.Bind:
    return commands.Queue.Bind(queue=queue, exchange=exchange, routing_key=key)


def q_unbind(queue: str, exchange: str, key: str = "k") -> commands.Queue.Unbind:
    return commands.Queue.Unbind(queue=queue, exchange=exchange, routing_key=key)


def x_bind(destination: str, source: str, key: str = "k") -> commands.Exchange.Bind:
    return commands.Exchange.Bind(destination=destination, source=source, routing_key=key)


def x_unbind(destination: str, source: str, key: str = "k") -> commands.Exchange.Unbind:
    return commands.Exchange.Unbind(destination=destination, source=source, routing_key=key)


@dataclass(frozen=True)
class Case:
    user: w.User
    steps: tuple[Step, ...]
    expected: Outcome


def ok(user: w.User, *steps: Step, reply: type[Frame]) -> Case:
    return Case(user, steps, reply)


def no(user: w.User, *steps: Step, code: int = 403, text: str, ids: tuple[int, int]) -> Case:
    return Case(user, steps, channel_refusal(code, text, *ids))


R, D, C, M, G = w.REGEX, w.DENY, w.CONFIGURE_ONLY, w.MONITOR, w.GUEST
XD, XDEL, XB, XU = (40, 10), (40, 20), (40, 30), (40, 40)
QD, QB, QP, QDEL, QU = (50, 10), (50, 20), (50, 30), (50, 40), (50, 50)
BC, BP, BG = (60, 20), (60, 40), (60, 70)

CASES: dict[str, Case] = {
    # exchange.declare: configure on the exchange, for a new and an existing one; passive needs nothing
    "exchange.declare matching configure is allowed": ok(R, x_declare(NEW_CFG_X), reply=commands.Exchange.DeclareOk),
    "exchange.declare outside configure is refused": no(
        R, x_declare(NEW_WR_X), text=denied("exchange", NEW_WR_X, R), ids=XD
    ),
    "exchange.declare of an existing exchange needs configure": no(
        R, x_declare(w.RD_X, durable=True), text=denied("exchange", w.RD_X, R), ids=XD
    ),
    "exchange.declare of an existing exchange with configure is allowed": ok(
        R, x_declare(w.CFG_X, durable=True), reply=commands.Exchange.DeclareOk
    ),
    "passive exchange.declare needs no permission": ok(
        D, x_declare(w.OTHER_X, passive=True), reply=commands.Exchange.DeclareOk
    ),
    "passive exchange.declare of a missing exchange is 404 without permissions": no(
        D, x_declare(MISSING_OTHER, passive=True), code=404, text=no_such("exchange", MISSING_OTHER), ids=XD
    ),
    "exchange.declare of the default exchange is refused even with every permission": no(
        G, x_declare("", passive=True), text=DEFAULT_EXCHANGE, ids=XD
    ),
    # alternate-exchange: read on the new exchange and write on the alternate, only when it is created
    "exchange.declare with an alternate exchange the user may write is allowed": ok(
        R, x_declare(NEW_CFG_X, ae=w.WR_X), reply=commands.Exchange.DeclareOk
    ),
    "exchange.declare with an alternate exchange the user may not write is refused": no(
        R, x_declare(NEW_CFG_X, ae=w.RD_X), text=denied("exchange", w.RD_X, R), ids=XD
    ),
    "exchange.declare with an alternate exchange needs read on the declared exchange": no(
        C, x_declare(NEW_AE_X, ae=w.WR_X), text=denied("exchange", NEW_AE_X, C), ids=XD
    ),
    "the alternate exchange of an existing exchange is compared, not permission-checked": no(
        R,
        x_declare(w.CFG_X, durable=True, ae=w.OTHER_X),
        code=406,
        text=inequivalent("alternate-exchange", "exchange", w.CFG_X, w.OTHER_X),
        ids=XD,
    ),
    # exchange.delete: configure; the default and amq.* exchanges are refused before permissions
    "exchange.delete matching configure is allowed": ok(
        R, x_declare(NEW_CFG_X), commands.Exchange.Delete(exchange=NEW_CFG_X), reply=commands.Exchange.DeleteOk
    ),
    "exchange.delete outside configure is refused": no(
        R, commands.Exchange.Delete(exchange=w.OTHER_X), text=denied("exchange", w.OTHER_X, R), ids=XDEL
    ),
    "exchange.delete of a missing exchange matching configure is allowed": ok(
        R, commands.Exchange.Delete(exchange=MISSING_CFG), reply=commands.Exchange.DeleteOk
    ),
    "exchange.delete of the default exchange is refused even with every permission": no(
        G, commands.Exchange.Delete(exchange=""), text=DEFAULT_EXCHANGE, ids=XDEL
    ),
    "exchange.delete of an amq.* exchange is refused even with every permission": no(
        G,
        commands.Exchange.Delete(exchange="amq.direct"),
        text=f"ACCESS_REFUSED - deletion of system exchange 'amq.direct' in vhost '{V}' not allowed",
        ids=XDEL,
    ),
    # queue.declare: configure on the queue, for a new and an existing one; passive needs nothing
    "queue.declare matching configure is allowed": ok(
        R, q_declare(NEW_CFG_Q, exclusive=True), reply=commands.Queue.DeclareOk
    ),
    "queue.declare outside configure is refused": no(
        R, q_declare(NEW_WR_Q, exclusive=True), text=denied("queue", NEW_WR_Q, R), ids=QD
    ),
    "queue.declare of an existing queue needs configure": no(
        R, q_declare(w.RD_Q, durable=True), text=denied("queue", w.RD_Q, R), ids=QD
    ),
    "queue.declare of an existing queue with configure is allowed": ok(
        R, q_declare(w.CFG_Q, durable=True), reply=commands.Queue.DeclareOk
    ),
    "passive queue.declare needs no permission": ok(
        D, q_declare(w.OTHER_Q, passive=True), reply=commands.Queue.DeclareOk
    ),
    "passive queue.declare of a missing queue is 404 without permissions": no(
        D, q_declare(MISSING_OTHER, passive=True), code=404, text=no_such("queue", MISSING_OTHER), ids=QD
    ),
    # x-dead-letter-exchange: read on the new queue and write on the exchange, only when the queue is created
    "queue.declare with a dead-letter exchange the user may write is allowed": ok(
        R, q_declare(NEW_CFG_Q, exclusive=True, dlx=w.WR_X), reply=commands.Queue.DeclareOk
    ),
    "queue.declare with a dead-letter exchange the user may not write is refused": no(
        R, q_declare(NEW_CFG_Q, exclusive=True, dlx=w.RD_X), text=denied("exchange", w.RD_X, R), ids=QD
    ),
    "queue.declare with the default exchange as dead-letter exchange needs write on amq.default": no(
        R, q_declare(NEW_CFG_Q, exclusive=True, dlx=""), text=denied("exchange", "amq.default", R), ids=QD
    ),
    "queue.declare with a dead-letter exchange needs read on the declared queue": no(
        C, q_declare(NEW_DL_Q, exclusive=True, dlx=w.WR_X), text=denied("queue", NEW_DL_Q, C), ids=QD
    ),
    "the dead-letter exchange of an existing queue is compared, not permission-checked": no(
        R,
        q_declare(w.CFG_Q, durable=True, dlx=w.OTHER_X),
        code=406,
        text=inequivalent("x-dead-letter-exchange", "queue", w.CFG_Q, w.OTHER_X),
        ids=QD,
    ),
    # queue.delete: configure
    "queue.delete matching configure is allowed": ok(
        R, q_declare(NEW_CFG_Q), commands.Queue.Delete(queue=NEW_CFG_Q), reply=commands.Queue.DeleteOk
    ),
    "queue.delete outside configure is refused": no(
        R, commands.Queue.Delete(queue=w.OTHER_Q), text=denied("queue", w.OTHER_Q, R), ids=QDEL
    ),
    "queue.delete of a missing queue matching configure is allowed": ok(
        R, commands.Queue.Delete(queue=MISSING_CFG), reply=commands.Queue.DeleteOk
    ),
    # queue.bind / queue.unbind: write on the queue (checked first), read on the exchange
    "queue.bind with write on the queue and read on the exchange is allowed": ok(
        R, q_declare(NEW_CFG_Q, exclusive=True), q_bind(NEW_CFG_Q, w.RD_X), reply=commands.Queue.BindOk
    ),
    "queue.bind without write on the queue is refused": no(
        R, q_bind(w.RD_Q, w.RD_X), text=denied("queue", w.RD_Q, R), ids=QB
    ),
    "queue.bind without read on the exchange is refused": no(
        R, q_declare(NEW_CFG_Q, exclusive=True), q_bind(NEW_CFG_Q, w.WR_X), text=denied("exchange", w.WR_X, R), ids=QB
    ),
    "queue.bind without either names the queue": no(R, q_bind(w.RD_Q, w.WR_X), text=denied("queue", w.RD_Q, R), ids=QB),
    "queue.bind to the default exchange is refused": no(R, q_bind(w.CFG_Q, ""), text=DEFAULT_EXCHANGE, ids=QB),
    "queue.bind to a missing exchange without read is refused before it is looked up": no(
        R, q_bind(w.CFG_Q, MISSING_OTHER), text=denied("exchange", MISSING_OTHER, R), ids=QB
    ),
    "queue.bind to a missing exchange with read is 404": no(
        R, q_bind(w.CFG_Q, MISSING_RD), code=404, text=no_such("exchange", MISSING_RD), ids=QB
    ),
    "queue.unbind with write on the queue and read on the exchange is allowed": ok(
        R,
        q_declare(NEW_CFG_Q, exclusive=True),
        q_bind(NEW_CFG_Q, w.RD_X),
        q_unbind(NEW_CFG_Q, w.RD_X),
        reply=commands.Queue.UnbindOk,
    ),
    "queue.unbind without write on the queue is refused": no(
        R, q_unbind(w.RD_Q, w.RD_X, "rd"), text=denied("queue", w.RD_Q, R), ids=QU
    ),
    "queue.unbind without read on the exchange is refused": no(
        R, q_unbind(w.CFG_Q, w.WR_X), text=denied("exchange", w.WR_X, R), ids=QU
    ),
    # exchange.bind / exchange.unbind: write on the destination (checked first), read on the source
    "exchange.bind with write on the destination and read on the source is allowed": ok(
        R, x_declare(NEW_CFG_X), x_bind(NEW_CFG_X, w.RD_X), reply=commands.Exchange.BindOk
    ),
    "exchange.bind without write on the destination is refused": no(
        R, x_bind(w.RD_X, w.CFG_X), text=denied("exchange", w.RD_X, R), ids=XB
    ),
    "exchange.bind without read on the source is refused": no(
        R, x_bind(w.CFG_X, w.WR_X), text=denied("exchange", w.WR_X, R), ids=XB
    ),
    "exchange.bind from the default exchange is refused": no(R, x_bind(w.CFG_X, ""), text=DEFAULT_EXCHANGE, ids=XB),
    "exchange.unbind with write on the destination and read on the source is allowed": ok(
        R,
        x_declare(NEW_CFG_X),
        x_bind(NEW_CFG_X, w.RD_X),
        x_unbind(NEW_CFG_X, w.RD_X),
        reply=commands.Exchange.UnbindOk,
    ),
    "exchange.unbind without write on the destination is refused": no(
        R, x_unbind(w.RD_X, w.CFG_X), text=denied("exchange", w.RD_X, R), ids=XU
    ),
    "exchange.unbind without read on the source is refused": no(
        R, x_unbind(w.CFG_X, w.WR_X), text=denied("exchange", w.WR_X, R), ids=XU
    ),
    # basic.publish: write on the exchange, checked before the exchange is looked up
    "basic.publish with write on the exchange is allowed": ok(R, Publish(w.WR_X), reply=commands.Basic.Ack),
    "basic.publish without write on the exchange is refused": no(
        R, Publish(w.RD_X), text=denied("exchange", w.RD_X, R), ids=BP
    ),
    "basic.publish to the default exchange needs write on amq.default": no(
        R, Publish(""), text=denied("exchange", "amq.default", R), ids=BP
    ),
    "basic.publish to the default exchange with write on amq.default is allowed": ok(
        G, Publish(""), reply=commands.Basic.Ack
    ),
    "basic.publish to a missing exchange without write is refused before it is looked up": no(
        R, Publish(MISSING_OTHER), text=denied("exchange", MISSING_OTHER, R), ids=BP
    ),
    "basic.publish to a missing exchange with write is 404": no(
        R, Publish(MISSING_WR), code=404, text=no_such("exchange", MISSING_WR), ids=BP
    ),
    # basic.get, basic.consume, queue.purge: read on the queue
    "basic.get with read on the queue is allowed": ok(
        R, commands.Basic.Get(queue=w.RD_Q, no_ack=True), reply=commands.Basic.GetEmpty
    ),
    "basic.get without read on the queue is refused": no(
        R, commands.Basic.Get(queue=w.WR_Q), text=denied("queue", w.WR_Q, R), ids=BG
    ),
    "basic.consume with read on the queue is allowed": ok(
        R, commands.Basic.Consume(queue=w.RD_Q), reply=commands.Basic.ConsumeOk
    ),
    "basic.consume without read on the queue is refused": no(
        R, commands.Basic.Consume(queue=w.WR_Q), text=denied("queue", w.WR_Q, R), ids=BC
    ),
    "queue.purge with read on the queue is allowed": ok(
        R, commands.Queue.Purge(queue=w.RD_Q), reply=commands.Queue.PurgeOk
    ),
    "queue.purge without read on the queue is refused": no(
        R, commands.Queue.Purge(queue=w.WR_Q), text=denied("queue", w.WR_Q, R), ids=QP
    ),
    "queue.purge of a missing queue with read is 404": no(
        R, commands.Queue.Purge(queue=MISSING_RD), code=404, text=no_such("queue", MISSING_RD), ids=QP
    ),
    "queue.purge of a missing queue without read is refused before it is looked up": no(
        R, commands.Queue.Purge(queue=MISSING_OTHER), text=denied("queue", MISSING_OTHER, R), ids=QP
    ),
    # ^$ everywhere: connected, and nothing but passive declares
    "a user with ^$ permissions cannot declare": no(
        D, q_declare(NEW_CFG_Q, exclusive=True), text=denied("queue", NEW_CFG_Q, D), ids=QD
    ),
    "a user with ^$ permissions cannot publish to the default exchange": no(
        D, Publish(""), text=denied("exchange", "amq.default", D), ids=BP
    ),
    "a user with ^$ permissions cannot get": no(
        D, commands.Basic.Get(queue=w.RD_Q), text=denied("queue", w.RD_Q, D), ids=BG
    ),
    # tags grant no AMQP rights and take none away: monitoring gets exactly its permissions
    "a monitoring user reads where its permissions allow": ok(
        M, commands.Basic.Get(queue=w.RD_Q, no_ack=True), reply=commands.Basic.GetEmpty
    ),
    "a monitoring user cannot configure outside its permissions": no(
        M, q_declare(w.RD_Q, durable=True), text=denied("queue", w.RD_Q, M), ids=QD
    ),
    "a monitoring user cannot write outside its permissions": no(
        M, Publish(w.RD_X), text=denied("exchange", w.RD_X, M), ids=BP
    ),
    "an administrator tag with every permission configures anything": ok(
        G, x_declare(NEW_WR_X), reply=commands.Exchange.DeclareOk
    ),
}


def guest_url(broker: w.Broker) -> str:
    return broker.url(w.GUEST, V)


@pytest.fixture
def amqpd_settings() -> dict[str, object]:
    return dict(w.AMQPD_SETTINGS)


@pytest.fixture
def broker(amqp_url: str) -> w.Broker:
    return w.Broker.from_url(amqp_url)


@pytest.fixture(autouse=True)
def delete_what_the_test_created(broker: w.Broker) -> Iterator[None]:
    """As guest, after each test: delete the exchanges and queues this module creates (missing ones are fine)."""
    yield
    with RawClient.open(guest_url(broker)) as client:
        client.open_channel(1)
        for name in CREATED_EXCHANGES:
            client.send_method(1, commands.Exchange.Delete(exchange=name))
            client.expect(1, commands.Exchange.DeleteOk)
        for name in CREATED_QUEUES:
            client.send_method(1, commands.Queue.Delete(queue=name))
            client.expect(1, commands.Queue.DeleteOk)
        client.close_connection()


@pytest.mark.parametrize("name", list(CASES))
def test_access_control_table(name: str, broker: w.Broker, loop_kind: str) -> None:
    case = CASES[name]
    assert attempt(broker.url(case.user, V), *case.steps) == case.expected


# ---------------------------------------------------------------------------------------- server-named queues
SERVER_NAMED = commands.Queue.Declare(queue="", exclusive=True)


def test_a_server_named_queue_is_refused_unless_configure_matches_its_amq_gen_name(
    broker: w.Broker, loop_kind: str
) -> None:
    outcome = attempt(broker.url(w.REGEX, V), SERVER_NAMED)
    assert not isinstance(outcome, type), outcome
    assert (outcome.kind, outcome.reply_code, outcome.class_id, outcome.method_id) == ("channel", 403, 50, 10)
    pattern = (
        rf"ACCESS_REFUSED - access to queue 'amq\.gen-[A-Za-z0-9_-]{{22}}' in vhost '{V}' refused for user 'regex-user'"
    )
    assert re.fullmatch(pattern, outcome.reply_text), outcome.reply_text


@pytest.mark.parametrize("user", [w.GUEST, w.CONFIGURE_ONLY], ids=lambda u: u.name)
def test_a_server_named_queue_is_allowed_with_configure_on_amq_gen(
    user: w.User, broker: w.Broker, loop_kind: str
) -> None:
    with RawClient.open(broker.url(user, V)) as client:
        client.open_channel(1)
        client.send_method(1, SERVER_NAMED)
        assert (client.expect(1, commands.Queue.DeclareOk).queue or "").startswith("amq.gen-")
        client.close_connection()


# ------------------------------------------------------------------------------------- through a real client
async def test_a_user_works_end_to_end_within_its_permissions(broker: w.Broker) -> None:
    """regex-user: its own cfg- queue bound to rd-x receives what guest publishes there; it publishes to wr-x,
    whose queue guest reads."""
    key = f"k-{T}"
    async with (
        await aio_pika.connect(broker.url(w.REGEX, V)) as regex,
        await aio_pika.connect(broker.url(w.GUEST, V)) as guest,
    ):
        regex_channel, guest_channel = await regex.channel(), await guest.channel()
        queue = await regex_channel.declare_queue(NEW_CFG_Q, exclusive=True)
        await queue.bind(w.RD_X, routing_key=key)
        rd_x = await guest_channel.get_exchange(w.RD_X)
        await rd_x.publish(aio_pika.Message(b"to regex-user"), routing_key=key)
        message = await queue.get(no_ack=True, timeout=5)
        assert message.body == b"to regex-user"

        wr_x = await regex_channel.get_exchange(w.WR_X, ensure=False)
        await wr_x.publish(aio_pika.Message(b"from regex-user"), routing_key="wr")
        wr_q = await guest_channel.get_queue(w.WR_Q)
        assert await drain(wr_q) == [b"from regex-user"]


async def test_a_refused_operation_closes_only_the_channel(broker: w.Broker) -> None:
    async with await aio_pika.connect(broker.url(w.REGEX, V)) as connection:
        channel = await connection.channel()
        with pytest.raises(ChannelAccessRefused) as info:
            await channel.declare_exchange(NEW_WR_X)
        assert info.value.args[0] == denied("exchange", NEW_WR_X, w.REGEX)
        assert channel.is_closed
        again = await connection.channel()
        await again.get_exchange(w.OTHER_X)  # passive: still allowed, on the same connection


async def test_a_refused_publish_fails_the_publisher_confirm_wait(broker: w.Broker) -> None:
    async with await aio_pika.connect(broker.url(w.REGEX, V)) as connection:
        channel = await connection.channel()
        rd_x = await channel.get_exchange(w.RD_X)
        with pytest.raises(ChannelAccessRefused) as info:
            await rd_x.publish(aio_pika.Message(b"refused"), routing_key="rd")
        assert info.value.args[0] == denied("exchange", w.RD_X, w.REGEX)
        await (await connection.channel()).close()
