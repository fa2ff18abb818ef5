"""Cut an AMQP 0-9-1 byte stream into frames, without asyncio and without copying more than one frame at a time.

pamqp decodes exactly one complete frame and cannot tell "incomplete" from "corrupt", so the cutting is ours: the
7-byte header is read with one struct call, ``frame_max`` is enforced from the header *before* the payload is
buffered, and the frame-end octet is checked here. Payloads are handed out as ``bytes`` (one copy per frame).
"""

from __future__ import annotations

import struct
from typing import Final, TypeAlias

from amqpd.protocol.constants import (
    BASIC_PUBLISH_ID,
    CONTENT_HEADER_MIN_SIZE,
    FRAME_BODY,
    FRAME_END,
    FRAME_HEADER,
    FRAME_HEADER_SIZE,
    FRAME_HEARTBEAT,
    FRAME_METHOD,
    FRAME_OVERHEAD,
    PROTOCOL_HEADER,
)
from amqpd.protocol.errors import FRAME_ERROR, UNEXPECTED_FRAME, ConnectionError_

_HEADER = struct.Struct(">BHI")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_BODY_SIZE_OFFSET = 4  # in a content-header payload, after class id and weight

# A pseudo frame type: Basic.Publish + content header + one body frame (or none, for an empty body), all complete
# in the buffer, cut in one go. Publishing is most of what a broker reads, and handling the three frames as one saves
# two trips through the dispatch loop per message. Anything unusual about the three frames (sizes, channels, a
# frame_max breach) leaves them to the ordinary one-frame-at-a-time path.
FRAME_PUBLISH: Final = 0x101
_KNOWN_TYPES = frozenset({FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT})

FrameItem: TypeAlias = tuple[int, int, bytes, bytes, bytes]
"""One item of :meth:`FrameReader.feed`: ``(type, channel, payload, content_header, body)``.

For a real frame the last two are empty. For ``FRAME_PUBLISH``, ``payload`` is the Basic.Publish method payload,
``content_header`` the content-header payload and ``body`` the body. Every field keeps one type whatever the frame
type, so nothing needs narrowing; a flat tuple also costs less to build than a tuple holding a tuple or a small
object (the one-piece path exists to save time per publish)."""

_NO_CONTENT = b""


def erlang_octets(data: bytes, limit: int = 32) -> str:
    """Render bytes the way RabbitMQ's error texts do (``<<"abcd">>`` or ``<<1,2,3>>``)."""
    data = data[:limit]
    if data and all(32 <= b < 127 and b not in (34, 92) for b in data):
        return '<<"' + data.decode("ascii") + '">>'
    return "<<" + ",".join(str(b) for b in data) + ">>"


# AMQP 0-9 announces itself in the old header layout (class 1, instance 1, version 0-9). RabbitMQ answers it
# with the 0-9-1 handshake (its Connection.Start says 0-9 either way, and 0-9-1 is 0-9 with errata), so we do too.
PROTOCOL_HEADER_0_9: Final = b"AMQP\x01\x01\x00\x09"


class ProtocolHeaderMismatch(Exception):
    """The peer did not open with ``AMQP 0 0 9 1``: answer with our header and close (as RabbitMQ does)."""


class FrameReader:
    """Incremental frame cutter. ``feed`` returns complete frames as :data:`FrameItem` tuples; after a framing error
    it returns the frames before it and sets ``error``."""

    __slots__ = ("_buf", "_header_seen", "error", "frame_max")

    def __init__(self, frame_max: int) -> None:
        self._buf = bytearray()
        self.error: ConnectionError_ | None = None  # set by feed() when the stream broke after the frames returned
        self._header_seen = False
        self.frame_max = frame_max  # 0 = unlimited; the limit applies to the whole frame, header included

    @property
    def header_seen(self) -> bool:
        return self._header_seen

    def feed(self, data: bytes) -> list[FrameItem]:
        buf = self._buf
        buf += data
        if not self._header_seen and not self._check_protocol_header():
            return []
        frames: list[FrameItem] = []
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

    def _cut(self, buf: bytearray, frames: list[FrameItem]) -> int:
        pos = 0
        end = len(buf)
        unpack_from = _HEADER.unpack_from
        frame_max = self.frame_max
        hs = FRAME_HEADER_SIZE  # locals: this loop runs once per frame
        no_content = _NO_CONTENT
        while end - pos >= hs:
            ftype, channel, size = unpack_from(buf, pos)
            if ftype not in _KNOWN_TYPES:
                del buf[:pos]
                raise ConnectionError_(
                    FRAME_ERROR,
                    f"type {ftype}, all octets = {erlang_octets(bytes(buf[hs : hs + size]))}: unknown_frame",
                )
            if frame_max and size > frame_max:  # RabbitMQ's reader allows a payload of frame_max (8 octets over)
                del buf[:pos]
                raise ConnectionError_(
                    FRAME_ERROR,
                    f"type {ftype}, all octets = <<>>: {{frame_too_large,{size},{frame_max - FRAME_OVERHEAD}}}",
                )
            frame_end = pos + hs + size
            if frame_end >= end:
                break  # incomplete: wait for more bytes
            if buf[frame_end] != FRAME_END:
                payload = bytes(buf[pos + hs : frame_end])
                del buf[:pos]
                raise ConnectionError_(
                    FRAME_ERROR,
                    f"type {ftype}, all octets = {erlang_octets(payload)}: "
                    f"{{invalid_frame_end_marker,{buf[frame_end - pos]}}}",
                )
            if ftype == FRAME_HEARTBEAT and (size or channel):
                payload = bytes(buf[pos + hs : frame_end])
                del buf[:pos]
                if size:  # a heartbeat carries nothing: RabbitMQ does not recognise one that does
                    raise ConnectionError_(
                        FRAME_ERROR, f"type {ftype}, all octets = {erlang_octets(payload)}: unknown_frame"
                    )
                raise ConnectionError_(UNEXPECTED_FRAME, f"type {ftype}, all octets = <<>>")
            if ftype == FRAME_METHOD and size >= 4 and _U32.unpack_from(buf, pos + hs)[0] == BASIC_PUBLISH_ID:
                nxt = self._cut_publish(buf, pos, frame_end, channel, end, frames)
                if nxt:
                    pos = nxt
                    continue
            frames.append((ftype, channel, bytes(buf[pos + hs : frame_end]), no_content, no_content))
            pos = frame_end + 1
        return pos

    def _cut_publish(
        self, buf: bytearray, pos: int, method_end: int, channel: int, end: int, frames: list[FrameItem]
    ) -> int:
        """Cut publish + header + body as one FRAME_PUBLISH item; returns the next position, or 0 to decline."""
        hs = FRAME_HEADER_SIZE
        hpos = method_end + 1
        if end - hpos < hs:
            return 0
        htype, hchannel, hsize = _HEADER.unpack_from(buf, hpos)
        frame_max = self.frame_max
        if (
            htype != FRAME_HEADER
            or hchannel != channel
            or hsize < CONTENT_HEADER_MIN_SIZE
            or (frame_max and hsize > frame_max)
        ):
            return 0
        hend = hpos + hs + hsize
        if hend >= end or buf[hend] != FRAME_END:
            return 0
        body_size: int = _U64.unpack_from(buf, hpos + hs + _BODY_SIZE_OFFSET)[0]
        bpos: int = hend + 1
        if body_size == 0:
            body = _NO_CONTENT
            nxt = bpos
        else:
            if end - bpos < hs:
                return 0
            btype, bchannel, bsize = _HEADER.unpack_from(buf, bpos)
            if btype != FRAME_BODY or bchannel != channel or bsize != body_size or (frame_max and bsize > frame_max):
                return 0
            bend: int = bpos + hs + bsize
            if bend >= end or buf[bend] != FRAME_END:
                return 0
            body = bytes(buf[bpos + hs : bend])
            nxt = bend + 1
        frames.append((FRAME_PUBLISH, channel, bytes(buf[pos + hs : method_end]), bytes(buf[hpos + hs : hend]), body))
        return nxt

    def _check_protocol_header(self) -> bool:
        buf = self._buf
        size = len(PROTOCOL_HEADER)
        n = min(len(buf), size)
        if bytes(buf[:n]) != PROTOCOL_HEADER[:n] and bytes(buf[:n]) != PROTOCOL_HEADER_0_9[:n]:
            raise ProtocolHeaderMismatch(bytes(buf[:size]))
        if n < size:
            return False
        del buf[:size]
        self._header_seen = True
        return True
