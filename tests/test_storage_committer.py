"""Group commit: callbacks after durability, ordering, one commit in flight, elision, pressure, failure."""

from __future__ import annotations

import asyncio

import pytest

from amqpd.storage import (
    Batch,
    GroupCommitter,
    MessageRecord,
    QueueDelete,
    QueueRecord,
    SettingDelete,
    SettingRecord,
    Snapshot,
    StorageError,
    VHostDelete,
    VHostRecord,
)


class GatedStore:
    """A store whose commits finish only when the test opens the gate."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.in_flight = 0
        self.max_in_flight = 0
        self.started = asyncio.Event()
        self.fail_with: Exception | None = None
        self.closed = False
        self.maintained = 0

    async def open(self) -> Snapshot:
        return Snapshot()

    async def commit(self, batch: Batch) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.batches.append(batch)
        self.started.set()
        try:
            await self.gate.wait()
            if self.fail_with is not None:
                raise self.fail_with
        finally:
            self.in_flight -= 1

    async def maintain(self) -> None:
        self.maintained += 1

    async def close(self) -> None:
        self.closed = True


def msg(msg_id: int, size: int = 16) -> MessageRecord:
    return MessageRecord(msg_id, "", "q", b"\x00\x00", b"x" * size, 0)


def publish(committer: GroupCommitter, msg_id: int, *queues: str, size: int = 16, vhost: str = "/") -> None:
    committer.add_message(msg(msg_id, size))
    for queue in queues:
        committer.add_enqueue(vhost, queue, msg_id)


async def test_callback_fires_only_after_the_batch_is_durable() -> None:
    store = GatedStore()
    store.gate.clear()
    committer = GroupCommitter(store)
    fired: list[int] = []
    publish(committer, 1, "q")
    committer.on_durable(lambda: fired.append(1))
    await store.started.wait()
    assert fired == []
    store.gate.set()
    await committer.flush()
    assert fired == [1]
    await committer.close()


async def test_one_commit_in_flight_while_the_next_batch_fills_and_callbacks_keep_order() -> None:
    store = GatedStore()
    store.gate.clear()
    committer = GroupCommitter(store)
    fired: list[int] = []
    publish(committer, 1, "q")
    committer.on_durable(lambda: fired.append(1))
    await store.started.wait()
    for i in range(2, 6):
        publish(committer, i, "q")
        committer.on_durable(lambda i=i: fired.append(i))  # type: ignore[misc]
    assert len(store.batches) == 1
    assert committer.pending == 2 + 8
    store.gate.set()
    await committer.flush()
    assert fired == [1, 2, 3, 4, 5]
    assert store.max_in_flight == 1
    assert [len(b.messages) for b in store.batches] == [1, 4]  # the rest went as one group
    await committer.close()


async def test_enqueue_removed_before_it_is_written_is_never_written() -> None:
    store = GatedStore()
    store.gate.clear()
    committer = GroupCommitter(store)
    publish(committer, 1, "q")
    await store.started.wait()
    publish(committer, 2, "a", "b")
    publish(committer, 3, "a")
    committer.add_remove("/", "a", 2)
    committer.add_remove("/", "a", 3)
    committer.add_remove("/", "q", 1)  # already in flight: must be written as a removal
    store.gate.set()
    await committer.flush()
    second = store.batches[1]
    assert [m.msg_id for m in second.messages] == [2]
    assert [(e.queue, e.msg_id) for e in second.enqueues] == [("b", 2)]
    assert [(r.queue, r.msg_id) for r in second.removals] == [("q", 1)]
    await committer.close()


async def test_queue_delete_drops_that_queues_pending_enqueues() -> None:
    store = GatedStore()
    committer = GroupCommitter(store)
    committer.add_definition(QueueRecord("/", "q", True, False, {}))
    publish(committer, 1, "q")
    committer.add_definition(QueueDelete("/", "q"))
    committer.add_definition(QueueRecord("/", "q", True, False, {}))
    publish(committer, 2, "q")
    await committer.flush()
    enqueued = [(e.queue, e.msg_id) for b in store.batches for e in b.enqueues]
    assert enqueued == [("q", 2)]
    await committer.close()


async def test_on_durable_with_nothing_outstanding_runs_at_once() -> None:
    committer = GroupCommitter(GatedStore())
    fired: list[bool] = []
    committer.on_durable(lambda: fired.append(True))
    assert fired == [True]
    await committer.close()


async def test_flush_waits_for_everything_added_so_far() -> None:
    store = GatedStore()
    store.gate.clear()
    committer = GroupCommitter(store)
    publish(committer, 1, "q")
    flushing = asyncio.ensure_future(committer.flush())
    await store.started.wait()
    assert not flushing.done()
    store.gate.set()
    await flushing
    assert committer.pending == 0
    await committer.close()
    assert store.closed


async def test_pressure_callback_reports_high_then_low_water() -> None:
    store = GatedStore()
    store.gate.clear()
    committer = GroupCommitter(store, high_water_bytes=10_000, low_water_bytes=5_000)
    changes: list[bool] = []
    committer.set_pressure_callback(changes.append)
    publish(committer, 1, "q", size=6_000)
    await store.started.wait()
    publish(committer, 2, "q", size=6_000)
    assert changes == [True]
    assert committer.paused
    assert committer.backlog_bytes >= 12_000
    store.gate.set()
    await committer.flush()
    assert changes == [True, False]
    await committer.close()


async def test_failed_commit_reports_failure_and_never_confirms() -> None:
    store = GatedStore()
    store.fail_with = OSError("disk gone")
    committer = GroupCommitter(store)
    failures: list[BaseException] = []
    fired: list[bool] = []
    committer.set_failure_callback(failures.append)
    publish(committer, 1, "q")
    committer.on_durable(lambda: fired.append(True))
    with pytest.raises(StorageError):
        await committer.flush()
    assert fired == []
    assert len(failures) == 1
    with pytest.raises(StorageError):
        await committer.flush()
    await committer.close()


async def test_idle_committer_lets_the_store_do_upkeep() -> None:
    store = GatedStore()
    committer = GroupCommitter(store)
    publish(committer, 1, "q")
    await committer.flush()
    publish(committer, 2, "q")  # the next commit comes after the upkeep the first one scheduled
    await committer.flush()
    assert store.maintained >= 1
    await committer.close()


async def test_the_same_queue_name_in_two_vhosts_is_two_queues() -> None:
    store = GatedStore()
    store.gate.clear()
    committer = GroupCommitter(store)
    publish(committer, 1, "q", vhost="a")
    await store.started.wait()
    publish(committer, 2, "q", vhost="a")
    publish(committer, 2, "q", vhost="b")
    committer.add_remove("b", "q", 2)  # cancels b's pending enqueue only
    committer.add_remove("b", "q", 1)  # a's enqueue of 1 is in flight; b never had it: written as is
    committer.add_mark("a", "q", 1)
    store.gate.set()
    await committer.flush()
    second = store.batches[1]
    assert [(e.vhost, e.queue, e.msg_id) for e in second.enqueues] == [("a", "q", 2)]
    assert [m.msg_id for m in second.messages] == [2]
    assert [(r.vhost, r.queue, r.msg_id) for r in second.removals] == [("b", "q", 1)]
    assert [(m.vhost, m.queue, m.msg_id) for m in second.marks] == [("a", "q", 1)]
    await committer.close()


async def test_queue_delete_drops_pending_work_of_that_vhosts_queue_only() -> None:
    store = GatedStore()
    store.gate.clear()
    committer = GroupCommitter(store)
    publish(committer, 1, "q", vhost="a")
    publish(committer, 2, "q", vhost="b")
    await store.started.wait()
    publish(committer, 3, "q", vhost="a")
    publish(committer, 3, "q", vhost="b")
    committer.add_mark("a", "q", 1)
    committer.add_mark("b", "q", 2)
    committer.add_remove("a", "q", 1)
    committer.add_definition(QueueDelete("a", "q"))
    store.gate.set()
    await committer.flush()
    second = store.batches[1]
    assert [(e.vhost, e.queue, e.msg_id) for e in second.enqueues] == [("b", "q", 3)]
    assert [(m.vhost, m.msg_id) for m in second.marks] == [("b", 2)]
    assert second.removals == []
    await committer.close()


async def test_vhost_delete_drops_that_vhosts_pending_work() -> None:
    store = GatedStore()
    store.gate.clear()
    committer = GroupCommitter(store)
    committer.add_definition(VHostRecord("a", {}))
    await store.started.wait()
    for vhost in ("a", "b"):
        committer.add_definition(QueueRecord(vhost, "q", True, False, {}))
        committer.add_definition(QueueRecord(vhost, "r", True, False, {}))
    publish(committer, 1, "q", "r", vhost="a")
    publish(committer, 2, "q", vhost="a")
    publish(committer, 2, "q", vhost="b")
    committer.add_mark("a", "q", 7)
    committer.add_remove("a", "r", 8)
    committer.add_remove("b", "q", 9)
    committer.add_definition(VHostDelete("a"))
    committer.add_definition(QueueRecord("a", "q", True, False, {}))
    publish(committer, 3, "q", vhost="a")
    store.gate.set()
    await committer.flush()
    second = store.batches[1]
    assert [(e.vhost, e.queue, e.msg_id) for e in second.enqueues] == [("b", "q", 2), ("a", "q", 3)]
    assert [m.msg_id for m in second.messages] == [2, 3]  # message 1 went nowhere: never written
    assert second.marks == []
    assert [(r.vhost, r.queue, r.msg_id) for r in second.removals] == [("b", "q", 9)]
    assert isinstance(second.definitions[-2], VHostDelete)
    await committer.close()


async def test_settings_go_through_add_definition_in_order_and_leave_pending_messages_alone() -> None:
    store = GatedStore()
    committer = GroupCommitter(store)
    committer.add_definition(QueueRecord("a", "q", True, False, {}))
    publish(committer, 1, "q", vhost="a")
    user = SettingRecord("", "user", "guest", {"tags": ["administrator"]})
    permission = SettingRecord("a", "permission", "guest", {"configure": ".*", "write": ".*", "read": ".*"})
    committer.add_definition(user)
    committer.add_definition(permission)
    committer.add_definition(SettingDelete("a", "permission", "guest"))
    await committer.flush()
    (batch,) = store.batches
    assert batch.definitions[1:] == [user, permission, SettingDelete("a", "permission", "guest")]
    assert [(e.vhost, e.queue, e.msg_id) for e in batch.enqueues] == [("a", "q", 1)]
    await committer.close()
