"""Dead-lettering as RabbitMQ 3.x does it (rabbit_dead_letter): the x-death header, routing and cycle detection.

A dead-lettered message is a new message: new ``x-death`` entry (or an old one's count bumped), ``x-first-death-*``
on its first death, the ``expiration`` property removed (kept as ``original-expiration``), headers sorted by key
(RabbitMQ's ``set_table_value`` sorts the table), published to the queue's dead-letter exchange with either the
queue's ``x-dead-letter-routing-key`` (which also drops ``CC``) or the message's own routing keys. It is routed at
most once, without confirms or returns, and dropped for every target queue it has already died in without a
``rejected`` death in between (a fully automatic cycle).
"""

from __future__ import annotations

import datetime
import time
from typing import TYPE_CHECKING, Any

from amqpd.broker.durability.messages import store_message
from amqpd.broker.model.message import Message, copy_properties, header_routes

if TYPE_CHECKING:
    from amqpd.broker.model.queue import Queue
    from amqpd.broker.model.routing import Router

def _sorted_table(table: dict[str, Any]) -> dict[str, Any]:
    return {k: table[k] for k in sorted(table, key=lambda k: k.encode("utf-8", "surrogateescape"))}


def _death_count(table: dict[str, Any]) -> int:
    count = table.get("count")
    return count if isinstance(count, int) and not isinstance(count, bool) else 0


def make_dead_letter(msg: Message, reason: str, queue: str, dlx: str, dlrk: str | None) -> tuple[Message, list[str]]:
    """The dead-lettered copy of ``msg`` and the routing keys to publish it with."""
    props = msg.properties
    headers: dict[str, Any] = dict(props.headers or {})
    routing_keys = [msg.routing_key, *header_routes(headers)]
    info: dict[str, Any] = {
        "reason": reason,
        "queue": queue,
        "time": datetime.datetime.fromtimestamp(int(time.time()), tz=datetime.UTC),
        "exchange": msg.exchange,
        "routing-keys": routing_keys,
    }
    if props.expiration is not None:
        info["original-expiration"] = props.expiration
    deaths = headers.get("x-death")
    if not isinstance(deaths, list):
        headers["x-death"] = [{"count": 1, **info}]
        headers["x-first-death-reason"] = reason
        headers["x-first-death-queue"] = queue
        headers["x-first-death-exchange"] = msg.exchange
    else:
        matches: list[dict[str, Any]] = []
        others: list[Any] = []
        for d in deaths:
            if isinstance(d, dict) and d.get("queue") == queue and d.get("reason") == reason:
                matches.append(d)
            else:
                others.append(d)
        if matches:
            # Entries from before RabbitMQ grouped deaths by (queue, reason) are merged, counts summed.
            updated = dict(matches[0])
            updated["count"] = sum(_death_count(m) for m in matches) + 1
        else:
            updated = {"count": 1, **info}
        headers["x-death"] = [_sorted_table(updated), *others]
    if dlrk is not None:
        headers.pop("CC", None)
        keys = [dlrk]
    else:
        keys = routing_keys
    new_props = copy_properties(props, headers=_sorted_table(headers), expiration=None)
    dead = Message(dlx, keys[0], msg.header, msg.body)
    dead.replace_properties(new_props)
    dead.persistent = new_props.delivery_mode == 2
    return dead, keys


def is_cycle(queue: str, deaths: list[Any]) -> bool:
    """rabbit_dead_letter:is_cycle: ``queue`` is in the death history, and no death since (including that one)
    was a reject."""
    for i, d in enumerate(deaths):
        if isinstance(d, dict) and d.get("queue") == queue:
            return all(isinstance(x, dict) and x.get("reason") != "rejected" for x in deaths[: i + 1])
    return False


def dead_letter(host: Router, source: Queue, msgs: list[Message], reason: str) -> None:
    """A queue's dead-letterer (see broker.model.routing.DeadLetterer): route each message's dead-lettered copy
    through ``source``'s dead-letter exchange, storing it when it is persistent and reaches a durable queue."""
    fx = source.fx
    if fx is None or fx.dlx is None:
        return
    dlx = fx.dlx
    ex = host.exchanges.get(dlx)
    if ex is None:
        return  # RabbitMQ drops the message when the dead-letter exchange does not exist
    for msg in msgs:
        dead, keys = make_dead_letter(msg, reason, source.name, dlx, fx.dlrk)
        targets: set[Queue] = set()
        for key in keys:
            targets.update(host.route(ex, dead, key))
        if reason != "rejected" and targets:
            deaths = dead.properties.headers["x-death"]
            targets = {q for q in targets if not is_cycle(q.name, deaths)}
        if not targets:
            continue
        committer = host.committer
        if committer is not None and dead.persistent:
            durable = [q for q in targets if q.store is not None]
            if durable:
                store_message(committer, dead, durable, host.next_message_id())
        for q in targets:
            q.put(dead)
