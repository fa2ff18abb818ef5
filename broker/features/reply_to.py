"""Direct reply-to: ``amq.rabbitmq.reply-to`` pseudo-queues, one per channel that consumes from it.

A channel that consumes from ``amq.rabbitmq.reply-to`` (no-ack only) gets a private queue with a random address
``amq.rabbitmq.reply-to.<token>``, registered in its vhost's ``reply_queues`` (not among its queues). Its requests'
``reply_to`` is rewritten to that address, and a publish to the default exchange with that routing key lands
straight in the private queue, from which the channel's reply consumer receives it. The queue goes away with the
consumer (cancel or channel close).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Collection
from typing import TYPE_CHECKING, Protocol

from amqpd.broker.model.message import copy_properties
from amqpd.broker.model.queue import Queue
from amqpd.protocol.errors import PRECONDITION_FAILED, ChannelError

if TYPE_CHECKING:
    from amqpd.broker.model.message import Message
    from amqpd.broker.model.routing import Router

REPLY_TO = "amq.rabbitmq.reply-to"
REPLY_PREFIX = REPLY_TO + "."
REPLY_TO_B = REPLY_TO.encode()


class ReplySubscriber(Protocol):
    """A channel, as direct reply-to sees it: the address of its reply queue, if it has one."""

    reply_address: str | None


def consume_queue(router: Router, subscriber: ReplySubscriber, no_ack: bool) -> Queue:
    """The private reply queue a ``basic.consume`` on ``amq.rabbitmq.reply-to`` subscribes to."""
    if not no_ack:
        raise ChannelError(PRECONDITION_FAILED, "reply consumer cannot acknowledge")
    registry = router.reply_queues
    if subscriber.reply_address is not None and subscriber.reply_address in registry:
        raise ChannelError(PRECONDITION_FAILED, "reply consumer already set")
    address = REPLY_PREFIX + base64.urlsafe_b64encode(os.urandom(18)).decode()
    q = Queue(REPLY_TO, router.name, auto_delete=True)

    def release(_q: Queue) -> None:
        registry.pop(address, None)
        if subscriber.reply_address == address:
            subscriber.reply_address = None

    q.on_unused = release
    registry[address] = q
    subscriber.reply_address = address
    return q


def rewrite_reply_to(router: Router, subscriber: ReplySubscriber, msg: Message) -> None:
    """A request with ``reply_to=amq.rabbitmq.reply-to``: point it at the publishing channel's reply queue."""
    address = subscriber.reply_address
    if address is None or address not in router.reply_queues:
        raise ChannelError(PRECONDITION_FAILED, "fast reply consumer does not exist")
    msg.replace_properties(copy_properties(msg.properties, reply_to=address))


def route(router: Router, routing_key: str) -> Collection[Queue]:
    """Queues for an unroutable default-exchange publish: a direct reply-to address, or none."""
    if routing_key.startswith(REPLY_PREFIX):
        q = router.reply_queues.get(routing_key)
        if q is not None:
            return (q,)
    return ()
