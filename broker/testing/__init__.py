"""amqpd for an application's tests: `EmbeddedBroker` and `BrokerThread` (a real broker started from Python, see
`broker.testing.embedded`) and a pytest plugin (`broker.testing.plugin`, registered as the ``amqpd`` pytest11
entry point) whose fixtures `amqpd_broker` and `amqp_url` give each test a running broker.

Importing this package stays cheap (pytest imports the plugin in every project where amqpd is installed): the
broker itself is imported on first use of a name below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from amqpd.broker.testing.embedded import BrokerThread, EmbeddedBroker, QueueInfo

__all__ = ["BrokerThread", "EmbeddedBroker", "QueueInfo"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from amqpd.broker.testing import embedded

        return getattr(embedded, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
