"""Definitions state (vhosts, exchanges, queues, bindings, settings) and how definition records change it.

Shared by every backend so that cascades (deleting a vhost drops everything in it, its settings included but
never the broker-wide ones; deleting an exchange or a queue drops its bindings) mean the same thing everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import assert_never

from amqpd.storage.base import (
    BROKER_WIDE,
    BindingDelete,
    BindingRecord,
    Definition,
    ExchangeDelete,
    ExchangeRecord,
    QueueDelete,
    QueueRecord,
    ScopedName,
    SettingDelete,
    SettingKey,
    SettingRecord,
    Snapshot,
    VHostDelete,
    VHostRecord,
)
from amqpd.storage.codec import encode_table

# (vhost, source, destination, destination is an exchange, routing key, encoded arguments)
BindingKey = tuple[str, str, str, bool, str, bytes]


def binding_key(record: BindingRecord | BindingDelete) -> BindingKey:
    return (
        record.vhost,
        record.source,
        record.destination,
        record.destination_is_exchange,
        record.routing_key,
        encode_table(record.arguments),
    )


@dataclass(slots=True)
class Touched:
    """Keys whose stored row may have changed; a networked store rewrites exactly these."""

    vhosts: set[str] = field(default_factory=set)
    exchanges: set[ScopedName] = field(default_factory=set)
    queues: set[ScopedName] = field(default_factory=set)
    bindings: set[BindingKey] = field(default_factory=set)
    settings: set[SettingKey] = field(default_factory=set)


@dataclass(slots=True)
class DefinitionsState:
    vhosts: dict[str, VHostRecord] = field(default_factory=dict)
    exchanges: dict[ScopedName, ExchangeRecord] = field(default_factory=dict)
    queues: dict[ScopedName, QueueRecord] = field(default_factory=dict)
    bindings: dict[BindingKey, BindingRecord] = field(default_factory=dict)
    settings: dict[SettingKey, SettingRecord] = field(default_factory=dict)

    def apply(self, op: Definition, touched: Touched | None = None) -> None:
        touched = touched if touched is not None else Touched()
        if isinstance(op, ExchangeRecord):
            key = (op.vhost, op.name)
            self.exchanges[key] = op
            touched.exchanges.add(key)
        elif isinstance(op, QueueRecord):
            key = (op.vhost, op.name)
            self.queues[key] = op
            touched.queues.add(key)
        elif isinstance(op, BindingRecord):
            bkey = binding_key(op)
            self.bindings[bkey] = op
            touched.bindings.add(bkey)
        elif isinstance(op, BindingDelete):
            bkey = binding_key(op)
            self.bindings.pop(bkey, None)
            touched.bindings.add(bkey)
        elif isinstance(op, ExchangeDelete):
            vhost, name = key = (op.vhost, op.name)
            self.exchanges.pop(key, None)
            touched.exchanges.add(key)
            self._drop_bindings(touched, lambda k: k[0] == vhost and (k[1] == name or (k[3] and k[2] == name)))
        elif isinstance(op, QueueDelete):
            vhost, name = key = (op.vhost, op.name)
            self.queues.pop(key, None)
            touched.queues.add(key)
            self._drop_bindings(touched, lambda k: k[0] == vhost and not k[3] and k[2] == name)
        elif isinstance(op, VHostRecord):
            self.vhosts[op.name] = op
            touched.vhosts.add(op.name)
        elif isinstance(op, VHostDelete):
            self._drop_vhost(op, touched)
        elif isinstance(op, SettingRecord):
            skey = (op.vhost, op.kind, op.name)
            self.settings[skey] = op
            touched.settings.add(skey)
        elif isinstance(op, SettingDelete):
            skey = (op.vhost, op.kind, op.name)
            self.settings.pop(skey, None)
            touched.settings.add(skey)
        else:
            assert_never(op)

    def _drop_vhost(self, op: VHostDelete, touched: Touched) -> None:
        vhost = op.name
        self.vhosts.pop(vhost, None)
        touched.vhosts.add(vhost)
        for table, seen in ((self.exchanges, touched.exchanges), (self.queues, touched.queues)):
            for key in [k for k in table if k[0] == vhost]:
                del table[key]
                seen.add(key)
        self._drop_bindings(touched, lambda k: k[0] == vhost)
        if vhost != BROKER_WIDE:  # "" names no vhost among settings: it marks the broker-wide ones
            for skey in [k for k in self.settings if k[0] == vhost]:
                del self.settings[skey]
                touched.settings.add(skey)

    def _drop_bindings(self, touched: Touched, doomed: Callable[[BindingKey], bool]) -> None:
        for key in [k for k in self.bindings if doomed(k)]:
            del self.bindings[key]
            touched.bindings.add(key)

    def records(self) -> list[Definition]:
        """Everything needed to rebuild this state from nothing, in an order that replays cleanly."""
        out: list[Definition] = []
        out.extend(self.vhosts.values())
        out.extend(self.exchanges.values())
        out.extend(self.queues.values())
        out.extend(self.bindings.values())
        out.extend(self.settings.values())
        return out

    def fill(self, snapshot: Snapshot) -> None:
        snapshot.vhosts = dict(self.vhosts)
        snapshot.exchanges = dict(self.exchanges)
        snapshot.queues = dict(self.queues)
        snapshot.bindings = list(self.bindings.values())
        snapshot.settings = dict(self.settings)
