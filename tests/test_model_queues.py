"""Queues through real clients: declare flags and counts, server naming, the "last declared queue" shortcut,
redeclare equivalence, exclusivity, auto-delete, purge, delete, bind/unbind errors, argument validation and
name rules, each with RabbitMQ's exact reply."""

from __future__ import annotations

from typing import Any

import aio_pika
import pika
import pytest
from aiormq.exceptions import ChannelNotFoundEntity
from pamqp import commands
from pamqp.base import Frame

from tests.support.amqp import ignore, raw_close, refused, unique
from tests.support.raw_client import CloseInfo, RawClient
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration
Connection = aio_pika.abc.AbstractConnection


def locked(name: str) -> tuple[int, str]:
    return (
        405,
        f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{name}' in vhost '/'. It could be "
        "originally declared on another connection or the exclusive property value does not match that of the "
        "original declaration.",
    )


async def queue_exists(conn: Connection, name: str) -> bool:
    channel = await conn.channel()
    try:
        await channel.get_queue(name)
    except ChannelNotFoundEntity:
        return False
    await channel.close()
    return True


async def publish(conn: Connection, queue: str, *bodies: bytes) -> None:
    channel = await conn.channel()
    for body in bodies:
        await channel.default_exchange.publish(aio_pika.Message(body), routing_key=queue)
    await channel.close()


# ------------------------------------------------------------------------------------------- declare


async def test_passive_declare_of_a_missing_queue_is_404(connection: Connection) -> None:
    name = unique("q")
    channel = await connection.channel()
    assert await refused(channel.declare_queue(name, passive=True)) == (
        404,
        f"NOT_FOUND - no queue '{name}' in vhost '/'",
    )


async def test_declare_ok_reports_ready_messages_and_consumers(connection: Connection) -> None:
    channel = await connection.channel()
    raw = await channel.get_underlay_channel()
    name = unique("q")
    ok = await raw.queue_declare(name, exclusive=True)
    assert (ok.queue, ok.message_count, ok.consumer_count) == (name, 0, 0)
    await publish(connection, name, b"1", b"2", b"3")
    await raw.basic_consume(name, ignore, no_ack=False, consumer_tag="c1")
    await raw.basic_qos(prefetch_count=1)
    await raw.basic_consume(name, ignore, consumer_tag="c2")
    ok = await raw.queue_declare(name, passive=True)
    # c1 took all three before the qos; none is ready any more
    assert (ok.message_count, ok.consumer_count) == (0, 2)
    other = await (await connection.channel()).get_underlay_channel()
    await channel.close()
    ok = await other.queue_declare(name, passive=True)
    assert (ok.message_count, ok.consumer_count) == (3, 0)  # the closed channel's unacked came back


async def test_server_named_queue_gets_an_amq_gen_name_that_cannot_be_redeclared_by_name(
    connection: Connection,
) -> None:
    channel = await connection.channel()
    queue = await channel.declare_queue("", exclusive=True)
    assert queue.name.startswith("amq.gen-")
    assert len(queue.name) == len("amq.gen-") + 22
    await channel.declare_queue(queue.name, passive=True)
    other = await connection.channel()
    assert await refused(other.declare_queue(queue.name, exclusive=True)) == (
        403,
        f"ACCESS_REFUSED - queue name '{queue.name}' contains reserved prefix 'amq.*'",
    )


async def test_queue_with_the_reserved_prefix_is_refused(connection: Connection) -> None:
    name = "amq." + unique("q")
    channel = await connection.channel()
    assert await refused(channel.declare_queue(name)) == (
        403,
        f"ACCESS_REFUSED - queue name '{name}' contains reserved prefix 'amq.*'",
    )


# ------------------------------------------------------------------------------- last declared queue


async def test_empty_queue_name_means_the_last_queue_declared_on_the_channel(connection: Connection) -> None:
    channel = await connection.channel()
    raw = await channel.get_underlay_channel()
    exchange = unique("x")
    await raw.exchange_declare(exchange, exchange_type="direct", auto_delete=True)
    name = (await raw.queue_declare("", exclusive=True)).queue
    assert name is not None
    await raw.queue_bind("", exchange, routing_key="")  # empty key too: the queue's name is the key
    await raw.basic_publish(b"1", exchange=exchange, routing_key=name)
    await raw.basic_publish(b"2", exchange=exchange, routing_key="")
    got = await raw.basic_get("", no_ack=True)
    assert got.body == b"1"
    await raw.basic_publish(b"3", exchange=exchange, routing_key=name)
    assert (await raw.queue_purge("")).message_count == 1
    await raw.basic_publish(b"4", exchange=exchange, routing_key=name)
    ok = await raw.basic_consume("", ignore, no_ack=True)
    await raw.basic_cancel(ok.consumer_tag or "")
    await raw.queue_unbind("", exchange, routing_key="")  # removes the binding keyed by the name
    assert await exchange_gone(connection, exchange)  # auto-delete: that was its only binding
    await raw.queue_declare(name, passive=True)
    assert (await raw.queue_delete("")).message_count == 0
    assert not await queue_exists(connection, name)


async def exchange_gone(conn: Connection, name: str) -> bool:
    channel = await conn.channel()
    try:
        await channel.get_exchange(name)
    except ChannelNotFoundEntity:
        return True
    await channel.close()
    return False


NO_PREVIOUS = {
    "queue.bind": (commands.Queue.Bind(queue="", exchange="amq.direct", routing_key="k"), 50, 20),
    "queue.bind to the default exchange": (commands.Queue.Bind(queue="", exchange="", routing_key=""), 50, 20),
    "queue.unbind": (commands.Queue.Unbind(queue="", exchange="amq.direct", routing_key="k"), 50, 50),
    "queue.purge": (commands.Queue.Purge(queue=""), 50, 30),
    "queue.delete": (commands.Queue.Delete(queue=""), 50, 40),
    "basic.get": (commands.Basic.Get(queue=""), 60, 70),
    "basic.consume": (commands.Basic.Consume(queue=""), 60, 20),
}


@pytest.mark.parametrize("case", list(NO_PREVIOUS))
def test_empty_queue_name_without_a_previous_declare_is_404(amqp_url: str, loop_kind: str, case: str) -> None:
    method, class_id, method_id = NO_PREVIOUS[case]
    info = raw_close(amqp_url, method)
    assert info == CloseInfo("channel", 404, "NOT_FOUND - no previously declared queue", class_id, method_id, 1)


def test_passive_declare_of_the_empty_name_does_not_use_the_last_declared_queue(amqp_url: str, loop_kind: str) -> None:
    info = raw_close(
        amqp_url,
        commands.Queue.Declare(queue=unique("q"), exclusive=True),
        commands.Queue.Declare(queue="", passive=True),
    )
    assert info == CloseInfo("channel", 404, "NOT_FOUND - no queue '' in vhost '/'", 50, 10, 1)


# ------------------------------------------------------------------------------------------ redeclare


QUEUE_REDECLARES: dict[str, tuple[dict[str, object], dict[str, object], str]] = {
    "durable": ({}, {"durable": True}, "inequivalent arg 'durable' for queue '{q}' in vhost '/': received 'true' "
                "but current is 'false'"),
    "auto_delete": ({"auto_delete": True}, {}, "inequivalent arg 'auto_delete' for queue '{q}' in vhost '/': "
                    "received 'false' but current is 'true'"),
    "x-max-length": ({"arguments": {"x-max-length": 10}}, {"arguments": {"x-max-length": 20}},
                     "inequivalent arg 'x-max-length' for queue '{q}' in vhost '/': received '20' but current is '10'"),
    # aio-pika (pamqp) sends 1000 as a short, which RabbitMQ names in the text
    "x-message-ttl added": ({}, {"arguments": {"x-message-ttl": 1000}}, "inequivalent arg 'x-message-ttl' for "
                            "queue '{q}' in vhost '/': received the value '1000' of type 'short' but current is none"),
    "x-message-ttl removed": ({"arguments": {"x-message-ttl": 5}}, {}, "inequivalent arg 'x-message-ttl' for "
                              "queue '{q}' in vhost '/': received none but current is the value '5' of type 'byte'"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(QUEUE_REDECLARES))
async def test_inequivalent_queue_redeclare_is_refused_with_the_differing_field(
    connection: Connection, case: str
) -> None:
    first, second, text = QUEUE_REDECLARES[case]
    name = unique("q")
    channel = await connection.channel()
    queue = await channel.declare_queue(name, **first)  # type: ignore[arg-type]
    try:
        other = await connection.channel()
        assert await refused(other.declare_queue(name, **second)) == (  # type: ignore[arg-type]
            406,
            "PRECONDITION_FAILED - " + text.format(q=name),
        )
        await channel.declare_queue(name, **{**first, "arguments": {**first.get("arguments", {}), "x-other": 1}})  # type: ignore[arg-type,dict-item]
    finally:
        await queue.delete()


async def test_redeclare_with_another_exclusive_flag_is_locked(connection: Connection) -> None:
    channel = await connection.channel()
    exclusive = await channel.declare_queue(unique("q"), exclusive=True)
    assert await refused((await connection.channel()).declare_queue(exclusive.name)) == locked(exclusive.name)
    shared = await channel.declare_queue(unique("q"))
    try:
        other = await connection.channel()
        assert await refused(other.declare_queue(shared.name, exclusive=True)) == locked(shared.name)
    finally:
        await shared.delete()


# ------------------------------------------------------------------------------------------ exclusivity


async def test_exclusive_queue_is_locked_to_its_connection(
    connection: Connection, other_connection: Connection
) -> None:
    owner = await connection.channel()
    name = (await owner.declare_queue(unique("q"), exclusive=True)).name
    await publish(connection, name, b"m")

    async def attempt(operation: str) -> tuple[int, str]:
        channel = await other_connection.channel()
        raw = await channel.get_underlay_channel()
        calls = {
            "declare": lambda: raw.queue_declare(name, exclusive=True),
            "declare non-exclusive": lambda: raw.queue_declare(name),
            "passive declare": lambda: raw.queue_declare(name, passive=True),
            "consume": lambda: raw.basic_consume(name, ignore),
            "get": lambda: raw.basic_get(name),
            "purge": lambda: raw.queue_purge(name),
            "delete": lambda: raw.queue_delete(name),
            "bind": lambda: raw.queue_bind(name, "amq.fanout"),
        }
        return await refused(calls[operation]())  # type: ignore[no-untyped-call]

    for operation in (
        "declare",
        "declare non-exclusive",
        "passive declare",
        "consume",
        "get",
        "purge",
        "delete",
        "bind",
    ):
        assert await attempt(operation) == locked(name), operation
    # the owner still has it, message and all
    assert (await owner.declare_queue(name, passive=True)).declaration_result.message_count == 1


async def test_exclusive_queue_is_deleted_when_its_connection_closes(amqp_url: str, connection: Connection) -> None:
    owner = await aio_pika.connect(amqp_url)
    name = (await (await owner.channel()).declare_queue(unique("q"), exclusive=True)).name
    await owner.close()
    await wait_for(lambda: _absent(connection, name))


async def _absent(conn: Connection, name: str) -> bool:
    return not await queue_exists(conn, name)


# ------------------------------------------------------------------------------------------ auto-delete


async def test_auto_delete_queue_survives_until_its_last_consumer_is_cancelled(connection: Connection) -> None:
    channel = await connection.channel()
    queue = await channel.declare_queue(unique("q"), auto_delete=True)
    await publish(connection, queue.name, b"m")
    assert await queue.get(no_ack=True)  # basic.get is no consumer: still there
    assert await queue_exists(connection, queue.name)
    first = await queue.consume(ignore, no_ack=True)
    second = await queue.consume(ignore, no_ack=True)
    await queue.cancel(first)
    assert await queue_exists(connection, queue.name)
    await queue.cancel(second)
    assert not await queue_exists(connection, queue.name)


async def test_auto_delete_queue_goes_when_the_consuming_channel_closes(connection: Connection) -> None:
    channel = await connection.channel()
    queue = await channel.declare_queue(unique("q"), auto_delete=True)
    await queue.consume(ignore, no_ack=True)
    await channel.close()
    await wait_for(lambda: _absent(connection, queue.name))


# ------------------------------------------------------------------------------------- purge and delete


async def test_purge_returns_the_number_of_ready_messages_removed(connection: Connection) -> None:
    channel = await connection.channel()
    raw = await channel.get_underlay_channel()
    name = (await raw.queue_declare(unique("q"), exclusive=True)).queue or ""
    await publish(connection, name, b"1", b"2", b"3")
    unacked = await raw.basic_get(name, no_ack=False)  # held, so not purged
    assert (await raw.queue_purge(name)).message_count == 2
    assert (await raw.queue_purge(name)).message_count == 0
    await raw.basic_reject(unacked.delivery_tag or 0, requeue=True)
    await wait_for(lambda: _ready_count(raw, name, 1))  # basic.reject has no reply to await


async def test_delete_returns_the_message_count_and_missing_queue_deletes_fine(connection: Connection) -> None:
    channel = await connection.channel()
    raw = await channel.get_underlay_channel()
    name = (await raw.queue_declare(unique("q"))).queue or ""
    await publish(connection, name, b"1", b"2")
    assert (await raw.queue_delete(name)).message_count == 2
    assert (await raw.queue_delete(name)).message_count == 0
    assert (await raw.queue_delete(name, if_unused=True, if_empty=True)).message_count == 0


async def test_delete_if_empty_and_if_unused_are_refused_with_rabbitmq_texts(connection: Connection) -> None:
    channel = await connection.channel()
    raw = await channel.get_underlay_channel()
    name = (await raw.queue_declare(unique("q"), exclusive=True)).queue or ""
    await publish(connection, name, b"1", b"2")
    await raw.basic_qos(prefetch_count=1)
    await raw.basic_consume(name, ignore)
    other = await (await connection.channel()).get_underlay_channel()
    await wait_for(lambda: _ready_count(other, name, 1))

    async def delete(if_unused: bool = False, if_empty: bool = False) -> tuple[int, str]:
        ch = await (await connection.channel()).get_underlay_channel()
        return await refused(ch.queue_delete(name, if_unused=if_unused, if_empty=if_empty))

    # emptiness is checked first, and counts ready messages only
    assert await delete(if_empty=True, if_unused=True) == (
        406,
        f"PRECONDITION_FAILED - queue '{name}' in vhost '/' not empty",
    )
    assert await delete(if_unused=True) == (406, f"PRECONDITION_FAILED - queue '{name}' in vhost '/' in use")


async def _ready_count(raw: object, name: str, expected: int) -> bool:
    ok = await raw.queue_declare(name, passive=True)  # type: ignore[attr-defined]
    return bool(ok.message_count == expected)


async def test_deleting_a_queue_cancels_its_consumers_with_basic_cancel(connection: Connection) -> None:
    channel = await connection.channel()
    raw = await channel.get_underlay_channel()
    name = (await raw.queue_declare(unique("q"), exclusive=True)).queue or ""
    cancelled: list[str | None] = []
    raw.on_consumer_cancel_callbacks.add(lambda frame: cancelled.append(frame.consumer_tag))
    ok = await raw.basic_consume(name, ignore, consumer_tag="doomed")
    other = await (await connection.channel()).get_underlay_channel()
    await other.queue_delete(name)
    await wait_for(lambda: cancelled == ["doomed"])
    assert ok.consumer_tag == "doomed"
    # the channel stays open and has forgotten the tag (reusing a live tag would be 530)
    fresh = (await raw.queue_declare("", exclusive=True)).queue or ""
    await raw.basic_consume(fresh, ignore, consumer_tag="doomed")


# --------------------------------------------------------------------------------------- bind / unbind


async def test_bind_to_a_missing_exchange_or_queue_is_404(connection: Connection) -> None:
    channel = await connection.channel()
    queue = await channel.declare_queue(unique("q"), exclusive=True)
    missing_x, missing_q = unique("x"), unique("q")
    raw = await (await connection.channel()).get_underlay_channel()
    assert await refused(raw.queue_bind(queue.name, missing_x)) == (
        404,
        f"NOT_FOUND - no exchange '{missing_x}' in vhost '/'",
    )
    raw = await (await connection.channel()).get_underlay_channel()
    assert await refused(raw.queue_bind(missing_q, "amq.direct")) == (
        404,
        f"NOT_FOUND - no queue '{missing_q}' in vhost '/'",
    )
    raw = await (await connection.channel()).get_underlay_channel()
    # both missing: the exchange is reported
    assert await refused(raw.queue_bind(missing_q, missing_x)) == (
        404,
        f"NOT_FOUND - no exchange '{missing_x}' in vhost '/'",
    )


async def test_unbind_of_anything_missing_succeeds(connection: Connection) -> None:
    channel = await connection.channel()
    raw = await channel.get_underlay_channel()
    name = (await raw.queue_declare(unique("q"), exclusive=True)).queue or ""
    await raw.queue_unbind(name, "amq.direct", routing_key="never-bound")
    await raw.queue_unbind(name, unique("x"), routing_key="k")
    await raw.queue_unbind(unique("q"), "amq.direct", routing_key="k")
    await raw.queue_unbind(unique("q"), unique("x"), routing_key="k")


async def test_bind_then_unbind_controls_delivery(connection: Connection) -> None:
    channel = await connection.channel()
    exchange = await channel.declare_exchange(unique("x"), "direct", auto_delete=True)
    queue = await channel.declare_queue(unique("q"), exclusive=True)
    await queue.bind(exchange, "k")
    await queue.bind(exchange, "k")  # the same binding twice is one binding
    await exchange.publish(aio_pika.Message(b"1"), routing_key="k")
    assert (await queue.get(no_ack=True)).body == b"1"
    assert await queue.get(no_ack=True, fail=False) is None
    await queue.bind(exchange, "other")
    await queue.unbind(exchange, "k")
    await exchange.publish(aio_pika.Message(b"2"), routing_key="k")
    assert await queue.get(no_ack=True, fail=False) is None
    await queue.unbind(exchange, "other")


# --------------------------------------------------------------------------------- argument validation

INVALID_ARGS: list[tuple[str, object, str]] = [
    ("x-message-ttl", -1, "{value_negative,-1}"),
    ("x-message-ttl", "1000", '"expected integer, got longstr"'),
    ("x-message-ttl", 2**40, "{value_too_large,1099511627776}"),
    ("x-expires", 0, "{value_zero,0}"),
    ("x-expires", -5, "{value_negative,-5}"),
    ("x-max-length", -1, "{value_negative,-1}"),
    ("x-max-length", 1.5, '"expected integer, got float"'),  # pamqp sends a float; pika would send a double
    ("x-max-length-bytes", -2, "{value_negative,-2}"),
    ("x-max-length-bytes", "big", '"expected integer, got longstr"'),
    ("x-overflow", "bogus", "invalid_overflow"),
    ("x-overflow", True, "{unacceptable_type,bool}"),
    ("x-dead-letter-routing-key", "rk", "routing_key_but_no_dlx_defined"),
    ("x-max-priority", 256, "{max_value_exceeded,256}"),
    ("x-max-priority", -1, "{value_negative,-1}"),
    ("x-single-active-consumer", "yes", "{unacceptable_type,longstr}"),
    ("x-queue-type", "bogus", "\"unsupported queue type 'bogus'\""),
    ("x-queue-mode", "bogus", "\"unsupported queue mode 'bogus'\""),
]


@pytest.mark.parametrize(("key", "value", "term"), INVALID_ARGS, ids=[f"{k}={v!r}" for k, v, _ in INVALID_ARGS])
async def test_invalid_queue_argument_is_refused_with_rabbitmq_text(
    connection: Connection, key: str, value: object, term: str
) -> None:
    name = unique("q")
    channel = await connection.channel()
    assert await refused(channel.declare_queue(name, exclusive=True, arguments={key: value})) == (  # type: ignore[dict-item]
        406,
        f"PRECONDITION_FAILED - invalid arg '{key}' for queue '{name}' in vhost '/': {term}",
    )
    assert not await queue_exists(connection, name)


async def test_dead_letter_exchange_must_be_a_string(connection: Connection) -> None:
    name = unique("q")
    channel = await connection.channel()
    assert await refused(channel.declare_queue(name, arguments={"x-dead-letter-exchange": True})) == (
        406,
        f"PRECONDITION_FAILED - invalid type 'bool' for arg 'x-dead-letter-exchange' in queue '{name}' in vhost '/'",
    )


def test_invalid_argument_text_does_not_depend_on_the_client(amqp_url: str, loop_kind: str) -> None:
    # pika sends ints as signedint/long; texts that do not name the type must match aio-pika's
    name = unique("q")
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            channel.queue_declare(name, arguments={"x-max-priority": 300})
        assert (info.value.reply_code, info.value.reply_text) == (
            406,
            f"PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue '{name}' in vhost '/': "
            "{max_value_exceeded,300}",
        )
    finally:
        connection.close()


async def test_valid_arguments_and_unknown_ones_are_accepted(connection: Connection) -> None:
    channel = await connection.channel()
    arguments: dict[str, Any] = {
        "x-message-ttl": 60000,
        "x-expires": 600000,
        "x-max-length": 100,
        "x-max-length-bytes": 1 << 20,
        "x-overflow": "reject-publish",
        "x-dead-letter-exchange": "dlx",
        "x-dead-letter-routing-key": "dead",
        "x-max-priority": 10,
        "x-single-active-consumer": True,
        "x-queue-mode": "lazy",
        "x-queue-type": "classic",
        "x-unknown-arg": "whatever",
        "plain": 1,
    }
    queue = await channel.declare_queue(unique("q"), exclusive=True, arguments=arguments)
    await channel.declare_queue(queue.name, exclusive=True, arguments=arguments)


# ------------------------------------------------------------------------------------------------ names


def unchecked(method: Frame, queue: str) -> Frame:
    """`method` naming `queue`, past pamqp's spec name regex: RabbitMQ accepts names the regex refuses."""
    method.validate = lambda: None  # type: ignore[method-assign]
    method.queue = queue  # type: ignore[attr-defined]
    return method


def test_queue_names_lose_cr_and_lf(amqp_url: str, loop_kind: str) -> None:
    # Raw frames: pamqp (aio-pika) refuses CR/LF in a name, and pika waits for a declare-ok with the name it
    # sent, so neither client can show the stripping.
    base = unique("q")
    with RawClient.open(amqp_url) as client:
        client.open_channel(1)
        client.send_method(1, unchecked(commands.Queue.Declare(exclusive=True), base[:8] + "\r\n" + base[8:]))
        assert client.expect(1, commands.Queue.DeclareOk).queue == base
        client.send_method(1, commands.Confirm.Select())
        client.expect(1, commands.Confirm.SelectOk)
        client.publish(1, b"m", routing_key=base)
        client.expect(1, commands.Basic.Ack)  # enqueued before the count is asked for
        client.send_method(1, unchecked(commands.Queue.Declare(passive=True), base + "\n"))
        assert client.expect(1, commands.Queue.DeclareOk).message_count == 1
        client.send_method(1, unchecked(commands.Queue.Delete(), "\r" + base))
        assert client.expect(1, commands.Queue.DeleteOk).message_count == 1
        client.close_connection()


def test_queue_names_may_hold_any_other_character(amqp_url: str, loop_kind: str) -> None:
    name = unique("q") + " with spaces/#*!.é€"
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        assert channel.queue_declare(name, exclusive=True).method.queue == name
        channel.basic_publish("", name, b"m")
        _method, _props, body = channel.basic_get(name, auto_ack=True)
        assert body == b"m"
    finally:
        connection.close()
