"""`postgresql://`: the same contract over PostgreSQL, through asyncpg (imported lazily).

A whole batch is ONE statement: data-modifying CTEs fed by arrays (`unnest`). A single statement is its own
transaction, so a batch is atomic, and it costs one round trip however many records it holds.

All CTEs of one statement see the same snapshot and must not touch the same row twice, so the batch is first
reduced in Python: definitions to their net effect per key (computed against the in-memory topology, which is
small), enqueues/removals/marks through `net_batch`, and marks/removals of queues deleted in the same batch
dropped (the queue delete removes those rows anyway).

Message rows are deleted lazily by `maintain()` once no enqueue refers to them; replay joins through the
enqueues, so an orphan row is never recovered.
"""

from __future__ import annotations

from typing import Any

from storage.base import Batch, MessageRecord, QueueDelete, Snapshot, StorageError, net_batch
from storage.codec import Reader, decode_definition, encode_definition_bytes, encode_value
from storage.definitions import BindingKey, DefinitionsState, Touched

_SCHEMA = """
CREATE TABLE IF NOT EXISTS amqpd_definitions (
    kind text NOT NULL, key bytea NOT NULL, record bytea NOT NULL, PRIMARY KEY (kind, key));
CREATE TABLE IF NOT EXISTS amqpd_messages (
    id bigint PRIMARY KEY, exchange text NOT NULL, routing_key text NOT NULL,
    properties bytea NOT NULL, body bytea NOT NULL, timestamp_ms bigint NOT NULL);
CREATE TABLE IF NOT EXISTS amqpd_enqueues (
    queue text NOT NULL, msg_id bigint NOT NULL, delivered boolean NOT NULL, PRIMARY KEY (queue, msg_id));
CREATE INDEX IF NOT EXISTS amqpd_enqueues_msg ON amqpd_enqueues (msg_id);
CREATE TABLE IF NOT EXISTS amqpd_meta (k text PRIMARY KEY, v bigint NOT NULL);
"""

_COMMIT = """
WITH
d_del AS (DELETE FROM amqpd_definitions d USING unnest($1::text[], $2::bytea[]) AS x(kind, key)
          WHERE d.kind = x.kind AND d.key = x.key),
d_put AS (INSERT INTO amqpd_definitions SELECT * FROM unnest($3::text[], $4::bytea[], $5::bytea[])
          ON CONFLICT (kind, key) DO UPDATE SET record = EXCLUDED.record),
q_del AS (DELETE FROM amqpd_enqueues WHERE queue = ANY($6::text[])),
m_put AS (INSERT INTO amqpd_messages
          SELECT * FROM unnest($7::bigint[], $8::text[], $9::text[], $10::bytea[], $11::bytea[], $12::bigint[])
          ON CONFLICT (id) DO NOTHING),
e_put AS (INSERT INTO amqpd_enqueues SELECT * FROM unnest($13::text[], $14::bigint[], $15::boolean[])
          ON CONFLICT (queue, msg_id) DO NOTHING),
e_mark AS (UPDATE amqpd_enqueues e SET delivered = true FROM unnest($16::text[], $17::bigint[]) AS x(q, i)
           WHERE e.queue = x.q AND e.msg_id = x.i),
e_del AS (DELETE FROM amqpd_enqueues e USING unnest($18::text[], $19::bigint[]) AS x(q, i)
          WHERE e.queue = x.q AND e.msg_id = x.i),
meta AS (INSERT INTO amqpd_meta VALUES ('max_msg_id', $20::bigint)
         ON CONFLICT (k) DO UPDATE SET v = GREATEST(amqpd_meta.v, EXCLUDED.v))
SELECT 1
"""

_DELETE_ORPHANS = """
DELETE FROM amqpd_messages WHERE id IN (
    SELECT m.id FROM amqpd_messages m
    WHERE NOT EXISTS (SELECT 1 FROM amqpd_enqueues e WHERE e.msg_id = m.id) LIMIT $1)
"""

_ORPHAN_SWEEP_EVERY = 1000  # removals between orphan sweeps
_ORPHAN_SWEEP_LIMIT = 50_000


def _binding_db_key(key: BindingKey) -> bytes:
    out = bytearray()
    encode_value(out, [key[0], key[1], key[2], key[3]])
    return bytes(out) + key[4]


class PostgresStore:
    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: Any = None
        self._defs = DefinitionsState()
        self._max_msg_id = 0
        self._removed_since_sweep = 0

    async def open(self) -> Snapshot:
        try:
            import asyncpg  # optional dependency: imported only when this store is used
        except ImportError as exc:
            raise StorageError("postgresql:// needs asyncpg (pip install amqpd[postgres])") from exc
        try:
            self._conn = await asyncpg.connect(self._url)
        except (OSError, asyncpg.PostgresError) as exc:
            raise StorageError(f"cannot connect to PostgreSQL: {exc}") from exc
        conn = self._conn
        await conn.execute(_SCHEMA)
        rows = await conn.fetch("SELECT kind, record FROM amqpd_definitions ORDER BY kind DESC")
        for row in rows:  # kind X, Q, B sorted descending: exchanges, queues, then bindings
            self._defs.apply(decode_definition(Reader(bytes(row["record"]))))
        queues = list(self._defs.queues)
        await conn.execute("DELETE FROM amqpd_enqueues WHERE queue <> ALL($1::text[])", queues)
        await conn.execute(_DELETE_ORPHANS, 2**62)
        snapshot = Snapshot()
        self._defs.fill(snapshot)
        for name in queues:
            snapshot.messages[name] = []
            snapshot.delivered[name] = set()
        records: dict[int, MessageRecord] = {}

        rows = await conn.fetch(
            "SELECT e.queue, e.delivered, m.* FROM amqpd_enqueues e JOIN amqpd_messages m ON m.id = e.msg_id"
            " ORDER BY e.queue, m.id"
        )
        for row in rows:
            msg_id = row["id"]
            record = records.get(msg_id)
            if record is None:
                record = records[msg_id] = MessageRecord(
                    msg_id,
                    row["exchange"],
                    row["routing_key"],
                    bytes(row["properties"]),
                    bytes(row["body"]),
                    row["timestamp_ms"],
                )
            snapshot.messages[row["queue"]].append(record)
            if row["delivered"]:
                snapshot.delivered[row["queue"]].add(msg_id)
        meta = await conn.fetchval("SELECT v FROM amqpd_meta WHERE k = 'max_msg_id'")
        biggest = await conn.fetchval("SELECT max(id) FROM amqpd_messages")
        self._max_msg_id = max(meta or 0, biggest or 0)
        snapshot.next_message_id = self._max_msg_id + 1
        return snapshot

    async def commit(self, batch: Batch) -> None:
        assert self._conn is not None, "open() first"
        net = net_batch(batch)
        touched = Touched()
        dropped_queues: set[str] = set()
        for op in net.definitions:
            if isinstance(op, QueueDelete):
                dropped_queues.add(op.name)
            self._defs.apply(op, touched)
        gone_kind: list[str] = []
        gone_key: list[bytes] = []
        put_kind: list[str] = []
        put_key: list[bytes] = []
        put_record: list[bytes] = []

        def diff(kind: str, key: bytes, current: Any) -> None:
            if current is None:
                gone_kind.append(kind)
                gone_key.append(key)
            else:
                put_kind.append(kind)
                put_key.append(key)
                put_record.append(encode_definition_bytes(current))

        for name in touched.exchanges:
            diff("X", name.encode(), self._defs.exchanges.get(name))
        for name in touched.queues:
            diff("Q", name.encode(), self._defs.queues.get(name))
        for bkey in touched.bindings:
            diff("B", _binding_db_key(bkey), self._defs.bindings.get(bkey))

        known = self._defs.queues
        enqueues = [e for e in net.enqueues if e[0] in known]
        wanted = {msg_id for _q, msg_id, _d in enqueues}
        messages = [m for m in net.messages if m.msg_id in wanted]
        marks = [m for m in net.marks if m.queue not in dropped_queues]
        removals = [r for r in net.removals if r.queue not in dropped_queues]
        if messages:
            self._max_msg_id = max(self._max_msg_id, max(m.msg_id for m in messages))
        if not (gone_key or put_key or dropped_queues or enqueues or marks or removals):
            return
        self._removed_since_sweep += len(removals) + len(dropped_queues)
        try:
            await self._conn.execute(
                _COMMIT,
                gone_kind,
                gone_key,
                put_kind,
                put_key,
                put_record,
                list(dropped_queues),
                [m.msg_id for m in messages],
                [m.exchange for m in messages],
                [m.routing_key for m in messages],
                [m.properties for m in messages],
                [m.body for m in messages],
                [m.timestamp_ms for m in messages],
                [e[0] for e in enqueues],
                [e[1] for e in enqueues],
                [e[2] for e in enqueues],
                [m.queue for m in marks],
                [m.msg_id for m in marks],
                [r.queue for r in removals],
                [r.msg_id for r in removals],
                self._max_msg_id,
            )
        except Exception as exc:
            raise StorageError(f"PostgreSQL commit failed: {exc}") from exc

    async def maintain(self) -> None:
        if self._conn is None or self._removed_since_sweep < _ORPHAN_SWEEP_EVERY:
            return
        self._removed_since_sweep = 0
        await self._conn.execute(_DELETE_ORPHANS, _ORPHAN_SWEEP_LIMIT)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
