"""Struct-based codec for the frames on the per-message path, byte-identical to pamqp 4.0.1.

pamqp walks a per-class attribute list and calls one function per field, which costs several microseconds per
frame; a broker pays that for every Publish, Deliver, Ack and content header. The functions here do the same
work with precompiled ``struct.Struct`` objects and never build pamqp objects. ``tests/test_fastcodec.py``
proves with hypothesis that every function agrees with pamqp, including which inputs fail to decode.

Conventions:

* A method *payload* is the bytes between the 7-byte frame header and the frame-end octet, so it starts with
  class id and method id. Decoders do not check those ids (the caller dispatched on them already).
* Decoders raise ``ValueError`` exactly when pamqp fails to decode the same payload: truncated fields and
  invalid UTF-8 in a shortstr (pamqp decodes shortstr strictly; ``UnicodeDecodeError`` is a ``ValueError``).
  Like pamqp they accept and ignore trailing bytes, and a shortstr whose length runs past the end is only an
  error because the field after it is then missing.
* Shortstr arguments of encoders are the UTF-8 bodies without the length octet; longer than 255 bytes raises
  ``struct.error``.
* Delivery tags are unsigned 64-bit here, as the spec says. pamqp packs them signed (``>q``), so it refuses to
  encode tags of 2**63 and above and decodes them as negative numbers; on the same bytes our value is pamqp's
  modulo 2**64, and below 2**63 (every tag a broker will ever hand out) the two are identical.
"""

from __future__ import annotations

import struct
from typing import Any

from pamqp import commands
from pamqp import encode as pamqp_encode
from pamqp import header as pamqp_header

from amqpd.protocol.constants import (
    BASIC_ACK_ID,
    BASIC_DELIVER_ID,
    BASIC_GET_OK_ID,
    BASIC_NACK_ID,
    BASIC_RETURN_ID,
    CLASS_BASIC,
    FRAME_BODY,
    FRAME_END,
    FRAME_END_OCTET,
    FRAME_HEADER,
    FRAME_METHOD,
    FRAME_OVERHEAD,
)

# Basic.Properties presence bits in the first property-flags word, in wire order of the property list.
HAS_CONTENT_TYPE = 0x8000
HAS_CONTENT_ENCODING = 0x4000
HAS_HEADERS = 0x2000
HAS_DELIVERY_MODE = 0x1000
HAS_PRIORITY = 0x0800
HAS_CORRELATION_ID = 0x0400
HAS_REPLY_TO = 0x0200
HAS_EXPIRATION = 0x0100
HAS_MESSAGE_ID = 0x0080
HAS_TIMESTAMP = 0x0040
HAS_TYPE = 0x0020
HAS_USER_ID = 0x0010
HAS_APP_ID = 0x0008
HAS_CLUSTER_ID = 0x0004
_HAS_MORE_FLAGS = 0x0001  # another flags word follows (never needed by Basic, but legal on the wire)

_FRAME_HEADER = struct.Struct(">BHI")
_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64_BOOL = struct.Struct(">QB")  # delivery tag + bit octet (Ack, Nack, Reject)

# Fixed-size frames are packed whole: header, method id, fields and the frame-end octet in one call.
_ACK_FRAME = struct.Struct(">BHII Q?B")
_NACK_FRAME = struct.Struct(">BHII QBB")
_ACK_SIZE = 4 + 8 + 1
# Variable frames: everything up to the first shortstr body, then the fields between shortstr bodies.
_METHOD_HEAD_SSTR = struct.Struct(">BHIIB")  # frame header, method id, length of the first shortstr
_METHOD_HEAD_U64 = struct.Struct(">BHIIQ?B")  # frame header, method id, tag, bit, length of a shortstr
_METHOD_HEAD_U16 = struct.Struct(">BHIIHB")  # frame header, method id, short, length of a shortstr
_TAG_BIT_SSTR = struct.Struct(">Q?B")  # delivery tag, redelivered, length of the next shortstr
_U32_END = struct.Struct(">Ic")  # last long field + frame-end octet
_END_THEN_HEADER = struct.Struct(">cBHI")  # frame-end of one frame + header of the next

# Content header payload: class id, weight, body size, then the property flags and list.
_CONTENT_HEADER_PREFIX = struct.Struct(">HHQ")
_FLAGS_OFFSET = _CONTENT_HEADER_PREFIX.size
_PROPERTIES_OFFSET = _FLAGS_OFFSET + 2


# --------------------------------------------------------------------------------------------- decoders


def decode_publish(payload: bytes) -> tuple[str, str, bool, bool]:
    """Basic.Publish payload -> ``(exchange, routing_key, mandatory, immediate)``.

    Layout after the method id: ticket (deprecated short, not returned), exchange, routing key, one bit octet.
    """
    try:
        end = 7 + payload[6]
        exchange = payload[7:end].decode("utf-8")
        start = end + 1
        end = start + payload[end]
        routing_key = payload[start:end].decode("utf-8")
        bits = payload[end]
    except IndexError:
        raise ValueError("truncated Basic.Publish") from None
    return exchange, routing_key, bool(bits & 1), bool(bits & 2)


def publish_size(payload: bytes) -> int:
    """The payload size a Basic.Publish with these two short strings has exactly; the caller compares it with
    ``len(payload)`` to refuse left-over octets (``decode_publish`` ignores them, as pamqp does)."""
    n = payload[6]
    return 9 + n + payload[7 + n]


def decode_ack(payload: bytes) -> tuple[int, bool]:
    """Basic.Ack payload -> ``(delivery_tag, multiple)``."""
    try:
        tag, bits = _U64_BOOL.unpack_from(payload, 4)
    except struct.error:
        raise ValueError("truncated Basic.Ack") from None
    return tag, bool(bits & 1)


def decode_nack(payload: bytes) -> tuple[int, bool, bool]:
    """Basic.Nack payload -> ``(delivery_tag, multiple, requeue)``."""
    try:
        tag, bits = _U64_BOOL.unpack_from(payload, 4)
    except struct.error:
        raise ValueError("truncated Basic.Nack") from None
    return tag, bool(bits & 1), bool(bits & 2)


def decode_reject(payload: bytes) -> tuple[int, bool]:
    """Basic.Reject payload -> ``(delivery_tag, requeue)``."""
    try:
        tag, bits = _U64_BOOL.unpack_from(payload, 4)
    except struct.error:
        raise ValueError("truncated Basic.Reject") from None
    return tag, bool(bits & 1)


# --------------------------------------------------------------------------------------------- encoders


def encode_deliver(
    channel: int,
    consumer_tag: bytes,
    delivery_tag: int,
    redelivered: bool,
    exchange: bytes,
    routing_key: bytes,
) -> bytes:
    """Complete Basic.Deliver method frame."""
    lc = len(consumer_tag)
    le = len(exchange)
    lr = len(routing_key)
    return b"".join(
        (
            _METHOD_HEAD_SSTR.pack(FRAME_METHOD, channel, 16 + lc + le + lr, BASIC_DELIVER_ID, lc),
            consumer_tag,
            _TAG_BIT_SSTR.pack(delivery_tag, redelivered, le),
            exchange,
            _U8.pack(lr),
            routing_key,
            FRAME_END_OCTET,
        )
    )


def encode_delivery(
    channel: int,
    consumer_tag: bytes,
    delivery_tag: int,
    redelivered: bool,
    exchange: bytes,
    routing_key: bytes,
    header_payload: bytes,
    body: bytes,
    frame_max: int,
) -> bytes:
    """Basic.Deliver, content header and body frames in one piece: ``encode_deliver(...) + encode_content(...)``,
    built with one join when the body fits one frame (the hot path of every delivery)."""
    size = len(body)
    if not size or (frame_max and size > frame_max - FRAME_OVERHEAD):
        return encode_deliver(channel, consumer_tag, delivery_tag, redelivered, exchange, routing_key) + (
            encode_content(channel, header_payload, body, frame_max)
        )
    lc = len(consumer_tag)
    le = len(exchange)
    lr = len(routing_key)
    return b"".join(
        (
            _METHOD_HEAD_SSTR.pack(FRAME_METHOD, channel, 16 + lc + le + lr, BASIC_DELIVER_ID, lc),
            consumer_tag,
            _TAG_BIT_SSTR.pack(delivery_tag, redelivered, le),
            exchange,
            _U8.pack(lr),
            routing_key,
            _END_THEN_HEADER.pack(FRAME_END_OCTET, FRAME_HEADER, channel, len(header_payload)),
            header_payload,
            _END_THEN_HEADER.pack(FRAME_END_OCTET, FRAME_BODY, channel, size),
            body,
            FRAME_END_OCTET,
        )
    )


def encode_get_ok(
    channel: int,
    delivery_tag: int,
    redelivered: bool,
    exchange: bytes,
    routing_key: bytes,
    message_count: int,
) -> bytes:
    """Complete Basic.GetOk method frame."""
    le = len(exchange)
    lr = len(routing_key)
    return b"".join(
        (
            _METHOD_HEAD_U64.pack(FRAME_METHOD, channel, 19 + le + lr, BASIC_GET_OK_ID, delivery_tag, redelivered, le),
            exchange,
            _U8.pack(lr),
            routing_key,
            _U32_END.pack(message_count, FRAME_END_OCTET),
        )
    )


def encode_return(channel: int, reply_code: int, reply_text: bytes, exchange: bytes, routing_key: bytes) -> bytes:
    """Complete Basic.Return method frame."""
    lt = len(reply_text)
    le = len(exchange)
    lr = len(routing_key)
    return b"".join(
        (
            _METHOD_HEAD_U16.pack(FRAME_METHOD, channel, 9 + lt + le + lr, BASIC_RETURN_ID, reply_code, lt),
            reply_text,
            _U8.pack(le),
            exchange,
            _U8.pack(lr),
            routing_key,
            FRAME_END_OCTET,
        )
    )


def encode_ack(channel: int, delivery_tag: int, multiple: bool) -> bytes:
    """Complete Basic.Ack method frame (publisher confirms)."""
    return _ACK_FRAME.pack(FRAME_METHOD, channel, _ACK_SIZE, BASIC_ACK_ID, delivery_tag, multiple, FRAME_END)


def encode_nack(channel: int, delivery_tag: int, multiple: bool, requeue: bool) -> bytes:
    """Complete Basic.Nack method frame (publisher confirms)."""
    bits = (1 if multiple else 0) | (2 if requeue else 0)
    return _NACK_FRAME.pack(FRAME_METHOD, channel, _ACK_SIZE, BASIC_NACK_ID, delivery_tag, bits, FRAME_END)


def encode_content(channel: int, header_payload: bytes, body: bytes, frame_max: int) -> bytes:
    """Content header frame carrying ``header_payload`` unchanged, then the body frames.

    Bodies are cut into frames of at most ``frame_max - 8`` bytes; an empty body gets no body frame (pamqp and
    RabbitMQ refuse zero-length body frames). ``frame_max == 0`` means no limit was negotiated.
    """
    size = len(body)
    chunk = frame_max - FRAME_OVERHEAD if frame_max else size
    if size <= chunk:
        if not size:
            return b"".join(
                (_FRAME_HEADER.pack(FRAME_HEADER, channel, len(header_payload)), header_payload, FRAME_END_OCTET)
            )
        return b"".join(
            (
                _FRAME_HEADER.pack(FRAME_HEADER, channel, len(header_payload)),
                header_payload,
                _END_THEN_HEADER.pack(FRAME_END_OCTET, FRAME_BODY, channel, size),
                body,
                FRAME_END_OCTET,
            )
        )
    if chunk <= 0:
        raise ValueError(f"frame_max {frame_max} leaves no room for a body")
    # A memoryview lets join copy each slice once, straight into the result.
    view = memoryview(body)
    parts: list[bytes | memoryview] = [
        _FRAME_HEADER.pack(FRAME_HEADER, channel, len(header_payload)),
        header_payload,
    ]
    full = _END_THEN_HEADER.pack(FRAME_END_OCTET, FRAME_BODY, channel, chunk)
    last = size - chunk
    pos = 0
    while pos < last:
        parts.append(full)
        parts.append(view[pos : pos + chunk])
        pos += chunk
    parts.append(_END_THEN_HEADER.pack(FRAME_END_OCTET, FRAME_BODY, channel, size - pos))
    parts.append(view[pos:])
    parts.append(FRAME_END_OCTET)
    return b"".join(parts)


# ------------------------------------------------------------------------------------- content headers


def property_flags(header_payload: bytes) -> int:
    """The first 16-bit property-flags word; test it against the ``HAS_*`` bits."""
    try:
        value: int = _U16.unpack_from(header_payload, _FLAGS_OFFSET)[0]
        return value
    except struct.error:
        raise ValueError("truncated content header") from None


def _properties_start(header_payload: bytes, flags: int) -> int:
    """Offset of the first property value, skipping continuation flag words as pamqp does."""
    offset = _PROPERTIES_OFFSET
    while flags & _HAS_MORE_FLAGS:
        try:
            flags = _U16.unpack_from(header_payload, offset)[0]
        except struct.error:
            raise ValueError("content header flags are truncated") from None
        offset += 2
    return offset


def delivery_mode(header_payload: bytes) -> int:
    """``delivery_mode`` property, 0 when absent, read without decoding any other property.

    Only the lengths of content_type, content_encoding and headers are read to skip them; their contents are
    not validated (``decode_properties`` does that).
    """
    try:
        flags = _U16.unpack_from(header_payload, _FLAGS_OFFSET)[0]
    except struct.error:
        raise ValueError("truncated content header") from None
    if not flags & HAS_DELIVERY_MODE:
        return 0
    offset = _properties_start(header_payload, flags) if flags & _HAS_MORE_FLAGS else _PROPERTIES_OFFSET
    try:
        if flags & HAS_CONTENT_TYPE:
            offset += 1 + header_payload[offset]
        if flags & HAS_CONTENT_ENCODING:
            offset += 1 + header_payload[offset]
        if flags & HAS_HEADERS:
            offset += 4 + _U32.unpack_from(header_payload, offset)[0]
        return header_payload[offset]
    except (IndexError, struct.error):
        raise ValueError("truncated content header properties") from None


# Wire size of each property in flag order: a positive number is a fixed width, 0 a shortstr, -1 a table.
_PROPERTY_LAYOUT: tuple[tuple[int, int], ...] = (
    (HAS_CONTENT_TYPE, 0),
    (HAS_CONTENT_ENCODING, 0),
    (HAS_HEADERS, -1),
    (HAS_DELIVERY_MODE, 1),
    (HAS_PRIORITY, 1),
    (HAS_CORRELATION_ID, 0),
    (HAS_REPLY_TO, 0),
    (HAS_EXPIRATION, 0),
    (HAS_MESSAGE_ID, 0),
    (HAS_TIMESTAMP, 8),
    (HAS_TYPE, 0),
    (HAS_USER_ID, 0),
    (HAS_APP_ID, 0),
    (HAS_CLUSTER_ID, 0),
)


_SHORTSTR_FLAGS = frozenset(bit for bit, width in _PROPERTY_LAYOUT if width == 0)


def _property_offset(header_payload: bytes, wanted: int) -> int:
    """Offset of the value of property ``wanted`` (a ``HAS_*`` bit), or -1 when it is absent."""
    try:
        flags = _U16.unpack_from(header_payload, _FLAGS_OFFSET)[0]
    except struct.error:
        raise ValueError("truncated content header") from None
    if not flags & wanted:
        return -1
    offset = _properties_start(header_payload, flags)
    try:
        for bit, width in _PROPERTY_LAYOUT:
            if bit == wanted:
                return offset
            if flags & bit:
                if width > 0:
                    offset += width
                elif width == 0:
                    offset += 1 + header_payload[offset]
                else:
                    offset += 4 + _U32.unpack_from(header_payload, offset)[0]
    except (IndexError, struct.error):
        raise ValueError("truncated content header properties") from None
    raise ValueError(f"not a property flag: {wanted:#x}")


def priority(header_payload: bytes) -> int | None:
    """``priority`` property or ``None``, without decoding the others (their contents are not validated)."""
    offset = _property_offset(header_payload, HAS_PRIORITY)
    if offset < 0:
        return None
    try:
        return header_payload[offset]
    except IndexError:
        raise ValueError("truncated content header properties") from None


def short_property(header_payload: bytes, flag: int) -> bytes | None:
    """Raw UTF-8 bytes of a shortstr property such as ``HAS_EXPIRATION`` or ``HAS_USER_ID``, or ``None``.

    The caller decodes (and so validates) only what it needs; the other properties are skipped unread. Like
    pamqp, a last shortstr whose length runs past the end of the payload yields the bytes that are there.
    """
    if flag not in _SHORTSTR_FLAGS:
        raise ValueError(f"not a shortstr property flag: {flag:#x}")
    offset = _property_offset(header_payload, flag)
    if offset < 0:
        return None
    try:
        end = offset + 1 + header_payload[offset]
    except IndexError:
        raise ValueError("truncated content header properties") from None
    return header_payload[offset + 1 : end]


def decode_properties(header_payload: bytes) -> commands.Basic.Properties:
    """Slow path: every property decoded by pamqp, so a malformed string, table or timestamp raises ValueError.

    Like pamqp it does not check the class id or weight.
    """
    content_header = pamqp_header.ContentHeader()
    try:
        content_header.unmarshal(header_payload)
    except (struct.error, RecursionError) as err:  # deeply nested tables exhaust pamqp's recursion
        raise ValueError(f"cannot decode content header: {err!r}") from None
    return content_header.properties


def encode_header_payload(body_size: int, properties: commands.Basic.Properties) -> bytes:
    """Content-header payload for ``properties``; pamqp encodes the property list (slow path).

    Two values pamqp decodes but will not encode are written here and spliced into pamqp's property list, as
    RabbitMQ passes both through: a headers table holding ``bytes`` (pamqp's reading of a long string that is not
    UTF-8; Java clients send binary long strings) and a non-empty ``cluster_id`` (deprecated; pamqp refuses it)."""
    prefix = _CONTENT_HEADER_PREFIX.pack(CLASS_BASIC, 0, body_size)
    headers = properties.headers
    cluster_id = properties.cluster_id
    binary = bool(headers) and _holds_bytes(headers)
    if not binary and not cluster_id:
        return prefix + properties.marshal()
    listed = properties_with(properties, headers={} if binary else headers, cluster_id="").marshal()
    if binary:  # the empty table pamqp wrote is four zero octets after the two strings before it
        at = 2
        for name in ("content_type", "content_encoding"):
            value = getattr(properties, name)
            if value:
                at += 1 + len(value.encode("utf-8"))
        listed = listed[:at] + _encode_table(headers or {}) + listed[at + 4 :]
    if cluster_id:  # the last property: its flag, and its short string at the end
        flags = _U16.unpack_from(listed)[0] | HAS_CLUSTER_ID
        listed = _U16.pack(flags) + listed[2:] + pamqp_encode.short_string(cluster_id)
    return prefix + listed


def properties_with(properties: commands.Basic.Properties, **changes: Any) -> commands.Basic.Properties:
    """A copy of ``properties`` with ``changes``, built without pamqp's constructor: it validates, and refuses
    values that arrive on the wire and that RabbitMQ passes through (a cluster_id, a delivery mode other than 1
    or 2); its marshal writes them all the same."""
    copy = commands.Basic.Properties.__new__(commands.Basic.Properties)
    for name in properties.__slots__:
        setattr(copy, name, changes[name] if name in changes else getattr(properties, name, None))
    return copy


def _holds_bytes(value: object) -> bool:
    if isinstance(value, bytes):
        return True
    if isinstance(value, dict):
        return any(_holds_bytes(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_bytes(v) for v in value)
    return False


def _encode_table(table: dict[str, Any]) -> bytes:
    data = b"".join(pamqp_encode.short_string(key) + _encode_value(value) for key, value in table.items())
    return _U32.pack(len(data)) + data


def _encode_value(value: Any) -> bytes:
    if isinstance(value, bytes):
        return b"S" + _U32.pack(len(value)) + value
    if isinstance(value, dict):
        return b"F" + _encode_table(value)
    if isinstance(value, list):
        data = b"".join(_encode_value(v) for v in value)
        return b"A" + _U32.pack(len(data)) + data
    encoded: bytes = pamqp_encode.encode_table_value(value)
    return encoded


# ------------------------------------------------------------------------- property-list check at publish
#
# A content header whose property list cannot be parsed is refused when it is published (RabbitMQ refuses the
# same publishes, with 541): queued as is, it would reach every consumer and fail to parse there, and fail again
# wherever a feature decodes it (TTL, dead-lettering, the headers exchange). ``check_properties`` walks the
# lengths without building objects. Beyond RabbitMQ's own grammar it refuses what pamqp (so aio-pika) cannot
# decode or re-encode, since a delivery its consumers cannot parse poisons the queue: invalid UTF-8 in a short
# string, timestamps past the year 9999, doubles outside the 32-bit float range (pamqp re-encodes table floats
# as 32-bit) and field tables nested deeper than ``MAX_TABLE_DEPTH``.

MAX_TABLE_DEPTH = 64
_RESERVED_FLAG = 0x0002  # unused by Basic; RabbitMQ and pamqp ignore it, so it is accepted
# Payload size of a content header whose only properties are delivery mode and priority (one octet each), by its
# flags word: for those, comparing the length is the whole check. The publish hot path reads this table inline.
FIXED_ONLY_SIZES: dict[int, int] = {
    dm | prio | reserved: _PROPERTIES_OFFSET + (1 if dm else 0) + (1 if prio else 0)
    for dm in (0, HAS_DELIVERY_MODE)
    for prio in (0, HAS_PRIORITY)
    for reserved in (0, _RESERVED_FLAG)
}
_PROPERTY_NAMES: dict[int, str] = {
    HAS_CONTENT_TYPE: "content_type",
    HAS_CONTENT_ENCODING: "content_encoding",
    HAS_HEADERS: "headers",
    HAS_DELIVERY_MODE: "delivery_mode",
    HAS_PRIORITY: "priority",
    HAS_CORRELATION_ID: "correlation_id",
    HAS_REPLY_TO: "reply_to",
    HAS_EXPIRATION: "expiration",
    HAS_MESSAGE_ID: "message_id",
    HAS_TIMESTAMP: "timestamp",
    HAS_TYPE: "type",
    HAS_USER_ID: "user_id",
    HAS_APP_ID: "app_id",
    HAS_CLUSTER_ID: "cluster_id",
}
# pamqp reads a timestamp above 2**32 - 1 as milliseconds; datetime stops at the end of the year 9999.
MAX_TIMESTAMP = 253402300799999
_FLOAT32_MAX = 3.4028234663852886e38
_U64 = struct.Struct(">Q")
_F64 = struct.Struct(">d")
# Field value sizes of the fixed-width types RabbitMQ accepts in a field table (its rabbit_binary_parser set).
_FIELD_WIDTHS: dict[int, int] = {
    ord("t"): 1,
    ord("b"): 1,
    ord("B"): 1,
    ord("s"): 2,
    ord("u"): 2,
    ord("I"): 4,
    ord("i"): 4,
    ord("l"): 8,
    ord("L"): 8,
    ord("D"): 5,
    ord("V"): 0,
}
_TAG_F, _TAG_D, _TAG_T, _TAG_S, _TAG_X, _TAG_A, _TAG_TABLE = (ord(c) for c in "fdTSxAF")


class MalformedField(ValueError):
    """A field table or property list that does not parse; the message names the problem."""


def check_properties(header_payload: bytes) -> str | None:
    """``None`` when the content header's property list parses exactly (and pamqp can decode and re-encode it),
    else what is wrong with it, for a 502 SYNTAX_ERROR. Class id, weight and body size are not checked here.

    Headers with no property but delivery mode and priority are checked by their length alone
    (``FIXED_ONLY_SIZES``); any other property costs one walk over the lengths."""
    size = len(header_payload)
    if size < _PROPERTIES_OFFSET:
        return "content header is truncated"
    flags = header_payload[_FLAGS_OFFSET] << 8 | header_payload[_FLAGS_OFFSET + 1]
    if FIXED_ONLY_SIZES.get(flags) == size:
        return None
    try:
        _walk_properties(header_payload, flags)
    except MalformedField as err:
        return str(err)
    return None


_LAYOUTS: dict[int, tuple[tuple[int, int], ...]] = {}  # flags -> the (bit, width) of the properties it sets


def _walk_properties(h: bytes, flags: int) -> None:
    if flags & _HAS_MORE_FLAGS:
        raise MalformedField(f"property flags {flags:#06x} have the continuation bit set (Basic has 14 properties)")
    layout = _LAYOUTS.get(flags)
    if layout is None:
        layout = _LAYOUTS[flags] = tuple((bit, width) for bit, width in _PROPERTY_LAYOUT if flags & bit)
    end = len(h)
    offset = _PROPERTIES_OFFSET
    for bit, width in layout:
        try:
            if width == 0:  # shortstr, inline: the common case
                if offset >= end:
                    raise MalformedField("truncated")
                stop = offset + 1 + h[offset]
                if stop > end:
                    raise MalformedField(
                        f"short string of length {h[offset]} runs past the end ({end - offset - 1} octets left)"
                    )
                h[offset + 1 : stop].decode("utf-8")
                offset = stop
            elif width < 0:
                offset = _table_end(h, offset, end, 1)
            else:
                if offset + width > end:
                    raise MalformedField(f"truncated: {end - offset} of {width} octets")
                if bit == HAS_TIMESTAMP and _U64.unpack_from(h, offset)[0] > MAX_TIMESTAMP:
                    raise MalformedField(f"{_U64.unpack_from(h, offset)[0]} is out of range")
                offset += width
        except UnicodeDecodeError:
            raise MalformedField(f"property {_PROPERTY_NAMES[bit]}: short string is not valid UTF-8") from None
        except MalformedField as err:
            raise MalformedField(f"property {_PROPERTY_NAMES[bit]}: {err}") from None
    if offset != end:
        raise MalformedField(f"{end - offset} octets left over after the last property")


def _shortstr_end(h: bytes, offset: int, end: int) -> int:
    if offset >= end:
        raise MalformedField("truncated")
    stop = offset + 1 + h[offset]
    if stop > end:
        raise MalformedField(f"short string of length {h[offset]} runs past the end ({end - offset - 1} octets left)")
    try:
        h[offset + 1 : stop].decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedField("short string is not valid UTF-8") from None
    return stop


def _long_end(h: bytes, offset: int, end: int, kind: str) -> int:
    """End of a value with a 32-bit length prefix (table, array, long string, byte array)."""
    if offset + 4 > end:
        raise MalformedField(f"{kind} length is truncated")
    length: int = _U32.unpack_from(h, offset)[0]
    stop = offset + 4 + length
    if stop > end:
        raise MalformedField(f"{kind} of length {length} runs past the end ({end - offset - 4} octets left)")
    return stop


def _table_end(h: bytes, offset: int, end: int, depth: int) -> int:
    if depth > MAX_TABLE_DEPTH:
        raise MalformedField(f"field tables nested deeper than {MAX_TABLE_DEPTH}")
    stop = _long_end(h, offset, end, "field table")
    pos = offset + 4
    while pos < stop:
        try:
            key_end = _shortstr_end(h, pos, stop)
        except MalformedField as err:
            raise MalformedField(f"field name: {err}") from None
        try:
            pos = _value_end(h, key_end, stop, depth)
        except MalformedField as err:
            raise MalformedField(f"field '{h[pos + 1 : key_end].decode()}': {err}") from None
    return stop


def _array_end(h: bytes, offset: int, end: int, depth: int) -> int:
    if depth > MAX_TABLE_DEPTH:
        raise MalformedField(f"field tables nested deeper than {MAX_TABLE_DEPTH}")
    stop = _long_end(h, offset, end, "array")
    pos = offset + 4
    index = 0
    while pos < stop:
        try:
            pos = _value_end(h, pos, stop, depth)
        except MalformedField as err:
            raise MalformedField(f"array element {index}: {err}") from None
        index += 1
    return stop


def _value_end(h: bytes, offset: int, end: int, depth: int) -> int:
    if offset >= end:
        raise MalformedField("no value")
    tag = h[offset]
    pos = offset + 1
    width = _FIELD_WIDTHS.get(tag)
    if width is not None:
        if pos + width > end:
            raise MalformedField("value truncated")
        return pos + width
    if tag == _TAG_S:
        return _long_end(h, pos, end, "long string")
    if tag == _TAG_X:
        return _long_end(h, pos, end, "byte array")
    if tag == _TAG_TABLE:
        return _table_end(h, pos, end, depth + 1)
    if tag == _TAG_A:
        return _array_end(h, pos, end, depth + 1)
    if tag == _TAG_F:
        if pos + 4 > end:
            raise MalformedField("value truncated")
        if (_U32.unpack_from(h, pos)[0] >> 23) & 0xFF == 0xFF:
            raise MalformedField("float is not finite")
        return pos + 4
    if tag == _TAG_D:
        if pos + 8 > end:
            raise MalformedField("value truncated")
        value: float = _F64.unpack_from(h, pos)[0]
        if not abs(value) <= _FLOAT32_MAX:  # also false for NaN
            raise MalformedField("double is not finite or outside the 32-bit float range")
        return pos + 8
    if tag == _TAG_T:
        if pos + 8 > end:
            raise MalformedField("value truncated")
        if _U64.unpack_from(h, pos)[0] > MAX_TIMESTAMP:
            raise MalformedField("timestamp out of range")
        return pos + 8
    shown = chr(tag) if 32 < tag < 127 else f"\\x{tag:02x}"
    raise MalformedField(f"unknown field type '{shown}'")
