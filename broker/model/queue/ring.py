"""Consumer rings: the consumers of a queue that can take a message now, in the order they are served."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from amqpd.broker.model.consumer import Consumer


class PriorityRing:
    """Consumers with capacity, grouped by ``x-priority``: the highest group is served first, round-robin within.

    It offers the slice of the deque API that dispatch uses, so one dispatch loop serves both kinds of ring.
    """

    __slots__ = ("groups", "n", "order")

    def __init__(self) -> None:
        self.groups: dict[int, deque[Consumer]] = {}
        self.order: list[int] = []  # priorities, highest first
        self.n = 0

    def __len__(self) -> int:
        return self.n

    def __bool__(self) -> bool:
        return self.n > 0

    def append(self, consumer: Consumer) -> None:
        group = self.groups.get(consumer.priority)
        if group is None:
            group = self.groups[consumer.priority] = deque()
            self.order = sorted(self.groups, reverse=True)
        group.append(consumer)
        self.n += 1

    def popleft(self) -> Consumer:
        groups = self.groups
        for prio in self.order:
            group = groups[prio]
            if group:
                self.n -= 1
                return group.popleft()
        raise IndexError("pop from an empty ring")

    def remove(self, consumer: Consumer) -> None:
        group = self.groups.get(consumer.priority)
        if group is None:
            raise ValueError("consumer not in ring")
        group.remove(consumer)
        self.n -= 1

    def clear(self) -> None:
        for group in self.groups.values():
            group.clear()
        self.n = 0
