"""A queue: its ready store, its consumer ring and the one dispatch loop between them."""

from amqpd.broker.model.queue.entry import Entry
from amqpd.broker.model.queue.features import QueueFeatures
from amqpd.broker.model.queue.queue import FLOW_HIGH, FLOW_LOW, Queue, QueueHost
from amqpd.broker.model.queue.ready import FifoReady, PriorityReady, ReadyStore

__all__ = [
    "FLOW_HIGH",
    "FLOW_LOW",
    "Entry",
    "FifoReady",
    "PriorityReady",
    "Queue",
    "QueueFeatures",
    "QueueHost",
    "ReadyStore",
]
