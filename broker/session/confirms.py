"""Publisher confirms of one channel: sequence numbers, which of them wait for the store, which are refused.

A publish in confirm mode gets the next sequence number. It can be confirmed at the next flush unless it (or a
publish before it) waits for the store, in which case it is confirmed once the store batch holding it is durable.
A publish a queue refused (``x-overflow`` reject-publish) is nacked, in order with the acks around it. Acks go out
coalesced: one ``multiple`` ack up to the highest sequence number that may be confirmed.
"""

from __future__ import annotations

from collections.abc import Callable


class Confirms:
    __slots__ = ("durable_upto", "nacks", "published", "ready_upto", "sent_upto", "wait_registered", "wait_upto")

    def __init__(self) -> None:
        self.published = 0  # sequence number of the last publish
        self.ready_upto = 0  # highest seq that may be acked at the next flush
        self.sent_upto = 0  # highest seq acked or nacked so far
        self.wait_upto = 0  # highest seq that waits for the store (persistent, or behind one that is)
        self.wait_registered = 0  # highest seq a durability callback was asked for
        self.durable_upto = 0  # highest seq the store has made durable
        self.nacks: list[int] = []  # refused seqs, nacked at the flush

    def publish(self, stored: bool, refused: bool) -> None:
        """Count one publish: ``stored`` when it went to the store, ``refused`` when a queue refused it."""
        self.published = seq = self.published + 1
        if refused:
            self.nacks.append(seq)
        if stored or self.wait_upto > self.durable_upto:
            self.wait_upto = seq
        else:
            self.ready_upto = seq

    def wait_for_store(self) -> int:
        """The seq to ask the store's durability callback for, or 0 when one was asked for already."""
        if self.wait_upto > self.wait_registered:
            self.wait_registered = self.wait_upto
            return self.wait_upto
        return 0

    def made_durable(self, upto: int) -> None:
        self.durable_upto = upto
        if upto > self.ready_upto:
            self.ready_upto = upto

    def flush(self, ack: Callable[[int, bool], None], nack: Callable[[int], None]) -> None:
        """Send what may be confirmed now: ``ack(upto, multiple)`` for ranges, ``nack(seq)`` for refused ones."""
        upto = self.ready_upto
        if upto <= self.sent_upto:
            return
        if self.nacks:
            later: list[int] = []
            for n in self.nacks:
                if n > upto:
                    later.append(n)
                    continue
                if n - 1 > self.sent_upto:
                    ack(n - 1, n - 1 > self.sent_upto + 1)
                nack(n)
                self.sent_upto = n
            self.nacks = later
            if upto <= self.sent_upto:
                return
        ack(upto, upto > self.sent_upto + 1)
        self.sent_upto = upto
