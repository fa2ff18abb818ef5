"""Deliveries a channel waits to have acknowledged, by delivery tag, in delivery order.

``count`` is what prefetch compares with: deliveries not yet settled, including acks held back by an open
transaction (they leave ``by_tag`` at the ack and are settled at commit).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from amqpd.broker.model.queue import Entry
from amqpd.protocol.errors import PRECONDITION_FAILED, ChannelError


class Unacked:
    __slots__ = ("by_tag", "count", "order")

    def __init__(self) -> None:
        self.by_tag: dict[int, Entry] = {}
        self.order: deque[int] = deque()  # tags in delivery order; may hold tags settled out of order
        self.count = 0

    def __len__(self) -> int:
        return len(self.by_tag)

    def __bool__(self) -> bool:
        return bool(self.by_tag)

    def add(self, tag: int, entry: Entry) -> None:
        self.by_tag[tag] = entry
        self.order.append(tag)
        self.count += 1

    def take(self, tag: int, multiple: bool, method_id: int) -> list[tuple[int, Entry]]:
        """Remove and return what an ack/nack/reject with (tag, multiple) settles; 406 for an unknown tag."""
        by_tag = self.by_tag
        order = self.order
        if multiple:
            if tag != 0 and tag not in by_tag:
                raise ChannelError(PRECONDITION_FAILED, f"unknown delivery tag {tag}", 60, method_id)
            taken: list[tuple[int, Entry]] = []
            while order and (tag == 0 or order[0] <= tag):
                t = order.popleft()
                e = by_tag.pop(t, None)
                if e is not None:
                    taken.append((t, e))
            return taken
        e = by_tag.pop(tag, None)
        if e is None:
            raise ChannelError(PRECONDITION_FAILED, f"unknown delivery tag {tag}", 60, method_id)
        if order and order[0] == tag:
            order.popleft()
        elif len(order) > 2 * len(by_tag) + 64:
            self.order = deque(by_tag)  # settled out of order: drop the stale tags now and then
        return [(tag, e)]

    def take_all(self) -> list[tuple[int, Entry]]:
        taken = list(self.by_tag.items())
        self.by_tag.clear()
        self.order.clear()
        return taken

    def take_where(self, held: Iterable[int]) -> list[tuple[int, Entry]]:
        """Remove the given tags (a consumer's deliveries, say)."""
        return [(t, self.by_tag.pop(t)) for t in list(held)]

    def restore(self, items: Iterable[tuple[int, Entry]]) -> None:
        """Put back deliveries whose acks a transaction rolled back (still counted)."""
        restored = False
        for t, e in items:
            self.by_tag[t] = e
            restored = True
        if restored:
            self.order = deque(sorted(self.by_tag))

    def settled(self, n: int) -> None:
        self.count -= n
