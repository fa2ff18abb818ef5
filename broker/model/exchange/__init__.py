"""Exchange types, one module each, over the binding registry in base.py."""

from broker.model.exchange.base import Exchange
from broker.model.exchange.direct import DirectExchange
from broker.model.exchange.fanout import FanoutExchange
from broker.model.exchange.headers import HeadersExchange
from broker.model.exchange.registry import EXCHANGE_TYPES, unknown_type_text
from broker.model.exchange.topic import TopicExchange

__all__ = [
    "EXCHANGE_TYPES",
    "DirectExchange",
    "Exchange",
    "FanoutExchange",
    "HeadersExchange",
    "TopicExchange",
    "unknown_type_text",
]
