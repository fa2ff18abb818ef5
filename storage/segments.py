"""Segment files: a fixed header, then checksummed, length-prefixed records.

    segment header : b"AMQPDSG1" | salt u32 | sequence u64                      (20 bytes)
    record header  : magic u16 | payload length u32 | payload crc u32 | header crc u32   (14 bytes)

Both checksums are CRC32 seeded with the segment's random salt. The header has its own CRC so that a damaged
payload can be skipped by its (trusted) length; when the header itself is damaged, the scanner resynchronises
on the next position whose magic and header CRC both check out. The salt means a message body that happens
to contain the image of a record (say, a copy of another segment) can never be mistaken for a real one.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

SEGMENT_MAGIC = b"AMQPDSG1"
SEGMENT_HEADER = struct.Struct("<8sIQ")
RECORD_MAGIC = 0xD1A5
RECORD_HEADER = struct.Struct("<HIII")
_MAGIC_BYTES = struct.pack("<H", RECORD_MAGIC)
_LEN_AND_CRC = struct.Struct("<HII")
SUFFIX = ".seg"


def segment_name(seq: int) -> str:
    return f"{seq:016d}{SUFFIX}"


def new_segment_header(seq: int) -> tuple[bytes, int]:
    salt = int.from_bytes(os.urandom(4), "little")
    return SEGMENT_HEADER.pack(SEGMENT_MAGIC, salt, seq), salt


def read_segment_header(buf: bytes) -> tuple[int, int] | None:
    """(salt, seq), or None when the file is too short or not a segment."""
    if len(buf) < SEGMENT_HEADER.size:
        return None
    magic, salt, seq = SEGMENT_HEADER.unpack_from(buf)
    return (salt, seq) if magic == SEGMENT_MAGIC else None


def frame(payload: bytes | bytearray, salt: int) -> bytes:
    head = _LEN_AND_CRC.pack(RECORD_MAGIC, len(payload), zlib.crc32(payload, salt))
    return head + struct.pack("<I", zlib.crc32(head, salt)) + payload


@dataclass(frozen=True, slots=True)
class GoodRecord:
    start: int
    end: int
    payload: memoryview


@dataclass(frozen=True, slots=True)
class BadRegion:
    start: int
    end: int
    reason: str


def _header_ok(buf: bytes, pos: int, salt: int) -> bool:
    if pos + RECORD_HEADER.size > len(buf):
        return False
    magic, _length, _pcrc, hcrc = RECORD_HEADER.unpack_from(buf, pos)
    return bool(magic == RECORD_MAGIC and zlib.crc32(buf[pos : pos + 10], salt) == hcrc)


def scan(buf: bytes, salt: int) -> Iterator[GoodRecord | BadRegion]:
    """Walk every record after the segment header, reporting damaged stretches instead of stopping at them."""
    view = memoryview(buf)
    size = len(buf)
    pos = SEGMENT_HEADER.size
    head_size = RECORD_HEADER.size
    unpack = RECORD_HEADER.unpack_from
    crc32 = zlib.crc32
    while pos < size:
        if _header_ok(buf, pos, salt):
            _magic, length, pcrc, _hcrc = unpack(buf, pos)
            end = pos + head_size + length
            if end > size:
                yield BadRegion(pos, size, "record runs past the end of the file")
                return
            payload = view[pos + head_size : end]
            if crc32(payload, salt) == pcrc:
                yield GoodRecord(pos, end, payload)
            else:
                yield BadRegion(pos, end, "payload checksum mismatch")
            pos = end
            continue
        resume = _resync(buf, pos + 1, salt)
        yield BadRegion(pos, resume, "damaged record header")
        pos = resume


def _resync(buf: bytes, start: int, salt: int) -> int:
    pos = start
    while True:
        pos = buf.find(_MAGIC_BYTES, pos)
        if pos < 0:
            return len(buf)
        if _header_ok(buf, pos, salt):
            return pos
        pos += 1
