"""The payload of one log record: a whole batch (or a definitions checkpoint), so a batch is all-or-nothing.

    tag u8 | max message id u64 | next queue incarnation u32
    u32 count, then per definition : incarnation u32 | tagged definition (storage.codec, its version)
    u32 count, then per message    : id i64 | timestamp ms i64 | len(exchange) u8 | len(routing key) u8
                                     | len(properties) u32 | len(body) u32 | the four byte strings
    u32 count, then per enqueue    : incarnation u32 | message id i64 | flags u8 (1 = delivered)
    u32 count, then per mark       : incarnation u32 | message id i64
    u32 count, then per removal    : incarnation u32 | message id i64

The tag says what the record is and which format version wrote it:

    1 batch, version 1  |  2 checkpoint, version 1   (read only: before records carried a vhost)
    3 batch, version 2  |  4 checkpoint, version 2   (written now)

The versions differ only in the definitions: from version 2 on each one carries its vhost, and vhosts
themselves are definitions. Version 1 definitions decode into vhost "/". A log may mix versions (the first
records written after an upgrade go into the old head segment); compaction rewrites in the current version.
Settings (users, permissions, ...) are definitions too, with definition tags of their own added within version
2 (see storage.codec): a checkpoint carries them like any other definition, and a log without them still
reads as before.

Queues are named by an incarnation number, not by (vhost, name), so messages of a deleted queue can never
come back into a later queue of the same name. Incarnations are unique across vhosts, which is why enqueues,
marks and removals did not change between versions. Every record repeats the highest message id and
incarnation number handed out so far, so neither is ever reused even after the records that used them are
reclaimed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from amqpd.storage.base import Definition, MessageRecord
from amqpd.storage.codec import DEFINITION_VERSION, CodecError, Reader, decode_definition, encode_definition

KIND_BATCH = 1
KIND_CHECKPOINT = 2
FORMAT_VERSION = DEFINITION_VERSION
# tag byte -> (kind, format version), and back for writing the current version
_TAGS = {1: (KIND_BATCH, 1), 2: (KIND_CHECKPOINT, 1), 3: (KIND_BATCH, 2), 4: (KIND_CHECKPOINT, 2)}
_TAG_OF = {kind: tag for tag, (kind, version) in _TAGS.items() if version == FORMAT_VERSION}

_HEAD = struct.Struct("<BqI")
_COUNT = struct.Struct("<I")
_MSG = struct.Struct("<qqBBII")
_ENQ = struct.Struct("<IqB")
_REF = struct.Struct("<Iq")
_DELIVERED = 1


@dataclass(slots=True)
class LogEntry:
    kind: int  # KIND_BATCH or KIND_CHECKPOINT, whatever version the record was written in
    max_msg_id: int
    next_incarnation: int
    definitions: list[tuple[int, Definition]] = field(default_factory=list)
    messages: list[MessageRecord] = field(default_factory=list)
    enqueues: list[tuple[int, int, bool]] = field(default_factory=list)
    marks: list[tuple[int, int]] = field(default_factory=list)
    removals: list[tuple[int, int]] = field(default_factory=list)

    def item_count(self) -> int:
        return len(self.messages) + len(self.enqueues) + len(self.marks) + len(self.removals)


def encode_entry(entry: LogEntry) -> bytearray:
    """Always in the current format version."""
    out = bytearray(_HEAD.pack(_TAG_OF[entry.kind], entry.max_msg_id, entry.next_incarnation))
    out += _COUNT.pack(len(entry.definitions))
    for incarnation, record in entry.definitions:
        out += _COUNT.pack(incarnation)
        encode_definition(out, record)
    out += _COUNT.pack(len(entry.messages))
    pack_msg = _MSG.pack
    for msg in entry.messages:
        exchange = msg.exchange.encode()
        routing_key = msg.routing_key.encode()
        out += pack_msg(
            msg.msg_id, msg.timestamp_ms, len(exchange), len(routing_key), len(msg.properties), len(msg.body)
        )
        out += exchange
        out += routing_key
        out += msg.properties
        out += msg.body
    out += _COUNT.pack(len(entry.enqueues))
    for incarnation, msg_id, delivered in entry.enqueues:
        out += _ENQ.pack(incarnation, msg_id, _DELIVERED if delivered else 0)
    for refs in (entry.marks, entry.removals):
        out += _COUNT.pack(len(refs))
        for incarnation, msg_id in refs:
            out += _REF.pack(incarnation, msg_id)
    return out


_new = object.__new__
_SETTERS = tuple(
    getattr(MessageRecord, name).__set__
    for name in ("msg_id", "exchange", "routing_key", "properties", "body", "timestamp_ms")
)


def _message_record(
    msg_id: int, exchange: str, routing_key: str, properties: bytes, body: bytes, timestamp_ms: int
) -> MessageRecord:
    """Same object as MessageRecord(...), built twice as fast: a frozen dataclass's __init__ goes through
    object.__setattr__ per field, which dominated replay of small messages."""
    record: MessageRecord = _new(MessageRecord)
    set_id, set_exchange, set_key, set_props, set_body, set_ts = _SETTERS
    set_id(record, msg_id)
    set_exchange(record, exchange)
    set_key(record, routing_key)
    set_props(record, properties)
    set_body(record, body)
    set_ts(record, timestamp_ms)
    return record


class Interner:
    """Replay sees the same exchange names, routing keys and property blobs over and over: keep one copy."""

    __slots__ = ("blobs", "strings")

    def __init__(self) -> None:
        self.strings: dict[bytes, str] = {}
        self.blobs: dict[bytes, bytes] = {}

    def string(self, raw: bytes) -> str:
        text = self.strings.get(raw)
        if text is None:
            text = self.strings[raw] = raw.decode()
        return text

    def blob(self, raw: bytes) -> bytes:
        if len(raw) > 64:  # long property lists are usually unique (headers, ids): not worth a dict entry
            return raw
        return self.blobs.setdefault(raw, raw)


def decode_entry(payload: bytes, interner: Interner) -> LogEntry:
    """Raises CodecError / struct.error / UnicodeDecodeError on malformed input."""
    tag, max_msg_id, next_incarnation = _HEAD.unpack_from(payload, 0)
    kind_and_version = _TAGS.get(tag)
    if kind_and_version is None:
        raise CodecError(f"unknown record tag {tag}")
    kind, version = kind_and_version
    entry = LogEntry(kind, max_msg_id, next_incarnation)
    reader = Reader(payload, _HEAD.size)
    for _ in range(reader.u32()):
        incarnation = reader.u32()
        entry.definitions.append((incarnation, decode_definition(reader, version)))
    pos = reader.pos
    (count,) = _COUNT.unpack_from(payload, pos)
    pos += 4
    unpack_msg = _MSG.unpack_from
    msg_size = _MSG.size
    string = interner.string
    blob = interner.blob
    messages = entry.messages
    last_ts = 0
    for _ in range(count):
        msg_id, ts, ex_len, rk_len, prop_len, body_len = unpack_msg(payload, pos)
        if ts == last_ts:  # messages of one batch often share a millisecond: share the int object too
            ts = last_ts
        last_ts = ts
        pos += msg_size
        ex_end = pos + ex_len
        rk_end = ex_end + rk_len
        prop_end = rk_end + prop_len
        body_end = prop_end + body_len
        if body_end > len(payload):
            raise struct.error("message runs past the record")
        messages.append(
            _message_record(
                msg_id,
                string(payload[pos:ex_end]),
                string(payload[ex_end:rk_end]),
                blob(payload[rk_end:prop_end]),
                payload[prop_end:body_end],
                ts,
            )
        )
        pos = body_end
    (count,) = _COUNT.unpack_from(payload, pos)
    pos += 4
    for incarnation, msg_id, flags in _ENQ.iter_unpack(payload[pos : pos + count * _ENQ.size]):
        entry.enqueues.append((incarnation, msg_id, bool(flags & _DELIVERED)))
    pos += count * _ENQ.size
    for refs in (entry.marks, entry.removals):
        (count,) = _COUNT.unpack_from(payload, pos)
        pos += 4
        refs.extend(_REF.iter_unpack(payload[pos : pos + count * _REF.size]))
        pos += count * _REF.size
    if pos != len(payload):
        raise struct.error("trailing bytes in record")
    return entry
