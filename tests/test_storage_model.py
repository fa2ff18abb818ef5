"""The embedded store against an in-memory model through random commits, crashes, restarts and compactions.

Queues live in several vhosts, with the same queue names in each, and vhosts are declared and deleted too, as
are settings (in those vhosts and broker-wide).

Crashes are simulated on a closed store: a torn tail (the last batch record cut at a random byte) must lose
exactly that batch; a flipped byte inside an older batch record may lose that batch's effects (its enqueues
may be missing, its acks may be undone, its marks may be missing) but nothing else.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from amqpd.storage import (
    Batch,
    DeliveredMark,
    Enqueue,
    MessageRecord,
    QueueDelete,
    QueueRecord,
    Remove,
    SettingDelete,
    SettingKey,
    SettingRecord,
    Snapshot,
    VHostDelete,
    VHostRecord,
)
from amqpd.storage.embedded import EmbeddedStore

VHOSTS = ("/", "x", "y")
QUEUES = tuple((vhost, name) for vhost in VHOSTS for name in ("a", "b"))
SETTINGS = tuple((vhost, kind, name) for vhost in ("", *VHOSTS) for kind in ("user", "permission") for name in "gh")
Queue = tuple[str, str]  # (vhost, name)
Key = tuple[str, str, int]  # (vhost, queue, message id)


@dataclass
class Model:
    queues: set[Queue] = field(default_factory=set)
    enqueued: dict[Key, MessageRecord] = field(default_factory=dict)
    delivered: set[Key] = field(default_factory=set)
    vhosts: dict[str, VHostRecord] = field(default_factory=dict)
    settings: dict[SettingKey, SettingRecord] = field(default_factory=dict)

    def copy(self) -> Model:
        return Model(set(self.queues), dict(self.enqueued), set(self.delivered), dict(self.vhosts), dict(self.settings))

    def drop(self, doomed: set[Queue]) -> None:
        self.queues -= doomed
        for key in [k for k in self.enqueued if (k[0], k[1]) in doomed]:
            del self.enqueued[key]
            self.delivered.discard(key)

    @classmethod
    def from_snapshot(cls, snap: Snapshot) -> Model:
        model = cls(set(snap.queues), vhosts=dict(snap.vhosts), settings=dict(snap.settings))
        for (vhost, queue), records in snap.messages.items():
            for record in records:
                model.enqueued[(vhost, queue, record.msg_id)] = record
            model.delivered |= {(vhost, queue, i) for i in snap.delivered.get((vhost, queue), set())}
        return model


@dataclass
class Written:
    """One batch record on disk: where it is and what it did."""

    path: Path
    start: int
    end: int
    added: set[Key]
    removed: set[Key]
    marked: set[Key]
    has_definitions: bool
    before: Model


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="amqpd-model-"))
        self.model = Model()
        self.written: list[Written] = []
        self.next_id = 1
        self.store: EmbeddedStore

    def run(self, coro: object) -> object:
        return self.loop.run_until_complete(coro)  # type: ignore[arg-type]

    @initialize()
    def start(self) -> None:
        self.store = EmbeddedStore(str(self.dir), segment_size=2048)
        snap = self.run(self.store.open())
        assert isinstance(snap, Snapshot) and not snap.queues

    def teardown(self) -> None:
        try:
            self.run(self.store.close())
        finally:
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    # ---- commits ------------------------------------------------------------------------------------------

    def commit(self, batch: Batch, after: Model, added: set[Key], removed: set[Key], marked: set[Key]) -> None:
        head = self.store.head_path
        size_before = head.stat().st_size if head.exists() else 0
        self.run(self.store.commit(batch))
        head_after = self.store.head_path
        if head_after != head:
            size_before = 20  # rolled: the record follows the new segment's header
        size_after = head_after.stat().st_size
        before, self.model = self.model, after
        if size_after > size_before:
            has_definitions = bool(batch.definitions)
            self.written.append(
                Written(head_after, size_before, size_after, added, removed, marked, has_definitions, before)
            )
        else:
            assert after == before, "a commit that wrote nothing changed the model"

    @rule(queue=st.sampled_from(QUEUES), delete=st.booleans())
    def define(self, queue: Queue, delete: bool) -> None:
        after = self.model.copy()
        vhost, name = queue
        if delete:
            op: QueueRecord | QueueDelete = QueueDelete(vhost, name)
            after.drop({queue})
        else:
            op = QueueRecord(vhost, name, True, False, {"x-n": len(name)})
            after.queues.add(queue)
        self.commit(Batch(definitions=[op]), after, set(), set(), set())

    @rule(vhost=st.sampled_from(VHOSTS), delete=st.booleans(), tag=st.integers(0, 3))
    def define_vhost(self, vhost: str, delete: bool, tag: int) -> None:
        after = self.model.copy()
        if delete:
            op: VHostRecord | VHostDelete = VHostDelete(vhost)
            after.vhosts.pop(vhost, None)
            after.drop({q for q in after.queues if q[0] == vhost})
            after.settings = {k: v for k, v in after.settings.items() if k[0] != vhost}
        else:
            op = VHostRecord(vhost, {"description": f"v{tag}", "tags": ["t"] * tag})
            after.vhosts[vhost] = op
        self.commit(Batch(definitions=[op]), after, set(), set(), set())

    @rule(key=st.sampled_from(SETTINGS), delete=st.booleans(), n=st.integers(0, 3))
    def define_setting(self, key: SettingKey, delete: bool, n: int) -> None:
        after = self.model.copy()
        if delete:
            op: SettingRecord | SettingDelete = SettingDelete(*key)
            after.settings.pop(key, None)
        else:
            op = SettingRecord(*key, {"n": n, "on": bool(n % 2), "tags": ["t"] * n, "m": {"k": [n, str(n)]}})
            after.settings[key] = op
        self.commit(Batch(definitions=[op]), after, set(), set(), set())

    @rule(data=st.data())
    def traffic(self, data: st.DataObject) -> None:
        after = self.model.copy()
        batch = Batch()
        added: set[Key] = set()
        for _ in range(data.draw(st.integers(0, 4), label="publishes")):
            targets = data.draw(st.sets(st.sampled_from(QUEUES)), label="targets")
            record = MessageRecord(
                self.next_id, "ex", "k", b"\x90\x00", data.draw(st.binary(max_size=300)), self.next_id
            )
            self.next_id += 1
            batch.messages.append(record)
            for vhost, queue in sorted(targets):
                batch.enqueues.append(Enqueue(vhost, queue, record.msg_id))
                if (vhost, queue) in after.queues:
                    after.enqueued[(vhost, queue, record.msg_id)] = record
                    added.add((vhost, queue, record.msg_id))
        live = sorted(after.enqueued)
        removed: set[Key] = set()
        marked: set[Key] = set()
        if live:
            for key in data.draw(st.lists(st.sampled_from(live), max_size=6, unique=True), label="acks"):
                batch.removals.append(Remove(*key))
                del after.enqueued[key]
                after.delivered.discard(key)
                removed.add(key)
            for key in data.draw(st.lists(st.sampled_from(live), max_size=2, unique=True), label="marks"):
                batch.marks.append(DeliveredMark(*key))
                if key in after.enqueued:
                    after.delivered.add(key)
                    marked.add(key)
        # a removal listed after a mark of the same enqueue wins: batches apply marks before removals
        self.commit(batch, after, added - removed, removed - added, marked - removed)

    # ---- restarts, crashes, upkeep --------------------------------------------------------------------------

    def reopen(self) -> Snapshot:
        self.run(self.store.close())
        self.store = EmbeddedStore(str(self.dir), segment_size=2048)
        snap = self.run(self.store.open())
        assert isinstance(snap, Snapshot)
        for records in snap.messages.values():
            assert [r.msg_id for r in records] == sorted(r.msg_id for r in records)
        assert snap.next_message_id > max((r.msg_id for rs in snap.messages.values() for r in rs), default=0)
        self.written = []
        return snap

    @rule()
    def restart(self) -> None:
        assert Model.from_snapshot(self.reopen()) == self.model

    @rule()
    def compact(self) -> None:
        for _ in range(3):
            self.run(self.store.maintain())
        self.written = []  # records may have been rewritten or removed

    @precondition(lambda self: bool(self.written) and self.written[-1].end == self.written[-1].path.stat().st_size)
    @rule(data=st.data())
    def crash_with_torn_tail(self, data: st.DataObject) -> None:
        last = self.written[-1]
        cut = data.draw(st.integers(last.start, last.end - 1), label="cut at")
        self.run(self.store.close())
        with last.path.open("r+b") as f:
            f.truncate(cut)
        self.store = EmbeddedStore(str(self.dir), segment_size=2048)
        self.run(self.store.open())  # repairs the tail; reopen() then checks the repaired log replays the same
        self.model = last.before
        assert Model.from_snapshot(self.reopen()) == self.model

    @precondition(lambda self: any(not w.has_definitions for w in self.written))
    @rule(data=st.data())
    def crash_with_flipped_byte(self, data: st.DataObject) -> None:
        victim = data.draw(st.sampled_from([w for w in self.written if not w.has_definitions]), label="record")
        offset = data.draw(st.integers(victim.start, victim.end - 1), label="offset")
        self.run(self.store.close())
        raw = bytearray(victim.path.read_bytes())
        raw[offset] ^= data.draw(st.integers(1, 255), label="xor")
        victim.path.write_bytes(bytes(raw))
        self.store = EmbeddedStore(str(self.dir), segment_size=2048)
        self.run(self.store.open())
        got = Model.from_snapshot(self.reopen())
        truth = self.model
        assert got.queues == truth.queues
        assert got.vhosts == truth.vhosts
        assert got.settings == truth.settings
        for key in truth.enqueued:
            assert key in got.enqueued or key in victim.added, f"lost {key} not written by the damaged record"
        for key, record in got.enqueued.items():
            assert truth.enqueued.get(key, record) == record
            assert key in truth.enqueued or key in victim.removed, f"{key} came back though its ack is intact"
            if key in truth.enqueued and key not in victim.marked:
                assert (key in got.delivered) == (key in truth.delivered)
        self.model = got

    @invariant()
    def model_is_consistent(self) -> None:
        assert all((k[0], k[1]) in self.model.queues for k in self.model.enqueued)


StoreMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestStoreAgainstModel = StoreMachine.TestCase
