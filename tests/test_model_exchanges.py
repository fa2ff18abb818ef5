"""Exchanges through real clients: the default and predeclared exchanges, declare/redeclare, delete, auto-delete,
internal exchanges and the exact replies RabbitMQ gives for each misuse.

Routing per exchange type lives in test_model_routing.py; exchange-to-exchange bindings in test_model_bindings.py.
"""

from __future__ import annotations

from collections.abc import Callable

import aio_pika
import pika
import pytest
from aiormq.exceptions import ChannelNotFoundEntity
from pamqp import commands
from pamqp.base import Frame

from tests.support.amqp import raw_close, refused, unique
from tests.support.raw_client import CloseInfo, RawClient

pytestmark = pytest.mark.integration

PREDECLARED = {
    "amq.direct": "direct",
    "amq.fanout": "fanout",
    "amq.topic": "topic",
    "amq.headers": "headers",
    "amq.match": "headers",
}
DEFAULT_REFUSED = "ACCESS_REFUSED - operation not permitted on the default exchange"


async def exchange_exists(conn: aio_pika.abc.AbstractConnection, name: str) -> bool:
    channel = await conn.channel()
    try:
        await channel.get_exchange(name)
    except ChannelNotFoundEntity:
        return False
    await channel.close()
    return True


# ------------------------------------------------------------------------------------ default exchange


async def test_default_exchange_routes_to_the_queue_named_by_the_routing_key(
    connection: aio_pika.abc.AbstractConnection,
) -> None:
    channel = await connection.channel()
    queue = await channel.declare_queue(unique("q"), exclusive=True)
    await channel.default_exchange.publish(aio_pika.Message(b"hello"), routing_key=queue.name)
    await channel.default_exchange.publish(aio_pika.Message(b"nobody"), routing_key=unique("absent"))
    message = await queue.get(no_ack=True)
    assert message.body == b"hello"
    assert message.exchange == ""
    assert await queue.get(no_ack=True, fail=False) is None


DefaultMisuse = Callable[[str], tuple[Frame, ...]]
DEFAULT_EXCHANGE_MISUSES: dict[str, tuple[DefaultMisuse, int, int]] = {
    "declare": (lambda u: (commands.Exchange.Declare(exchange="", exchange_type="direct"),), 40, 10),
    "passive declare": (lambda u: (commands.Exchange.Declare(exchange="", passive=True),), 40, 10),
    "delete": (lambda u: (commands.Exchange.Delete(exchange=""),), 40, 20),
    "queue.bind": (
        lambda u: (
            commands.Queue.Declare(queue=u, exclusive=True),
            commands.Queue.Bind(queue=u, exchange="", routing_key=u),
        ),
        50,
        20,
    ),
    "queue.unbind": (
        lambda u: (
            commands.Queue.Declare(queue=u, exclusive=True),
            commands.Queue.Unbind(queue=u, exchange="", routing_key=u),
        ),
        50,
        50,
    ),
    "exchange.bind as destination": (
        lambda u: (commands.Exchange.Bind(destination="", source="amq.fanout"),),
        40,
        30,
    ),
    "exchange.bind as source": (lambda u: (commands.Exchange.Bind(destination="amq.fanout", source=""),), 40, 30),
    "exchange.bind as destination of a missing source": (
        lambda u: (commands.Exchange.Bind(destination="", source=u),),
        40,
        30,
    ),
    "exchange.unbind": (lambda u: (commands.Exchange.Unbind(destination="amq.fanout", source=""),), 40, 40),
}


@pytest.mark.parametrize("case", list(DEFAULT_EXCHANGE_MISUSES))
def test_default_exchange_cannot_be_declared_deleted_or_bound(amqp_url: str, loop_kind: str, case: str) -> None:
    steps, class_id, method_id = DEFAULT_EXCHANGE_MISUSES[case]
    info = raw_close(amqp_url, *steps(unique("q")))
    assert info == CloseInfo("channel", 403, DEFAULT_REFUSED, class_id, method_id, 1)


def test_unknown_exchange_type_is_a_connection_error_even_for_the_default_exchange(
    amqp_url: str, loop_kind: str
) -> None:
    # RabbitMQ checks the type before the name.
    info = raw_close(amqp_url, commands.Exchange.Declare(exchange="", exchange_type="x-no-such-type"))
    assert info == CloseInfo("connection", 503, "COMMAND_INVALID - unknown exchange type 'x-no-such-type'", 40, 10)


def test_unknown_exchange_type_closes_the_connection_with_503(amqp_url: str, loop_kind: str) -> None:
    name = unique("x")
    info = raw_close(amqp_url, commands.Exchange.Declare(exchange=name, exchange_type="x-no-such-type"))
    assert info == CloseInfo("connection", 503, "COMMAND_INVALID - unknown exchange type 'x-no-such-type'", 40, 10)
    with RawClient.open(amqp_url) as client:  # and nothing was created
        client.open_channel(1)
        client.send_method(1, commands.Exchange.Declare(exchange=name, passive=True))
        assert client.read_until_close().reply_code == 404
        client.close_connection()


# ------------------------------------------------------------------------------- predeclared exchanges


@pytest.mark.parametrize("name", list(PREDECLARED))
async def test_predeclared_exchange_exists_and_accepts_an_equivalent_redeclare(
    connection: aio_pika.abc.AbstractConnection, name: str
) -> None:
    channel = await connection.channel()
    await channel.declare_exchange(name, PREDECLARED[name], passive=True)
    await channel.declare_exchange(name, PREDECLARED[name], durable=True)


async def test_predeclared_exchange_redeclared_with_another_type_or_durability_is_refused(
    connection: aio_pika.abc.AbstractConnection,
) -> None:
    channel = await connection.channel()
    assert await refused(channel.declare_exchange("amq.direct", "fanout", durable=True)) == (
        406,
        "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'amq.direct' in vhost '/': "
        "received 'fanout' but current is 'direct'",
    )
    channel = await connection.channel()
    assert await refused(channel.declare_exchange("amq.topic", "topic", durable=False)) == (
        406,
        "PRECONDITION_FAILED - inequivalent arg 'durable' for exchange 'amq.topic' in vhost '/': "
        "received 'false' but current is 'true'",
    )


def test_predeclared_exchanges_cannot_be_deleted(amqp_url: str, loop_kind: str) -> None:
    for name in [*PREDECLARED, "amq.no-such-exchange"]:  # the prefix alone decides
        info = raw_close(amqp_url, commands.Exchange.Delete(exchange=name))
        expected = f"ACCESS_REFUSED - deletion of system exchange '{name}' in vhost '/' not allowed"
        assert info == CloseInfo("channel", 403, expected, 40, 20, 1)


async def test_new_exchange_with_the_reserved_prefix_is_refused(connection: aio_pika.abc.AbstractConnection) -> None:
    name = "amq." + unique("x")
    channel = await connection.channel()
    assert await refused(channel.declare_exchange(name, "direct")) == (
        403,
        f"ACCESS_REFUSED - exchange name '{name}' contains reserved prefix 'amq.*'",
    )
    channel = await connection.channel()
    assert await refused(channel.declare_exchange(name, "direct", passive=True)) == (
        404,
        f"NOT_FOUND - no exchange '{name}' in vhost '/'",
    )


# ------------------------------------------------------------------------------------ declare / redeclare


async def test_passive_declare_of_a_missing_exchange_is_404(connection: aio_pika.abc.AbstractConnection) -> None:
    name = unique("x")
    channel = await connection.channel()
    assert await refused(channel.get_exchange(name)) == (404, f"NOT_FOUND - no exchange '{name}' in vhost '/'")


async def test_declared_exchange_is_found_by_a_passive_declare_until_deleted(
    connection: aio_pika.abc.AbstractConnection,
) -> None:
    name = unique("x")
    channel = await connection.channel()
    exchange = await channel.declare_exchange(name, "topic", durable=True)
    await channel.declare_exchange(name, "topic", passive=True)
    await channel.declare_exchange(name, "topic", durable=True)  # equivalent redeclare
    await exchange.delete()
    assert not await exchange_exists(connection, name)


REDECLARES: dict[str, tuple[dict[str, object], dict[str, object], str]] = {
    "type": ({"type": "direct"}, {"type": "fanout"}, "inequivalent arg 'type' for exchange '{x}' in vhost '/': "
             "received 'fanout' but current is 'direct'"),
    "durable": ({"durable": True}, {"durable": False}, "inequivalent arg 'durable' for exchange '{x}' in vhost "
                "'/': received 'false' but current is 'true'"),
    "auto_delete": ({}, {"auto_delete": True}, "inequivalent arg 'auto_delete' for exchange '{x}' in vhost '/': "
                    "received 'true' but current is 'false'"),
    "internal": ({"internal": True}, {}, "inequivalent arg 'internal' for exchange '{x}' in vhost '/': "
                 "received 'false' but current is 'true'"),
    "alternate-exchange changed": (
        {"arguments": {"alternate-exchange": "ae1"}},
        {"arguments": {"alternate-exchange": "ae2"}},
        "inequivalent arg 'alternate-exchange' for exchange '{x}' in vhost '/': received 'ae2' but current is 'ae1'",
    ),
    "alternate-exchange added": (
        {},
        {"arguments": {"alternate-exchange": "ae"}},
        "inequivalent arg 'alternate-exchange' for exchange '{x}' in vhost '/': received the value 'ae' of type "
        "'longstr' but current is none",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(REDECLARES))
async def test_inequivalent_exchange_redeclare_is_refused_with_the_differing_field(
    connection: aio_pika.abc.AbstractConnection, case: str
) -> None:
    first, second, text = REDECLARES[case]
    name = unique("x")
    channel = await connection.channel()
    exchange = await channel.declare_exchange(name, **{"type": "direct", **first})  # type: ignore[arg-type]
    try:
        other = await connection.channel()
        code, reply = await refused(other.declare_exchange(name, **{"type": "direct", **second}))  # type: ignore[arg-type]
        assert (code, reply) == (406, "PRECONDITION_FAILED - " + text.format(x=name))
    finally:
        await exchange.delete()


async def test_redeclare_ignores_arguments_other_than_the_alternate_exchange(
    connection: aio_pika.abc.AbstractConnection,
) -> None:
    name = unique("x")
    channel = await connection.channel()
    exchange = await channel.declare_exchange(name, "fanout", arguments={"x-custom": 1})
    await channel.declare_exchange(name, "fanout", arguments={"x-custom": 2, "other": "z"})
    await exchange.delete()


async def test_alternate_exchange_argument_must_be_a_string(connection: aio_pika.abc.AbstractConnection) -> None:
    name = unique("x")
    channel = await connection.channel()
    assert await refused(channel.declare_exchange(name, "direct", arguments={"alternate-exchange": True})) == (
        406,
        f"PRECONDITION_FAILED - invalid type 'bool' for arg 'alternate-exchange' in exchange '{name}' in vhost '/'",
    )


def test_exchange_name_loses_cr_and_lf(amqp_url: str, loop_kind: str) -> None:
    name = unique("x")
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.exchange_declare(name[:6] + "\r\n" + name[6:], "fanout")
        channel.exchange_declare(name, "fanout", passive=True)
        channel.exchange_delete(name + "\n")
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            channel.exchange_declare(name, "fanout", passive=True)
        assert (info.value.reply_code, info.value.reply_text) == (404, f"NOT_FOUND - no exchange '{name}' in vhost '/'")
    finally:
        connection.close()


# -------------------------------------------------------------------------------------------- deletion


async def test_deleting_a_missing_exchange_succeeds(connection: aio_pika.abc.AbstractConnection) -> None:
    channel = await connection.channel()
    raw = await channel.get_underlay_channel()
    await raw.exchange_delete(unique("x"))
    await raw.exchange_delete(unique("x"), if_unused=True)


async def test_delete_if_unused_refuses_an_exchange_with_bindings(connection: aio_pika.abc.AbstractConnection) -> None:
    name = unique("x")
    channel = await connection.channel()
    exchange = await channel.declare_exchange(name, "direct")
    queue = await channel.declare_queue(unique("q"), exclusive=True)
    await queue.bind(exchange, "k")
    other = await connection.channel()
    assert await refused(_delete_if_unused(other, name)) == (
        406,
        f"PRECONDITION_FAILED - exchange '{name}' in vhost '/' in use",
    )
    await queue.unbind(exchange, "k")
    raw = await channel.get_underlay_channel()
    await raw.exchange_delete(name, if_unused=True)
    assert not await exchange_exists(connection, name)


async def _delete_if_unused(channel: aio_pika.abc.AbstractChannel, name: str) -> None:
    raw = await channel.get_underlay_channel()
    await raw.exchange_delete(name, if_unused=True)


async def test_an_exchange_that_is_only_a_destination_counts_as_unused(
    connection: aio_pika.abc.AbstractConnection,
) -> None:
    source, destination = unique("src"), unique("dst")
    channel = await connection.channel()
    src = await channel.declare_exchange(source, "fanout")
    dst = await channel.declare_exchange(destination, "fanout")
    await dst.bind(src)
    raw = await channel.get_underlay_channel()
    await raw.exchange_delete(destination, if_unused=True)
    assert not await exchange_exists(connection, destination)
    await src.delete(if_unused=True)  # its binding to the deleted exchange went with it


async def test_deleting_an_exchange_stops_routing_through_it(connection: aio_pika.abc.AbstractConnection) -> None:
    channel = await connection.channel()
    exchange = await channel.declare_exchange(unique("x"), "fanout")
    queue = await channel.declare_queue(unique("q"), exclusive=True)
    await queue.bind(exchange)
    await exchange.delete()
    await channel.declare_exchange(exchange.name, "fanout")  # a new exchange of the same name has no bindings
    fresh = await channel.get_exchange(exchange.name)
    await fresh.publish(aio_pika.Message(b"m"), routing_key="")
    assert await queue.get(no_ack=True, fail=False) is None
    await fresh.delete()


# ---------------------------------------------------------------------------------------- auto-delete


async def test_auto_delete_exchange_lives_until_its_last_binding_goes(
    connection: aio_pika.abc.AbstractConnection,
) -> None:
    name = unique("x")
    channel = await connection.channel()
    exchange = await channel.declare_exchange(name, "direct", auto_delete=True)
    assert await exchange_exists(connection, name)  # never bound: not deleted
    queue = await channel.declare_queue(unique("q"), exclusive=True)
    await queue.bind(exchange, "a")
    await queue.bind(exchange, "b")
    await queue.unbind(exchange, "a")
    assert await exchange_exists(connection, name)
    await queue.unbind(exchange, "b")
    assert not await exchange_exists(connection, name)


async def test_auto_delete_exchange_goes_when_its_bound_queue_is_deleted(
    connection: aio_pika.abc.AbstractConnection,
) -> None:
    name = unique("x")
    channel = await connection.channel()
    exchange = await channel.declare_exchange(name, "fanout", auto_delete=True)
    queue = await channel.declare_queue(unique("q"), exclusive=True)
    await queue.bind(exchange)
    await queue.delete()
    assert not await exchange_exists(connection, name)


async def test_auto_delete_exchange_goes_when_its_last_exchange_binding_goes(
    connection: aio_pika.abc.AbstractConnection,
) -> None:
    source, destination = unique("src"), unique("dst")
    channel = await connection.channel()
    src = await channel.declare_exchange(source, "fanout", auto_delete=True)
    dst = await channel.declare_exchange(destination, "fanout")
    await dst.bind(src)
    await dst.delete()  # removes the binding whose source is `src`
    assert not await exchange_exists(connection, source)


async def test_auto_delete_does_not_apply_to_bindings_where_the_exchange_is_the_destination(
    connection: aio_pika.abc.AbstractConnection,
) -> None:
    source, destination = unique("src"), unique("dst")
    channel = await connection.channel()
    src = await channel.declare_exchange(source, "fanout")
    dst = await channel.declare_exchange(destination, "fanout", auto_delete=True)
    await dst.bind(src)
    await dst.unbind(src)
    assert await exchange_exists(connection, destination)
    await dst.delete()
    await src.delete()


# -------------------------------------------------------------------------------------------- internal


async def test_publishing_to_an_internal_exchange_is_refused(connection: aio_pika.abc.AbstractConnection) -> None:
    name = unique("x")
    channel = await connection.channel()
    internal = await channel.declare_exchange(name, "fanout", internal=True)
    try:
        publisher = await connection.channel()
        target = await publisher.get_exchange(name, ensure=False)
        assert await refused(target.publish(aio_pika.Message(b"m"), routing_key="")) == (
            403,
            f"ACCESS_REFUSED - cannot publish to internal exchange '{name}' in vhost '/'",
        )
    finally:
        await internal.delete()


async def test_internal_exchange_receives_messages_through_an_exchange_binding(
    connection: aio_pika.abc.AbstractConnection,
) -> None:
    channel = await connection.channel()
    public = await channel.declare_exchange(unique("public"), "direct")
    internal = await channel.declare_exchange(unique("internal"), "fanout", internal=True)
    queue = await channel.declare_queue(unique("q"), exclusive=True)
    await queue.bind(internal)
    await internal.bind(public, "k")
    await public.publish(aio_pika.Message(b"via-internal"), routing_key="k")
    message = await queue.get(no_ack=True)
    assert (message.body, message.exchange) == (b"via-internal", public.name)
    await internal.delete()
    await public.delete()
