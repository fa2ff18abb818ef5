"""Messaging patterns and delivery guarantees, each demonstrated against a live broker and checked.

    AMQP_URL=amqp://guest:guest@localhost:5672/ python3 examples/message_patterns.py
    python3 examples/message_patterns.py --only rpc --only exactly-once

Patterns: a work queue with fair dispatch (prefetch 1), publish/subscribe (fanout), routing (direct), topics
(wildcards), headers routing, and RPC over direct reply-to. Guarantees, each with a consumer that crashes in the
middle of its work: at-most-once (auto-ack: messages are lost), at-least-once (manual ack: one is processed
twice), exactly-once (transactions plus a consumer that deduplicates by message_id: nothing lost, nothing twice).

Each section ends with ``PROVED: ...`` when what it claims held (or ``NOT PROVED: ...``, and the exit code is 1).
Everything it creates is exclusive to its connection or deleted at the end; a crash is simulated by closing the
worker's connection before it acks, which is what the broker sees when a consumer process dies.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue
from pamqp.commands import Basic
from pamqp.common import FieldValue
from topology import amqp_url

Headers = dict[str, FieldValue] | None  # a message's headers, or a headers binding's arguments
Bindings = dict[str, list[tuple[str, Headers]]]  # queue -> [(binding key, binding arguments)]
Publishes = list[tuple[str, Headers]]  # [(routing key, headers)]


@dataclass(frozen=True)
class Proof:
    holds: bool
    claim: str


class Demo:
    """Connections and names for one run; `forget_later` records what must be deleted at the end."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.prefix = f"patterns-{uuid.uuid4().hex[:6]}"
        self.connections: list[AbstractConnection] = []
        self.leftovers: list[tuple[str, str]] = []  # ("queue" | "exchange", name)

    def name(self, what: str) -> str:
        return f"{self.prefix}.{what}"

    async def connect(self, role: str) -> AbstractConnection:
        conn = await aio_pika.connect(self.url, client_properties={"connection_name": f"message_patterns {role}"})
        self.connections.append(conn)
        return conn

    def forget_later(self, kind: str, name: str) -> None:
        self.leftovers.append((kind, name))

    async def clean_up(self) -> None:
        for conn in self.connections:
            if not conn.is_closed:
                await conn.close()
        if self.leftovers:
            async with await aio_pika.connect(self.url) as conn:
                channel = await conn.channel()
                for kind, name in reversed(self.leftovers):
                    if kind == "queue":
                        await channel.queue_delete(name)
                    else:
                        await channel.exchange_delete(name)


class Inbox:
    """A consumer callback that keeps deliveries in arrival order, for code that processes them one at a time
    (aio-pika runs each callback as a task of its own, so callbacks that do the work would run concurrently)."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()

    async def __call__(self, message: AbstractIncomingMessage) -> None:
        self.messages.put_nowait(message)

    async def next(self, timeout: float = 2.0) -> AbstractIncomingMessage | None:
        try:
            return await asyncio.wait_for(self.messages.get(), timeout)
        except TimeoutError:
            return None


def tasks_(n: int) -> str:
    return f"{n} task" if n == 1 else f"{n} tasks"


def heading(number: int, title: str) -> None:
    print(f"\n== {number}. {title} " + "=" * max(0, 72 - len(title)), flush=True)


async def drain(queue: AbstractQueue) -> list[AbstractIncomingMessage]:
    """Every message ready in `queue` now (basic.get, auto-ack)."""
    got = []
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        got.append(message)
    return got


async def depth(channel: AbstractChannel, queue: str) -> int:
    declared = await channel.declare_queue(queue, passive=True)
    return declared.declaration_result.message_count or 0


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.005)
    return True


# ------------------------------------------------------------------------------------------------ patterns


async def work_queue(demo: Demo) -> Proof:
    """Two workers, one ten times slower, share a task queue: first without a prefetch limit, then with prefetch 1."""
    conn = await demo.connect("work-queue")
    setup = await conn.channel()
    tasks = await setup.declare_queue(demo.name("tasks"), exclusive=True)
    n_tasks = 10
    speeds = {"fast worker": 0.01, "slow worker": 0.1}  # seconds per task

    async def round_(prefetch: int) -> tuple[Counter[str], dict[str, int], float]:
        done: Counter[str] = Counter()
        unacked: Counter[str] = Counter()
        most_unacked: dict[str, int] = dict.fromkeys(speeds, 0)
        finished = asyncio.Event()
        channels = []
        for worker, seconds in speeds.items():
            channel = await conn.channel()
            if prefetch:
                await channel.set_qos(prefetch_count=prefetch)
            lock = asyncio.Lock()  # one task at a time, as a single-threaded worker process would

            async def handle(
                message: AbstractIncomingMessage,
                worker: str = worker,
                seconds: float = seconds,
                lock: asyncio.Lock = lock,
            ) -> None:
                unacked[worker] += 1
                most_unacked[worker] = max(most_unacked[worker], unacked[worker])
                async with lock:
                    await asyncio.sleep(seconds)
                    done[worker] += 1
                    unacked[worker] -= 1
                    await message.ack()
                if sum(done.values()) == n_tasks:
                    finished.set()

            await (await channel.get_queue(tasks.name, ensure=False)).consume(handle)
            channels.append(channel)
        started = time.monotonic()
        for i in range(n_tasks):
            await setup.default_exchange.publish(aio_pika.Message(f"task {i + 1}".encode()), tasks.name)
        await asyncio.wait_for(finished.wait(), 10)
        elapsed = time.monotonic() - started
        for channel in channels:
            await channel.close()
        return done, most_unacked, elapsed

    print(
        f"  {n_tasks} tasks; the fast worker needs {speeds['fast worker'] * 1000:.0f} ms per task, the slow one "
        f"{speeds['slow worker'] * 1000:.0f} ms"
    )
    rr, rr_unacked, rr_time = await round_(prefetch=0)
    print(
        f"  no prefetch limit : fast worker {tasks_(rr['fast worker'])}, slow worker {tasks_(rr['slow worker'])}, "
        f"done in {rr_time:.2f} s (round-robin: up to {rr_unacked['slow worker']} tasks waited on the slow one)"
    )
    fair, fair_unacked, fair_time = await round_(prefetch=1)
    print(
        f"  prefetch 1        : fast worker {tasks_(fair['fast worker'])}, slow worker {tasks_(fair['slow worker'])}, "
        f"done in {fair_time:.2f} s (at most {max(fair_unacked.values())} unacked task per worker)"
    )
    holds = fair["fast worker"] > fair["slow worker"] and max(fair_unacked.values()) == 1
    return Proof(
        holds,
        f"fair dispatch: with prefetch 1 no worker held more than 1 unacked task, so the fast worker "
        f"took {fair['fast worker']} of {n_tasks} tasks (round-robin gave it {rr['fast worker']}) "
        f"and the work finished in {fair_time:.2f} s instead of {rr_time:.2f} s",
    )


async def publish_subscribe(demo: Demo) -> Proof:
    conn = await demo.connect("pubsub")
    channel = await conn.channel()
    name = demo.name("announcements")
    exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.FANOUT)
    demo.forget_later("exchange", name)
    subscribers = {}
    for who in ("audit log", "search indexer", "cache invalidator"):
        queue = await channel.declare_queue(exclusive=True)  # server-named, gone with the connection
        await queue.bind(exchange)
        subscribers[who] = queue
    events = [
        ("price.changed", "SKU-KB-01 now EUR 79.00"),
        ("stock.low", "SKU-MN-27: 3 left"),
        ("promo.started", "10% off hubs"),
    ]
    for key, text in events:
        await exchange.publish(aio_pika.Message(text.encode()), routing_key=key)
    print(
        f"  published {len(events)} messages to fanout exchange {name} (routing keys "
        f"{', '.join(k for k, _ in events)} are ignored)"
    )
    received = {}
    for who, queue in subscribers.items():
        received[who] = [m.body.decode() for m in await drain(queue)]
        print(f"  {who:<18} ({queue.name[:20]}...) got {len(received[who])}: {received[who]}")
    holds = all(got == [text for _, text in events] for got in received.values())
    return Proof(
        holds,
        f"publish/subscribe: every one of the {len(subscribers)} subscribers got all {len(events)} "
        f"messages, in order ({len(subscribers) * len(events)} deliveries from {len(events)} publishes)",
    )


async def route(
    demo: Demo,
    role: str,
    kind: aio_pika.ExchangeType,
    bindings: Bindings,
    messages: Publishes,
) -> dict[int, list[str]]:
    """Bind one exclusive queue per entry of `bindings` (queue -> [(routing key, binding arguments)]), publish
    `messages` ((routing key, headers)) and return, per message, the queues it reached (in `bindings` order)."""
    conn = await demo.connect(role)
    channel = await conn.channel()
    name = demo.name(role)
    exchange = await channel.declare_exchange(name, kind)
    demo.forget_later("exchange", name)
    queues = {}
    for queue_name, keys in bindings.items():
        queue = await channel.declare_queue(demo.name(f"{role}.{queue_name}"), exclusive=True)
        for key, arguments in keys:
            await queue.bind(exchange, key, arguments=arguments)
        queues[queue_name] = queue
    reached: dict[int, list[str]] = {i: [] for i in range(len(messages))}
    for i, (key, headers) in enumerate(messages):
        body = json.dumps({"n": i}).encode()
        result = await exchange.publish(aio_pika.Message(body, headers=headers), routing_key=key, mandatory=True)
        if not isinstance(result, Basic.Ack):  # mandatory, and no queue matched: the broker returned it
            reached[i].append(RETURNED)
    for queue_name, queue in queues.items():
        for message in await drain(queue):
            reached[json.loads(message.body)["n"]].append(queue_name)
    return reached


RETURNED = "(no queue: returned to the publisher, 312 NO_ROUTE)"


def show_routes(rows: Iterable[tuple[str, list[str], list[str]]]) -> bool:
    """Print each message's route; True when every one went exactly where expected (`expected` [] = returned)."""
    ok = True
    table = list(rows)
    width = max(len(label) for label, _, _ in table)
    for label, got, expected in table:
        expected = expected or [RETURNED]
        mark = "" if got == expected else f"   <-- expected {', '.join(expected)}"
        ok &= got == expected
        print(f"  {label:<{width}} -> {', '.join(got)}{mark}")
    return ok


async def routing(demo: Demo) -> Proof:
    bindings: Bindings = {
        "pager": [("error", None)],
        "console": [("info", None), ("warning", None), ("error", None)],
    }
    keys = ["debug", "info", "warning", "error"]
    print("  direct exchange; pager bound with 'error'; console bound with 'info', 'warning', 'error'")
    reached = await route(demo, "routing", aio_pika.ExchangeType.DIRECT, bindings, [(k, None) for k in keys])
    expected = {"debug": [], "info": ["console"], "warning": ["console"], "error": ["pager", "console"]}
    ok = show_routes((f"routing key {k!r}", reached[i], expected[k]) for i, k in enumerate(keys))
    return Proof(
        ok,
        "routing: a direct exchange delivered each message to exactly the queues bound with its routing "
        "key ('error' to both, 'info' to one, 'debug' to none)",
    )


async def topics(demo: Demo) -> Proof:
    bindings: Bindings = {
        "eu-orders": [("order.*.eu", None)],
        "all-orders": [("order.#", None)],
        "anything-created": [("*.created.*", None)],
    }
    expected = {
        "order.created.eu": ["eu-orders", "all-orders", "anything-created"],
        "order.shipped.us": ["all-orders"],
        "order.created.us.express": ["all-orders"],
        "user.created.eu": ["anything-created"],
        "order": ["all-orders"],
        "inventory.low": [],
    }
    print("  topic exchange; eu-orders <- 'order.*.eu', all-orders <- 'order.#', anything-created <- '*.created.*'")
    keys = list(expected)
    reached = await route(demo, "topics", aio_pika.ExchangeType.TOPIC, bindings, [(k, None) for k in keys])
    ok = show_routes((f"routing key {k!r}", reached[i], expected[k]) for i, k in enumerate(keys))
    return Proof(
        ok,
        "topics: '*' matched exactly one word ('*.created.*' missed the four-word key), '#' matched "
        "zero or more ('order.#' caught 'order' itself), and a key no pattern matched went nowhere",
    )


async def headers(demo: Demo) -> Proof:
    bindings: Bindings = {
        "pdf-reports": [("", {"x-match": "all", "format": "pdf", "type": "report"})],
        "zip-or-logs": [("", {"x-match": "any", "format": "zip", "type": "log"})],
    }
    messages: Publishes = [
        ("", {"format": "pdf", "type": "report"}),
        ("", {"format": "pdf", "type": "log"}),
        ("", {"format": "zip", "type": "report"}),
        ("ignored.key", {"format": "pdf"}),
    ]
    expected = [["pdf-reports"], ["zip-or-logs"], ["zip-or-logs"], []]
    print(
        "  headers exchange; pdf-reports <- x-match=all {format: pdf, type: report}; "
        "zip-or-logs <- x-match=any {format: zip, type: log}"
    )
    reached = await route(demo, "headers", aio_pika.ExchangeType.HEADERS, bindings, messages)
    rows = (
        (f"headers {json.dumps(h, separators=(',', ':'))}", reached[i], expected[i])
        for i, (_, h) in enumerate(messages)
    )
    ok = show_routes(rows)
    return Proof(
        ok,
        "headers routing: x-match=all needed every header to match, x-match=any just one, and the "
        "routing key played no part",
    )


async def rpc(demo: Demo) -> Proof:
    server_conn = await demo.connect("rpc server")
    server = await server_conn.channel()
    requests = await server.declare_queue(demo.name("rpc.shipping-quotes"), exclusive=True)
    reply_addresses: list[str] = []

    async def serve(message: AbstractIncomingMessage) -> None:
        request = json.loads(message.body)
        price = round(4.90 + 1.25 * request["weight_kg"] + (7.5 if request["express"] else 0), 2)
        assert message.reply_to is not None
        reply_addresses.append(message.reply_to)
        reply = aio_pika.Message(json.dumps({"price": price}).encode(), correlation_id=message.correlation_id)
        await server.default_exchange.publish(reply, routing_key=message.reply_to)
        await message.ack()

    await requests.consume(serve)

    client_conn = await demo.connect("rpc client")
    client = await client_conn.channel()
    pending: dict[str, asyncio.Future[dict[str, float]]] = {}

    async def on_reply(message: AbstractIncomingMessage) -> None:
        future = pending.pop(message.correlation_id or "", None)
        if future is not None and not future.done():
            future.set_result(json.loads(message.body))

    # Direct reply-to: consume the pseudo-queue amq.rabbitmq.reply-to (no-ack) on the channel that sends requests;
    # no reply queue is declared, and the broker routes each reply straight back to this channel.
    reply_queue = await client.get_queue("amq.rabbitmq.reply-to", ensure=False)
    await reply_queue.consume(on_reply, no_ack=True)

    async def call(weight_kg: float, express: bool) -> tuple[str, dict[str, float], float]:
        correlation_id = uuid.uuid4().hex[:8]
        future: asyncio.Future[dict[str, float]] = asyncio.get_running_loop().create_future()
        pending[correlation_id] = future
        body = json.dumps({"weight_kg": weight_kg, "express": express}).encode()
        started = time.monotonic()
        request = aio_pika.Message(body, reply_to="amq.rabbitmq.reply-to", correlation_id=correlation_id)
        await client.default_exchange.publish(request, routing_key=requests.name)
        answer = await asyncio.wait_for(future, 5)
        return correlation_id, answer, (time.monotonic() - started) * 1000

    asks = [(0.5, False), (2.0, False), (2.0, True), (12.5, False)]
    answers = await asyncio.gather(*(call(w, e) for w, e in asks))
    expected_prices = [round(4.90 + 1.25 * w + (7.5 if e else 0), 2) for w, e in asks]
    for (w, e), (cid, answer, ms) in zip(asks, answers, strict=True):
        print(
            f"  quote {w:>5} kg{' express' if e else '        '} -> EUR {answer['price']:6.2f}  "
            f"(correlation_id {cid}, {ms:.1f} ms)"
        )
    print(f"  the server saw reply_to = {reply_addresses[0][:40]}... (a per-channel address the broker made up)")
    holds = (
        [a["price"] for _, a, _ in answers] == expected_prices
        and all(a.startswith("amq.rabbitmq.reply-to.") for a in reply_addresses)
        and not pending
    )
    return Proof(
        holds,
        f"RPC: {len(asks)} concurrent requests each got its own answer back over direct reply-to, "
        "matched by correlation_id, without declaring a reply queue",
    )


# ------------------------------------------------------------------------------------------------ guarantees


N_ORDERS = 10


class Worker:
    """A consumer process in miniature: its own connection; `crash()` drops it without another word."""

    def __init__(self, demo: Demo, name: str) -> None:
        self.demo, self.name = demo, name
        self.inbox = Inbox()

    async def start(self, queue: str, *, no_ack: bool, prefetch: int = 0, transactional: bool = False) -> None:
        self.connection = await self.demo.connect(self.name)
        self.channel = await self.connection.channel(publisher_confirms=not transactional)
        if transactional:
            self.tx = self.channel.transaction()
            await self.tx.select()
        if prefetch:
            await self.channel.set_qos(prefetch_count=prefetch)
        await (await self.channel.get_queue(queue, ensure=False)).consume(self.inbox, no_ack=no_ack)

    async def crash(self) -> None:
        # What the broker sees when a consumer process dies: its connection goes away with deliveries unacked.
        await self.connection.close()


async def order_queue(demo: Demo, what: str) -> tuple[AbstractChannel, str]:
    """A queue outside any worker's connection (so it outlives their crashes), deleted at the end."""
    conn = await demo.connect(f"{what} setup")
    channel = await conn.channel()
    name = demo.name(what)
    await channel.declare_queue(name)
    demo.forget_later("queue", name)
    return channel, name


async def publish_orders(channel: AbstractChannel, queue: str, numbers: Iterable[int]) -> None:
    for n in numbers:
        message = aio_pika.Message(f"order-{n}".encode(), message_id=f"order-{n}")
        await channel.default_exchange.publish(message, routing_key=queue)


def summary(effects: list[str]) -> tuple[set[str], list[str]]:
    """(orders never processed, orders processed more than once)."""
    counts = Counter(effects)
    missing = {f"order-{n}" for n in range(1, N_ORDERS + 1)} - set(counts)
    return missing, sorted((o for o, c in counts.items() if c > 1), key=lambda o: int(o.split("-")[1]))


async def at_most_once(demo: Demo) -> Proof:
    setup, queue = await order_queue(demo, "at-most-once")
    await publish_orders(setup, queue, range(1, N_ORDERS + 1))
    effects: list[str] = []
    first = Worker(demo, "worker #1")
    await first.start(queue, no_ack=True)  # auto-ack: the broker forgets each message as it sends it
    await wait_until(lambda: first.inbox.messages.qsize() == N_ORDERS)
    for _ in range(3):
        message = await first.inbox.next()
        assert message is not None
        effects.append(message.body.decode())
    await first.crash()
    print(f"  worker #1 (auto-ack) received {N_ORDERS} orders, processed {', '.join(effects)}, then crashed")
    left = await depth(setup, queue)
    print(f"  the queue now holds {left} messages: the other {N_ORDERS - 3} were sent to worker #1 and died with it")
    second = Worker(demo, "worker #2")
    await second.start(queue, no_ack=True)
    while (message := await second.inbox.next(timeout=0.3)) is not None:
        effects.append(message.body.decode())
    print(f"  worker #2 started and received {len(effects) - 3} orders")
    missing, twice = summary(effects)
    print(
        f"  lost: {len(missing)} ({', '.join(sorted(missing, key=lambda o: int(o.split('-')[1])))}); "
        f"processed twice: {len(twice)}"
    )
    return Proof(
        len(missing) == N_ORDERS - 3 and not twice,
        f"at-most-once: nothing was processed twice, but {len(missing)} of {N_ORDERS} orders were lost: with "
        "auto-ack they left the broker when they were sent, and died with the worker",
    )


async def at_least_once(demo: Demo) -> Proof:
    setup, queue = await order_queue(demo, "at-least-once")
    await publish_orders(setup, queue, range(1, N_ORDERS + 1))
    effects: list[str] = []
    first = Worker(demo, "worker #1")
    await first.start(queue, no_ack=False, prefetch=N_ORDERS)
    while True:
        message = await first.inbox.next()
        assert message is not None
        effects.append(message.body.decode())  # the effect (charge the card, ship the parcel) happens ...
        if len(effects) == 4:
            break  # ... and the worker dies before it acks order-4
        await message.ack()
    await first.crash()
    print(
        f"  worker #1 (manual ack) processed {', '.join(effects)}; crashed after processing order-4, before acking it"
    )
    print(f"  the broker requeued the {await depth(setup, queue)} unacked orders")
    second = Worker(demo, "worker #2")
    await second.start(queue, no_ack=False, prefetch=N_ORDERS)
    redelivered = []
    while (message := await second.inbox.next(timeout=0.3)) is not None:
        effects.append(message.body.decode())
        if message.redelivered:
            redelivered.append(message.body.decode())
        await message.ack()
    print(f"  worker #2 processed {len(effects) - 4} orders, {len(redelivered)} of them flagged redelivered")
    missing, twice = summary(effects)
    print(f"  lost: {len(missing)}; processed twice: {', '.join(twice) or 'none'}")
    return Proof(
        not missing and twice == ["order-4"],
        f"at-least-once: no order was lost ({N_ORDERS}/{N_ORDERS} processed), but order-4 was processed twice: "
        "its effect happened before the crash and the broker redelivered it, unacked",
    )


async def exactly_once(demo: Demo) -> Proof:
    setup, queue = await order_queue(demo, "exactly-once")

    # The producer: publishes in transactions. A crash before the commit publishes nothing at all.
    doomed_conn = await demo.connect("publisher #1")
    doomed = await doomed_conn.channel(publisher_confirms=False)
    await doomed.transaction().select()
    await publish_orders(doomed, queue, range(1, 6))
    await doomed_conn.close()
    print(
        f"  publisher #1 sent order-1..5 in a transaction and crashed before committing: the queue holds "
        f"{await depth(setup, queue)} messages"
    )
    publisher_conn = await demo.connect("publisher #2")
    publisher = await publisher_conn.channel(publisher_confirms=False)
    tx = publisher.transaction()
    await tx.select()
    await publish_orders(publisher, queue, range(1, 6))
    await tx.commit()
    await publish_orders(publisher, queue, range(6, 11))
    await tx.commit()
    # Say the commit-ok of the second batch was lost on the way: the publisher cannot know, so it sends it again.
    await publish_orders(publisher, queue, range(6, 11))
    await tx.commit()
    print(
        f"  publisher #2 committed order-1..5, then order-6..10, and (its commit-ok lost) order-6..10 again: "
        f"{await depth(setup, queue)} messages"
    )

    # The consumer: records the message_id of each order it applied, in the same (simulated) database transaction
    # as the effect, and acks in an AMQP transaction committed after it.
    database: set[str] = set()  # message_ids of applied orders, stored with the effects
    effects: list[str] = []
    skipped: list[str] = []

    async def handle(worker: Worker, message: AbstractIncomingMessage, crash_after_effect: bool = False) -> bool:
        key = message.message_id or ""
        if key in database:
            skipped.append(key)  # seen before: ack it, do nothing
        else:
            effects.append(message.body.decode())
            database.add(key)
            if crash_after_effect:
                return False  # the worker dies before its ack is committed
        await message.ack()
        await worker.tx.commit()
        return True

    first = Worker(demo, "consumer #1")
    await first.start(queue, no_ack=False, prefetch=1, transactional=True)
    while True:
        message = await first.inbox.next()
        assert message is not None
        if not await handle(first, message, crash_after_effect=message.message_id == "order-4"):
            break
    await first.crash()
    waiting = await depth(setup, queue)
    print(f"  consumer #1 applied {', '.join(effects)}; crashed after applying order-4, before committing its ack")
    second = Worker(demo, "consumer #2")
    await second.start(queue, no_ack=False, prefetch=1, transactional=True)
    for _ in range(waiting):
        message = await second.inbox.next()
        assert message is not None
        await handle(second, message)
    print(
        f"  consumer #2 received the {waiting} messages left, applied {len(effects) - 4}, skipped "
        f"{len(skipped)} duplicates by message_id ({', '.join(skipped)})"
    )
    missing, twice = summary(effects)
    print(f"  lost: {len(missing)}; applied twice: {len(twice)}; queue left with {await depth(setup, queue)}")
    holds = not missing and not twice and len(skipped) == 6
    return Proof(
        holds,
        f"exactly-once: each of the {N_ORDERS} orders took effect exactly once; the uncommitted "
        f"publishes vanished with their publisher, and the {len(skipped)} duplicate deliveries "
        "(5 re-sent after a lost commit-ok, 1 redelivered after the crash) were skipped by message_id",
    )


SECTIONS: dict[str, tuple[str, Callable[[Demo], Awaitable[Proof]]]] = {
    "work-queue": ("Work queue with fair dispatch (prefetch 1)", work_queue),
    "pubsub": ("Publish/subscribe (fanout exchange)", publish_subscribe),
    "routing": ("Routing (direct exchange)", routing),
    "topics": ("Topics (topic exchange, wildcards)", topics),
    "headers": ("Headers routing (headers exchange)", headers),
    "rpc": ("RPC over direct reply-to", rpc),
    "at-most-once": ("At-most-once delivery (auto-ack) with a crash", at_most_once),
    "at-least-once": ("At-least-once delivery (manual ack) with a crash", at_least_once),
    "exactly-once": ("Exactly-once processing (transactions + deduplication) with crashes", exactly_once),
}


async def run(names: list[str]) -> bool:
    demo = Demo(amqp_url())
    await (await demo.connect("check")).close()  # no broker there: stop now, with one message (see main)
    all_ok = True
    try:
        for number, (name, (title, section)) in enumerate(SECTIONS.items(), 1):
            if name not in names:
                continue
            heading(number, title)
            try:
                proof = await section(demo)
            except Exception as exc:  # report and go on with the next section
                proof = Proof(False, f"{name} stopped with {type(exc).__name__}: {exc}")
            print(("PROVED: " if proof.holds else "NOT PROVED: ") + proof.claim, flush=True)
            all_ok &= proof.holds
    finally:
        await demo.clean_up()
    return all_ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only",
        action="append",
        choices=list(SECTIONS),
        metavar="NAME",
        help=f"run only this section (repeatable): {', '.join(SECTIONS)}",
    )
    args = parser.parse_args(argv)
    try:
        ok = asyncio.run(run(args.only or list(SECTIONS)))
    except (OSError, aio_pika.exceptions.AMQPError) as exc:
        print(f"message_patterns.py: {type(exc).__name__}: {exc} (is a broker running? set AMQP_URL)", file=sys.stderr)
        return 2
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
