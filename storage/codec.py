"""A small exact codec for AMQP field-table values and definition records.

Why not pamqp's field-table codec: it encodes every float as a 32-bit float (0.1 comes back as
0.10000000149011612) and rejects `bytes`, so it does not round-trip what the broker hands us. This codec is
self-describing, tags every value with its Python type and sorts dict keys so equal tables encode equally
(which lets an encoded argument table serve as part of a binding's identity).
"""

from __future__ import annotations

import datetime
import decimal
import struct

from amqpd.storage.base import (
    BindingDelete,
    BindingRecord,
    Definition,
    ExchangeDelete,
    ExchangeRecord,
    FieldTable,
    FieldValue,
    QueueDelete,
    QueueRecord,
    SettingDelete,
    SettingRecord,
    VHostDelete,
    VHostRecord,
)

_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
_F64 = struct.Struct("<d")


class CodecError(ValueError):
    """Bytes that do not decode (only seen when a checksum let corruption through, or on a bug)."""


def _put_str(out: bytearray, text: str) -> None:
    raw = text.encode()
    out += _U32.pack(len(raw))
    out += raw


def _put_bytes(out: bytearray, raw: bytes | bytearray) -> None:
    out += _U32.pack(len(raw))
    out += raw


def encode_value(out: bytearray, value: FieldValue) -> None:
    # bool before int: bool is a subclass of int.
    if value is None:
        out += b"N"
    elif value is True:
        out += b"T"
    elif value is False:
        out += b"F"
    elif isinstance(value, int):
        if -(2**63) <= value < 2**63:
            out += b"i"
            out += _I64.pack(value)
        else:
            out += b"I"
            _put_str(out, str(value))
    elif isinstance(value, float):
        out += b"d"
        out += _F64.pack(value)
    elif isinstance(value, str):
        out += b"s"
        _put_str(out, value)
    elif isinstance(value, bytearray):
        out += b"a"
        _put_bytes(out, value)
    elif isinstance(value, bytes):
        out += b"b"
        _put_bytes(out, value)
    elif isinstance(value, decimal.Decimal):
        out += b"D"
        _put_str(out, str(value))
    elif isinstance(value, datetime.datetime):
        out += b"t"
        _put_str(out, value.isoformat())
    elif isinstance(value, dict):
        out += b"m"
        out += _U32.pack(len(value))
        for key in sorted(value):
            _put_str(out, key)
            encode_value(out, value[key])
    elif isinstance(value, list):
        out += b"l"
        out += _U32.pack(len(value))
        for item in value:
            encode_value(out, item)
    else:
        raise TypeError(f"cannot store field value of type {type(value).__name__}")


def encode_table(table: FieldTable) -> bytes:
    out = bytearray()
    encode_value(out, table)
    return bytes(out)


class Reader:
    """Cursor over a buffer; every read checks bounds so corrupt input raises CodecError, never garbage."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes | memoryview, pos: int = 0) -> None:
        self.buf = buf
        self.pos = pos

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.buf):
            raise CodecError("truncated value")
        raw = bytes(self.buf[self.pos : end])
        self.pos = end
        return raw

    def u32(self) -> int:
        value: int = _U32.unpack(self.take(4))[0]
        return value

    def string(self) -> str:
        try:
            return self.take(self.u32()).decode()
        except UnicodeDecodeError as exc:
            raise CodecError(str(exc)) from exc

    def boolean(self) -> bool:
        return self.take(1) != b"\x00"


def decode_value(reader: Reader) -> FieldValue:
    tag = reader.take(1)
    if tag == b"N":
        return None
    if tag == b"T":
        return True
    if tag == b"F":
        return False
    if tag == b"i":
        value: int = _I64.unpack(reader.take(8))[0]
        return value
    if tag == b"I":
        return int(reader.string())
    if tag == b"d":
        number: float = _F64.unpack(reader.take(8))[0]
        return number
    if tag == b"s":
        return reader.string()
    if tag == b"b":
        return reader.take(reader.u32())
    if tag == b"a":
        return bytearray(reader.take(reader.u32()))
    if tag == b"D":
        return decimal.Decimal(reader.string())
    if tag == b"t":
        return datetime.datetime.fromisoformat(reader.string())
    if tag == b"m":
        table: FieldTable = {}
        for _ in range(reader.u32()):
            key = reader.string()
            table[key] = decode_value(reader)
        return table
    if tag == b"l":
        return [decode_value(reader) for _ in range(reader.u32())]
    raise CodecError(f"unknown value tag {tag!r}")


def decode_table(reader: Reader) -> FieldTable:
    value = decode_value(reader)
    if not isinstance(value, dict):
        raise CodecError("expected a table")
    return value


# Definition records: one tag byte, then (from version 2 on) the vhost, then the fields in declaration order.
# Version 1 (before records carried a vhost) had no vhost field and no vhost records: it decodes into "/".
# Settings (S, s) were added later within version 2: new tags, no existing encoding changed, so every record
# written before still reads the same. Version 1 never had them.
DEFINITION_VERSION = 2
LEGACY_VHOST = "/"
_EXCHANGE, _EXCHANGE_DELETE, _QUEUE, _QUEUE_DELETE, _BINDING, _BINDING_DELETE, _VHOST, _VHOST_DELETE = b"XxQqBbVv"
_SETTING, _SETTING_DELETE = b"Ss"


def _put_flag(out: bytearray, flag: bool) -> None:
    out += b"\x01" if flag else b"\x00"


def encode_definition(out: bytearray, record: Definition) -> None:
    """Always the current version (DEFINITION_VERSION)."""
    if isinstance(record, VHostRecord):
        out.append(_VHOST)
        _put_str(out, record.name)
        encode_value(out, record.metadata)
        return
    if isinstance(record, VHostDelete):
        out.append(_VHOST_DELETE)
        _put_str(out, record.name)
        return
    if isinstance(record, ExchangeRecord):
        out.append(_EXCHANGE)
        _put_str(out, record.vhost)
        _put_str(out, record.name)
        _put_str(out, record.type)
        for flag in (record.durable, record.auto_delete, record.internal):
            _put_flag(out, flag)
        encode_value(out, record.arguments)
    elif isinstance(record, ExchangeDelete):
        out.append(_EXCHANGE_DELETE)
        _put_str(out, record.vhost)
        _put_str(out, record.name)
    elif isinstance(record, QueueRecord):
        out.append(_QUEUE)
        _put_str(out, record.vhost)
        _put_str(out, record.name)
        _put_flag(out, record.durable)
        _put_flag(out, record.auto_delete)
        encode_value(out, record.arguments)
    elif isinstance(record, QueueDelete):
        out.append(_QUEUE_DELETE)
        _put_str(out, record.vhost)
        _put_str(out, record.name)
    elif isinstance(record, SettingRecord | SettingDelete):
        out.append(_SETTING if isinstance(record, SettingRecord) else _SETTING_DELETE)
        _put_str(out, record.vhost)
        _put_str(out, record.kind)
        _put_str(out, record.name)
        if isinstance(record, SettingRecord):
            encode_value(out, record.value)
    else:
        out.append(_BINDING if isinstance(record, BindingRecord) else _BINDING_DELETE)
        _put_str(out, record.vhost)
        _put_str(out, record.source)
        _put_str(out, record.destination)
        _put_flag(out, record.destination_is_exchange)
        _put_str(out, record.routing_key)
        encode_value(out, record.arguments)


def decode_definition(reader: Reader, version: int = DEFINITION_VERSION) -> Definition:
    """`version` is the format the bytes were written in; version 1 records come back in vhost "/"."""
    tag = reader.take(1)[0]
    if version == DEFINITION_VERSION:
        if tag == _VHOST:
            return VHostRecord(reader.string(), decode_table(reader))
        if tag == _VHOST_DELETE:
            return VHostDelete(reader.string())
        vhost = reader.string()
        if tag in (_SETTING, _SETTING_DELETE):
            kind, name = reader.string(), reader.string()
            if tag == _SETTING_DELETE:
                return SettingDelete(vhost, kind, name)
            return SettingRecord(vhost, kind, name, decode_table(reader))
    elif version == 1:
        vhost = LEGACY_VHOST
    else:
        raise CodecError(f"unknown definition format version {version}")
    if tag == _EXCHANGE:
        name, kind = reader.string(), reader.string()
        durable, auto_delete, internal = reader.boolean(), reader.boolean(), reader.boolean()
        return ExchangeRecord(vhost, name, kind, durable, auto_delete, internal, decode_table(reader))
    if tag == _EXCHANGE_DELETE:
        return ExchangeDelete(vhost, reader.string())
    if tag == _QUEUE:
        name = reader.string()
        durable, auto_delete = reader.boolean(), reader.boolean()
        return QueueRecord(vhost, name, durable, auto_delete, decode_table(reader))
    if tag == _QUEUE_DELETE:
        return QueueDelete(vhost, reader.string())
    if tag in (_BINDING, _BINDING_DELETE):
        source, destination = reader.string(), reader.string()
        to_exchange, routing_key = reader.boolean(), reader.string()
        arguments = decode_table(reader)
        cls = BindingRecord if tag == _BINDING else BindingDelete
        return cls(vhost, source, destination, to_exchange, routing_key, arguments)
    raise CodecError(f"unknown definition tag {tag}")


def encode_definition_bytes(record: Definition) -> bytes:
    out = bytearray()
    encode_definition(out, record)
    return bytes(out)
