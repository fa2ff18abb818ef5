"""A basic.consume subscription: the queue's Consumer, delivering through its channel."""

from __future__ import annotations

import base64
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from broker.model.queue import Entry, Queue
    from broker.session.channel import Channel


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

    def deliver(self, entry: Entry) -> None:
        self.channel.deliver(self, entry)

    def cancelled_by_server(self) -> None:
        self.channel.consumer_cancelled_by_server(self)
