"""Routing end to end through real clients: direct, fanout, topic and headers exchanges (every x-match mode),
mandatory returns, and alternate exchanges (recursive, once, loops, and on exchange-binding destinations as
RabbitMQ 3.10.8 does it)."""

from __future__ import annotations

import aio_pika
import pytest
from aiormq.exceptions import PublishError
from pamqp import commands

from tests.support.amqp import drain, unique

pytestmark = pytest.mark.integration
Connection = aio_pika.abc.AbstractConnection


@pytest.fixture
async def channel(connection: Connection) -> aio_pika.abc.AbstractChannel:
    # Returns raise PublishError, so an unroutable mandatory publish is visible to the test.
    return await connection.channel(on_return_raises=True)


async def routed(exchange: aio_pika.abc.AbstractExchange, key: str, headers: dict[str, object] | None = None) -> bool:
    """Publish mandatory; True if the broker routed it, False if it came back 312 NO_ROUTE."""
    try:
        await exchange.publish(aio_pika.Message(key.encode(), headers=headers), routing_key=key, mandatory=True)  # type: ignore[arg-type]
    except PublishError as exc:
        returned = exc.frame
        assert isinstance(returned, commands.Basic.Return)
        assert (returned.reply_code, returned.reply_text) == (312, "NO_ROUTE")
        return False
    return True


# ---------------------------------------------------------------------------------------------- types


async def test_direct_exchange_routes_on_exact_key(channel: aio_pika.abc.AbstractChannel) -> None:
    exchange = await channel.declare_exchange(unique("x"), "direct", auto_delete=True)
    a = await channel.declare_queue(unique("q"), exclusive=True)
    b = await channel.declare_queue(unique("q"), exclusive=True)
    await a.bind(exchange, "red")
    await b.bind(exchange, "red")
    await b.bind(exchange, "blue")
    assert await routed(exchange, "red")
    assert await routed(exchange, "blue")
    assert not await routed(exchange, "Red")
    assert not await routed(exchange, "")
    assert (await drain(a), await drain(b)) == ([b"red"], [b"red", b"blue"])


async def test_fanout_exchange_ignores_the_key(channel: aio_pika.abc.AbstractChannel) -> None:
    exchange = await channel.declare_exchange(unique("x"), "fanout", auto_delete=True)
    assert not await routed(exchange, "anything")
    queues = [await channel.declare_queue(unique("q"), exclusive=True) for _ in range(2)]
    for i, queue in enumerate(queues):
        await queue.bind(exchange, f"key{i}")
    await queues[0].bind(exchange, "second binding, same queue")
    assert await routed(exchange, "anything")
    assert [await drain(q) for q in queues] == [[b"anything"], [b"anything"]]


TOPIC_CASES = [
    ("a.b.c", "a.b.c", True),
    ("a.*.c", "a.x.c", True),
    ("a.*.c", "a.c", False),
    ("a.#", "a", True),
    ("a.#", "a.b.c.d", True),
    ("#.c", "c", True),
    ("#", "", True),
    ("*", "", False),  # RabbitMQ: the empty key has no word for * to match
    ("*", "a.b", False),
    ("a.#.b.#", "a.b", True),
    ("a.#.b", "a.x.y.b", True),
    ("a.#.b", "a.b.x", False),
    ("*.#.*", "a", False),
    ("*.#.*", "a.b", True),
    ("a..b", "a..b", True),
    ("a.*.b", "a..b", True),
]


async def test_topic_exchange_matches_words_and_wildcards(channel: aio_pika.abc.AbstractChannel) -> None:
    exchange = await channel.declare_exchange(unique("x"), "topic", auto_delete=True)
    queues = []
    for pattern, _key, _match in TOPIC_CASES:
        queue = await channel.declare_queue(unique("q"), exclusive=True)
        await queue.bind(exchange, pattern)
        queues.append(queue)
    keys = sorted({key for _p, key, _m in TOPIC_CASES})
    for key in keys:
        await exchange.publish(aio_pika.Message(key.encode()), routing_key=key)
    for queue, (pattern, key, match) in zip(queues, TOPIC_CASES, strict=True):
        got = await drain(queue)
        assert (key.encode() in got) == match, (pattern, key, got)


HEADERS_BINDINGS: dict[str, dict[str, object]] = {
    "all": {"x-match": "all", "color": "red", "size": 1},
    "default-all": {"color": "red", "size": 1},
    "any": {"x-match": "any", "color": "red", "size": 1},
    "all-with-x": {"x-match": "all-with-x", "x-tag": "t", "color": "red"},
    "any-with-x": {"x-match": "any-with-x", "x-tag": "t"},
    "any-ignores-x": {"x-match": "any", "x-tag": "t"},
    "all-empty": {"x-match": "all"},
}
HEADERS_MESSAGES: list[tuple[dict[str, object], set[str]]] = [
    ({"color": "red", "size": 1}, {"all", "default-all", "any", "all-empty"}),
    ({"color": "red"}, {"any", "all-empty"}),
    ({"color": "red", "size": 1, "x-tag": "t"}, {"all", "default-all", "any", "all-with-x", "any-with-x", "all-empty"}),
    ({"x-tag": "t"}, {"any-with-x", "all-empty"}),
    ({"size": 2}, {"all-empty"}),
    ({}, {"all-empty"}),
]


async def test_headers_exchange_honours_every_x_match_mode(channel: aio_pika.abc.AbstractChannel) -> None:
    exchange = await channel.declare_exchange(unique("x"), "headers", auto_delete=True)
    queues = {}
    for name, arguments in HEADERS_BINDINGS.items():
        queues[name] = await channel.declare_queue(unique("q"), exclusive=True)
        await queues[name].bind(exchange, arguments=arguments)  # type: ignore[arg-type]
    for i, (headers, _want) in enumerate(HEADERS_MESSAGES):
        await exchange.publish(aio_pika.Message(b"%d" % i, headers=headers), routing_key="")  # type: ignore[arg-type]
    got = {name: await drain(queue) for name, queue in queues.items()}
    for i, (headers, want) in enumerate(HEADERS_MESSAGES):
        reached = {name for name, bodies in got.items() if b"%d" % i in bodies}
        assert reached == want, headers


async def test_headers_binding_with_a_bad_x_match_is_refused(connection: Connection) -> None:
    channel = await connection.channel()
    queue = await channel.declare_queue(unique("q"), exclusive=True)
    from aiormq.exceptions import ChannelPreconditionFailed

    with pytest.raises(ChannelPreconditionFailed) as info:
        await queue.bind("amq.headers", arguments={"x-match": "some"})
    assert info.value.args[0] == (
        'PRECONDITION_FAILED - Invalid x-match field value <<"some">>; expected all, any, all-with-x, or any-with-x'
    )


# -------------------------------------------------------------------------------------- alternate exchanges


async def test_unroutable_message_goes_to_the_alternate_exchange(channel: aio_pika.abc.AbstractChannel) -> None:
    ae = await channel.declare_exchange(unique("ae"), "fanout")
    main = await channel.declare_exchange(unique("main"), "direct", arguments={"alternate-exchange": ae.name})
    bound = await channel.declare_queue(unique("q"), exclusive=True)
    spill = await channel.declare_queue(unique("q"), exclusive=True)
    await bound.bind(main, "k")
    await spill.bind(ae)
    assert await routed(main, "k")
    assert await routed(main, "other")  # routed through the AE: no return
    assert (await drain(bound), await drain(spill)) == ([b"k"], [b"other"])
    await main.delete()
    await ae.delete()


async def test_alternate_exchanges_chain_and_deliver_once(channel: aio_pika.abc.AbstractChannel) -> None:
    last = await channel.declare_exchange(unique("ae2"), "fanout")
    middle = await channel.declare_exchange(unique("ae1"), "direct", arguments={"alternate-exchange": last.name})
    main = await channel.declare_exchange(unique("main"), "direct", arguments={"alternate-exchange": middle.name})
    queue = await channel.declare_queue(unique("q"), exclusive=True)
    await queue.bind(last)
    await queue.bind(middle, "only-this")
    assert await routed(main, "k")
    assert await routed(main, "only-this")  # the middle AE routes it itself: its own AE is not consulted
    assert await drain(queue) == [b"k", b"only-this"]
    for exchange in (main, middle, last):
        await exchange.delete()


async def test_alternate_exchange_loop_terminates_and_returns_the_message(
    channel: aio_pika.abc.AbstractChannel,
) -> None:
    a_name, b_name = unique("loop-a"), unique("loop-b")
    a = await channel.declare_exchange(a_name, "direct", arguments={"alternate-exchange": b_name})
    b = await channel.declare_exchange(b_name, "direct", arguments={"alternate-exchange": a_name})
    assert not await routed(a, "k")
    queue = await channel.declare_queue(unique("q"), exclusive=True)
    await queue.bind(b, "k")
    assert await routed(a, "k")
    assert await drain(queue) == [b"k"]
    await a.delete()
    await b.delete()


async def test_missing_alternate_exchange_leaves_the_message_unroutable(
    channel: aio_pika.abc.AbstractChannel,
) -> None:
    main = await channel.declare_exchange(unique("main"), "direct", arguments={"alternate-exchange": unique("gone")})
    assert not await routed(main, "k")
    await main.delete()


async def test_exchange_binding_destination_uses_its_own_alternate_exchange(
    channel: aio_pika.abc.AbstractChannel,
) -> None:
    # Probed on RabbitMQ 3.10.8: each exchange the message visits consults its own AE when its own bindings
    # matched nothing; the publish target's AE is not used when it matched an exchange binding.
    source_ae = await channel.declare_exchange(unique("src-ae"), "fanout")
    dest_ae = await channel.declare_exchange(unique("dst-ae"), "fanout")
    source = await channel.declare_exchange(unique("src"), "direct", arguments={"alternate-exchange": source_ae.name})
    dest = await channel.declare_exchange(unique("dst"), "direct", arguments={"alternate-exchange": dest_ae.name})
    to_source_ae = await channel.declare_queue(unique("q"), exclusive=True)
    to_dest_ae = await channel.declare_queue(unique("q"), exclusive=True)
    await to_source_ae.bind(source_ae)
    await to_dest_ae.bind(dest_ae)
    await dest.bind(source, "k")
    assert await routed(source, "k")  # source -> dest, dest matches nothing -> dest's AE
    assert await routed(source, "x")  # source matches nothing -> source's AE
    assert (await drain(to_source_ae), await drain(to_dest_ae)) == ([b"x"], [b"k"])
    for exchange in (source, dest, source_ae, dest_ae):
        await exchange.delete()


async def test_exchange_binding_that_leads_nowhere_does_not_use_the_publish_targets_alternate_exchange(
    channel: aio_pika.abc.AbstractChannel,
) -> None:
    ae = await channel.declare_exchange(unique("ae"), "fanout")
    source = await channel.declare_exchange(unique("src"), "direct", arguments={"alternate-exchange": ae.name})
    dead_end = await channel.declare_exchange(unique("dead-end"), "direct")
    queue = await channel.declare_queue(unique("q"), exclusive=True)
    await queue.bind(ae)
    await dead_end.bind(source, "k")
    assert not await routed(source, "k")
    assert await drain(queue) == []
    for exchange in (source, dead_end, ae):
        await exchange.delete()


async def test_alternate_exchange_naming_the_default_exchange_routes_nothing(
    channel: aio_pika.abc.AbstractChannel,
) -> None:
    queue = await channel.declare_queue(unique("q"), exclusive=True)
    main = await channel.declare_exchange(unique("main"), "direct", arguments={"alternate-exchange": ""})
    assert not await routed(main, queue.name)
    await main.delete()
