"""Why a connection is not being read: a set of reasons, each added and removed by whoever raised it.

Reasons today: the store is behind (persistent publishers wait for it) and a queue's backlog (a queue with
consumers and more than ``flow_high`` ready messages holds its publishers back); the memory alarm comes next.
Reading resumes only when no reason is left, so one reason ending never undoes another.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Final

STORE_BEHIND: Final = "store behind"


class FlowControl:
    __slots__ = ("pauses", "reasons")

    def __init__(self) -> None:
        self.reasons: set[Hashable] = set()  # STORE_BEHIND, or a Queue whose backlog pauses this connection
        self.pauses = 0  # how often a reason was added (diagnostics, tests)

    @property
    def paused(self) -> bool:
        return bool(self.reasons)

    def add(self, reason: Hashable) -> bool:
        """Returns True when the reason is new."""
        if reason in self.reasons:
            return False
        self.reasons.add(reason)
        self.pauses += 1
        return True

    def discard(self, reason: Hashable) -> bool:
        """Returns True when the reason was there."""
        if reason not in self.reasons:
            return False
        self.reasons.discard(reason)
        return True
