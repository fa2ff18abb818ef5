"""The embedded default store: an append-only log of checksummed batch records in numbered segment files.

One batch = one record = one write + one fdatasync, done on a worker thread so the event loop never blocks.
Liveness is tracked per segment in memory, which lets `maintain()` delete segments that hold nothing live and
rewrite sparse ones in place (same sequence number, so log order is kept). See storage/DESIGN.md.

Why a removal ("tombstone") record keeps its segment alive: replay would otherwise resurrect the enqueue it
cancels. It is needed exactly while the segment holding that enqueue still has the enqueue on disk, i.e. until
that segment is deleted or compacted; `_tombs` tracks that dependency.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import struct
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from amqpd.storage.base import (
    Batch,
    Definition,
    MessageRecord,
    QueueDelete,
    QueueRecord,
    ScopedName,
    Snapshot,
    StorageError,
    VHostDelete,
    net_batch,
)
from amqpd.storage.codec import CodecError
from amqpd.storage.definitions import DefinitionsState
from amqpd.storage.logformat import KIND_BATCH, KIND_CHECKPOINT, Interner, LogEntry, decode_entry, encode_entry
from amqpd.storage.segments import (
    SEGMENT_HEADER,
    SUFFIX,
    BadRegion,
    frame,
    new_segment_header,
    read_segment_header,
    scan,
    segment_name,
)

log = logging.getLogger("amqpd.storage")

DEFAULT_SEGMENT_SIZE = 32 * 1024 * 1024
_T = TypeVar("_T")
QueueMsg = tuple[int, int]  # (queue incarnation, message id)


def _fsync(fd: int) -> None:
    """The one durability call per batch; a module function so tests can count it."""
    os.fdatasync(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        _fsync(fd)
    finally:
        os.close(fd)


@dataclass(slots=True)
class _Head:
    seq: int
    fd: int
    salt: int
    size: int


class EmbeddedStore:
    def __init__(self, data_dir: str, *, segment_size: int = DEFAULT_SEGMENT_SIZE, compact_below: float = 0.5) -> None:
        self._dir = Path(data_dir)
        self._segment_size = segment_size
        self._compact_below = compact_below
        self._executor: ThreadPoolExecutor | None = None
        self._head: _Head | None = None
        self._failed: BaseException | None = None
        self._defs = DefinitionsState()
        self._inc_of: dict[ScopedName, int] = {}  # (vhost, queue) -> its current incarnation
        self._next_inc = 1
        self._max_msg_id = 0
        # inc -> msg id -> segment of the enqueue record
        self._live: dict[int, dict[int, int]] = {}
        # inc -> msg id -> segment of the mark record, or -1 when the flag sits in the enqueue record
        self._marks: dict[int, dict[int, int]] = {}
        # msg id -> segment of its record, for messages with at least one live enqueue. The values are the
        # segment number objects themselves (shared), so this costs one dict entry per message.
        self._msgs: dict[int, int] = {}
        self._shared: dict[int, int] = {}  # msg id -> live enqueue count, only while it is 2 or more
        self._fresh: dict[int, int] = {}  # messages of the record being applied that no enqueue holds yet
        self._seg_live: dict[int, int] = {}
        self._seg_items: dict[int, int] = {}
        self._seg_defs: set[int] = set()
        self._tombs: dict[QueueMsg, tuple[int, int]] = {}  # dead enqueue -> (its segment, removal's segment)
        self._tombs_by_seg: dict[int, set[QueueMsg]] = {}
        self._replay_records: dict[int, MessageRecord] | None = None
        self._max_seq = 0

    # ---- public API -------------------------------------------------------------------------------------

    async def open(self) -> Snapshot:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="amqpd-store")
        return await self._run(self._open_sync)

    async def commit(self, batch: Batch) -> None:
        self._check_usable()
        head = self._head
        assert head is not None, "open() first"
        if head.size >= self._segment_size:
            await self._run(self._roll)
        entry = self._apply_batch(batch)
        if entry is None:
            return
        await self._append(entry)

    async def maintain(self) -> None:
        """Delete segments with nothing live; compact at most one sparse segment per call."""
        self._check_usable()
        head = self._head
        assert head is not None, "open() first"
        dead = [s for s, n in self._seg_live.items() if n == 0 and s != head.seq]
        sparse = [
            s
            for s, n in self._seg_live.items()
            if s != head.seq and n > 0 and n < self._seg_items.get(s, 0) * self._compact_below
        ]
        victim = min(sparse, key=lambda s: self._seg_live[s] / max(1, self._seg_items[s]), default=None)
        touched = [*dead, *([victim] if victim is not None else [])]
        # A checkpoint first when definitions would go, or when the head holds no record yet: the highest
        # message id and incarnation must survive in some record.
        head_is_empty = head.size <= SEGMENT_HEADER.size
        if any(s in self._seg_defs for s in touched) or (touched and head_is_empty):
            await self._write_checkpoint()
        if dead:
            await self._run(lambda: self._delete_segments(dead))
        if victim is not None:
            await self._run(lambda: self._compact(victim))

    async def close(self) -> None:
        head, self._head = self._head, None
        if head is not None:
            os.close(head.fd)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    # ---- introspection for tests and the design note ------------------------------------------------------

    def segment_paths(self) -> list[Path]:
        return sorted(self._dir.glob("*" + SUFFIX))

    @property
    def head_path(self) -> Path:
        assert self._head is not None
        return self._dir / segment_name(self._head.seq)

    # ---- the write path ---------------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise StorageError("store failed earlier and is unusable") from self._failed

    async def _run(self, fn: Callable[[], _T]) -> _T:
        assert self._executor is not None, "open() first"
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
        except OSError as exc:
            # In-memory liveness already reflects the failed write; refuse to go on rather than guess.
            self._failed = exc
            raise StorageError(f"storage I/O failed: {exc}") from exc

    async def _append(self, entry: LogEntry) -> None:
        head = self._head
        assert head is not None
        data = frame(encode_entry(entry), head.salt)
        head.size += len(data)

        def write() -> None:
            _write_all(head.fd, data)
            _fsync(head.fd)

        await self._run(write)

    async def _write_checkpoint(self) -> None:
        head = self._head
        assert head is not None
        entry = LogEntry(KIND_CHECKPOINT, self._max_msg_id, self._next_inc)
        entry.definitions = [(self._incarnation_for(r), r) for r in self._defs.records()]
        await self._append(entry)
        # Every definition record older than this checkpoint is now redundant.
        self._seg_defs = {head.seq}

    def _incarnation_for(self, record: Definition) -> int:
        return self._inc_of[(record.vhost, record.name)] if isinstance(record, QueueRecord) else 0

    def _roll(self) -> None:
        old = self._head
        seq = self._max_seq = self._max_seq + 1
        header, salt = new_segment_header(seq)
        fd = os.open(self._dir / segment_name(seq), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        _write_all(fd, header)
        _fsync(fd)
        _sync_dir(self._dir)
        self._head = _Head(seq, fd, salt, len(header))
        self._seg_live.setdefault(seq, 0)
        self._seg_items.setdefault(seq, 0)
        if old is not None:
            os.close(old.fd)

    def _apply_batch(self, batch: Batch) -> LogEntry | None:
        assert self._head is not None
        seg = self._head.seq
        net = net_batch(batch)
        entry = LogEntry(KIND_BATCH, 0, 0)
        for op in net.definitions:
            entry.definitions.append((self._apply_definition(op, None), op))
        if entry.definitions:
            self._seg_defs.add(seg)
        self._fresh = fresh = {m.msg_id: seg for m in net.messages if m.msg_id not in self._msgs}
        if fresh:
            self._max_msg_id = max(self._max_msg_id, max(fresh))
        inc_of = self._inc_of
        for vhost, queue, msg_id, delivered in net.enqueues:
            inc = inc_of.get((vhost, queue))
            if inc is not None and self._enqueue(inc, msg_id, delivered, seg):
                entry.enqueues.append((inc, msg_id, delivered))
        self._fresh = {}
        for msg in net.messages:
            # Written only if an enqueue took it; otherwise every enqueue went to an unknown queue.
            if msg.msg_id in fresh and msg.msg_id in self._msgs:
                entry.messages.append(msg)
                self._seg_items[seg] += 1
                del fresh[msg.msg_id]
        for mark in net.marks:
            inc = inc_of.get((mark.vhost, mark.queue))
            if inc is not None and self._mark(inc, mark.msg_id, seg):
                entry.marks.append((inc, mark.msg_id))
        for removal in net.removals:
            inc = inc_of.get((removal.vhost, removal.queue))
            if inc is not None and self._remove(inc, removal.msg_id, seg):
                entry.removals.append((inc, removal.msg_id))
        if not entry.definitions and not entry.item_count():
            return None
        entry.max_msg_id = self._max_msg_id
        entry.next_incarnation = self._next_inc
        return entry

    # ---- state transitions shared by commit and replay ----------------------------------------------------

    def _apply_definition(self, op: Definition, replayed_inc: int | None) -> int:
        """Returns the queue incarnation the record carries (0 when not a queue declaration)."""
        inc = 0
        if isinstance(op, QueueRecord):
            key = (op.vhost, op.name)
            current = self._inc_of.get(key)
            if replayed_inc is None:
                inc = current if current is not None else self._new_incarnation()
            else:
                inc = replayed_inc
                if current is not None and current != inc:
                    self._kill_queue(current)  # the delete between them was lost
                self._next_inc = max(self._next_inc, inc + 1)
            self._inc_of[key] = inc
        elif isinstance(op, QueueDelete):
            dropped = self._inc_of.pop((op.vhost, op.name), None)
            if dropped is not None:
                self._kill_queue(dropped)
        elif isinstance(op, VHostDelete):
            for key in [k for k in self._inc_of if k[0] == op.name]:
                self._kill_queue(self._inc_of.pop(key))
        self._defs.apply(op)
        return inc

    def _new_incarnation(self) -> int:
        inc = self._next_inc
        self._next_inc += 1
        return inc

    def _enqueue(self, inc: int, msg_id: int, delivered: bool, seg: int) -> bool:
        queue = self._live.setdefault(inc, {})
        if msg_id in queue:
            return False
        msg_seg = self._msgs.get(msg_id)
        if msg_seg is None:
            msg_seg = self._fresh.get(msg_id)
            if msg_seg is None:
                return False  # its message record is unknown (never written, or lost to corruption)
            self._msgs[msg_id] = msg_seg
            self._seg_live[msg_seg] += 1
        else:
            self._shared[msg_id] = self._shared.get(msg_id, 1) + 1
        queue[msg_id] = seg
        self._seg_live[seg] += 1
        self._seg_items[seg] += 1
        if delivered:
            self._marks.setdefault(inc, {})[msg_id] = -1
        return True

    def _mark(self, inc: int, msg_id: int, seg: int) -> bool:
        marks = self._marks.setdefault(inc, {})
        if msg_id not in self._live.get(inc, {}) or msg_id in marks:
            return False
        marks[msg_id] = seg
        self._seg_live[seg] += 1
        self._seg_items[seg] += 1
        return True

    def _remove(self, inc: int, msg_id: int, seg: int) -> bool:
        enq_seg = self._live.get(inc, {}).pop(msg_id, None)
        if enq_seg is None:
            return False
        self._seg_items[seg] += 1
        self._kill_enqueue(inc, msg_id, enq_seg)
        if enq_seg != seg:
            key = (inc, msg_id)
            self._tombs[key] = (enq_seg, seg)
            self._tombs_by_seg.setdefault(enq_seg, set()).add(key)
            self._seg_live[seg] += 1
        return True

    def _kill_enqueue(self, inc: int, msg_id: int, enq_seg: int) -> None:
        """The enqueue is already out of `_live`; release what it held."""
        self._seg_live[enq_seg] -= 1
        marks = self._marks.get(inc)
        mark_seg = marks.pop(msg_id, None) if marks is not None else None
        if mark_seg is not None and mark_seg >= 0:
            self._seg_live[mark_seg] -= 1
        refs = self._shared.get(msg_id)
        if refs is not None:
            if refs > 2:
                self._shared[msg_id] = refs - 1
            else:
                del self._shared[msg_id]
            return
        self._seg_live[self._msgs.pop(msg_id)] -= 1
        if self._replay_records is not None:
            self._replay_records.pop(msg_id, None)

    def _kill_queue(self, inc: int) -> None:
        for msg_id, enq_seg in self._live.pop(inc, {}).items():
            self._kill_enqueue(inc, msg_id, enq_seg)
        self._marks.pop(inc, None)

    def _forget_segment(self, seq: int) -> None:
        """`seq` no longer holds any dead enqueue on disk: the tombstones pointing at it are now redundant."""
        for key in self._tombs_by_seg.pop(seq, set()):
            _enq_seg, rem_seg = self._tombs.pop(key)
            self._seg_live[rem_seg] -= 1

    # ---- space reclaim (worker thread) ----------------------------------------------------------------------

    def _delete_segments(self, seqs: list[int]) -> None:
        for seq in seqs:
            (self._dir / segment_name(seq)).unlink()
        # The unlinks must be durable before anything relies on them (tombstones elsewhere may be compacted).
        _sync_dir(self._dir)
        for seq in seqs:
            self._forget_segment(seq)
            del self._seg_live[seq]
            self._seg_items.pop(seq, None)
            self._seg_defs.discard(seq)
            log.debug("deleted segment %d: nothing live", seq)

    def _compact(self, seq: int) -> None:
        path = self._dir / segment_name(seq)
        buf = path.read_bytes()
        parsed = read_segment_header(buf)
        if parsed is None:
            return
        salt, _ = parsed
        kept = LogEntry(KIND_BATCH, self._max_msg_id, self._next_inc)
        interner = Interner()
        for item in scan(buf, salt):
            if isinstance(item, BadRegion):
                continue
            try:
                entry = decode_entry(bytes(item.payload), interner)
            except (CodecError, struct.error, UnicodeDecodeError):
                continue
            self._keep_live(entry, seq, kept)
        header, new_salt = new_segment_header(seq)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, header + frame(encode_entry(kept), new_salt))
            _fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _sync_dir(self._dir)
        before = self._seg_items.get(seq, 0)
        self._seg_items[seq] = kept.item_count()
        self._forget_segment(seq)
        log.info("compacted segment %d: %d of %d records kept", seq, kept.item_count(), before)

    def _keep_live(self, entry: LogEntry, seq: int, kept: LogEntry) -> None:
        if seq in self._seg_defs:  # maintain() checkpoints first, so this is only a safety net
            kept.definitions.extend(entry.definitions)
        for msg in entry.messages:
            if self._msgs.get(msg.msg_id) == seq:
                kept.messages.append(msg)
        for inc, msg_id, _delivered in entry.enqueues:
            if self._live.get(inc, {}).get(msg_id) == seq:
                kept.enqueues.append((inc, msg_id, self._marks.get(inc, {}).get(msg_id) == -1))
        for inc, msg_id in entry.marks:
            if self._marks.get(inc, {}).get(msg_id) == seq:
                kept.marks.append((inc, msg_id))
        for inc, msg_id in entry.removals:
            tomb = self._tombs.get((inc, msg_id))
            if tomb is not None and tomb[1] == seq:
                kept.removals.append((inc, msg_id))

    # ---- replay (worker thread) ---------------------------------------------------------------------------

    def _open_sync(self) -> Snapshot:
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create data directory {self._dir}: {exc}") from exc
        for leftover in self._dir.glob("*.tmp"):  # an interrupted compaction; the original is intact
            leftover.unlink()
        self._replay_records = {}
        paths = self.segment_paths()
        # Replay allocates millions of long-lived, acyclic objects; the cyclic GC would rescan them again and
        # again for nothing.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            for index, path in enumerate(paths):
                self._replay_segment(path, is_last=index == len(paths) - 1)
            current = set(self._inc_of.values())
            for inc in [i for i in self._live if i not in current]:
                self._kill_queue(inc)
            snapshot = self._build_snapshot()
        finally:
            if gc_was_enabled:
                gc.enable()
        self._replay_records = None
        if self._head is None:
            self._roll()
        return snapshot

    def _replay_segment(self, path: Path, *, is_last: bool) -> None:
        buf = path.read_bytes()
        parsed = read_segment_header(buf)
        if path.stem.isdigit():
            self._max_seq = max(self._max_seq, int(path.stem))
        if parsed is None:
            if is_last and len(buf) < 64:
                log.warning("removing %s: segment creation was interrupted", path.name)
                path.unlink()
            else:
                log.error("skipping %s: not a segment file (bad header)", path.name)
            return
        salt, seq = parsed
        self._seg_live.setdefault(seq, 0)
        self._seg_items.setdefault(seq, 0)
        interner = Interner()
        good_end = 0
        bad: list[BadRegion] = []
        for item in scan(buf, salt):
            if isinstance(item, BadRegion):
                bad.append(item)
                continue
            try:
                entry = decode_entry(bytes(item.payload), interner)
            except (CodecError, struct.error, UnicodeDecodeError) as exc:
                bad.append(BadRegion(item.start, item.end, f"undecodable record ({exc})"))
                continue
            self._replay_entry(entry, seq)
            good_end = item.end
        size = len(buf)
        if is_last and bad and bad[-1].end == size and bad[-1].start >= good_end:
            torn = bad.pop()
            log.warning(
                "%s: torn tail (%s), truncating %d bytes at offset %d",
                path.name,
                torn.reason,
                size - torn.start,
                torn.start,
            )
            os.truncate(path, torn.start)
            size = torn.start
        for region in bad:
            log.error(
                "%s: skipped %d bytes at offset %d: %s",
                path.name,
                region.end - region.start,
                region.start,
                region.reason,
            )
        if is_last:
            fd = os.open(path, os.O_WRONLY)
            os.lseek(fd, size, os.SEEK_SET)
            _fsync(fd)
            self._head = _Head(seq, fd, salt, size)

    def _replay_entry(self, entry: LogEntry, seq: int) -> None:
        self._max_msg_id = max(self._max_msg_id, entry.max_msg_id)
        self._next_inc = max(self._next_inc, entry.next_incarnation)
        if entry.kind == KIND_CHECKPOINT:
            self._defs = DefinitionsState()
            survivors = {inc for inc, d in entry.definitions if isinstance(d, QueueRecord)}
            self._inc_of = {}
            for inc in [i for i in self._live if i not in survivors]:
                self._kill_queue(inc)
            self._seg_defs = {s for s in self._seg_defs if s >= seq}
        for inc, op in entry.definitions:
            self._apply_definition(op, inc if isinstance(op, QueueRecord) else None)
        if entry.definitions:
            self._seg_defs.add(seq)
        records = self._replay_records
        assert records is not None
        fresh: dict[int, int] = {}
        for msg in entry.messages:  # (the record header already carries the highest id)
            if msg.msg_id not in self._msgs:
                fresh[msg.msg_id] = seq
                records[msg.msg_id] = msg
        self._fresh = fresh
        self._seg_items[seq] += len(entry.messages)
        for inc, msg_id, delivered in entry.enqueues:
            record = records.get(msg_id)
            # Key the indexes with the record's own int object: one int per message, not one per index.
            self._enqueue(inc, record.msg_id if record is not None else msg_id, delivered, seq)
        self._fresh = {}
        for msg_id in fresh:  # a message no enqueue took is dead at once
            if msg_id not in self._msgs:
                records.pop(msg_id, None)
        for inc, msg_id in entry.marks:
            if not self._mark(inc, msg_id, seq):
                self._seg_items[seq] += 1
        for inc, msg_id in entry.removals:
            if not self._remove(inc, msg_id, seq):
                self._seg_items[seq] += 1  # on disk but cancels nothing any more

    def _build_snapshot(self) -> Snapshot:
        records = self._replay_records
        assert records is not None
        snapshot = Snapshot(next_message_id=self._max_msg_id + 1)
        self._defs.fill(snapshot)
        for key, inc in self._inc_of.items():
            ids = sorted(self._live.get(inc, {}))
            snapshot.messages[key] = [records[i] for i in ids]
            marks = self._marks.get(inc)
            snapshot.delivered[key] = set(marks) if marks else set()
        return snapshot
