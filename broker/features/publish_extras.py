"""The publish path's rare branches, kept out of the channel: per-message expiration, direct reply-to requests
and CC/BCC routing. The channel calls :func:`route_extras` instead of ``router.route`` only when the content header
carries headers, an expiration or a reply-to."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from amqpd.broker.features import reply_to
from amqpd.broker.features.sender_routes import may_have_sender_routes, route_with_sender_keys
from amqpd.protocol import fastcodec

if TYPE_CHECKING:
    from amqpd.broker.features.reply_to import ReplySubscriber
    from amqpd.broker.model.exchange import Exchange
    from amqpd.broker.model.message import Message
    from amqpd.broker.model.queue import Queue
    from amqpd.broker.model.routing import Router

EXTRA_FLAGS = fastcodec.HAS_HEADERS | fastcodec.HAS_EXPIRATION | fastcodec.HAS_REPLY_TO


def route_extras(
    subscriber: ReplySubscriber, router: Router, ex: Exchange, msg: Message, flags: int, expiration: int | None
) -> Collection[Queue]:
    msg.expiration = expiration
    header = msg.header
    if flags & fastcodec.HAS_REPLY_TO and _reply_to(header) == reply_to.REPLY_TO_B:
        reply_to.rewrite_reply_to(router, subscriber, msg)
    if flags & fastcodec.HAS_HEADERS and may_have_sender_routes(header):
        return route_with_sender_keys(router, ex, msg)
    return router.route(ex, msg)


def _reply_to(header: bytes) -> bytes | None:
    return fastcodec.short_property(header, fastcodec.HAS_REPLY_TO)
