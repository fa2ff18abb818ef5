"""The embedded broker for an application's tests, under a short name: ``from amqpd.testing import BrokerThread``.

The same objects as ``amqpd.broker.testing`` (whose pytest plugin the package registers as ``amqpd``).
"""

from amqpd.broker.testing.embedded import BrokerThread, EmbeddedBroker, QueueInfo

__all__ = ["BrokerThread", "EmbeddedBroker", "QueueInfo"]
