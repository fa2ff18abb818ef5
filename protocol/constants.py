"""AMQP 0-9-1 wire numbers: frame types, frame delimiters, class ids and the method ids this layer dispatches on.

The one place these numbers are written; every other module imports them from here. Reply codes are in
:mod:`protocol.errors`. ``tests/test_fastcodec.py`` checks every method id against pamqp's table.

A method id is ``class_id << 16 | method_id``: the first four octets of a method frame's payload read as one
big-endian unsigned long, which is what the dispatch compares against. :class:`MethodRef` is the same method as
the pair that Channel.Close and Connection.Close report (``AMQPError(code, text, *BASIC_PUBLISH)``).
"""

from __future__ import annotations

from typing import Final, NamedTuple

PROTOCOL_HEADER: Final = b"AMQP\x00\x00\x09\x01"

# Frame types (spec 4.2.3) and the octet that ends every frame.
FRAME_METHOD: Final = 1
FRAME_HEADER: Final = 2
FRAME_BODY: Final = 3
FRAME_HEARTBEAT: Final = 8
FRAME_END: Final = 0xCE
FRAME_END_OCTET: Final = bytes((FRAME_END,))
FRAME_HEADER_SIZE: Final = 7  # type (octet), channel (short), payload size (long)
FRAME_OVERHEAD: Final = FRAME_HEADER_SIZE + 1  # header + frame-end octet
FRAME_MIN_SIZE: Final = 4096  # spec "frame-min-size": the frame_max in force until Tune-Ok, and the least allowed
HEARTBEAT_FRAME: Final = bytes((FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END))

# A content-header payload holds at least class id (short), weight (short), body size (longlong) and one
# property-flags word (short).
CONTENT_HEADER_MIN_SIZE: Final = 14

# Class ids. Basic is also the class id of every content header a client may send (and the only one).
CLASS_CONNECTION: Final = 10
CLASS_CHANNEL: Final = 20
CLASS_BASIC: Final = 60


class MethodRef(NamedTuple):
    """A method as the ``(class_id, method_id)`` pair that error replies carry."""

    class_id: int
    method_id: int


def method_index(class_id: int, method_id: int) -> int:
    """The 32-bit method id of a method frame's payload: ``class_id << 16 | method_id``."""
    return class_id << 16 | method_id


def split_method_id(index: int) -> MethodRef:
    """A 32-bit method id back into its pair."""
    return MethodRef(index >> 16, index & 0xFFFF)


# The methods named in error replies, as pairs ...
CONNECTION_TUNE_OK: Final = MethodRef(CLASS_CONNECTION, 31)
CHANNEL_OPEN: Final = MethodRef(CLASS_CHANNEL, 10)
BASIC_PUBLISH: Final = MethodRef(CLASS_BASIC, 40)

# ... and every method id compared against or written on the wire here, as plain ints (the dispatch is hot).
CONNECTION_CLOSE_ID: Final = method_index(CLASS_CONNECTION, 50)
CONNECTION_CLOSE_OK_ID: Final = method_index(CLASS_CONNECTION, 51)
CHANNEL_OPEN_ID: Final = method_index(*CHANNEL_OPEN)
CHANNEL_CLOSE_ID: Final = method_index(CLASS_CHANNEL, 40)
CHANNEL_CLOSE_OK_ID: Final = method_index(CLASS_CHANNEL, 41)
BASIC_PUBLISH_ID: Final = method_index(*BASIC_PUBLISH)
BASIC_RETURN_ID: Final = method_index(CLASS_BASIC, 50)
BASIC_DELIVER_ID: Final = method_index(CLASS_BASIC, 60)
BASIC_GET_OK_ID: Final = method_index(CLASS_BASIC, 71)
BASIC_ACK_ID: Final = method_index(CLASS_BASIC, 80)
BASIC_REJECT_ID: Final = method_index(CLASS_BASIC, 90)
BASIC_NACK_ID: Final = method_index(CLASS_BASIC, 120)
