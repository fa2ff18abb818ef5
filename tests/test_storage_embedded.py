"""Unit tests for the embedded segment-log store."""

from __future__ import annotations

import datetime
import decimal
import logging
import shutil
from pathlib import Path

import pytest

import amqpd.storage.embedded
from amqpd.storage import (
    Batch,
    BindingRecord,
    DeliveredMark,
    Enqueue,
    ExchangeDelete,
    ExchangeRecord,
    MessageRecord,
    QueueDelete,
    QueueRecord,
    Remove,
    SettingDelete,
    SettingRecord,
    Snapshot,
    VHostDelete,
    VHostRecord,
    open_store,
)
from amqpd.storage.base import FieldTable, net_batch
from amqpd.storage.codec import CodecError, Reader, decode_definition, encode_definition_bytes
from amqpd.storage.embedded import EmbeddedStore
from amqpd.storage.logformat import Interner, decode_entry, encode_entry
from amqpd.storage.memory import MemoryStore
from amqpd.storage.segments import GoodRecord, read_segment_header, scan

PROPS = b"\x10\x00\x02"  # property flags with delivery-mode set, delivery-mode = 2


def msg(msg_id: int, body: bytes = b"0123456789abcdef") -> MessageRecord:
    return MessageRecord(msg_id, "ex", "rk", PROPS, body, 1_700_000_000_000 + msg_id)


def publish(msg_id: int, *queues: str, body: bytes = b"0123456789abcdef", vhost: str = "/") -> Batch:
    return Batch(messages=[msg(msg_id, body)], enqueues=[Enqueue(vhost, q, msg_id) for q in queues])


def declare(*names: str, vhost: str = "/") -> Batch:
    return Batch(definitions=[QueueRecord(vhost, n, True, False, {}) for n in names])


def ids(messages: list[MessageRecord]) -> list[int]:
    return [m.msg_id for m in messages]


def records_of(path: Path) -> list[GoodRecord]:
    buf = path.read_bytes()
    header = read_segment_header(buf)
    assert header is not None
    return [r for r in scan(buf, header[0]) if isinstance(r, GoodRecord)]


async def reopen(store: EmbeddedStore, data_dir: Path, **kwargs: int) -> tuple[EmbeddedStore, list[int]]:
    await store.close()
    fresh = EmbeddedStore(str(data_dir), **kwargs)
    snap = await fresh.open()
    return fresh, [m.msg_id for m in snap.messages.get(("/", "q"), [])]


async def test_definitions_and_field_tables_round_trip_exactly(tmp_path: Path) -> None:
    args: FieldTable = {
        "s": "text",
        "i": 7,
        "big": 2**70,
        "f": 0.1,
        "t": True,
        "n": None,
        "b": b"\x00\xff",
        "ba": bytearray(b"x"),
        "d": decimal.Decimal("1.25"),
        "ts": datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.UTC),
        "nested": {"l": [1, "a", {"k": 2.5}]},
    }
    store = EmbeddedStore(str(tmp_path))
    await store.open()
    exchange = ExchangeRecord("/", "ex", "topic", True, False, False, args)
    binding = BindingRecord("/", "ex", "q", False, "a.#", args)
    await store.commit(Batch(definitions=[exchange, QueueRecord("/", "q", True, False, args), binding]))
    await store.close()
    snap = await EmbeddedStore(str(tmp_path)).open()
    assert snap.exchanges == {("/", "ex"): exchange}
    assert snap.queues[("/", "q")].arguments == args
    assert snap.bindings == [binding]


async def test_messages_come_back_in_order_with_their_wire_bytes(tmp_path: Path) -> None:
    store = EmbeddedStore(str(tmp_path))
    await store.open()
    await store.commit(declare("q"))
    for i in range(1, 6):
        await store.commit(publish(i, "q", body=bytes([i]) * i))
    await store.commit(Batch(removals=[Remove("/", "q", 2)]))
    store, ids = await reopen(store, tmp_path)
    assert ids == [1, 3, 4, 5]
    await store.close()
    snap = await EmbeddedStore(str(tmp_path)).open()
    assert snap.messages[("/", "q")][1] == msg(3, b"\x03\x03\x03")
    assert snap.next_message_id == 6


async def test_fanned_out_message_is_stored_once_and_shared(tmp_path: Path) -> None:
    store = EmbeddedStore(str(tmp_path))
    await store.open()
    await store.commit(declare("a", "b", "c"))
    size_before = store.head_path.stat().st_size
    await store.commit(publish(1, "a", "b", "c", body=b"x" * 100_000))
    assert store.head_path.stat().st_size - size_before < 101_000
    await store.close()
    snap = await EmbeddedStore(str(tmp_path)).open()
    assert snap.messages[("/", "a")][0] is snap.messages[("/", "b")][0] is snap.messages[("/", "c")][0]


async def test_segment_is_deleted_once_every_message_in_it_is_acked(tmp_path: Path) -> None:
    store = EmbeddedStore(str(tmp_path), segment_size=4096)
    await store.open()
    await store.commit(declare("q"))
    for i in range(1, 120):
        await store.commit(publish(i, "q"))
    first_segments = store.segment_paths()[:-1]
    assert len(first_segments) >= 3
    for i in range(1, 120):
        await store.commit(Batch(removals=[Remove("/", "q", i)]))
    await store.maintain()
    assert not any(p.exists() for p in first_segments)
    store, ids = await reopen(store, tmp_path)
    assert ids == []
    await store.close()
    snap = await EmbeddedStore(str(tmp_path)).open()
    assert set(snap.queues) == {("/", "q")}  # definitions survived the deletion of the segment that held them
    assert snap.next_message_id == 120  # ids are never handed out twice


async def test_sparse_segment_is_compacted_keeping_live_records(tmp_path: Path) -> None:
    store = EmbeddedStore(str(tmp_path), segment_size=64 * 1024, compact_below=0.5)
    await store.open()
    await store.commit(declare("q"))
    for i in range(1, 101):
        await store.commit(publish(i, "q", body=b"y" * 500))
    old = store.head_path
    await store.commit(Batch(marks=[DeliveredMark("/", "q", 100)]))
    store._segment_size = 1  # force a roll so `old` is no longer the head
    await store.commit(publish(101, "q"))
    assert store.head_path != old
    await store.commit(Batch(removals=[Remove("/", "q", i) for i in range(1, 101) if i % 10]))
    size_before = old.stat().st_size
    await store.maintain()
    assert old.stat().st_size < size_before / 4
    store, ids = await reopen(store, tmp_path)
    assert ids == [*range(10, 101, 10), 101]
    await store.close()
    snap = await EmbeddedStore(str(tmp_path)).open()
    assert snap.delivered[("/", "q")] == {100}


async def test_torn_tail_is_truncated_and_earlier_records_survive(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = EmbeddedStore(str(tmp_path))
    await store.open()
    await store.commit(declare("q"))
    for i in range(1, 4):
        await store.commit(publish(i, "q"))
    head = store.head_path
    await store.close()
    last = records_of(head)[-1]
    with head.open("r+b") as f:
        f.truncate(last.start + (last.end - last.start) // 2)
    caplog.set_level(logging.WARNING, logger="amqpd.storage")
    store = EmbeddedStore(str(tmp_path))
    snap = await store.open()
    assert [m.msg_id for m in snap.messages[("/", "q")]] == [1, 2]
    assert "torn tail" in caplog.text
    assert head.stat().st_size == last.start
    await store.commit(publish(4, "q"))  # appending after the repaired tail works
    store, ids = await reopen(store, tmp_path)
    assert ids == [1, 2, 4]
    await store.close()


@pytest.mark.parametrize("where", ["payload", "header"])
async def test_corrupt_middle_record_is_logged_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    store = EmbeddedStore(str(tmp_path))
    await store.open()
    await store.commit(declare("q"))
    for i in range(1, 6):
        await store.commit(publish(i, "q"))
    head = store.head_path
    await store.close()
    victim = records_of(head)[3]  # the record publishing message 3
    offset = victim.end - 2 if where == "payload" else victim.start + 5
    data = bytearray(head.read_bytes())
    data[offset] ^= 0xFF
    head.write_bytes(bytes(data))
    caplog.set_level(logging.WARNING, logger="amqpd.storage")
    snap = await EmbeddedStore(str(tmp_path)).open()
    assert [m.msg_id for m in snap.messages[("/", "q")]] == [1, 2, 4, 5]
    assert f"at offset {victim.start}" in caplog.text
    assert any(r.levelno == logging.ERROR and r.name == "amqpd.storage" for r in caplog.records)


async def test_each_batch_costs_exactly_one_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = EmbeddedStore(str(tmp_path))
    await store.open()
    await store.commit(declare("a", "b"))
    calls: list[int] = []
    real = amqpd.storage.embedded._fsync

    def counting_fsync(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(amqpd.storage.embedded, "_fsync", counting_fsync)
    batch = Batch(
        messages=[msg(i) for i in range(1, 500)],
        enqueues=[Enqueue("/", q, i) for i in range(1, 500) for q in ("a", "b")],
    )
    await store.commit(batch)
    assert len(calls) == 1
    await store.commit(Batch(removals=[Remove("/", "a", i) for i in range(1, 500)], marks=[DeliveredMark("/", "b", 1)]))
    assert len(calls) == 2
    await store.close()


async def test_deleted_then_redeclared_queue_does_not_get_old_messages_back(tmp_path: Path) -> None:
    store = EmbeddedStore(str(tmp_path))
    await store.open()
    await store.commit(declare("q"))
    await store.commit(publish(1, "q"))
    await store.commit(Batch(definitions=[QueueDelete("/", "q"), QueueRecord("/", "q", True, False, {"v": 2})]))
    await store.commit(publish(2, "q"))
    store, ids = await reopen(store, tmp_path)
    assert ids == [2]
    await store.close()


async def test_enqueue_into_undeclared_queue_is_ignored(tmp_path: Path) -> None:
    store = EmbeddedStore(str(tmp_path))
    await store.open()
    size = store.head_path.stat().st_size
    await store.commit(publish(1, "nowhere"))
    assert store.head_path.stat().st_size == size
    await store.close()


async def test_delivered_mark_survives_restart(tmp_path: Path) -> None:
    store = EmbeddedStore(str(tmp_path))
    await store.open()
    await store.commit(declare("q"))
    await store.commit(publish(1, "q"))
    await store.commit(publish(2, "q"))
    await store.commit(Batch(marks=[DeliveredMark("/", "q", 2)]))
    await store.close()
    snap = await EmbeddedStore(str(tmp_path)).open()
    assert snap.delivered[("/", "q")] == {2}


async def test_open_store_picks_backend_by_scheme(tmp_path: Path) -> None:
    assert isinstance(open_store("memory://", str(tmp_path)), MemoryStore)
    assert isinstance(open_store("", str(tmp_path)), EmbeddedStore)
    assert isinstance(open_store("file://", str(tmp_path)), EmbeddedStore)
    memory = open_store("memory://", str(tmp_path))
    await memory.commit(declare("q"))
    assert (await memory.open()).queues == {}


async def test_record_image_inside_a_body_is_never_replayed(tmp_path: Path) -> None:
    """Resynchronising after a damaged header must not pick up a record hidden in a message body."""
    fake = EmbeddedStore(str(tmp_path / "other"))
    await fake.open()
    await fake.commit(declare("evil"))
    evil_record = records_of(fake.head_path)[-1]
    evil_bytes = fake.head_path.read_bytes()[evil_record.start : evil_record.end]
    await fake.close()

    store = EmbeddedStore(str(tmp_path / "real"))
    await store.open()
    await store.commit(declare("q"))
    await store.commit(publish(1, "q", body=evil_bytes * 3))
    await store.commit(publish(2, "q"))
    head = store.head_path
    await store.close()
    victim = records_of(head)[1]
    data = bytearray(head.read_bytes())
    data[victim.start + 3] ^= 0x40  # damage the length field: the scanner has to resynchronise
    head.write_bytes(bytes(data))
    snap = await EmbeddedStore(str(tmp_path / "real")).open()
    assert set(snap.queues) == {("/", "q")}
    assert [m.msg_id for m in snap.messages[("/", "q")]] == [2]


async def test_interrupted_compaction_leaves_the_original_segment_in_charge(tmp_path: Path) -> None:
    store = EmbeddedStore(str(tmp_path))
    await store.open()
    await store.commit(declare("q"))
    await store.commit(publish(1, "q"))
    head = store.head_path
    await store.close()
    head.with_suffix(".tmp").write_bytes(b"half a compacted segment")
    snap = await EmbeddedStore(str(tmp_path)).open()
    assert [m.msg_id for m in snap.messages[("/", "q")]] == [1]
    assert not head.with_suffix(".tmp").exists()


async def test_fanned_out_message_outlives_its_ack_in_one_queue_through_compaction(tmp_path: Path) -> None:
    store = EmbeddedStore(str(tmp_path), segment_size=4096)
    await store.open()
    await store.commit(declare("a", "b"))
    await store.commit(publish(1, "a", "b", body=b"shared"))
    for i in range(2, 60):
        await store.commit(publish(i, "a"))
    await store.commit(Batch(removals=[Remove("/", "a", i) for i in range(1, 60)]))
    for _ in range(5):
        await store.maintain()
    await store.close()
    snap = await EmbeddedStore(str(tmp_path)).open()
    assert snap.messages[("/", "a")] == []
    assert snap.messages[("/", "b")] == [msg(1, b"shared")]


async def test_group_committer_over_the_embedded_store_end_to_end(tmp_path: Path) -> None:
    from amqpd.storage import GroupCommitter

    store = EmbeddedStore(str(tmp_path))
    await store.open()
    committer = GroupCommitter(store)
    committer.add_definition(QueueRecord("/", "q", True, False, {}))
    confirmed: list[int] = []
    for i in range(1, 1001):
        committer.add_message(msg(i))
        committer.add_enqueue("/", "q", i)
        committer.on_durable(lambda i=i: confirmed.append(i))  # type: ignore[misc]
        if i % 3 == 0:
            committer.add_remove("/", "q", i)
    await committer.flush()
    assert confirmed == list(range(1, 1001))
    await committer.close()
    snap = await EmbeddedStore(str(tmp_path)).open()
    assert [m.msg_id for m in snap.messages[("/", "q")]] == [i for i in range(1, 1001) if i % 3]


# ---- virtual hosts ---------------------------------------------------------------------------------------


def topology(vhost: str) -> Batch:
    return Batch(
        definitions=[
            ExchangeRecord(vhost, "ex", "direct", True, False, False, {"v": vhost}),
            QueueRecord(vhost, "q", True, False, {"v": vhost}),
            QueueRecord(vhost, "other", True, False, {}),
            BindingRecord(vhost, "ex", "q", False, "rk", {}),
            BindingRecord(vhost, "amq.direct", "ex", True, "rk", {}),
        ]
    )


async def test_same_names_in_two_vhosts_are_different_queues(tmp_path: Path) -> None:
    store = EmbeddedStore(str(tmp_path))
    await store.open()
    await store.commit(Batch(definitions=[*topology("a").definitions, *topology("b").definitions]))
    await store.commit(publish(1, "q", vhost="a"))
    await store.commit(publish(2, "q", vhost="b"))
    shared = Batch(messages=[msg(3)], enqueues=[Enqueue("a", "q", 3), Enqueue("b", "q", 3)])
    await store.commit(shared)
    await store.commit(Batch(removals=[Remove("a", "q", 2), Remove("b", "q", 3)], marks=[DeliveredMark("a", "q", 3)]))
    snap_before = await _reopen_snapshot(store, tmp_path)
    assert ids(snap_before.messages[("a", "q")]) == [1, 3]  # removing 2 from a's q did nothing: it was b's
    assert ids(snap_before.messages[("b", "q")]) == [2]
    assert snap_before.delivered == {("a", "q"): {3}, ("a", "other"): set(), ("b", "q"): set(), ("b", "other"): set()}

    store = EmbeddedStore(str(tmp_path))
    await store.open()
    await store.commit(Batch(definitions=[QueueDelete("a", "q"), ExchangeDelete("a", "ex")]))
    await store.close()
    snap = await EmbeddedStore(str(tmp_path)).open()
    assert set(snap.queues) == {("a", "other"), ("b", "q"), ("b", "other")}
    assert set(snap.exchanges) == {("b", "ex")}
    assert {(b.vhost, b.source, b.destination) for b in snap.bindings} == {("b", "ex", "q"), ("b", "amq.direct", "ex")}
    assert ids(snap.messages[("b", "q")]) == [2]
    assert ("a", "q") not in snap.messages
    assert snap.queues[("b", "q")].arguments == {"v": "b"}


async def _reopen_snapshot(store: EmbeddedStore, data_dir: Path) -> Snapshot:
    await store.close()
    return await EmbeddedStore(str(data_dir)).open()


async def test_vhost_records_round_trip_and_survive_checkpoints(tmp_path: Path) -> None:
    store = EmbeddedStore(str(tmp_path), segment_size=4096)
    await store.open()
    first = VHostRecord("a", {"description": "first", "tags": ["x", "y"], "default-queue-type": "classic"})
    await store.commit(Batch(definitions=[first, VHostRecord("b", {}), VHostRecord("gone", {})]))
    await store.commit(Batch(definitions=[VHostRecord("b", {"description": "second"}), VHostDelete("gone")]))
    await store.commit(declare("q"))
    first_segment = store.head_path
    for i in range(1, 120):  # enough to roll past the segment holding the definitions, then let it die
        await store.commit(publish(i, "q"))
    await store.commit(Batch(removals=[Remove("/", "q", i) for i in range(1, 120)]))
    await store.maintain()
    assert not first_segment.exists()
    await store.close()
    snap = await EmbeddedStore(str(tmp_path)).open()
    assert snap.vhosts == {"a": first, "b": VHostRecord("b", {"description": "second"})}
    assert set(snap.queues) == {("/", "q")}  # a vhost record is not needed for what is stored under it


async def test_vhost_delete_drops_everything_in_that_vhost_only(tmp_path: Path) -> None:
    store = EmbeddedStore(str(tmp_path), segment_size=4096)
    await store.open()
    await store.commit(Batch(definitions=[VHostRecord("a", {}), VHostRecord("b", {})]))
    await store.commit(Batch(definitions=[*topology("a").definitions, *topology("b").definitions]))
    await store.commit(Batch(messages=[msg(1)], enqueues=[Enqueue("a", "q", 1), Enqueue("b", "q", 1)]))
    a_only_segment = store.head_path
    for i in range(2, 80):
        await store.commit(publish(i, "q", "other", vhost="a"))
    await store.commit(Batch(marks=[DeliveredMark("a", "q", 2), DeliveredMark("b", "q", 1)]))
    store._segment_size = 1  # roll, so the segments written so far can be reclaimed
    await store.commit(publish(80, "q", vhost="b"))
    await store.commit(Batch(definitions=[VHostDelete("a")]))
    for _ in range(5):
        await store.maintain()
    assert store.head_path != a_only_segment
    store, _ = await reopen(store, tmp_path)
    await store.close()
    snap = await EmbeddedStore(str(tmp_path)).open()
    assert set(snap.vhosts) == {"b"}
    assert {k[0] for k in (*snap.queues, *snap.exchanges)} == {"b"}
    assert {b.vhost for b in snap.bindings} == {"b"}
    assert set(snap.messages) == {("b", "q"), ("b", "other")}
    assert ids(snap.messages[("b", "q")]) == [1, 80]  # the message it shared with a's q is still there
    assert snap.delivered[("b", "q")] == {1}
    # a's own messages were reclaimed: what is left on disk is about b's two messages, not a's 78
    assert sum(p.stat().st_size for p in EmbeddedStore(str(tmp_path)).segment_paths()) < 2000


async def test_redeclared_vhost_starts_empty(tmp_path: Path) -> None:
    store = EmbeddedStore(str(tmp_path))
    await store.open()
    await store.commit(Batch(definitions=[VHostRecord("a", {}), *topology("a").definitions]))
    await store.commit(publish(1, "q", vhost="a"))
    # deleted and declared again in one batch: the old queue's messages must not come back in the new one
    await store.commit(
        Batch(definitions=[VHostDelete("a"), VHostRecord("a", {"v": 2}), *declare("q", vhost="a").definitions])
    )
    await store.commit(publish(2, "q", vhost="a"))
    await store.close()
    snap = await EmbeddedStore(str(tmp_path)).open()
    assert snap.vhosts == {"a": VHostRecord("a", {"v": 2})}
    assert set(snap.queues) == {("a", "q")}
    assert snap.exchanges == {} and snap.bindings == []
    assert ids(snap.messages[("a", "q")]) == [2]


def test_a_mark_of_an_enqueue_removed_in_the_same_batch_is_dropped() -> None:
    net = net_batch(
        Batch(marks=[DeliveredMark("a", "q", 1), DeliveredMark("b", "q", 1)], removals=[Remove("a", "q", 1)])
    )
    assert net.marks == [DeliveredMark("b", "q", 1)]
    assert net.removals == [Remove("a", "q", 1)]


# ---- upgrade from the format before vhosts ----------------------------------------------------------------

FIXTURE_V1 = Path(__file__).parent / "fixtures" / "embedded_v1"


def record_tags(data_dir: Path) -> list[int]:
    return [bytes(r.payload[:1])[0] for p in sorted(data_dir.glob("*.seg")) for r in records_of(p)]


async def test_a_log_written_before_vhosts_loads_into_the_default_vhost(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(FIXTURE_V1, data_dir)
    assert set(record_tags(data_dir)) == {1, 2}  # version 1 batches and a version 1 checkpoint
    store = EmbeddedStore(str(data_dir))
    snap = await store.open()
    assert snap.vhosts == {}
    assert snap.settings == {}
    assert snap.exchanges == {
        ("/", "ex"): ExchangeRecord("/", "ex", "topic", True, False, False, {"alternate-exchange": "ae", "f": 0.1})
    }
    assert snap.queues == {
        ("/", "q"): QueueRecord("/", "q", True, False, {"x-max-length": 10}),
        ("/", "q2"): QueueRecord("/", "q2", True, True, {}),
    }
    assert snap.bindings == [BindingRecord("/", "ex", "q", False, "a.#", {})]
    expected = [MessageRecord(i, "ex", "rk", PROPS, b"body%d" % i, 1_700_000_000_000 + i) for i in (11, 12)]
    assert snap.messages == {("/", "q"): expected, ("/", "q2"): expected[:1]}
    assert snap.messages[("/", "q")][0] is snap.messages[("/", "q2")][0]
    assert snap.delivered == {("/", "q"): {12}, ("/", "q2"): set()}
    assert snap.next_message_id == 13

    # New records (version 2) go after the old ones in the old head segment; the mix replays.
    await store.commit(Batch(definitions=[VHostRecord("/", {"description": "default"}), *topology("b").definitions]))
    await store.commit(publish(13, "q", vhost="b"))
    await store.commit(publish(14, "q"))
    await store.commit(Batch(removals=[Remove("/", "q", 11)], marks=[DeliveredMark("/", "q2", 11)]))
    store, _ = await reopen(store, data_dir)
    assert {1, 2, 3} <= set(record_tags(data_dir))
    snap = await _reopen_snapshot(store, data_dir)
    assert ids(snap.messages[("/", "q")]) == [12, 14]
    assert ids(snap.messages[("/", "q2")]) == [11]
    assert ids(snap.messages[("b", "q")]) == [13]
    assert snap.delivered[("/", "q")] == {12} and snap.delivered[("/", "q2")] == {11}

    # Reclaiming space rewrites what is still live in the current format (here: compact every old segment).
    store = EmbeddedStore(str(data_dir), compact_below=1.01)
    await store.open()
    store._segment_size = 1
    await store.commit(Batch(removals=[Remove("/", "q", 12)]))
    for _ in range(5):
        await store.maintain()
    await store.close()
    assert set(record_tags(data_dir)) <= {3, 4}
    snap = await EmbeddedStore(str(data_dir)).open()
    assert set(snap.queues) == {("/", "q"), ("/", "q2"), ("b", "q"), ("b", "other")}
    assert snap.vhosts == {"/": VHostRecord("/", {"description": "default"})}
    assert ids(snap.messages[("/", "q")]) == [14]
    assert ids(snap.messages[("/", "q2")]) == [11]
    assert snap.next_message_id == 15


def test_version_1_and_version_2_records_decode_to_the_same_entries() -> None:
    interner = Interner()
    for path in sorted(FIXTURE_V1.glob("*.seg")):
        for record in records_of(path):
            old = decode_entry(bytes(record.payload), interner)
            new_bytes = bytes(encode_entry(old))
            assert new_bytes[0] == record.payload[0] + 2  # same kind, version 2
            assert decode_entry(new_bytes, interner) == old
            for _inc, definition in old.definitions:
                assert definition.vhost == "/"  # type: ignore[union-attr]
                assert decode_definition(Reader(encode_definition_bytes(definition))) == definition


# ---- settings ------------------------------------------------------------------------------------------------

USER: FieldTable = {"password_hash": "c2FsdA==", "hashing_algorithm": "sha256", "tags": ["administrator"], "n": 2}
PERMISSION: FieldTable = {"configure": ".*", "write": "^amq\\.", "read": "", "ok": True}
LIMITS: FieldTable = {"max-connections": 10, "max-queues": 2**40, "nested": {"l": [1, "a", {"b": False}], "e": {}}}


def some_settings() -> list[SettingRecord]:
    return [
        SettingRecord("", "user", "guest", USER),
        SettingRecord("a", "permission", "guest", PERMISSION),
        SettingRecord("a", "vhost-limits", "limits", LIMITS),
        SettingRecord("b", "permission", "guest", {"configure": "", "write": "", "read": ".*"}),
    ]


def settings_by_key(records: list[SettingRecord]) -> dict[tuple[str, str, str], SettingRecord]:
    return {(r.vhost, r.kind, r.name): r for r in records}


def test_setting_records_round_trip_through_the_definition_codec() -> None:
    for record in [*some_settings(), SettingDelete("", "user", "guest"), SettingDelete("a", "policy", "p")]:
        assert decode_definition(Reader(encode_definition_bytes(record))) == record


def test_a_version_1_record_cannot_hold_a_setting() -> None:
    raw = encode_definition_bytes(SettingRecord("a", "user", "guest", {}))
    with pytest.raises(CodecError):
        decode_definition(Reader(raw), 1)


async def test_settings_round_trip_exactly_through_a_restart(tmp_path: Path) -> None:
    store = EmbeddedStore(str(tmp_path))
    snap = await store.open()
    assert snap.settings == {}
    await store.commit(Batch(definitions=[VHostRecord("a", {}), *some_settings()]))
    snap = await _reopen_snapshot(store, tmp_path)
    assert snap.settings == settings_by_key(some_settings())
    assert snap.settings[("a", "vhost-limits", "limits")].value == LIMITS


async def test_a_setting_with_the_same_vhost_kind_and_name_replaces_the_old_one(tmp_path: Path) -> None:
    store = EmbeddedStore(str(tmp_path))
    await store.open()
    await store.commit(Batch(definitions=some_settings()))
    newer = SettingRecord("a", "permission", "guest", {"configure": "", "write": "", "read": ""})
    await store.commit(Batch(definitions=[newer]))
    snap = await _reopen_snapshot(store, tmp_path)
    assert snap.settings == settings_by_key([*some_settings(), newer])
    assert snap.settings[("a", "permission", "guest")] == newer
    assert snap.settings[("b", "permission", "guest")] == some_settings()[3]  # same kind and name, other vhost


async def test_setting_delete_removes_only_that_setting(tmp_path: Path) -> None:
    store = EmbeddedStore(str(tmp_path))
    await store.open()
    await store.commit(Batch(definitions=some_settings()))
    await store.commit(
        Batch(definitions=[SettingDelete("a", "permission", "guest"), SettingDelete("a", "user", "nobody")])
    )
    snap = await _reopen_snapshot(store, tmp_path)
    assert snap.settings == settings_by_key([s for s in some_settings() if s.vhost != "a" or s.kind != "permission"])


async def test_vhost_delete_drops_its_settings_and_keeps_broker_wide_and_other_vhosts_ones(tmp_path: Path) -> None:
    store = EmbeddedStore(str(tmp_path))
    await store.open()
    await store.commit(Batch(definitions=[VHostRecord("a", {}), VHostRecord("b", {}), *some_settings()]))
    # deleted and declared again in one batch: a setting stored after the delete is the vhost's only one
    again = SettingRecord("a", "permission", "admin", PERMISSION)
    await store.commit(Batch(definitions=[VHostDelete("a"), VHostRecord("a", {}), again]))
    await store.commit(Batch(definitions=[VHostDelete("")]))  # "" is no vhost: broker-wide settings stay
    snap = await _reopen_snapshot(store, tmp_path)
    assert snap.settings == settings_by_key([s for s in some_settings() if s.vhost != "a"] + [again])


@pytest.mark.parametrize("fate", ["deleted", "compacted"])
async def test_settings_survive_the_reclaim_of_the_segment_that_held_them(tmp_path: Path, fate: str) -> None:
    store = EmbeddedStore(str(tmp_path), segment_size=4096, compact_below=0.5)
    await store.open()
    await store.commit(Batch(definitions=[*some_settings(), SettingRecord("", "user", "old", {})]))
    await store.commit(declare("q"))
    first_segment = store.head_path
    for i in range(1, 60):
        await store.commit(publish(i, "q", body=b"z" * 300))
    assert store.head_path != first_segment
    newer = SettingRecord("", "user", "guest", {**USER, "tags": []})
    await store.commit(Batch(definitions=[SettingDelete("", "user", "old"), newer]))
    kept = {1} if fate == "compacted" else set()
    await store.commit(Batch(removals=[Remove("/", "q", i) for i in range(1, 60) if i not in kept]))
    size_before = first_segment.stat().st_size
    for _ in range(5):
        await store.maintain()
    if fate == "deleted":
        assert not first_segment.exists()
    else:
        assert first_segment.stat().st_size < size_before / 2
    expected = settings_by_key([*some_settings(), newer])
    store, ids = await reopen(store, tmp_path)
    assert ids == sorted(kept)
    snap = await _reopen_snapshot(store, tmp_path)
    assert snap.settings == expected
    # and once more after the checkpoint itself has been reclaimed: the next checkpoint carries them on
    store = EmbeddedStore(str(tmp_path), segment_size=1)
    await store.open()
    for i in range(100, 103):
        await store.commit(publish(i, "q"))
        await store.commit(Batch(removals=[Remove("/", "q", i)]))
    for _ in range(5):
        await store.maintain()
    snap = await _reopen_snapshot(store, tmp_path)
    assert snap.settings == expected


async def test_a_log_written_before_settings_opens_with_none_and_keeps_new_ones(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(FIXTURE_V1, data_dir)
    store = EmbeddedStore(str(data_dir), compact_below=1.01)
    snap = await store.open()
    assert snap.settings == {}
    assert set(snap.queues) == {("/", "q"), ("/", "q2")}
    await store.commit(Batch(definitions=some_settings()))
    store._segment_size = 1  # roll, then rewrite every old segment in the current format
    await store.commit(Batch(removals=[Remove("/", "q", 12)]))
    for _ in range(5):
        await store.maintain()
    await store.close()
    assert set(record_tags(data_dir)) <= {3, 4}
    snap = await EmbeddedStore(str(data_dir)).open()
    assert snap.settings == settings_by_key(some_settings())
    assert set(snap.queues) == {("/", "q"), ("/", "q2")}
    assert ids(snap.messages[("/", "q")]) == [11]


async def test_the_memory_store_takes_settings_and_keeps_nothing(tmp_path: Path) -> None:
    memory = open_store("memory://", str(tmp_path))
    await memory.commit(Batch(definitions=[*some_settings(), SettingDelete("", "user", "guest"), VHostDelete("a")]))
    assert (await memory.open()).settings == {}
