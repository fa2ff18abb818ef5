"""Message TTL, queue expiry, length limits and dead-lettering, checked header by header against RabbitMQ 3.x."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from tests.support.amqp import uniq
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
async def channel(amqp_url: str) -> AsyncIterator[AbstractChannel]:
    connection = await aio_pika.connect(amqp_url)
    try:
        yield await connection.channel()
    finally:
        await connection.close()


async def queue(ch: AbstractChannel, name: str, **arguments: Any) -> AbstractQueue:
    return await ch.declare_queue(name, auto_delete=False, arguments=arguments or None)


async def cleanup(ch: AbstractChannel, *names: str) -> None:
    for name in names:
        await ch.queue_delete(name)


async def next_message(q: AbstractQueue) -> AbstractIncomingMessage:
    async def poll() -> AbstractIncomingMessage | None:
        return await q.get(no_ack=True, fail=False)

    message: AbstractIncomingMessage = await wait_for(poll)
    return message


async def count(ch: AbstractChannel, name: str) -> int:
    declared = await ch.declare_queue(name, passive=True)
    n = declared.declaration_result.message_count
    assert n is not None
    return n


def death(message: AbstractIncomingMessage, index: int = 0) -> dict[str, Any]:
    headers = message.headers
    deaths = headers["x-death"]
    assert isinstance(deaths, list)
    entry = deaths[index]
    assert isinstance(entry, dict)
    return entry


def check_time(entry: dict[str, Any]) -> None:
    assert isinstance(entry.pop("time"), datetime.datetime)


# ------------------------------------------------------------------------------------- TTL + DLX


async def test_a_message_expired_by_queue_ttl_is_dead_lettered_with_an_x_death_entry(
    channel: AbstractChannel,
) -> None:
    src, dst = uniq("src"), uniq("dst")
    target = await queue(channel, dst)
    await queue(
        channel, src, **{"x-message-ttl": 30, "x-dead-letter-exchange": ""}, **{"x-dead-letter-routing-key": dst}
    )
    await channel.default_exchange.publish(aio_pika.Message(b"late", headers={"h": "v"}), routing_key=src)
    message = await next_message(target)
    assert message.body == b"late"
    assert (message.exchange, message.routing_key) == ("", dst)
    entry = death(message)
    check_time(entry)
    assert entry == {"count": 1, "reason": "expired", "queue": src, "exchange": "", "routing-keys": [src]}
    assert {k: v for k, v in message.headers.items() if k != "x-death"} == {
        "h": "v",
        "x-first-death-exchange": "",
        "x-first-death-queue": src,
        "x-first-death-reason": "expired",
    }
    assert list(message.headers) == sorted(message.headers)
    assert message.expiration is None
    assert await count(channel, src) == 0
    await cleanup(channel, src, dst)


async def test_the_lower_of_queue_ttl_and_message_expiration_wins_and_is_recorded(channel: AbstractChannel) -> None:
    src, dst = uniq("src"), uniq("dst")
    target = await queue(channel, dst)
    await queue(
        channel, src, **{"x-message-ttl": 600_000, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dst}
    )
    await channel.default_exchange.publish(aio_pika.Message(b"short", expiration=0.02), routing_key=src)
    message = await next_message(target)
    entry = death(message)
    check_time(entry)
    assert entry == {
        "count": 1,
        "reason": "expired",
        "queue": src,
        "exchange": "",
        "routing-keys": [src],
        "original-expiration": "20",
    }
    assert message.expiration is None
    await cleanup(channel, src, dst)


async def test_per_message_expiration_in_a_plain_queue_drops_it_without_a_consumer(channel: AbstractChannel) -> None:
    name = uniq("q")
    q = await queue(channel, name)
    await channel.default_exchange.publish(aio_pika.Message(b"gone", expiration=0.01), routing_key=name)
    await channel.default_exchange.publish(aio_pika.Message(b"kept"), routing_key=name)

    async def only_kept_left() -> bool:
        return await count(channel, name) == 1

    await wait_for(only_kept_left)
    message = await q.get(no_ack=True)
    assert message.body == b"kept"
    await cleanup(channel, name)


async def test_ttl_zero_delivers_to_a_waiting_consumer_and_expires_otherwise(channel: AbstractChannel) -> None:
    src, dst = uniq("src"), uniq("dst")
    target = await queue(channel, dst)
    q = await queue(
        channel, src, **{"x-message-ttl": 0, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dst}
    )
    await channel.default_exchange.publish(aio_pika.Message(b"nobody"), routing_key=src)
    message = await next_message(target)
    assert message.body == b"nobody" and death(message)["reason"] == "expired"

    got: list[bytes] = []

    async def on_message(m: AbstractIncomingMessage) -> None:
        got.append(m.body)
        await m.ack()

    tag = await q.consume(on_message)
    await channel.default_exchange.publish(aio_pika.Message(b"someone"), routing_key=src)
    await wait_for(lambda: got == [b"someone"])
    await q.cancel(tag)
    assert await count(channel, dst) == 0
    await cleanup(channel, src, dst)


async def test_a_rejected_message_is_dead_lettered_with_its_cc_routes(channel: AbstractChannel) -> None:
    src, dst = uniq("src"), uniq("dst")
    target = await queue(channel, dst)
    q = await queue(channel, src, **{"x-dead-letter-exchange": "amq.direct"})
    await target.bind("amq.direct", routing_key=src)
    await channel.default_exchange.publish(
        aio_pika.Message(b"no", headers={"CC": ["elsewhere"]}, expiration=60), routing_key=src
    )
    got = await next_message_ack(q)
    await got.reject(requeue=False)
    message = await next_message(target)
    assert (message.exchange, message.routing_key) == ("amq.direct", src)
    entry = death(message)
    check_time(entry)
    assert entry == {
        "count": 1,
        "reason": "rejected",
        "queue": src,
        "exchange": "",
        "routing-keys": [src, "elsewhere"],
        "original-expiration": "60000",
    }
    assert message.headers["CC"] == ["elsewhere"]
    assert message.headers["x-first-death-reason"] == "rejected"
    await cleanup(channel, src, dst)


async def next_message_ack(q: AbstractQueue) -> AbstractIncomingMessage:
    async def poll() -> AbstractIncomingMessage | None:
        return await q.get(no_ack=False, fail=False)

    message: AbstractIncomingMessage = await wait_for(poll)
    return message


async def test_a_dead_letter_routing_key_replaces_the_keys_and_drops_cc(channel: AbstractChannel) -> None:
    src, dst = uniq("src"), uniq("dst")
    target = await queue(channel, dst)
    q = await queue(channel, src, **{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dst})
    await channel.default_exchange.publish(aio_pika.Message(b"x", headers={"CC": ["nowhere"]}), routing_key=src)
    got = await next_message_ack(q)
    await got.nack(requeue=False)
    message = await next_message(target)
    assert "CC" not in message.headers
    assert death(message)["routing-keys"] == [src, "nowhere"]
    await cleanup(channel, src, dst)


async def test_dying_twice_in_the_same_queue_for_the_same_reason_bumps_the_count(channel: AbstractChannel) -> None:
    a, b, dst = uniq("a"), uniq("b"), uniq("dst")
    target = await queue(channel, dst)
    qa = await queue(channel, a, **{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": b})
    qb = await queue(channel, b, **{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": a})
    await channel.default_exchange.publish(aio_pika.Message(b"ping"), routing_key=a)
    await (await next_message_ack(qa)).reject(requeue=False)  # a -> b
    await (await next_message_ack(qb)).reject(requeue=False)  # b -> a
    got = await next_message_ack(qa)
    entries = got.headers["x-death"]
    assert isinstance(entries, list)
    assert [(e["queue"], e["reason"], e["count"]) for e in entries] == [(b, "rejected", 1), (a, "rejected", 1)]
    # re-route the third death to dst: a dies again for the same reason
    await channel.queue_delete(b)
    await target.bind("amq.fanout")
    await channel.queue_delete(a)
    qa = await queue(channel, a, **{"x-dead-letter-exchange": "amq.fanout"})
    await channel.default_exchange.publish(aio_pika.Message(got.body, headers=dict(got.headers)), routing_key=a)
    await (await next_message_ack(qa)).reject(requeue=False)
    message = await next_message(target)
    entries = message.headers["x-death"]
    assert isinstance(entries, list)
    first = dict(entries[0])
    assert isinstance(first.pop("time"), datetime.datetime)
    assert first == {"count": 2, "exchange": "", "queue": a, "reason": "rejected", "routing-keys": [a]}
    assert (entries[1]["queue"], entries[1]["count"]) == (b, 1)
    assert message.headers["x-first-death-queue"] == a
    await target.unbind("amq.fanout")
    await cleanup(channel, a, dst)


async def test_an_expiry_cycle_back_to_the_same_queue_is_dropped(channel: AbstractChannel) -> None:
    src, witness = uniq("src"), uniq("witness")
    fan = await channel.declare_exchange(uniq("fan"), aio_pika.ExchangeType.FANOUT, auto_delete=True)
    seen = await queue(channel, witness)
    await queue(channel, src, **{"x-message-ttl": 20, "x-dead-letter-exchange": fan.name})
    await (await channel.get_queue(src)).bind(fan)
    await seen.bind(fan)
    await channel.default_exchange.publish(aio_pika.Message(b"loop"), routing_key=src)
    message = await next_message(seen)
    assert death(message)["queue"] == src
    assert await count(channel, src) == 0
    await cleanup(channel, src, witness)


async def test_a_missing_dead_letter_exchange_drops_the_message(channel: AbstractChannel) -> None:
    src = uniq("src")
    q = await queue(channel, src, **{"x-dead-letter-exchange": uniq("missing")})
    await channel.default_exchange.publish(aio_pika.Message(b"x"), routing_key=src)
    await (await next_message_ack(q)).reject(requeue=False)
    assert await count(channel, src) == 0
    await cleanup(channel, src)


# ------------------------------------------------------------------------------------- x-expires


async def test_an_unused_queue_is_deleted_after_x_expires(amqp_url: str) -> None:
    name = uniq("expiring")
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel(on_return_raises=True)
    await queue(channel, name, **{"x-expires": 50})

    # A passive declare would restart the countdown (as RabbitMQ's does), so probe with mandatory publishes.
    async def gone() -> bool:
        try:
            await channel.default_exchange.publish(aio_pika.Message(b"probe"), routing_key=name, mandatory=True)
        except aio_pika.exceptions.PublishError:
            return True
        return False

    try:
        await wait_for(gone)
        with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
            await channel.declare_queue(name, passive=True)
    finally:
        await connection.close()


# ------------------------------------------------------------------------------------- length limits


async def test_max_length_drops_the_head_and_dead_letters_it_as_maxlen(channel: AbstractChannel) -> None:
    src, dst = uniq("src"), uniq("dst")
    target = await queue(channel, dst)
    q = await queue(channel, src, **{"x-max-length": 2, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dst})
    await channel.set_qos(0)
    for body in (b"1", b"2", b"3"):
        await channel.default_exchange.publish(aio_pika.Message(body), routing_key=src)
    message = await next_message(target)
    assert message.body == b"1"
    entry = death(message)
    check_time(entry)
    assert entry == {"count": 1, "reason": "maxlen", "queue": src, "exchange": "", "routing-keys": [src]}
    assert [(await q.get(no_ack=True)).body for _ in range(2)] == [b"2", b"3"]
    await cleanup(channel, src, dst)


async def test_max_length_bytes_counts_body_bytes_of_ready_messages(channel: AbstractChannel) -> None:
    name = uniq("q")
    q = await queue(channel, name, **{"x-max-length-bytes": 10})
    for body in (b"aaaa", b"bbbb", b"cccc"):
        await channel.default_exchange.publish(aio_pika.Message(body), routing_key=name)
    assert await count(channel, name) == 2
    assert (await q.get(no_ack=True)).body == b"bbbb"
    await cleanup(channel, name)


async def test_reject_publish_nacks_the_publisher_and_keeps_the_oldest(channel: AbstractChannel) -> None:
    name = uniq("q")
    q = await queue(channel, name, **{"x-max-length": 1, "x-overflow": "reject-publish"})
    await channel.default_exchange.publish(aio_pika.Message(b"first"), routing_key=name)
    with pytest.raises(aio_pika.exceptions.DeliveryError):
        await channel.default_exchange.publish(aio_pika.Message(b"second"), routing_key=name)
    await channel.default_exchange.publish(aio_pika.Message(b"elsewhere"), routing_key=uniq("unrouted"))
    assert (await q.get(no_ack=True)).body == b"first"
    assert await count(channel, name) == 0
    await channel.default_exchange.publish(aio_pika.Message(b"third"), routing_key=name)
    assert (await q.get(no_ack=True)).body == b"third"
    await cleanup(channel, name)


async def test_reject_publish_dlx_nacks_and_dead_letters_the_refused_message(channel: AbstractChannel) -> None:
    src, dst = uniq("src"), uniq("dst")
    target = await queue(channel, dst)
    await queue(
        channel,
        src,
        **{"x-max-length": 1, "x-overflow": "reject-publish-dlx", "x-dead-letter-exchange": ""},
        **{"x-dead-letter-routing-key": dst},
    )
    await channel.default_exchange.publish(aio_pika.Message(b"first"), routing_key=src)
    with pytest.raises(aio_pika.exceptions.DeliveryError):
        await channel.default_exchange.publish(aio_pika.Message(b"second"), routing_key=src)
    message = await next_message(target)
    assert message.body == b"second"
    assert death(message)["reason"] == "maxlen"
    assert await count(channel, src) == 1
    await cleanup(channel, src, dst)
