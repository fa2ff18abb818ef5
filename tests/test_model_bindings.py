"""Exchange-to-exchange bindings through real clients: bind/unbind, their errors, and routing over graphs with
cycles, where a message must reach each queue at most once per publish."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import aio_pika
import pytest

from tests.support.amqp import drain, refused, unique

pytestmark = pytest.mark.integration
Connection = aio_pika.abc.AbstractConnection


# ------------------------------------------------------------------------------------------ bind / unbind


async def test_exchange_binding_forwards_matching_messages_until_unbound(connection: Connection) -> None:
    channel = await connection.channel()
    source = await channel.declare_exchange(unique("src"), "topic")
    destination = await channel.declare_exchange(unique("dst"), "direct")
    queue = await channel.declare_queue(unique("q"), exclusive=True)
    await queue.bind(destination, "a.b")
    await destination.bind(source, "a.*")
    await source.publish(aio_pika.Message(b"match"), routing_key="a.b")
    await source.publish(aio_pika.Message(b"source-miss"), routing_key="b.b")
    await source.publish(aio_pika.Message(b"destination-miss"), routing_key="a.c")
    assert await drain(queue) == [b"match"]
    await destination.unbind(source, "a.*")
    await source.publish(aio_pika.Message(b"after"), routing_key="a.b")
    assert await drain(queue) == []
    await source.delete()
    await destination.delete()


async def test_exchange_bind_to_a_missing_exchange_is_404(connection: Connection) -> None:
    channel = await connection.channel()
    present = await channel.declare_exchange(unique("x"), "fanout")
    missing_a, missing_b = unique("missing"), unique("missing")
    try:
        raw = await (await connection.channel()).get_underlay_channel()
        assert await refused(raw.exchange_bind(destination=present.name, source=missing_a)) == (
            404,
            f"NOT_FOUND - no exchange '{missing_a}' in vhost '/'",
        )
        raw = await (await connection.channel()).get_underlay_channel()
        assert await refused(raw.exchange_bind(destination=missing_a, source=present.name)) == (
            404,
            f"NOT_FOUND - no exchange '{missing_a}' in vhost '/'",
        )
        raw = await (await connection.channel()).get_underlay_channel()  # both missing: the source is named
        assert await refused(raw.exchange_bind(destination=missing_a, source=missing_b)) == (
            404,
            f"NOT_FOUND - no exchange '{missing_b}' in vhost '/'",
        )
    finally:
        await present.delete()


async def test_exchange_unbind_of_anything_missing_succeeds(connection: Connection) -> None:
    channel = await connection.channel()
    raw = await channel.get_underlay_channel()
    await raw.exchange_unbind(destination="amq.fanout", source="amq.direct", routing_key="never-bound")
    await raw.exchange_unbind(destination=unique("x"), source="amq.direct")
    await raw.exchange_unbind(destination="amq.direct", source=unique("x"))
    await raw.exchange_unbind(destination=unique("x"), source=unique("x"))


async def test_the_same_exchange_binding_twice_is_one_binding(connection: Connection) -> None:
    channel = await connection.channel()
    source = await channel.declare_exchange(unique("src"), "direct", auto_delete=True)
    destination = await channel.declare_exchange(unique("dst"), "fanout", auto_delete=True)
    queue = await channel.declare_queue(unique("q"), exclusive=True)
    await queue.bind(destination)
    await destination.bind(source, "k")
    await destination.bind(source, "k")
    await source.publish(aio_pika.Message(b"m"), routing_key="k")
    assert await drain(queue) == [b"m"]
    await destination.unbind(source, "k")  # one unbind removes it, and the auto-delete source goes with it
    channel = await connection.channel()
    assert await refused(channel.get_exchange(source.name)) == (
        404,
        f"NOT_FOUND - no exchange '{source.name}' in vhost '/'",
    )


async def test_exchange_bound_to_itself_delivers_once(connection: Connection) -> None:
    channel = await connection.channel()
    exchange = await channel.declare_exchange(unique("self"), "fanout", auto_delete=True)
    queue = await channel.declare_queue(unique("q"), exclusive=True)
    await exchange.bind(exchange)
    await queue.bind(exchange)
    await exchange.publish(aio_pika.Message(b"m"), routing_key="")
    assert await drain(queue) == [b"m"]
    await exchange.delete()


async def test_two_paths_to_one_queue_deliver_once(connection: Connection) -> None:
    channel = await connection.channel()
    top = await channel.declare_exchange(unique("top"), "fanout")
    left = await channel.declare_exchange(unique("left"), "fanout")
    right = await channel.declare_exchange(unique("right"), "fanout")
    queue = await channel.declare_queue(unique("q"), exclusive=True)
    for middle in (left, right):
        await middle.bind(top)
        await queue.bind(middle)
    await queue.bind(top)
    await top.publish(aio_pika.Message(b"m"), routing_key="")
    assert await drain(queue) == [b"m"]
    for exchange in (top, left, right):
        await exchange.delete()


async def test_a_cycle_of_exchanges_delivers_once_to_every_queue_on_it(connection: Connection) -> None:
    channel = await connection.channel()
    ring = [await channel.declare_exchange(unique(f"ring{i}"), "fanout") for i in range(3)]
    queues = [await channel.declare_queue(unique("q"), exclusive=True) for _ in ring]
    for i, exchange in enumerate(ring):
        await exchange.bind(ring[i - 1])
        await queues[i].bind(exchange)
    await ring[1].publish(aio_pika.Message(b"m"), routing_key="")
    assert [await drain(q) for q in queues] == [[b"m"]] * 3
    for exchange in ring:
        await exchange.delete()


async def test_deleting_a_destination_exchange_removes_the_bindings_to_it(connection: Connection) -> None:
    channel = await connection.channel()
    source = await channel.declare_exchange(unique("src"), "fanout")
    destination = await channel.declare_exchange(unique("dst"), "fanout")
    queue = await channel.declare_queue(unique("q"), exclusive=True)
    await destination.bind(source)
    await queue.bind(destination)
    await destination.delete()
    again = await channel.declare_exchange(destination.name, "fanout")  # same name, new exchange
    await queue.bind(again)
    await source.publish(aio_pika.Message(b"m"), routing_key="")
    assert await drain(queue) == []
    await again.delete()
    await source.delete()


# ------------------------------------------------------------------------------ random graphs with cycles


@dataclass
class Graph:
    """A random topology: exchanges (direct, keys "k"/"other"), exchange and queue bindings, alternate exchanges."""

    exchanges: int
    e2e: set[tuple[int, int, str]] = field(default_factory=set)  # (source, destination, key)
    queue_bindings: set[tuple[int, int, str]] = field(default_factory=set)  # (exchange, queue, key)
    alternates: dict[int, int] = field(default_factory=dict)
    queues: int = 0

    @classmethod
    def random(cls, rng: random.Random) -> Graph:
        graph = cls(exchanges=rng.randint(2, 6), queues=rng.randint(1, 4))
        keys = ("k", "k", "k", "other")
        for _ in range(rng.randint(graph.exchanges, 3 * graph.exchanges)):
            graph.e2e.add((rng.randrange(graph.exchanges), rng.randrange(graph.exchanges), rng.choice(keys)))
        for _ in range(rng.randint(graph.queues, 2 * graph.queues)):
            graph.queue_bindings.add((rng.randrange(graph.exchanges), rng.randrange(graph.queues), rng.choice(keys)))
        for x in range(graph.exchanges):
            if rng.random() < 0.4:
                graph.alternates[x] = rng.randrange(graph.exchanges)
        return graph

    def expected(self, origin: int, key: str) -> set[int]:
        """The queues a publish reaches: each exchange visited once; one that matched nothing uses its AE."""
        visited, pending, queues = {origin}, [origin], set()
        while pending:
            x = pending.pop()
            dests = [("x", d) for s, d, k in self.e2e if s == x and k == key]
            dests += [("q", q) for s, q, k in self.queue_bindings if s == x and k == key]
            if not dests and x in self.alternates:
                dests = [("x", self.alternates[x])]
            for kind, target in dests:
                if kind == "q":
                    queues.add(target)
                elif target not in visited:
                    visited.add(target)
                    pending.append(target)
        return queues


@pytest.mark.parametrize("seed", range(8))
async def test_random_exchange_graphs_with_cycles_deliver_exactly_once_per_reachable_queue(
    connection: Connection, seed: int
) -> None:
    rng = random.Random(seed)
    graph = Graph.random(rng)
    channel = await connection.channel()
    names = [unique(f"g{seed}x{i}") for i in range(graph.exchanges)]
    exchanges = [
        await channel.declare_exchange(
            name,
            "direct",
            arguments={"alternate-exchange": names[graph.alternates[i]]} if i in graph.alternates else None,
        )
        for i, name in enumerate(names)
    ]
    queues = [await channel.declare_queue(unique(f"g{seed}q{i}"), exclusive=True) for i in range(graph.queues)]
    try:
        for source, destination, key in graph.e2e:
            await exchanges[destination].bind(exchanges[source], key)
        for source, queue, key in graph.queue_bindings:
            await queues[queue].bind(exchanges[source], key)
        for round_ in range(3):
            origin, key = rng.randrange(graph.exchanges), rng.choice(("k", "k", "other", "none"))
            await exchanges[origin].publish(aio_pika.Message(b"%d" % round_), routing_key=key)
            got = {i: await drain(q) for i, q in enumerate(queues)}
            want = {i: [b"%d" % round_] if i in graph.expected(origin, key) else [] for i in range(graph.queues)}
            assert got == want, (graph, origin, key)
    finally:
        for exchange in exchanges:
            await exchange.delete()
