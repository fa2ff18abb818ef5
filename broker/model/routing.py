"""The small interface features route through (dead-lettering, CC/BCC, direct reply-to), instead of the VHost.

A vhost implements it; a test can implement it with a dict of exchanges and a routing function.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from amqpd.broker.model.exchange import Exchange
    from amqpd.broker.model.message import Message
    from amqpd.broker.model.queue import Queue
    from amqpd.storage import GroupCommitter


class Router(Protocol):
    @property
    def name(self) -> str:
        """The vhost's name, for error texts."""
        ...

    @property
    def exchanges(self) -> Mapping[str, Exchange]: ...

    @property
    def reply_queues(self) -> dict[str, Queue]:
        """Direct reply-to pseudo-queues by address (``amq.rabbitmq.reply-to.<token>``), private to this vhost."""
        ...

    @property
    def committer(self) -> GroupCommitter | None:
        """Where persistent messages are stored; None when nothing is persisted."""
        ...

    next_message_id: Callable[[], int]

    def route(self, ex: Exchange, msg: Message, routing_key: str | None = None) -> Collection[Queue]:
        """The queues ``msg`` reaches through ``ex`` (each once), with ``routing_key`` instead of the message's."""
        ...


# What a queue calls to dead-letter messages: (router of its vhost, the queue, the messages, the reason).
DeadLetterer = Callable[["Router", "Queue", "list[Message]", str], None]
