"""Group commit: the broker's synchronous hot path fills a batch; one commit is in flight at a time.

While batch N is being made durable, batch N+1 fills; when N is durable its callbacks run (in the order they
were registered) and N+1 is committed at once. Under load, batches grow by themselves, so the number of
fsyncs per second stays bounded by the disk's latency rather than by the publish rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from amqpd.storage.base import (
    Batch,
    Definition,
    DeliveredMark,
    Enqueue,
    MessageRecord,
    QueueDelete,
    Remove,
    StorageError,
    Store,
    VHostDelete,
)

log = logging.getLogger("amqpd.storage")

_RECORD_OVERHEAD = 48  # rough per-record framing + bookkeeping bytes, for backlog accounting only


class _Pending:
    """The batch being filled. Dicts, not lists, so an ack of a not-yet-written enqueue cancels it in O(1)."""

    __slots__ = ("callbacks", "definitions", "enqueues", "marks", "messages", "msg_refs", "nbytes", "removals")

    def __init__(self) -> None:
        self.definitions: list[Definition] = []
        self.messages: dict[int, MessageRecord] = {}
        self.msg_refs: dict[int, int] = {}
        self.enqueues: dict[tuple[str, str, int], None] = {}  # (vhost, queue, message id)
        self.marks: list[DeliveredMark] = []
        self.removals: list[Remove] = []
        self.callbacks: list[Callable[[], None]] = []
        self.nbytes = 0

    def has_work(self) -> bool:
        return bool(self.definitions or self.enqueues or self.marks or self.removals or self.callbacks)

    def item_count(self) -> int:
        return len(self.definitions) + len(self.messages) + len(self.enqueues) + len(self.marks) + len(self.removals)

    def to_batch(self) -> Batch:
        return Batch(
            definitions=self.definitions,
            messages=[m for i, m in self.messages.items() if self.msg_refs.get(i)],
            enqueues=[Enqueue(v, q, i) for v, q, i in self.enqueues],
            marks=self.marks,
            removals=self.removals,
        )


class GroupCommitter:
    """All `add_*` / `on_durable` calls are plain synchronous calls, safe on the hot path (no awaiting).

    Must be used from inside a running event loop (the commit task is started lazily on first use).
    """

    def __init__(
        self,
        store: Store,
        *,
        high_water_bytes: int = 64 * 1024 * 1024,
        low_water_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        self.store = store
        self.high_water_bytes = high_water_bytes
        self.low_water_bytes = low_water_bytes
        self._pending = _Pending()
        self._in_flight: _Pending | None = None
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._error: BaseException | None = None
        self._paused = False
        self._pressure_cb: Callable[[bool], None] | None = None
        self._failure_cb: Callable[[BaseException], None] | None = None
        self._needs_upkeep = False
        self._flush_waiters: set[asyncio.Future[None]] = set()

    # ---- hot path ---------------------------------------------------------------------------------------

    def add_message(self, record: MessageRecord) -> None:
        """Store the message once; follow with one `add_enqueue` per durable queue it reached."""
        pending = self._pending
        if record.msg_id not in pending.messages:
            pending.messages[record.msg_id] = record
            self._grow(len(record.body) + len(record.properties) + len(record.routing_key) + len(record.exchange))

    def add_enqueue(self, vhost: str, queue: str, msg_id: int) -> None:
        pending = self._pending
        key = (vhost, queue, msg_id)
        if key not in pending.enqueues:
            pending.enqueues[key] = None
            pending.msg_refs[msg_id] = pending.msg_refs.get(msg_id, 0) + 1
            self._grow(len(queue))

    def add_remove(self, vhost: str, queue: str, msg_id: int) -> None:
        pending = self._pending
        key = (vhost, queue, msg_id)
        if key in pending.enqueues:  # never written: forget both sides
            del pending.enqueues[key]
            refs = pending.msg_refs[msg_id] - 1
            if refs:
                pending.msg_refs[msg_id] = refs
            else:
                del pending.msg_refs[msg_id]
                pending.messages.pop(msg_id, None)
            return
        pending.removals.append(Remove(vhost, queue, msg_id))
        self._grow(len(queue))

    def add_mark(self, vhost: str, queue: str, msg_id: int) -> None:
        """Optional: after a restart this message comes back flagged redelivered."""
        self._pending.marks.append(DeliveredMark(vhost, queue, msg_id))
        self._grow(len(queue))

    def add_definition(self, record: Definition) -> None:
        pending = self._pending
        if isinstance(record, QueueDelete):
            # Enqueues added before the delete die with the queue; dropping them here keeps the batch's
            # "definitions first" order correct even if the queue is declared again in this same batch.
            vhost, name = record.vhost, record.name
            self._drop_pending(lambda v, q: v == vhost and q == name)
        elif isinstance(record, VHostDelete):
            vhost = record.name
            self._drop_pending(lambda v, _q: v == vhost)
        pending.definitions.append(record)
        self._grow(64)

    def _drop_pending(self, doomed: Callable[[str, str], bool]) -> None:
        pending = self._pending
        for vhost, queue, msg_id in [k for k in pending.enqueues if doomed(k[0], k[1])]:
            self.add_remove(vhost, queue, msg_id)
        pending.marks = [m for m in pending.marks if not doomed(m.vhost, m.queue)]
        pending.removals = [r for r in pending.removals if not doomed(r.vhost, r.queue)]

    def on_durable(self, callback: Callable[[], None]) -> None:
        """Run `callback` once everything added so far is durable. Runs at once when nothing is outstanding."""
        if self._error is not None:
            return
        if self._pending.has_work() or self._pending.messages:
            self._pending.callbacks.append(callback)
            self._kick()
        elif self._in_flight is not None:
            self._in_flight.callbacks.append(callback)
        else:
            callback()

    # ---- flow control and status -------------------------------------------------------------------------

    @property
    def backlog_bytes(self) -> int:
        in_flight = self._in_flight.nbytes if self._in_flight is not None else 0
        return self._pending.nbytes + in_flight

    @property
    def pending(self) -> int:
        """Records added but not yet durable."""
        in_flight = self._in_flight.item_count() if self._in_flight is not None else 0
        return self._pending.item_count() + in_flight

    @property
    def paused(self) -> bool:
        """True between crossing `high_water_bytes` and falling back below `low_water_bytes`."""
        return self._paused

    def set_pressure_callback(self, callback: Callable[[bool], None] | None) -> None:
        """`callback(True)` when the backlog crosses the high-water mark, `callback(False)` when it drops
        below the low-water mark again: pause and resume reading from publishers."""
        self._pressure_cb = callback

    def set_failure_callback(self, callback: Callable[[BaseException], None] | None) -> None:
        """Called once if a commit fails. From then on nothing becomes durable and no callback runs."""
        self._failure_cb = callback

    # ---- lifecycle ---------------------------------------------------------------------------------------

    async def flush(self) -> None:
        """Wait until everything added so far is durable. Raises StorageError if the store failed."""
        self._raise_if_failed()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flush_waiters.add(done)
        try:
            self.on_durable(lambda: _resolve(done))
            await done
        finally:
            self._flush_waiters.discard(done)

    async def close(self) -> None:
        """Flush, stop the commit task and close the store."""
        try:
            if self._error is None:
                await self.flush()
        finally:
            self._closing = True
            self._wakeup.set()
            if self._task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
                self._task = None
            await self.store.close()

    # ---- internals ---------------------------------------------------------------------------------------

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise StorageError("storage commit failed") from self._error

    def _grow(self, nbytes: int) -> None:
        self._pending.nbytes += nbytes + _RECORD_OVERHEAD
        if not self._paused and self.backlog_bytes >= self.high_water_bytes:
            self._set_paused(True)
        self._kick()

    def _set_paused(self, paused: bool) -> None:
        self._paused = paused
        if self._pressure_cb is not None:
            self._pressure_cb(paused)

    def _kick(self) -> None:
        if self._task is None and not self._closing and self._error is None:
            self._task = asyncio.get_running_loop().create_task(self._commit_loop(), name="amqpd-group-commit")
        self._wakeup.set()

    async def _commit_loop(self) -> None:
        while True:
            if not (self._pending.has_work() or self._pending.messages):
                if self._closing:
                    return
                if self._needs_upkeep:
                    self._needs_upkeep = False
                    await self._upkeep()
                    if self._error is not None:
                        return
                    continue
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            sealed, self._pending = self._pending, _Pending()
            self._in_flight = sealed
            try:
                await self.store.commit(sealed.to_batch())
            except Exception as exc:
                self._fail(exc)
                return
            self._in_flight = None
            self._needs_upkeep = True
            for callback in sealed.callbacks:
                try:
                    callback()
                except Exception:
                    log.exception("durable callback failed")
            if self._paused and self.backlog_bytes < self.low_water_bytes:
                self._set_paused(False)

    async def _upkeep(self) -> None:
        try:
            await self.store.maintain()
        except Exception as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        log.error("storage commit failed; nothing more will be made durable: %s", exc)
        self._error = exc
        self._in_flight = None
        self._wakeup.set()
        for waiter in self._flush_waiters:
            if not waiter.done():
                waiter.set_exception(StorageError(f"storage commit failed: {exc}"))
        if self._failure_cb is not None:
            self._failure_cb(exc)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
