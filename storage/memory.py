"""`memory://`: nothing persisted. Commits return at once; every start is a fresh broker."""

from __future__ import annotations

from amqpd.storage.base import Batch, Snapshot


class MemoryStore:
    async def open(self) -> Snapshot:
        return Snapshot()

    async def commit(self, batch: Batch) -> None:
        return None

    async def maintain(self) -> None:
        return None

    async def close(self) -> None:
        return None
