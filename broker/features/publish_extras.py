"""The publish path's rare branches, kept out of channel.py: per-message expiration, direct reply-to requests and
CC/BCC routing. The channel calls :func:`route_extras` instead of ``vhost.route`` only when the content header
carries headers, an expiration or a reply-to."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from broker.features import reply_to
from broker.features.sender_routes import may_have_sender_routes, route_with_sender_keys
from protocol import fastcodec

if TYPE_CHECKING:
    from broker.model.exchange import Exchange
    from broker.model.message import Message
    from broker.model.queue.queue import Queue
    from broker.model.vhost import VHost

EXTRA_FLAGS = fastcodec.HAS_HEADERS | fastcodec.HAS_EXPIRATION | fastcodec.HAS_REPLY_TO


def route_extras(
    channel: object, vhost: VHost, ex: Exchange, msg: Message, flags: int, expiration: int | None
) -> Collection[Queue]:
    msg.expiration = expiration
    header = msg.header
    if flags & fastcodec.HAS_REPLY_TO and _reply_to(header) == reply_to.REPLY_TO_B:
        reply_to.rewrite_reply_to(channel, msg)
    if flags & fastcodec.HAS_HEADERS and may_have_sender_routes(header):
        return route_with_sender_keys(vhost, ex, msg)
    return vhost.route(ex, msg)


def _reply_to(header: bytes) -> bytes | None:
    return fastcodec.short_property(header, fastcodec.HAS_REPLY_TO)


def route_reply(routing_key: str) -> Collection[Queue]:
    """Queues for an unroutable default-exchange publish: a direct reply-to address, or none."""
    if routing_key.startswith(reply_to.REPLY_PREFIX):
        return reply_to.route(routing_key)
    return ()
