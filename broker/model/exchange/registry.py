"""The exchange types by name, and RabbitMQ's text for a type it does not know."""

from __future__ import annotations

from typing import Final

from amqpd.broker.model.exchange.base import Exchange
from amqpd.broker.model.exchange.direct import DirectExchange
from amqpd.broker.model.exchange.fanout import FanoutExchange
from amqpd.broker.model.exchange.headers import HeadersExchange
from amqpd.broker.model.exchange.topic import TopicExchange

EXCHANGE_TYPES: dict[str, type[Exchange]] = {
    cls.type_name: cls for cls in (DirectExchange, FanoutExchange, TopicExchange, HeadersExchange)
}

# RabbitMQ looks an exchange type up with list_to_existing_atom: a name that is already an atom in its VM but
# no registered type gets "invalid exchange type", any other name "unknown exchange type". The atom table is
# not ours to know; these names were each seen answered with "invalid" by RabbitMQ 3.10.8 (the empty name too).
_KNOWN_ATOMS: Final = frozenset(
    {
        "", "all", "any", "array", "atom", "bar", "binary", "binding", "bool", "byte", "classic", "decimal",
        "default", "error", "exchange", "false", "float", "foo", "hello", "int", "integer", "invalid", "key",
        "list", "local", "long", "map", "match", "message", "name", "none", "ok", "queue", "quorum", "random",
        "short", "stream", "string", "table", "test", "timestamp", "true", "tuple", "type", "undefined",
        "unknown", "value", "void",
    }
)  # fmt: skip


def unknown_type_text(type_name: str) -> str:
    """The detail of RabbitMQ's 503 for an exchange.declare whose type is not one of EXCHANGE_TYPES."""
    adjective = "invalid" if type_name in _KNOWN_ATOMS else "unknown"
    return f"{adjective} exchange type '{type_name}'"
