"""One Message per publish, shared by every queue it reaches; the content header stays raw bytes until a feature
needs a property, so the common path never decodes or re-encodes properties."""

from __future__ import annotations

from typing import Any

from pamqp import commands

from amqpd.protocol import fastcodec


class Message:
    __slots__ = (
        "_properties",
        "body",
        "exchange",
        "exchange_b",
        "expiration",
        "header",
        "msg_id",
        "persistent",
        "routing_key",
        "routing_key_b",
        "timestamp_ms",
    )

    def __init__(self, exchange: str, routing_key: str, header: bytes, body: bytes, persistent: bool = False) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.header = header  # raw content-header payload, exactly as the publisher sent it
        self.body = body
        self.persistent = persistent
        self.msg_id = 0  # assigned when the message is stored
        self.timestamp_ms = 0
        self.expiration: int | None = None  # the validated ``expiration`` property in ms, set by the channel
        # Encoded once here (two short encodes) rather than behind a property: every delivery reads them.
        self.exchange_b = exchange.encode()
        self.routing_key_b = routing_key.encode()
        self._properties: Any = None

    @property
    def properties(self) -> Any:
        """The decoded Basic.Properties (decoded once, on first use)."""
        p = self._properties
        if p is None:
            p = self._properties = fastcodec.decode_properties(self.header)
        return p

    @property
    def size(self) -> int:
        return len(self.body)

    def headers(self) -> dict[str, Any] | None:
        if not fastcodec.property_flags(self.header) & fastcodec.HAS_HEADERS:
            return None
        h = self.properties.headers
        return h if isinstance(h, dict) else None

    def replace_properties(self, properties: Any) -> None:
        """Rewrite the content header (rare paths only: BCC stripping, reply-to rewriting, dead-lettering)."""
        self._properties = properties
        self.header = fastcodec.encode_header_payload(len(self.body), properties)


_PROPERTY_NAMES = tuple(commands.Basic.Properties().attributes())


def copy_properties(props: Any, **changes: Any) -> commands.Basic.Properties:
    """A new Basic.Properties with ``changes`` applied (decoded properties are shared: never mutate them)."""
    # Not pamqp's constructor: it refuses a cluster_id or a delivery mode other than 1 or 2, which a publisher may
    # send and RabbitMQ passes through (a 541 on dead-lettering before).
    copy = fastcodec.properties_with(props, **changes)
    if copy.cluster_id is None:
        copy.cluster_id = ""
    return copy


def with_headers(msg: Message, updates: dict[str, Any]) -> Message:
    """A copy of ``msg`` whose headers carry ``updates``; same store id, so acks and drops still find it."""
    props = msg.properties
    headers = dict(props.headers or {})
    headers.update(updates)
    copy = Message(msg.exchange, msg.routing_key, msg.header, msg.body, msg.persistent)
    copy.msg_id = msg.msg_id
    copy.timestamp_ms = msg.timestamp_ms
    copy.expiration = msg.expiration
    copy.replace_properties(copy_properties(props, headers=headers))
    return copy


def header_routes(headers: dict[str, Any] | None) -> list[str]:
    """The CC and BCC routing keys of a headers table (rabbit_basic:header_routes), non-strings skipped."""
    if not headers:
        return []
    keys: list[str] = []
    for name in ("CC", "BCC"):
        value = headers.get(name)
        if isinstance(value, list):
            keys.extend(k if isinstance(k, str) else k.decode() for k in value if isinstance(k, str | bytes))
    return keys
