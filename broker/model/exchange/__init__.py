"""Exchange types, one module each, over the binding registry in base.py."""

from amqpd.broker.model.exchange.base import Exchange
from amqpd.broker.model.exchange.direct import DirectExchange
from amqpd.broker.model.exchange.fanout import FanoutExchange
from amqpd.broker.model.exchange.headers import HeadersExchange
from amqpd.broker.model.exchange.registry import EXCHANGE_TYPES, unknown_type_text
from amqpd.broker.model.exchange.topic import TopicExchange

__all__ = [
    "EXCHANGE_TYPES",
    "DirectExchange",
    "Exchange",
    "FanoutExchange",
    "HeadersExchange",
    "TopicExchange",
    "unknown_type_text",
]
