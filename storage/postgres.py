"""`postgresql://`: the same contract over PostgreSQL, through asyncpg (imported lazily).

A whole batch is ONE statement: data-modifying CTEs fed by arrays (`unnest`). A single statement is its own
transaction, so a batch is atomic, and it costs one round trip however many records it holds.

All CTEs of one statement see the same snapshot and must not touch the same row twice, so the batch is first
reduced in Python: definitions to their net effect per key (computed against the in-memory topology, which is
small), enqueues/removals/marks through `net_batch` (which also drops a mark of an enqueue the batch
removes), and marks/removals of queues or vhosts deleted in the same batch dropped (the delete removes those
rows anyway).

Every definition and enqueue row carries its vhost (a column, part of the primary key). Tables written by
the version before vhosts are migrated on open, in one transaction and idempotently (`_migrate`): their rows
go to vhost "/". Settings (users, permissions, ...) have a table of their own, keyed (vhost, kind, name),
created on open where it is missing; like every definition row they are written from the net effect per key,
so deleting a vhost deletes its settings rows (never the broker-wide ones, vhost "").

Message rows are deleted lazily by `maintain()` once no enqueue refers to them; replay joins through the
enqueues, so an orphan row is never recovered.
"""

from __future__ import annotations

from typing import Any

from amqpd.storage.base import (
    Batch,
    MessageRecord,
    QueueDelete,
    ScopedName,
    SettingKey,
    SettingRecord,
    Snapshot,
    StorageError,
    VHostDelete,
    net_batch,
)
from amqpd.storage.codec import (
    Reader,
    decode_definition,
    decode_table,
    encode_definition_bytes,
    encode_table,
    encode_value,
)
from amqpd.storage.definitions import BindingKey, DefinitionsState, Touched

# 1: before vhosts; 2: a vhost column in every definition and enqueue row; 3: amqpd_settings (only added)
SCHEMA_VERSION = 3

# Definition rows: kind V (a vhost; key empty, vhost = its name), X (exchange; key = name), Q (queue; key =
# name) or B (binding; key = _binding_db_key). `record` is the whole record (storage.codec, current version).
# Setting rows: vhost ("" for broker-wide ones), kind, name and the value table (storage.codec.encode_table).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS amqpd_definitions (
    vhost text NOT NULL, kind text NOT NULL, key bytea NOT NULL, record bytea NOT NULL,
    PRIMARY KEY (vhost, kind, key));
CREATE TABLE IF NOT EXISTS amqpd_messages (
    id bigint PRIMARY KEY, exchange text NOT NULL, routing_key text NOT NULL,
    properties bytea NOT NULL, body bytea NOT NULL, timestamp_ms bigint NOT NULL);
CREATE TABLE IF NOT EXISTS amqpd_enqueues (
    vhost text NOT NULL, queue text NOT NULL, msg_id bigint NOT NULL, delivered boolean NOT NULL,
    PRIMARY KEY (vhost, queue, msg_id));
CREATE INDEX IF NOT EXISTS amqpd_enqueues_msg ON amqpd_enqueues (msg_id);
CREATE TABLE IF NOT EXISTS amqpd_meta (k text PRIMARY KEY, v bigint NOT NULL);
CREATE TABLE IF NOT EXISTS amqpd_settings (
    vhost text NOT NULL, kind text NOT NULL, name text NOT NULL, value bytea NOT NULL,
    PRIMARY KEY (vhost, kind, name));
"""

# Serialises concurrent opens of one database, so two processes never migrate at once.
_MIGRATION_LOCK = 0x616D717064  # "amqpd"

# Columns are always named: a migrated table has `vhost` last, a fresh one has it first.
_COMMIT = """
WITH
d_del AS (DELETE FROM amqpd_definitions d USING unnest($1::text[], $2::text[], $3::bytea[]) AS x(vhost, kind, key)
          WHERE d.vhost = x.vhost AND d.kind = x.kind AND d.key = x.key),
d_put AS (INSERT INTO amqpd_definitions (vhost, kind, key, record)
          SELECT * FROM unnest($4::text[], $5::text[], $6::bytea[], $7::bytea[])
          ON CONFLICT (vhost, kind, key) DO UPDATE SET record = EXCLUDED.record),
v_del AS (DELETE FROM amqpd_enqueues WHERE vhost = ANY($8::text[])),
q_del AS (DELETE FROM amqpd_enqueues e USING unnest($9::text[], $10::text[]) AS x(vhost, queue)
          WHERE e.vhost = x.vhost AND e.queue = x.queue),
m_put AS (INSERT INTO amqpd_messages (id, exchange, routing_key, properties, body, timestamp_ms)
          SELECT * FROM unnest($11::bigint[], $12::text[], $13::text[], $14::bytea[], $15::bytea[], $16::bigint[])
          ON CONFLICT (id) DO NOTHING),
e_put AS (INSERT INTO amqpd_enqueues (vhost, queue, msg_id, delivered)
          SELECT * FROM unnest($17::text[], $18::text[], $19::bigint[], $20::boolean[])
          ON CONFLICT (vhost, queue, msg_id) DO NOTHING),
e_mark AS (UPDATE amqpd_enqueues e SET delivered = true
           FROM unnest($21::text[], $22::text[], $23::bigint[]) AS x(v, q, i)
           WHERE e.vhost = x.v AND e.queue = x.q AND e.msg_id = x.i),
e_del AS (DELETE FROM amqpd_enqueues e USING unnest($24::text[], $25::text[], $26::bigint[]) AS x(v, q, i)
          WHERE e.vhost = x.v AND e.queue = x.q AND e.msg_id = x.i),
meta AS (INSERT INTO amqpd_meta VALUES ('max_msg_id', $27::bigint)
         ON CONFLICT (k) DO UPDATE SET v = GREATEST(amqpd_meta.v, EXCLUDED.v)),
s_del AS (DELETE FROM amqpd_settings s USING unnest($28::text[], $29::text[], $30::text[]) AS x(vhost, kind, name)
          WHERE s.vhost = x.vhost AND s.kind = x.kind AND s.name = x.name),
s_put AS (INSERT INTO amqpd_settings (vhost, kind, name, value)
          SELECT * FROM unnest($31::text[], $32::text[], $33::text[], $34::bytea[])
          ON CONFLICT (vhost, kind, name) DO UPDATE SET value = EXCLUDED.value)
SELECT 1
"""

_DELETE_UNKNOWN_QUEUES = """
DELETE FROM amqpd_enqueues e WHERE NOT EXISTS (
    SELECT 1 FROM unnest($1::text[], $2::text[]) AS x(vhost, queue) WHERE x.vhost = e.vhost AND x.queue = e.queue)
"""

_DELETE_ORPHANS = """
DELETE FROM amqpd_messages WHERE id IN (
    SELECT m.id FROM amqpd_messages m
    WHERE NOT EXISTS (SELECT 1 FROM amqpd_enqueues e WHERE e.msg_id = m.id) LIMIT $1)
"""

_ORPHAN_SWEEP_EVERY = 1000  # removals between orphan sweeps
_ORPHAN_SWEEP_LIMIT = 50_000


def _binding_db_key(key: BindingKey) -> bytes:
    """The binding's identity within its vhost (the vhost is a column of its own)."""
    out = bytearray()
    encode_value(out, [key[1], key[2], key[3], key[4]])
    return bytes(out) + key[5]


async def _migrate(conn: Any) -> None:
    """Bring tables written by an older version up to SCHEMA_VERSION. Idempotent; runs in one transaction.

    Version 1 had no vhosts: its definition and enqueue rows all belong to vhost "/", and its definition
    records are in definition format version 1 (no vhost field), rewritten here in the current format.
    Version 2 had no settings table: creating it (with the other missing tables, below) is all it takes.
    """
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
    await conn.execute(_SCHEMA)  # tables that do not exist yet are created in the current layout
    with_vhost = {
        row["table_name"]
        for row in await conn.fetch(
            "SELECT table_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND column_name = 'vhost'"
            " AND table_name IN ('amqpd_definitions', 'amqpd_enqueues')"
        )
    }
    for table, key in (("amqpd_definitions", "vhost, kind, key"), ("amqpd_enqueues", "vhost, queue, msg_id")):
        if table in with_vhost:
            continue
        await conn.execute(f"ALTER TABLE {table} ADD COLUMN vhost text NOT NULL DEFAULT '/'")
        pkey = await conn.fetchval(
            "SELECT conname FROM pg_constraint WHERE conrelid = $1::regclass AND contype = 'p'", table
        )
        if pkey is not None:
            quoted = '"' + str(pkey).replace('"', '""') + '"'
            await conn.execute(f"ALTER TABLE {table} DROP CONSTRAINT {quoted}")
        await conn.execute(f"ALTER TABLE {table} ADD PRIMARY KEY ({key})")
        # The default only filled in the old rows: every new row names its vhost.
        await conn.execute(f"ALTER TABLE {table} ALTER COLUMN vhost DROP DEFAULT")
        if table == "amqpd_definitions":
            rows = await conn.fetch("SELECT kind, key, record FROM amqpd_definitions")
            await conn.execute(
                "UPDATE amqpd_definitions d SET record = x.record"
                " FROM unnest($1::text[], $2::bytea[], $3::bytea[]) AS x(kind, key, record)"
                " WHERE d.vhost = '/' AND d.kind = x.kind AND d.key = x.key",
                [row["kind"] for row in rows],
                [row["key"] for row in rows],
                [encode_definition_bytes(decode_definition(Reader(bytes(row["record"])), 1)) for row in rows],
            )
    await conn.execute(
        "INSERT INTO amqpd_meta VALUES ('schema_version', $1::bigint)"
        " ON CONFLICT (k) DO UPDATE SET v = GREATEST(amqpd_meta.v, EXCLUDED.v)",
        SCHEMA_VERSION,
    )


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
        async with conn.transaction():
            await _migrate(conn)
        rows = await conn.fetch("SELECT record FROM amqpd_definitions")
        for row in rows:  # only records, no deletes: the order does not matter
            self._defs.apply(decode_definition(Reader(bytes(row["record"]))))
        for row in await conn.fetch("SELECT vhost, kind, name, value FROM amqpd_settings"):
            value = decode_table(Reader(bytes(row["value"])))
            self._defs.apply(SettingRecord(row["vhost"], row["kind"], row["name"], value))
        queues = list(self._defs.queues)
        await conn.execute(_DELETE_UNKNOWN_QUEUES, [q[0] for q in queues], [q[1] for q in queues])
        await conn.execute(_DELETE_ORPHANS, 2**62)
        snapshot = Snapshot()
        self._defs.fill(snapshot)
        for key in queues:
            snapshot.messages[key] = []
            snapshot.delivered[key] = set()
        records: dict[int, MessageRecord] = {}

        rows = await conn.fetch(
            "SELECT e.vhost, e.queue, e.delivered, m.* FROM amqpd_enqueues e JOIN amqpd_messages m ON m.id = e.msg_id"
            " ORDER BY e.vhost, e.queue, m.id"
        )
        vhost = queue = None
        messages: list[MessageRecord] = []
        delivered: set[int] = set()
        for row in rows:
            if row["queue"] != queue or row["vhost"] != vhost:
                vhost, queue = row["vhost"], row["queue"]
                key = (vhost, queue)
                messages, delivered = snapshot.messages[key], snapshot.delivered[key]
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
            messages.append(record)
            if row["delivered"]:
                delivered.add(msg_id)
        meta = await conn.fetchval("SELECT v FROM amqpd_meta WHERE k = 'max_msg_id'")
        biggest = await conn.fetchval("SELECT max(id) FROM amqpd_messages")
        self._max_msg_id = max(meta or 0, biggest or 0)
        snapshot.next_message_id = self._max_msg_id + 1
        return snapshot

    async def commit(self, batch: Batch) -> None:
        assert self._conn is not None, "open() first"
        net = net_batch(batch)
        touched = Touched()
        dropped_queues: set[ScopedName] = set()
        dropped_vhosts: set[str] = set()
        for op in net.definitions:
            if isinstance(op, QueueDelete):
                dropped_queues.add((op.vhost, op.name))
            elif isinstance(op, VHostDelete):
                dropped_vhosts.add(op.name)
            self._defs.apply(op, touched)
        # A vhost delete removes its queues' rows already; deleting a row twice in one statement is not allowed.
        dropped_queues = {q for q in dropped_queues if q[0] not in dropped_vhosts}
        gone_vhost: list[str] = []
        gone_kind: list[str] = []
        gone_key: list[bytes] = []
        put_vhost: list[str] = []
        put_kind: list[str] = []
        put_key: list[bytes] = []
        put_record: list[bytes] = []

        def diff(vhost: str, kind: str, key: bytes, current: Any) -> None:
            if current is None:
                gone_vhost.append(vhost)
                gone_kind.append(kind)
                gone_key.append(key)
            else:
                put_vhost.append(vhost)
                put_kind.append(kind)
                put_key.append(key)
                put_record.append(encode_definition_bytes(current))

        defs = self._defs
        for name in touched.vhosts:
            diff(name, "V", b"", defs.vhosts.get(name))
        for vhost, name in touched.exchanges:
            diff(vhost, "X", name.encode(), defs.exchanges.get((vhost, name)))
        for vhost, name in touched.queues:
            diff(vhost, "Q", name.encode(), defs.queues.get((vhost, name)))
        for bkey in touched.bindings:
            diff(bkey[0], "B", _binding_db_key(bkey), defs.bindings.get(bkey))
        setting_gone: list[SettingKey] = []
        setting_put: list[SettingRecord] = []
        for skey in touched.settings:
            setting = defs.settings.get(skey)
            if setting is None:
                setting_gone.append(skey)
            else:
                setting_put.append(setting)

        known = defs.queues
        enqueues = [e for e in net.enqueues if (e[0], e[1]) in known]
        wanted = {e[2] for e in enqueues}
        messages = [m for m in net.messages if m.msg_id in wanted]
        marks = net.marks
        removals = net.removals
        if dropped_queues or dropped_vhosts:  # their rows are deleted anyway: never touch a row twice
            marks = [m for m in marks if m.vhost not in dropped_vhosts and (m.vhost, m.queue) not in dropped_queues]
            removals = [
                r for r in removals if r.vhost not in dropped_vhosts and (r.vhost, r.queue) not in dropped_queues
            ]
        if messages:
            self._max_msg_id = max(self._max_msg_id, max(m.msg_id for m in messages))
        if not (
            gone_key
            or put_key
            or setting_gone
            or setting_put
            or dropped_queues
            or dropped_vhosts
            or enqueues
            or marks
            or removals
        ):
            return
        self._removed_since_sweep += len(removals) + len(dropped_queues) + len(dropped_vhosts)
        try:
            await self._conn.execute(
                _COMMIT,
                gone_vhost,
                gone_kind,
                gone_key,
                put_vhost,
                put_kind,
                put_key,
                put_record,
                list(dropped_vhosts),
                [q[0] for q in dropped_queues],
                [q[1] for q in dropped_queues],
                [m.msg_id for m in messages],
                [m.exchange for m in messages],
                [m.routing_key for m in messages],
                [m.properties for m in messages],
                [m.body for m in messages],
                [m.timestamp_ms for m in messages],
                [e[0] for e in enqueues],
                [e[1] for e in enqueues],
                [e[2] for e in enqueues],
                [e[3] for e in enqueues],
                [m.vhost for m in marks],
                [m.queue for m in marks],
                [m.msg_id for m in marks],
                [r.vhost for r in removals],
                [r.queue for r in removals],
                [r.msg_id for r in removals],
                self._max_msg_id,
                [k[0] for k in setting_gone],
                [k[1] for k in setting_gone],
                [k[2] for k in setting_gone],
                [r.vhost for r in setting_put],
                [r.kind for r in setting_put],
                [r.name for r in setting_put],
                [encode_table(r.value) for r in setting_put],
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
