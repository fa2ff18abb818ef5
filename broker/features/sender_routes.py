"""Sender-selected distribution: ``CC`` and ``BCC`` headers add routing keys to a publish; ``BCC`` never reaches
a consumer. Only publishes whose raw header contains one of the two key names take this path."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from amqpd.broker.model.arguments import amqp_type_name
from amqpd.broker.model.message import copy_properties
from amqpd.protocol.errors import PRECONDITION_FAILED, ChannelError

if TYPE_CHECKING:
    from amqpd.broker.model.exchange import Exchange
    from amqpd.broker.model.message import Message
    from amqpd.broker.model.queue import Queue
    from amqpd.broker.model.routing import Router

# The key names as they appear in an encoded field table (shortstr length, then the name).
_CC_KEY = b"\x02CC"
_BCC_KEY = b"\x03BCC"


def may_have_sender_routes(header: bytes) -> bool:
    """Cheap pre-check on the raw content header; a hit may be a false positive, a miss never is."""
    return _CC_KEY in header or _BCC_KEY in header


def sender_keys(headers: dict[str, Any]) -> list[str]:
    """CC then BCC keys, as rabbit_basic:header_routes (non-string array elements are skipped)."""
    keys: list[str] = []
    for name in ("CC", "BCC"):
        if name not in headers:
            continue
        value = headers[name]
        if not isinstance(value, list):
            raise ChannelError(
                PRECONDITION_FAILED,
                f'invalid message: {{unacceptable_type_in_header,"{name}",{amqp_type_name(value)}}}',
            )
        keys.extend(_text(k) for k in value if isinstance(k, str | bytes))
    return keys


def _text(key: str | bytes) -> str:
    return key if isinstance(key, str) else key.decode("utf-8", "replace")


def route_with_sender_keys(router: Router, ex: Exchange, msg: Message) -> Collection[Queue]:
    headers = msg.headers()
    if not headers or ("CC" not in headers and "BCC" not in headers):
        return router.route(ex, msg)
    keys = sender_keys(headers)
    if "BCC" in headers:
        stripped = dict(headers)
        del stripped["BCC"]
        msg.replace_properties(copy_properties(msg.properties, headers=stripped))
    queues: set[Queue] = set(router.route(ex, msg))
    for key in keys:
        queues.update(router.route(ex, msg, key))
    return queues
