"""Ready stores: a queue's messages waiting for a consumer, behind one protocol.

A plain queue holds a :class:`FifoReady` (a deque: its append and popleft are deque's own, in C); an
``x-max-priority`` queue a :class:`PriorityReady`. A paged store (bodies on disk) plugs in here next.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Protocol

from amqpd.broker.model.queue.entry import Entry


class ReadyStore(Protocol):
    """What the queue's dispatch loop, expiry and requeue need from its ready messages."""

    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Entry]: ...
    def __getitem__(self, index: int, /) -> Entry:
        """Only ``[0]``, the head (the next message to deliver), is asked for."""
        ...

    def append(self, entry: Entry, /) -> None: ...
    def popleft(self) -> Entry: ...
    def clear(self) -> None: ...
    def requeue(self, back: list[Entry], /) -> None:
        """Put entries (sorted by seq) back at their original positions."""
        ...

    def pop_expired(self, now: int, out: list[Entry]) -> None:
        """Move expired entries at the head (each FIFO's head) to ``out``."""
        ...

    def next_expiry(self) -> int | None: ...
    def drop_tail(self, entry: Entry) -> None:
        """Remove ``entry``, usually the one just appended."""
        ...


def _seq(e: Entry) -> int:
    return e.seq


def _merge_back(ready: deque[Entry], back: list[Entry]) -> None:
    """Put entries (sorted by seq) back into ``ready`` at their original positions."""
    if not ready or back[-1].seq < ready[0].seq:
        ready.extendleft(reversed(back))
    else:
        merged = sorted([*ready, *back], key=_seq)
        ready.clear()
        ready.extend(merged)


def _pop_expired(ready: deque[Entry], now: int, out: list[Entry]) -> None:
    while ready:
        exp = ready[0].expires
        if exp is None or exp > now:
            return
        out.append(ready.popleft())


class FifoReady(deque[Entry]):
    """Ready messages in order: a deque plus the requeue and expiry helpers."""

    def requeue(self, back: list[Entry]) -> None:
        _merge_back(self, back)

    def pop_expired(self, now: int, out: list[Entry]) -> None:
        _pop_expired(self, now, out)

    def next_expiry(self) -> int | None:
        return self[0].expires if self else None

    def drop_tail(self, entry: Entry) -> None:
        if self and self[-1] is entry:
            self.pop()
        else:
            self.remove(entry)


class PriorityReady:
    """Ready messages of an ``x-max-priority`` queue: one FIFO per priority, highest served first."""

    __slots__ = ("levels", "n")

    def __init__(self, max_priority: int) -> None:
        self.levels: list[deque[Entry]] = [deque() for _ in range(max_priority + 1)]
        self.n = 0

    def __len__(self) -> int:
        return self.n

    def __bool__(self) -> bool:
        return self.n > 0

    def __iter__(self) -> Iterator[Entry]:
        for level in reversed(self.levels):
            yield from level

    def __getitem__(self, index: int) -> Entry:
        if index != 0:
            raise IndexError("only the head of a priority queue can be read")
        for level in reversed(self.levels):
            if level:
                return level[0]
        raise IndexError("empty queue")

    def append(self, entry: Entry) -> None:
        self.levels[entry.prio].append(entry)
        self.n += 1

    def popleft(self) -> Entry:
        for level in reversed(self.levels):
            if level:
                self.n -= 1
                return level.popleft()
        raise IndexError("pop from an empty queue")

    def clear(self) -> None:
        for level in self.levels:
            level.clear()
        self.n = 0

    def requeue(self, back: list[Entry]) -> None:
        by_level: dict[int, list[Entry]] = {}
        for e in back:
            by_level.setdefault(e.prio, []).append(e)
        for prio, entries in by_level.items():
            _merge_back(self.levels[prio], entries)
        self.n += len(back)

    def pop_expired(self, now: int, out: list[Entry]) -> None:
        # Every level's head: each level is its own FIFO, in expiry order when the TTL is per queue.
        before = len(out)
        for level in reversed(self.levels):
            if level:
                _pop_expired(level, now, out)
        self.n -= len(out) - before

    def next_expiry(self) -> int | None:
        best: int | None = None
        for level in self.levels:
            if level:
                exp = level[0].expires
                if exp is not None and (best is None or exp < best):
                    best = exp
        return best

    def drop_tail(self, entry: Entry) -> None:
        level = self.levels[entry.prio]
        if level and level[-1] is entry:
            level.pop()
        else:
            level.remove(entry)
        self.n -= 1
