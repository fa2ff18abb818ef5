"""Topology state (exchanges, queues, bindings) and how definition records change it.

Shared by every backend so that cascades (deleting an exchange or a queue drops its bindings) mean the same
thing everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from storage.base import (
    BindingDelete,
    BindingRecord,
    Definition,
    ExchangeDelete,
    ExchangeRecord,
    QueueRecord,
    Snapshot,
)
from storage.codec import encode_table

BindingKey = tuple[str, str, bool, str, bytes]


def binding_key(record: BindingRecord | BindingDelete) -> BindingKey:
    return (
        record.source,
        record.destination,
        record.destination_is_exchange,
        record.routing_key,
        encode_table(record.arguments),
    )


@dataclass(slots=True)
class Touched:
    """Keys whose stored row may have changed; a networked store rewrites exactly these."""

    exchanges: set[str] = field(default_factory=set)
    queues: set[str] = field(default_factory=set)
    bindings: set[BindingKey] = field(default_factory=set)


@dataclass(slots=True)
class DefinitionsState:
    exchanges: dict[str, ExchangeRecord] = field(default_factory=dict)
    queues: dict[str, QueueRecord] = field(default_factory=dict)
    bindings: dict[BindingKey, BindingRecord] = field(default_factory=dict)

    def apply(self, op: Definition, touched: Touched | None = None) -> None:
        touched = touched if touched is not None else Touched()
        if isinstance(op, ExchangeRecord):
            self.exchanges[op.name] = op
            touched.exchanges.add(op.name)
        elif isinstance(op, QueueRecord):
            self.queues[op.name] = op
            touched.queues.add(op.name)
        elif isinstance(op, BindingRecord):
            key = binding_key(op)
            self.bindings[key] = op
            touched.bindings.add(key)
        elif isinstance(op, BindingDelete):
            key = binding_key(op)
            self.bindings.pop(key, None)
            touched.bindings.add(key)
        elif isinstance(op, ExchangeDelete):
            self.exchanges.pop(op.name, None)
            touched.exchanges.add(op.name)
            self._drop_bindings(touched, lambda k: k[0] == op.name or (k[2] and k[1] == op.name))
        else:
            self.queues.pop(op.name, None)
            touched.queues.add(op.name)
            self._drop_bindings(touched, lambda k: not k[2] and k[1] == op.name)

    def _drop_bindings(self, touched: Touched, doomed: Callable[[BindingKey], bool]) -> None:
        for key in [k for k in self.bindings if doomed(k)]:
            del self.bindings[key]
            touched.bindings.add(key)

    def records(self) -> list[Definition]:
        """Everything needed to rebuild this state from nothing, in an order that replays cleanly."""
        out: list[Definition] = []
        out.extend(self.exchanges.values())
        out.extend(self.queues.values())
        out.extend(self.bindings.values())
        return out

    def fill(self, snapshot: Snapshot) -> None:
        snapshot.exchanges = dict(self.exchanges)
        snapshot.queues = dict(self.queues)
        snapshot.bindings = list(self.bindings.values())
