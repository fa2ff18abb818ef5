"""A queue's optional features, parsed once from its arguments: TTL, expiry, length limits, dead-lettering,
priorities, single active consumer, delivery limit and consumer timeout.

A plain queue has none (``Queue.fx is None``) and its hot path never looks further; a queue declared with any of
the arguments below, or one that receives a message with an ``expiration`` property, gets a :class:`QueueFeatures`.
"""

from __future__ import annotations

from typing import Any, Final

from amqpd.broker.model.message import Message
from amqpd.protocol import fastcodec

DROP_HEAD: Final = "drop-head"
REJECT_PUBLISH: Final = "reject-publish"
REJECT_PUBLISH_DLX: Final = "reject-publish-dlx"

# Dead-letter reasons, as RabbitMQ writes them into x-death.
REJECTED: Final = "rejected"
EXPIRED: Final = "expired"
MAXLEN: Final = "maxlen"
DELIVERY_LIMIT: Final = "delivery_limit"

FEATURE_ARGS: Final = frozenset(
    {
        "x-message-ttl",
        "x-expires",
        "x-max-length",
        "x-max-length-bytes",
        "x-dead-letter-exchange",
        "x-max-priority",
        "x-single-active-consumer",
        "x-delivery-limit",
        "x-consumer-timeout",
    }
)


def _int_arg(args: dict[str, Any], key: str) -> int | None:
    value = args.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text_arg(args: dict[str, Any], key: str) -> str | None:
    value = args.get(key)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


class QueueFeatures:
    __slots__ = (
        "consumer_timeout",
        "delivery_limit",
        "dlrk",
        "dlx",
        "expires_ms",
        "limited",
        "max_bytes",
        "max_length",
        "max_priority",
        "overflow",
        "sac",
        "timed",
        "ttl",
    )

    def __init__(self, args: dict[str, Any]) -> None:
        self.ttl = _int_arg(args, "x-message-ttl")
        self.expires_ms = _int_arg(args, "x-expires")
        self.max_length = _int_arg(args, "x-max-length")
        self.max_bytes = _int_arg(args, "x-max-length-bytes")
        self.overflow = _text_arg(args, "x-overflow") or DROP_HEAD
        self.dlx = _text_arg(args, "x-dead-letter-exchange")  # "" = the default exchange
        self.dlrk = _text_arg(args, "x-dead-letter-routing-key") if self.dlx is not None else None
        self.max_priority = _int_arg(args, "x-max-priority")
        self.sac = args.get("x-single-active-consumer") is True
        self.delivery_limit = _int_arg(args, "x-delivery-limit")
        self.consumer_timeout = _int_arg(args, "x-consumer-timeout")  # ms, read by the session's timer
        self.limited = self.max_length is not None or self.max_bytes is not None
        # Entries may carry deadlines: a queue TTL, or (set later) a message with an expiration was seen.
        self.timed = self.ttl is not None

    def ttl_for(self, msg: Message) -> int | None:
        ttl = self.ttl
        exp = msg.expiration
        if exp is not None and (ttl is None or exp < ttl):
            return exp
        return ttl

    def priority_of(self, msg: Message) -> int:
        assert self.max_priority is not None
        if not fastcodec.property_flags(msg.header) & fastcodec.HAS_PRIORITY:
            return 0
        p = fastcodec.priority(msg.header) or 0
        return p if p < self.max_priority else self.max_priority

    def over_limit(self, length: int, nbytes: int) -> bool:
        ml, mb = self.max_length, self.max_bytes
        return (ml is not None and length > ml) or (mb is not None and nbytes > mb)
