"""Cut an AMQP 0-9-1 byte stream into frames, without asyncio and without copying more than one frame at a time.

pamqp decodes exactly one complete frame and cannot tell "incomplete" from "corrupt", so the cutting is ours: the
7-byte header is read with one struct call, ``frame_max`` is enforced from the header *before* the payload is
buffered, and the frame-end octet is checked here. Payloads are handed out as ``bytes`` (one copy per frame).
"""

from __future__ import annotations

import struct
from typing import Any

from protocol.errors import FRAME_ERROR, UNEXPECTED_FRAME, ConnectionError_

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_HEARTBEAT = 8
FRAME_END = 0xCE
FRAME_OVERHEAD = 8  # 7-byte header + frame-end octet

_HEADER = struct.Struct(">BHI")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_PUBLISH_ID = 0x003C0028

# A pseudo frame type: Basic.Publish + content header + one body frame, all complete in the buffer, cut in one go
# (payload = (method payload, header payload, body)). Publishing is most of what a broker reads, and handling the
# three frames as one saves two trips through the dispatch loop per message. Anything unusual about the three
# frames (sizes, channels, a frame_max breach) leaves them to the ordinary one-frame-at-a-time path.
FRAME_PUBLISH = 0x101
_KNOWN_TYPES = frozenset({FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT})


def erlang_octets(data: bytes, limit: int = 32) -> str:
    """Render bytes the way RabbitMQ's error texts do (``<<"abcd">>`` or ``<<1,2,3>>``)."""
    data = data[:limit]
    if data and all(32 <= b < 127 and b not in (34, 92) for b in data):
        return '<<"' + data.decode("ascii") + '">>'
    return "<<" + ",".join(str(b) for b in data) + ">>"


class ProtocolHeaderMismatch(Exception):
    """The peer did not open with ``AMQP 0 0 9 1``: answer with our header and close (as RabbitMQ does)."""


class FrameReader:
    """Incremental frame cutter. ``feed`` returns complete frames as ``(type, channel, payload)`` tuples;
    after a framing error it returns the frames before it and sets ``error``."""

    __slots__ = ("_buf", "_header_seen", "error", "frame_max")

    def __init__(self, frame_max: int) -> None:
        self._buf = bytearray()
        self.error: ConnectionError_ | None = None  # set by feed() when the stream broke after the frames returned
        self._header_seen = False
        self.frame_max = frame_max  # 0 = unlimited; the limit applies to the whole frame, header included

    @property
    def header_seen(self) -> bool:
        return self._header_seen

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[tuple[int, int, Any]]:
        buf = self._buf
        buf += data
        if not self._header_seen and not self._check_protocol_header():
            return []
        frames: list[tuple[int, int, Any]] = []
        try:
            pos = self._cut(buf, frames)
        except ConnectionError_ as err:
            # Frames cut before the bad one are still returned; the caller handles them, then ``error``.
            # The stream cannot be resynchronised after a framing error: drop what is buffered so that a
            # Close-Ok the peer sends next is still understood.
            self.error = err
            buf.clear()
            return frames
        if pos:
            del buf[:pos]
        return frames

    def _cut(self, buf: bytearray, frames: list[Any]) -> int:
        pos = 0
        end = len(buf)
        unpack_from = _HEADER.unpack_from
        frame_max = self.frame_max
        while end - pos >= 7:
            ftype, channel, size = unpack_from(buf, pos)
            if ftype not in _KNOWN_TYPES:
                del buf[:pos]
                raise ConnectionError_(
                    FRAME_ERROR,
                    f"type {ftype}, all octets = {erlang_octets(bytes(buf[7 : 7 + size]))}: unknown_frame",
                )
            if frame_max and size + FRAME_OVERHEAD > frame_max:
                del buf[:pos]
                raise ConnectionError_(
                    FRAME_ERROR,
                    f"type {ftype}, all octets = <<>>: {{frame_too_large,{size},{frame_max - FRAME_OVERHEAD}}}",
                )
            frame_end = pos + 7 + size
            if frame_end >= end:
                break  # incomplete: wait for more bytes
            if buf[frame_end] != FRAME_END:
                payload = bytes(buf[pos + 7 : frame_end])
                del buf[:pos]
                raise ConnectionError_(
                    FRAME_ERROR,
                    f"type {ftype}, all octets = {erlang_octets(payload)}: "
                    f"{{invalid_frame_end_marker,{buf[frame_end - pos]}}}",
                )
            if ftype == FRAME_HEARTBEAT and (size or channel):
                payload = bytes(buf[pos + 7 : frame_end])
                del buf[:pos]
                if size:  # a heartbeat carries nothing: RabbitMQ does not recognise one that does
                    raise ConnectionError_(
                        FRAME_ERROR, f"type {ftype}, all octets = {erlang_octets(payload)}: unknown_frame"
                    )
                raise ConnectionError_(UNEXPECTED_FRAME, f"type {ftype}, all octets = <<>>")
            if ftype == FRAME_METHOD and size >= 4 and _U32.unpack_from(buf, pos + 7)[0] == _PUBLISH_ID:
                nxt = self._cut_publish(buf, pos, frame_end, channel, end, frames)
                if nxt:
                    pos = nxt
                    continue
            frames.append((ftype, channel, bytes(buf[pos + 7 : frame_end])))
            pos = frame_end + 1
        return pos

    def _cut_publish(self, buf: bytearray, pos: int, method_end: int, channel: int, end: int, frames: list[Any]) -> int:
        """Cut publish + header + body as one FRAME_PUBLISH item; returns the next position, or 0 to decline."""
        hpos = method_end + 1
        if end - hpos < 7:
            return 0
        htype, hchannel, hsize = _HEADER.unpack_from(buf, hpos)
        frame_max = self.frame_max
        if htype != FRAME_HEADER or hchannel != channel or hsize < 14 or (frame_max and hsize + 8 > frame_max):
            return 0
        hend = hpos + 7 + hsize
        if hend >= end or buf[hend] != FRAME_END:
            return 0
        body_size: int = _U64.unpack_from(buf, hpos + 11)[0]
        bpos: int = hend + 1
        if body_size == 0:
            body = b""
            nxt = bpos
        else:
            if end - bpos < 7:
                return 0
            btype, bchannel, bsize = _HEADER.unpack_from(buf, bpos)
            if (
                btype != FRAME_BODY
                or bchannel != channel
                or bsize != body_size
                or (frame_max and bsize + 8 > frame_max)
            ):
                return 0
            bend: int = bpos + 7 + bsize
            if bend >= end or buf[bend] != FRAME_END:
                return 0
            body = bytes(buf[bpos + 7 : bend])
            nxt = bend + 1
        frames.append((FRAME_PUBLISH, channel, (bytes(buf[pos + 7 : method_end]), bytes(buf[hpos + 7 : hend]), body)))
        return nxt

    def _check_protocol_header(self) -> bool:
        buf = self._buf
        n = min(len(buf), 8)
        if bytes(buf[:n]) != PROTOCOL_HEADER[:n]:
            raise ProtocolHeaderMismatch(bytes(buf[:8]))
        if n < 8:
            return False
        del buf[:8]
        self._header_seen = True
        return True


def encode_frame(frame_type: int, channel: int, payload: bytes) -> bytes:
    return _HEADER.pack(frame_type, channel, len(payload)) + payload + b"\xce"


HEARTBEAT_FRAME = encode_frame(FRAME_HEARTBEAT, 0, b"")
