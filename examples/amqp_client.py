"""The e-commerce flow: three services publish events, five services consume them, a failing payment is retried.

    AMQP_URL=amqp://guest:guest@localhost:5672/ python3 examples/amqp_client.py --orders 6 --users 3

What it shows:
- Producers (Order, User and Payment Service) publish JSON events as persistent messages on channels with
  publisher confirms: each publish returns only once the broker has taken responsibility for the message.
- Consumers (Fulfillment, Inventory, Email, SMS and Analytics Service) each have their own connection, a prefetch
  limit and manual acks: a message is acked after it was processed, so a crash would redeliver it.
- Dead-lettering with a delayed retry: the Analytics Service fails on some payments and rejects them; the
  ``analytics`` queue dead-letters them through ``payment.dead-letter`` into ``analytics.retry``, whose message TTL
  sends them back to ``analytics`` a second later. A transient failure recovers on its second attempt; a poison
  message is parked in ``analytics.parking-lot`` after three attempts instead of looping forever.

The topology (ecommerce_topology.json) is declared first, so this runs against any broker: amqp_broker.py,
``amqpd``, or a RabbitMQ. Events are tagged with this run's id; events left over from earlier runs are acked and
counted, not processed. The run ends when every event is accounted for, or after --timeout seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from pamqp.commands import Basic
from topology import Topology, amqp_url, declare_topology, load_topology

MAX_ATTEMPTS = 3  # a payment that failed this often is parked instead of retried again
PARKING_LOT_KEY = "parking-lot"  # routing key of analytics.parking-lot on payment.dead-letter

CUSTOMERS = [
    ("Ada Lovelace", "Berlin", "+49 30 5550101"),
    ("Grace Hopper", "Lisbon", "+351 21 5550102"),
    ("Alan Turing", "Manchester", "+44 161 5550103"),
    ("Katherine Johnson", "Lyon", "+33 4 55500104"),
    ("Edsger Dijkstra", "Rotterdam", "+31 10 5550105"),
]
PRODUCTS = [
    ("SKU-KB-01", "Mechanical keyboard", 89.00),
    ("SKU-MS-02", "Wireless mouse", 24.90),
    ("SKU-MN-27", "27-inch monitor", 219.00),
    ("SKU-HD-03", "USB-C hub", 39.50),
    ("SKU-CB-05", "Cable set", 12.00),
]


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def show(arrow: str, who: str, where: str, what: str) -> None:
    print(f"  {arrow} {who:<19} {where:<17} {what}", flush=True)


# ------------------------------------------------------------------------------------------------ bookkeeping


@dataclass
class Ledger:
    """What this run published, processed, dead-lettered and retried; `done` is set once all is accounted for."""

    run_id: str
    expected: dict[str, int]  # consumer -> events of this run it must handle
    published: Counter[str] = field(default_factory=Counter)  # routing key -> confirmed publishes
    handled: Counter[str] = field(default_factory=Counter)  # consumer -> events processed (or parked)
    parked: dict[str, str] = field(default_factory=dict)  # payment id -> why
    recovered: dict[str, int] = field(default_factory=dict)  # payment id -> attempt that succeeded
    failing: set[str] = field(default_factory=set)  # payments that failed at least once
    rejections: int = 0  # rejected by the consumer, so dead-lettered to analytics.retry
    retries: int = 0  # came back from analytics.retry
    stale: int = 0  # events of earlier runs, acked and skipped
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def handled_one(self, consumer: str) -> None:
        self.handled[consumer] += 1
        if all(self.handled[name] >= n for name, n in self.expected.items()):
            self.done.set()


# ------------------------------------------------------------------------------------------------ producers


class Producer:
    """A service with its own connection and a confirm channel, publishing JSON events to one exchange."""

    def __init__(self, name: str, exchange: str, ledger: Ledger) -> None:
        self.name, self.exchange_name, self.ledger = name, exchange, ledger
        self.connection: AbstractConnection | None = None

    async def start(self, url: str) -> None:
        self.connection = await aio_pika.connect(url, client_properties={"connection_name": self.name})
        channel = await self.connection.channel(publisher_confirms=True)
        self.exchange = await channel.get_exchange(self.exchange_name, ensure=False)

    async def publish(self, routing_key: str, event: dict[str, Any], summary: str) -> None:
        event = {"event": routing_key, "event_id": str(uuid.uuid4()), "run": self.ledger.run_id, **event}
        message = aio_pika.Message(
            json.dumps(event).encode(),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=event["event_id"],
            type=routing_key,
            app_id=self.name,
            timestamp=datetime.now(UTC),
        )
        # With publisher confirms on, this returns once the broker has acked the message (for a persistent message
        # in a durable queue: once it is stored); a nack raises. An unroutable message (mandatory) comes back.
        confirmation = await self.exchange.publish(message, routing_key, mandatory=True)
        if not isinstance(confirmation, Basic.Ack):
            raise RuntimeError(f"{routing_key} to {self.exchange_name} was not routed to any queue: {confirmation}")
        self.ledger.published[routing_key] += 1
        show("->", self.name, routing_key, f"{summary}  (confirmed)")

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.close()


async def produce(url: str, topology: Topology, ledger: Ledger, args: argparse.Namespace, rng: random.Random) -> None:
    exchange_of = {p.name: p.exchange for p in topology.producers}
    users = Producer("User Service", exchange_of.get("User Service", "user.events"), ledger)
    orders = Producer("Order Service", exchange_of.get("Order Service", "order.events"), ledger)
    payments = Producer("Payment Service", exchange_of.get("Payment Service", "payment.events"), ledger)
    producers = [users, orders, payments]
    try:
        for p in producers:
            await p.start(url)
        for i in range(args.users):
            name, city, phone = CUSTOMERS[i % len(CUSTOMERS)]
            user_id = f"CUS-{2001 + i}"
            email = name.lower().replace(" ", ".") + "@example.com"
            event = {
                "user_id": user_id,
                "name": name,
                "email": email,
                "phone": phone,
                "city": city,
                "registered_at": now(),
            }
            await users.publish("user.registered", event, f"{user_id}  {name} <{email}>")
            await asyncio.sleep(args.interval)
        flaky = set(range(1, 2 * args.failing_payments, 2))  # the 2nd, 4th, ... payment fails once
        poison = set(range(args.orders - args.poison_payments, args.orders))  # the last ones always fail
        for i in range(args.orders):
            name, city, _ = CUSTOMERS[i % len(CUSTOMERS)]
            order_id, payment_id = f"ORD-{1001 + i}", f"PAY-{5001 + i}"
            items: list[dict[str, Any]] = [
                {"sku": sku, "name": title, "qty": rng.randint(1, 3), "unit_price": price}
                for sku, title, price in rng.sample(PRODUCTS, rng.randint(1, 3))
            ]
            total = round(sum(it["qty"] * it["unit_price"] for it in items), 2)
            order = {
                "order_id": order_id,
                "customer": {"id": f"CUS-{2001 + i % max(args.users, 1)}", "name": name, "city": city},
                "items": items,
                "total": total,
                "currency": "EUR",
                "created_at": now(),
            }
            n_items = sum(it["qty"] for it in items)
            await orders.publish("order.created", order, f"{order_id}  {n_items} item(s), EUR {total:.2f}")
            payment: dict[str, Any] = {
                "payment_id": payment_id,
                "order_id": order_id,
                "amount": total,
                "currency": "EUR",
                "method": "card",
                "captured_at": now(),
            }
            note = ""
            if i in poison:
                payment["amount"] = f"{total:.2f}".replace(".", ",")  # a malformed amount: fails every time
                note = "  [malformed amount: will always fail]"
            elif i in flaky:
                payment["fx_rate_service"] = "timeout-once"  # the analytics FX lookup times out the first time
                note = "  [will fail once]"
            await payments.publish("payment.captured", payment, f"{payment_id}  EUR {total:.2f} for {order_id}{note}")
            await asyncio.sleep(args.interval)
    finally:
        for p in producers:
            await p.close()


# ------------------------------------------------------------------------------------------------ consumers

Handler = Callable[[dict[str, Any], AbstractIncomingMessage], Awaitable[str | None]]


class ProcessingError(Exception):
    """The service could not process the event; `permanent` ones will never succeed."""

    def __init__(self, reason: str, permanent: bool) -> None:
        super().__init__(reason)
        self.permanent = permanent


class ConsumerService:
    """A service with its own connection, consuming one queue with a prefetch limit and manual acks."""

    def __init__(
        self, name: str, queue: str, prefetch: int, ledger: Ledger, rng: random.Random, retry_delay: float
    ) -> None:
        self.name, self.queue_name, self.prefetch, self.ledger, self.rng = name, queue, prefetch, ledger, rng
        self.retry_delay = retry_delay
        self.connection: AbstractConnection | None = None
        self.channel: AbstractChannel | None = None

    async def start(self, url: str, handler: Handler) -> None:
        self.handler = handler
        self.connection = await aio_pika.connect(url, client_properties={"connection_name": self.name})
        self.channel = await self.connection.channel()
        # At most `prefetch` unacked messages in flight to this consumer: the rest waits in the queue.
        await self.channel.set_qos(prefetch_count=self.prefetch)
        queue = await self.channel.get_queue(self.queue_name, ensure=False)
        await queue.consume(self.on_message, no_ack=False)

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            event = json.loads(message.body)
        except ValueError:
            show("!!", self.name, self.queue_name, "not JSON: rejected")
            await message.reject(requeue=False)
            return
        if event.get("run") != self.ledger.run_id:
            self.ledger.stale += 1
            await message.ack()  # left over from an earlier run: not ours to process
            return
        await asyncio.sleep(self.rng.uniform(0.005, 0.03))  # the work
        try:
            result = await self.handler(event, message)
        except ProcessingError as exc:
            await self.failed(event, message, exc)
            return
        if result is not None:
            show("<-", self.name, self.queue_name, result)
        await message.ack()  # only now may the broker forget it
        self.ledger.handled_one(self.name)

    async def failed(self, event: dict[str, Any], message: AbstractIncomingMessage, exc: ProcessingError) -> None:
        attempt = attempts_so_far(message, self.queue_name) + 1
        key = event.get("payment_id") or event.get("event_id", "?")
        self.ledger.failing.add(key)
        if exc.permanent and attempt >= MAX_ATTEMPTS:
            # Give up: park a copy for a human to look at, then ack the original so it leaves the retry loop.
            assert self.channel is not None
            dead_letter = await self.channel.get_exchange("payment.dead-letter", ensure=False)
            headers = dict(message.headers or {})
            headers.update({"x-failure": str(exc), "x-attempts": attempt})
            copy = aio_pika.Message(
                message.body,
                headers=headers,
                content_type=message.content_type,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=message.message_id,
                type=message.type,
                app_id=message.app_id,
            )
            confirmation = await dead_letter.publish(copy, PARKING_LOT_KEY, mandatory=True)
            if not isinstance(confirmation, Basic.Ack):
                raise RuntimeError(f"parking {key} failed: {confirmation}")
            await message.ack()
            self.ledger.parked[key] = f"{exc} (after {attempt} attempts)"
            show(
                "!!",
                self.name,
                self.queue_name,
                f"{key}  attempt {attempt} failed: {exc} -> parked in analytics.parking-lot",
            )
            self.ledger.handled_one(self.name)
            return
        # Reject without requeue: the queue dead-letters it to payment.dead-letter -> analytics.retry, whose TTL
        # sends it back here later. requeue=True would retry at once, in a hot loop.
        self.ledger.rejections += 1
        await message.reject(requeue=False)
        show(
            "!!",
            self.name,
            self.queue_name,
            f"{key}  attempt {attempt} failed: {exc} -> rejected, "
            f"dead-lettered to analytics.retry (back in {self.retry_delay:g} s)",
        )

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.close()


def attempts_so_far(message: AbstractIncomingMessage, queue: str) -> int:
    """How often `message` was rejected from `queue` before: the count in its ``x-death`` header (the broker adds
    one entry per queue and reason and counts repeats in it)."""
    deaths = (message.headers or {}).get("x-death") or []
    total = 0
    if isinstance(deaths, list):
        for death in deaths:
            if isinstance(death, dict) and death.get("queue") == queue and death.get("reason") == "rejected":
                count = death.get("count", 1)
                total += count if isinstance(count, int) else 1
    return total


def handlers(ledger: Ledger) -> dict[str, Handler]:
    revenue: list[float] = []

    async def fulfillment(order: dict[str, Any], _: AbstractIncomingMessage) -> str:
        n = sum(it["qty"] for it in order["items"])
        return f"{order['order_id']}  picking {n} item(s) for {order['customer']['name']} ({order['customer']['city']})"

    async def inventory(order: dict[str, Any], _: AbstractIncomingMessage) -> str:
        reserved = ", ".join(f"{it['sku']} x{it['qty']}" for it in order["items"])
        return f"{order['order_id']}  reserved {reserved}"

    async def email(user: dict[str, Any], _: AbstractIncomingMessage) -> str:
        return f"{user['user_id']}  welcome e-mail sent to {user['email']}"

    async def sms(user: dict[str, Any], _: AbstractIncomingMessage) -> str:
        return f"{user['user_id']}  verification code texted to {user['phone']}"

    async def analytics(payment: dict[str, Any], message: AbstractIncomingMessage) -> str:
        attempt = attempts_so_far(message, "analytics") + 1
        if attempt > 1:
            ledger.retries += 1
        if payment.get("fx_rate_service") == "timeout-once" and attempt == 1:
            raise ProcessingError("FX rate service timed out", permanent=False)
        amount = payment["amount"]
        if not isinstance(amount, int | float):
            raise ProcessingError(f"amount {amount!r} is not a number", permanent=True)
        revenue.append(float(amount))
        after = ""
        if attempt > 1:
            ledger.recovered[payment["payment_id"]] = attempt
            after = f" on attempt {attempt}, after {attempt - 1} retr{'y' if attempt == 2 else 'ies'}"
        return (
            f"{payment['payment_id']}  recorded EUR {amount:.2f} ({payment['method']}){after}; "
            f"revenue so far EUR {sum(revenue):.2f}"
        )

    return {
        "Fulfillment Service": fulfillment,
        "Inventory Service": inventory,
        "Email Service": email,
        "SMS Service": sms,
        "Analytics Service": analytics,
    }


# ------------------------------------------------------------------------------------------------ the run


def print_summary(ledger: Ledger, topology: Topology, elapsed: float, retry_delay: float) -> bool:
    print(f"\nSummary of run {ledger.run_id} ({elapsed:.1f} s)")
    published = ", ".join(f"{n} {key}" for key, n in ledger.published.items())
    print(f"  published and confirmed : {published} ({sum(ledger.published.values())} persistent messages)")
    for consumer in topology.consumers:
        expected = ledger.expected.get(consumer.name, 0)
        handled = ledger.handled[consumer.name]
        parked = len(ledger.parked) if consumer.queue == "analytics" else 0
        extra = f", parked {parked}" if parked else ""
        print(
            f"  {consumer.name:<23} : processed {handled - parked}/{expected}{extra} (queue {consumer.queue}, "
            f"prefetch {consumer.prefetch}, manual ack)"
        )
    print(
        f"  dead-lettered           : {ledger.rejections} rejection(s) of {len(ledger.failing)} payment(s) went "
        "to analytics.retry"
    )
    recovered = "; ".join(f"{pid} recovered on attempt {n}" for pid, n in ledger.recovered.items())
    print(
        f"  retried                 : {ledger.retries} came back after {retry_delay:g} s"
        + (f"; {recovered}" if recovered else "")
    )
    for pid, why in ledger.parked.items():
        print(f"  parked                  : {pid} {why}")
    if ledger.stale:
        print(f"  skipped                 : {ledger.stale} event(s) left over from earlier runs (acked)")
    ok = ledger.done.is_set()
    orders = ledger.expected.get("Fulfillment Service", 0)
    if ok:
        print(
            f"RESULT: OK - all {orders} orders processed, every event handled; failing payments were "
            f"dead-lettered and retried ({len(ledger.recovered)} recovered, {len(ledger.parked)} parked)"
        )
    else:
        missing = {name: n - ledger.handled[name] for name, n in ledger.expected.items() if ledger.handled[name] < n}
        print(f"RESULT: INCOMPLETE - events still unhandled when the timeout ran out: {missing}")
    return ok


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=6, help="orders to place, each with its payment (default 6)")
    parser.add_argument("--users", type=int, default=3, help="users to register (default 3)")
    parser.add_argument("--failing-payments", type=int, default=1, help="payments that fail once (default 1)")
    parser.add_argument(
        "--poison-payments",
        type=int,
        default=1,
        help=f"payments that always fail and are parked after {MAX_ATTEMPTS} attempts (default 1)",
    )
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between events (default 0.05)")
    parser.add_argument("--timeout", type=float, default=30.0, help="give up waiting after this long (default 30)")
    parser.add_argument("--seed", type=int, default=17, help="random seed of the generated orders")
    args = parser.parse_args(argv)
    if args.orders < 1 or args.users < 0 or args.failing_payments < 0 or args.poison_payments < 0:
        parser.error("--orders must be at least 1; the other counts may not be negative")
    if 2 * args.failing_payments - 1 >= args.orders - args.poison_payments and args.failing_payments:
        parser.error("too few orders for that many failing and poison payments")
    return args


async def run(args: argparse.Namespace) -> bool:
    url = amqp_url()
    topology = load_topology()
    rng = random.Random(args.seed)
    retry_queue = topology.queue("analytics.retry")
    retry_delay = (retry_queue.message_ttl_ms or 0) / 1000
    ledger = Ledger(
        run_id=uuid.uuid4().hex[:8],
        expected={
            "Fulfillment Service": args.orders,
            "Inventory Service": args.orders,
            "Email Service": args.users,
            "SMS Service": args.users,
            "Analytics Service": args.orders,
        },
    )
    print(f"E-commerce flow, run {ledger.run_id}, against {redact(url)}")
    async with await aio_pika.connect(url, client_properties={"connection_name": "amqp_client.py setup"}) as setup:
        await declare_topology(await setup.channel(), topology)
    print(
        f"  topology declared: {len(topology.exchanges)} exchanges, {len(topology.queues)} queues, "
        f"{len(topology.bindings)} bindings (durable; messages are published persistent)\n"
    )

    table = handlers(ledger)
    consumers = [
        ConsumerService(c.name, c.queue, c.prefetch or 1, ledger, random.Random(rng.random()), retry_delay)
        for c in topology.consumers
    ]
    started = time.monotonic()
    try:
        for consumer in consumers:
            await consumer.start(url, table[consumer.name])
        await produce(url, topology, ledger, args, rng)
        with contextlib.suppress(TimeoutError):  # the summary says what is missing
            await asyncio.wait_for(ledger.done.wait(), max(args.timeout - (time.monotonic() - started), 0.1))
    finally:
        for consumer in consumers:
            await consumer.close()
    return print_summary(ledger, topology, time.monotonic() - started, retry_delay)


def redact(url: str) -> str:
    """The URL without its password, for printing."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        credentials, _, host = rest.rpartition("@")
        rest = f"{credentials.split(':')[0]}:***@{host}"
    return scheme + sep + rest


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        ok = asyncio.run(run(args))
    except (OSError, aio_pika.exceptions.AMQPError) as exc:
        print(
            f"amqp_client.py: {type(exc).__name__}: {exc} (is a broker running at {redact(amqp_url())}? "
            "start one with python3 examples/amqp_broker.py)",
            file=sys.stderr,
        )
        return 2
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
