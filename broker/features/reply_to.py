"""Direct reply-to: ``amq.rabbitmq.reply-to`` pseudo-queues, one per channel that consumes from it.

A channel that consumes from ``amq.rabbitmq.reply-to`` (no-ack only) gets a private, unregistered queue with a
random address ``amq.rabbitmq.reply-to.<token>``. Its requests' ``reply_to`` is rewritten to that address, and a
publish to the default exchange with that routing key lands straight in the private queue, from which the
channel's reply consumer receives it. The queue goes away with the consumer (cancel or channel close).
"""

from __future__ import annotations

import base64
import os
import weakref
from typing import TYPE_CHECKING

from broker.features.deadletter import copy_properties
from broker.model.queue.queue import Queue
from protocol.errors import PRECONDITION_FAILED, ChannelError

if TYPE_CHECKING:
    from broker.model.message import Message

REPLY_TO = "amq.rabbitmq.reply-to"
REPLY_PREFIX = REPLY_TO + "."
REPLY_TO_B = REPLY_TO.encode()

_by_address: dict[str, Queue] = {}
_by_channel: weakref.WeakKeyDictionary[object, str] = weakref.WeakKeyDictionary()


def consume_queue(channel: object, no_ack: bool) -> Queue:
    """The private reply queue a ``basic.consume`` on ``amq.rabbitmq.reply-to`` subscribes to."""
    if not no_ack:
        raise ChannelError(PRECONDITION_FAILED, "reply consumer cannot acknowledge")
    address = _by_channel.get(channel)
    if address is not None and address in _by_address:
        raise ChannelError(PRECONDITION_FAILED, "reply consumer already set")
    token = base64.urlsafe_b64encode(os.urandom(18)).decode()
    address = REPLY_PREFIX + token
    q = Queue(REPLY_TO, auto_delete=True)
    q.on_unused = lambda _q: _release(channel, address)
    _by_address[address] = q
    _by_channel[channel] = address
    return q


def _release(channel: object, address: str) -> None:
    _by_address.pop(address, None)
    if _by_channel.get(channel) == address:
        del _by_channel[channel]


def rewrite_reply_to(channel: object, msg: Message) -> None:
    """A request with ``reply_to=amq.rabbitmq.reply-to``: point it at the publishing channel's reply queue."""
    address = _by_channel.get(channel)
    if address is None or address not in _by_address:
        raise ChannelError(PRECONDITION_FAILED, "fast reply consumer does not exist")
    msg.replace_properties(copy_properties(msg.properties, reply_to=address))


def route(routing_key: str) -> tuple[Queue, ...]:
    q = _by_address.get(routing_key)
    return (q,) if q is not None else ()
