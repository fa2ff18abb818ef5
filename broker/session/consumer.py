"""A basic.consume subscription: the queue's Consumer, delivering through its channel."""

from __future__ import annotations

import base64
import os
from typing import TYPE_CHECKING, Any

from amqpd.protocol import fastcodec

if TYPE_CHECKING:
    from amqpd.broker.model.queue import Entry, Queue
    from amqpd.broker.session.channel import Channel


def new_consumer_tag() -> str:
    return "amq.ctag-" + base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")


class ChannelConsumer:
    """A basic.consume subscription; implements the queue's Consumer interface."""

    __slots__ = (
        "arguments",
        "channel",
        "exclusive",
        "no_ack",
        "parked",
        "prefetch",
        "priority",
        "queue",
        "session",
        "tag",
        "tag_b",
        "unacked",
    )

    def __init__(
        self,
        channel: Channel,
        tag: str,
        queue: Queue,
        no_ack: bool,
        exclusive: bool,
        prefetch: int,
        arguments: dict[str, Any],
    ) -> None:
        self.channel = channel
        self.session = channel.conn
        self.tag = tag
        self.tag_b = tag.encode()
        self.queue = queue
        self.no_ack = no_ack
        self.exclusive = exclusive
        self.prefetch = prefetch  # per-consumer limit (basic.qos global=false), 0 = none
        self.arguments = arguments
        prio = arguments.get("x-priority", 0)
        self.priority = prio if isinstance(prio, int) and not isinstance(prio, bool) else 0
        self.unacked = 0
        self.parked = True

    def has_capacity(self) -> bool:
        ch = self.channel
        if not ch.deliverable:
            return False
        if self.no_ack:
            return True
        if self.prefetch and self.unacked >= self.prefetch:
            return False
        return not (ch.global_prefetch and ch.unacked.count >= ch.global_prefetch)

    def deliver(self, entry: Entry) -> bool:
        """Send one delivery (hot: every message a consumer receives passes here); returns ``has_capacity()``."""
        ch = self.channel
        ch.delivery_tag = tag = ch.delivery_tag + 1
        msg = entry.msg
        entry.delivery_count += 1
        proto = ch.proto
        proto.send(
            fastcodec.encode_delivery(
                ch.number,
                self.tag_b,
                tag,
                entry.redelivered,
                msg.exchange_b,
                msg.routing_key_b,
                msg.header,
                msg.body,
                proto.frame_max,
            )
        )
        if self.no_ack:
            if msg.msg_id:
                entry.queue.forget(entry)
        else:
            self.unacked += 1
            ch.track_unacked(tag, entry, self)
        transport = ch.conn.transport
        if transport is not None and transport.get_write_buffer_size():
            # The consumer's socket is already backed up, so batching gains nothing: hand the delivery to the
            # transport now, and its high-water mark parks the consumer after one message instead of after a
            # whole read's worth of them (which would bound its buffer by read size x fan-out, not by the mark).
            ch.conn.flush()
        return self.has_capacity()

    def cancelled_by_server(self) -> None:
        self.channel.consumer_cancelled_by_server(self)
