"""The examples' shared parts: the broker's URL, and the e-commerce topology read from a file and declared over AMQP.

The topology file (``ecommerce_topology.json``) is RabbitMQ's definitions format (its ``exchanges``, ``queues`` and
``bindings`` lists, as ``rabbitmqctl export_definitions`` writes them) plus two lists that no broker knows about:
``producers`` (who publishes to which exchange, with which routing keys) and ``consumers`` (which service consumes
which queue, with what prefetch). amqp_broker.py and amqp_client.py declare it; render_diagram.py draws it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika

DEFAULT_URL = "amqp://guest:guest@localhost:5672/"
TOPOLOGY_FILE = Path(__file__).with_name("ecommerce_topology.json")


def amqp_url() -> str:
    """The broker the examples talk to: ``AMQP_URL`` from the environment, else a local broker as guest."""
    return os.environ.get("AMQP_URL") or DEFAULT_URL


@dataclass(frozen=True)
class Producer:
    name: str
    exchange: str
    routing_keys: tuple[str, ...] = ()
    note: str = ""  # how it publishes, e.g. "persistent · confirms"


@dataclass(frozen=True)
class Exchange:
    name: str
    type: str
    durable: bool = True
    auto_delete: bool = False
    internal: bool = False
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Queue:
    name: str
    durable: bool = True
    auto_delete: bool = False
    arguments: dict[str, Any] = field(default_factory=dict)

    @property
    def dead_letter_exchange(self) -> str | None:
        """Where rejected or expired messages go (``""`` is the default exchange), or None."""
        value = self.arguments.get("x-dead-letter-exchange")
        return value if isinstance(value, str) else None

    @property
    def dead_letter_routing_key(self) -> str | None:
        value = self.arguments.get("x-dead-letter-routing-key")
        return value if isinstance(value, str) else None

    @property
    def message_ttl_ms(self) -> int | None:
        value = self.arguments.get("x-message-ttl")
        return value if isinstance(value, int) else None


@dataclass(frozen=True)
class Binding:
    source: str
    destination: str
    destination_type: str = "queue"
    routing_key: str = ""
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Consumer:
    name: str
    queue: str
    prefetch: int | None = None  # None or 0: no limit
    manual_ack: bool = True


@dataclass(frozen=True)
class Topology:
    exchanges: list[Exchange]
    queues: list[Queue]
    bindings: list[Binding]
    producers: list[Producer] = field(default_factory=list)
    consumers: list[Consumer] = field(default_factory=list)
    description: str = ""

    @classmethod
    def from_definitions(cls, data: dict[str, Any], vhost: str | None = "/") -> Topology:
        """A topology from a RabbitMQ definitions document (with optional ``producers``/``consumers`` lists).

        Objects of other vhosts are left out; an object without a ``vhost`` key belongs to every vhost (a
        per-vhost export has none). Built-in exchanges (``""``, ``amq.*``) are left out: every broker has them.
        """

        def here(item: dict[str, Any]) -> bool:
            return vhost is None or item.get("vhost", vhost) == vhost

        exchanges = [
            Exchange(
                name=item["name"],
                type=item.get("type", "direct"),
                durable=bool(item.get("durable", True)),
                auto_delete=bool(item.get("auto_delete", False)),
                internal=bool(item.get("internal", False)),
                arguments=dict(item.get("arguments") or {}),
            )
            for item in data.get("exchanges", [])
            if here(item) and item["name"] and not item["name"].startswith("amq.")
        ]
        queues = [
            Queue(
                name=item["name"],
                durable=bool(item.get("durable", True)),
                auto_delete=bool(item.get("auto_delete", False)),
                arguments=dict(item.get("arguments") or {}),
            )
            for item in data.get("queues", [])
            if here(item)
        ]
        bindings = [
            Binding(
                source=item["source"],
                destination=item["destination"],
                destination_type=item.get("destination_type", "queue"),
                routing_key=item.get("routing_key", ""),
                arguments=dict(item.get("arguments") or {}),
            )
            for item in data.get("bindings", [])
            if here(item) and item.get("source")  # the default exchange's implicit bindings are not listed
        ]
        producers = [
            Producer(item["name"], item["exchange"], tuple(item.get("routing_keys", ())), item.get("note", ""))
            for item in data.get("producers", [])
        ]
        consumers = [
            Consumer(item["name"], item["queue"], item.get("prefetch"), item.get("ack", "manual") == "manual")
            for item in data.get("consumers", [])
        ]
        return cls(exchanges, queues, bindings, producers, consumers, str(data.get("description", "")))

    def queue(self, name: str) -> Queue:
        for queue in self.queues:
            if queue.name == name:
                return queue
        raise KeyError(f"no queue {name!r} in the topology")

    def exchange(self, name: str) -> Exchange:
        for exchange in self.exchanges:
            if exchange.name == name:
                return exchange
        raise KeyError(f"no exchange {name!r} in the topology")

    def consumer(self, name: str) -> Consumer:
        for consumer in self.consumers:
            if consumer.name == name:
                return consumer
        raise KeyError(f"no consumer {name!r} in the topology")

    def bindings_from(self, exchange: str) -> list[Binding]:
        return [b for b in self.bindings if b.source == exchange]


def load_topology(path: str | Path = TOPOLOGY_FILE) -> Topology:
    with open(path, encoding="utf-8") as f:
        return Topology.from_definitions(json.load(f))


async def declare_topology(channel: aio_pika.abc.AbstractChannel, topology: Topology) -> None:
    """Declare every exchange, queue and binding of `topology` (idempotent: what exists is left as it is, as long
    as it was declared with the same properties, else the broker answers 406 PRECONDITION_FAILED)."""
    exchanges: dict[str, aio_pika.abc.AbstractExchange] = {}
    for x in topology.exchanges:
        exchanges[x.name] = await channel.declare_exchange(
            x.name, x.type, durable=x.durable, auto_delete=x.auto_delete, internal=x.internal, arguments=x.arguments
        )
    queues: dict[str, aio_pika.abc.AbstractQueue] = {}
    for q in topology.queues:
        queues[q.name] = await channel.declare_queue(
            q.name, durable=q.durable, auto_delete=q.auto_delete, arguments=q.arguments
        )
    for b in topology.bindings:
        if b.destination_type == "exchange":
            await exchanges[b.destination].bind(exchanges[b.source], b.routing_key, arguments=b.arguments)
        else:
            await queues[b.destination].bind(exchanges[b.source], b.routing_key, arguments=b.arguments)


def describe_topology(topology: Topology) -> list[str]:
    """One line per exchange: its type and where its bindings lead (``order.events (topic) -> orders [order.*]``)."""
    lines = []
    for x in topology.exchanges:
        routes = ", ".join(
            f"{b.destination} [{b.routing_key}]" if b.routing_key else b.destination
            for b in topology.bindings_from(x.name)
        )
        lines.append(f"{x.name} ({x.type}) -> {routes or 'nothing bound'}")
    return lines
