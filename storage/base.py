"""Records, batches, snapshots and the `Store` protocol shared by every storage backend.

Records stay close to the AMQP wire format (raw content-header property bytes, raw body) so that recovery
hands the broker exactly what it would have received from a publisher, with no re-encoding.
"""

from __future__ import annotations

import datetime
import decimal
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias

FieldValue: TypeAlias = (
    str
    | int
    | float
    | bool
    | bytes
    | bytearray
    | decimal.Decimal
    | datetime.datetime
    | dict[str, "FieldValue"]
    | list["FieldValue"]
    | None
)
FieldTable: TypeAlias = dict[str, FieldValue]


class StorageError(Exception):
    """The store could not do what was asked (I/O failure, unusable data directory, bad URL)."""


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """One published message, stored once however many queues it reaches."""

    msg_id: int
    exchange: str
    routing_key: str
    properties: bytes  # property flags + property list, exactly as in the content header frame
    body: bytes
    timestamp_ms: int  # publish time, so per-message / per-queue TTL survives a restart


@dataclass(frozen=True, slots=True)
class Enqueue:
    vhost: str
    queue: str
    msg_id: int


@dataclass(frozen=True, slots=True)
class Remove:
    """The message left the queue for good (ack, reject/nack without requeue, expiry, purge)."""

    vhost: str
    queue: str
    msg_id: int


@dataclass(frozen=True, slots=True)
class DeliveredMark:
    """Optional, written lazily: after recovery the message comes back with redelivered=True."""

    vhost: str
    queue: str
    msg_id: int


@dataclass(frozen=True, slots=True)
class VHostRecord:
    """A durable virtual host. Declaring it again replaces its metadata and keeps what is stored under it.

    The store does not insist on it: definitions and messages may be stored under a vhost that has no
    VHostRecord (data from before vhosts were stored is all in "/", with no record for "/")."""

    name: str
    metadata: FieldTable  # description, tags, default queue type, ...


@dataclass(frozen=True, slots=True)
class VHostDelete:
    """Deleting a vhost deletes everything stored under it: exchanges, queues, bindings, enqueues and the
    settings whose vhost it is (never the broker-wide ones)."""

    name: str


@dataclass(frozen=True, slots=True)
class ExchangeRecord:
    vhost: str
    name: str
    type: str
    durable: bool
    auto_delete: bool
    internal: bool
    arguments: FieldTable


@dataclass(frozen=True, slots=True)
class ExchangeDelete:
    """Deleting an exchange also deletes every binding that has it as source or destination."""

    vhost: str
    name: str


@dataclass(frozen=True, slots=True)
class QueueRecord:
    vhost: str
    name: str
    durable: bool
    auto_delete: bool
    arguments: FieldTable


@dataclass(frozen=True, slots=True)
class QueueDelete:
    """Deleting a queue drops its stored messages and every binding that has it as destination."""

    vhost: str
    name: str


@dataclass(frozen=True, slots=True)
class BindingRecord:
    """Source and destination are in `vhost` (AMQP never binds across vhosts)."""

    vhost: str
    source: str
    destination: str
    destination_is_exchange: bool
    routing_key: str
    arguments: FieldTable


@dataclass(frozen=True, slots=True)
class BindingDelete:
    """Identifies a binding the way AMQP does: vhost, source, destination, routing key and arguments."""

    vhost: str
    source: str
    destination: str
    destination_is_exchange: bool
    routing_key: str
    arguments: FieldTable


BROKER_WIDE = ""  # the vhost of a setting that belongs to the whole broker (a user), not to one vhost


@dataclass(frozen=True, slots=True)
class SettingRecord:
    """A small named piece of broker configuration the store keeps without interpreting it.

    Users, permissions, topic permissions and vhost limits now; policies and runtime parameters later. The
    store keeps `value` exactly as given (any table the field codec round-trips) and never looks inside it.
    A setting is identified by (vhost, kind, name): storing another record with the same three replaces it
    whole. `vhost` is `BROKER_WIDE` ("") for settings of the whole broker (users); otherwise the vhost it
    belongs to, and deleting that vhost deletes it (a `VHostDelete` never touches broker-wide settings). The
    store does not require the vhost to have a `VHostRecord`.
    """

    vhost: str  # "" (BROKER_WIDE) for broker-wide settings (users); else the vhost it belongs to
    kind: str  # e.g. "user", "permission", "topic-permission", "vhost-limits", "policy"
    name: str
    value: FieldTable


@dataclass(frozen=True, slots=True)
class SettingDelete:
    """Deletes the setting with this (vhost, kind, name), if there is one."""

    vhost: str
    kind: str
    name: str


Definition: TypeAlias = (
    VHostRecord
    | VHostDelete
    | ExchangeRecord
    | ExchangeDelete
    | QueueRecord
    | QueueDelete
    | BindingRecord
    | BindingDelete
    | SettingRecord
    | SettingDelete
)
ScopedName: TypeAlias = tuple[str, str]  # (vhost, name): the identity of a queue or an exchange
SettingKey: TypeAlias = tuple[str, str, str]  # (vhost, kind, name): the identity of a setting


@dataclass(slots=True)
class Batch:
    """Everything one commit makes durable, atomically.

    Applied in this order: definitions (in list order), then messages, enqueues, delivered marks, removals.
    A message record is only written when the same batch enqueues it; an enqueue into a queue the store does
    not know (never declared, or deleted) is ignored, as is a removal or mark of an unknown enqueue.
    """

    definitions: list[Definition] = field(default_factory=list)
    messages: list[MessageRecord] = field(default_factory=list)
    enqueues: list[Enqueue] = field(default_factory=list)
    marks: list[DeliveredMark] = field(default_factory=list)
    removals: list[Remove] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not (self.definitions or self.messages or self.enqueues or self.marks or self.removals)


@dataclass(slots=True)
class Snapshot:
    """What `Store.open()` recovered. Exchanges, queues and the per-queue maps are keyed (vhost, name), settings
    (vhost, kind, name). Per-queue lists are in enqueue (= message id) order; every queue has an entry in
    `messages` and `delivered`.

    A fanned-out message is one shared `MessageRecord` object in each queue's list, across vhosts too.
    """

    vhosts: dict[str, VHostRecord] = field(default_factory=dict)
    exchanges: dict[ScopedName, ExchangeRecord] = field(default_factory=dict)
    queues: dict[ScopedName, QueueRecord] = field(default_factory=dict)
    bindings: list[BindingRecord] = field(default_factory=list)
    messages: dict[ScopedName, list[MessageRecord]] = field(default_factory=dict)
    delivered: dict[ScopedName, set[int]] = field(default_factory=dict)  # (vhost, queue) -> ids with a mark
    settings: dict[SettingKey, SettingRecord] = field(default_factory=dict)
    next_message_id: int = 1


class Store(Protocol):
    """Durable state behind one small interface. Calls are never concurrent (the committer serialises them)."""

    async def open(self) -> Snapshot:
        """Replay what is stored. Call once, before anything else."""
        ...

    async def commit(self, batch: Batch) -> None:
        """Atomic and durable when it returns: one fsync / one round trip per batch."""
        ...

    async def maintain(self) -> None:
        """Do one bounded slice of upkeep (space reclaim). Called when idle; may be a no-op."""
        ...

    async def close(self) -> None: ...


@dataclass(slots=True)
class NetBatch:
    """A batch after cancelling what it undoes itself; see `net_batch`."""

    definitions: list[Definition]
    messages: list[MessageRecord]
    enqueues: list[tuple[str, str, int, bool]]  # (vhost, queue, message id, delivered)
    marks: list[DeliveredMark]
    removals: list[Remove]


def net_batch(batch: Batch) -> NetBatch:
    """Drop what need never be written: an enqueue removed in the same batch (and the removal), messages no
    surviving enqueue refers to, a mark of an enqueue the same batch removes; a mark on an enqueue of the
    same batch becomes the enqueue's delivered flag."""
    pending: dict[tuple[str, str, int], bool] = {(e.vhost, e.queue, e.msg_id): False for e in batch.enqueues}
    removals: list[Remove] = []
    removed: set[tuple[str, str, int]] = set()
    for removal in batch.removals:
        key = (removal.vhost, removal.queue, removal.msg_id)
        if key in pending:
            del pending[key]
        else:
            removals.append(removal)
        if batch.marks:
            removed.add(key)
    marks: list[DeliveredMark] = []
    for mark in batch.marks:
        key = (mark.vhost, mark.queue, mark.msg_id)
        if key in pending:
            pending[key] = True
        elif key not in removed:
            marks.append(mark)
    wanted = {msg_id for _vhost, _queue, msg_id in pending}
    messages = [m for m in batch.messages if m.msg_id in wanted]
    enqueues = [(vhost, queue, msg_id, delivered) for (vhost, queue, msg_id), delivered in pending.items()]
    return NetBatch(list(batch.definitions), messages, enqueues, marks, removals)
