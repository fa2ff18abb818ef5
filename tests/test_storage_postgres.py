"""The PostgreSQL store against a real server. Start one with `tests/start_postgres.sh`."""

from __future__ import annotations

import os
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest

from amqpd.storage import (
    Batch,
    BindingDelete,
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
from amqpd.storage.base import FieldTable
from amqpd.storage.codec import encode_table
from amqpd.storage.postgres import PostgresStore

URL = os.environ.get("AMQPD_TEST_POSTGRES_URL", "")
TABLES = "amqpd_definitions, amqpd_messages, amqpd_enqueues, amqpd_meta, amqpd_settings"
pytestmark = pytest.mark.skipif(
    not URL, reason="AMQPD_TEST_POSTGRES_URL is not set (start a server with tests/start_postgres.sh)"
)


@pytest.fixture
async def url() -> AsyncIterator[str]:
    import asyncpg

    conn = await asyncpg.connect(URL)
    await conn.execute(f"DROP TABLE IF EXISTS {TABLES} CASCADE")
    await conn.close()
    yield URL


def msg(msg_id: int, body: bytes = b"0123456789abcdef") -> MessageRecord:
    return MessageRecord(msg_id, "ex", "rk", b"\x10\x00\x02", body, 1_700_000_000_000 + msg_id)


def declare(*names: str) -> Batch:
    return Batch(definitions=[QueueRecord("/", n, True, False, {"x-f": 0.1}) for n in names])


async def reopen(store: PostgresStore, url: str) -> Any:
    await store.close()
    fresh = PostgresStore(url)
    snap = await fresh.open()
    await fresh.close()
    return snap


class CountingConnection:
    """Counts statements sent to the server; every other attribute goes to the real connection."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.calls: list[str] = []

    async def execute(self, query: str, *args: Any) -> Any:
        self.calls.append(query)
        return await self.conn.execute(query, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


async def test_open_store_selects_postgres(url: str) -> None:
    assert isinstance(open_store(url, "unused"), PostgresStore)


async def test_definitions_messages_and_marks_survive_a_restart(url: str) -> None:
    store = PostgresStore(url)
    await store.open()
    exchange = ExchangeRecord("/", "ex", "direct", True, False, False, {"alternate-exchange": "ae"})
    binding = BindingRecord("/", "ex", "q", False, "rk", {})
    await store.commit(Batch(definitions=[exchange, QueueRecord("/", "q", True, False, {}), binding]))
    await store.commit(Batch(messages=[msg(1), msg(2)], enqueues=[Enqueue("/", "q", 1), Enqueue("/", "q", 2)]))
    await store.commit(Batch(marks=[DeliveredMark("/", "q", 2)], removals=[Remove("/", "q", 1)]))
    snap = await reopen(store, url)
    assert snap.exchanges == {("/", "ex"): exchange}
    assert snap.bindings == [binding]
    assert snap.messages[("/", "q")] == [msg(2)]
    assert snap.delivered[("/", "q")] == {2}
    assert snap.next_message_id == 3


async def test_fanned_out_message_is_one_row_shared_by_every_queue(url: str) -> None:
    store = PostgresStore(url)
    await store.open()
    await store.commit(declare("a", "b"))
    await store.commit(Batch(messages=[msg(1)], enqueues=[Enqueue("/", "a", 1), Enqueue("/", "b", 1)]))
    snap = await reopen(store, url)
    assert snap.messages[("/", "a")][0] is snap.messages[("/", "b")][0]


async def test_a_batch_is_a_single_round_trip(url: str) -> None:
    store = PostgresStore(url)
    await store.open()
    await store.commit(declare("a", "b"))
    conn = store._conn
    counting = CountingConnection(conn)
    store._conn = counting
    await store.commit(
        Batch(
            definitions=[QueueRecord("/", "c", True, False, {})],
            messages=[msg(i) for i in range(1, 200)],
            enqueues=[Enqueue("/", q, i) for i in range(1, 200) for q in ("a", "b")],
        )
    )
    await store.commit(Batch(removals=[Remove("/", "a", i) for i in range(1, 200)]))
    assert len(counting.calls) == 2
    store._conn = conn
    snap = await reopen(store, url)
    assert len(snap.messages[("/", "b")]) == 199
    assert snap.messages[("/", "a")] == []


async def test_deleting_and_redeclaring_a_queue_in_one_batch_keeps_only_new_messages(url: str) -> None:
    store = PostgresStore(url)
    await store.open()
    await store.commit(declare("q"))
    await store.commit(Batch(messages=[msg(1)], enqueues=[Enqueue("/", "q", 1)]))
    await store.commit(
        Batch(
            definitions=[QueueDelete("/", "q"), QueueRecord("/", "q", True, False, {})],
            messages=[msg(2)],
            enqueues=[Enqueue("/", "q", 2)],
            removals=[Remove("/", "q", 1)],
        )
    )
    snap = await reopen(store, url)
    assert [m.msg_id for m in snap.messages[("/", "q")]] == [2]


async def test_queue_delete_drops_its_bindings(url: str) -> None:
    store = PostgresStore(url)
    await store.open()
    await store.commit(
        Batch(
            definitions=[
                ExchangeRecord("/", "ex", "fanout", True, False, False, {}),
                QueueRecord("/", "q", True, False, {}),
                BindingRecord("/", "ex", "q", False, "", {}),
            ]
        )
    )
    await store.commit(Batch(definitions=[QueueDelete("/", "q")]))
    snap = await reopen(store, url)
    assert snap.bindings == []
    assert ("/", "q") not in snap.queues


async def test_a_mark_and_a_removal_of_one_enqueue_in_one_batch_remove_it(url: str) -> None:
    store = PostgresStore(url)
    await store.open()
    await store.commit(declare("q"))
    await store.commit(Batch(messages=[msg(1)], enqueues=[Enqueue("/", "q", 1)]))
    await store.commit(Batch(marks=[DeliveredMark("/", "q", 1)], removals=[Remove("/", "q", 1)]))
    snap = await reopen(store, url)
    assert snap.messages[("/", "q")] == []


# ---- virtual hosts ---------------------------------------------------------------------------------------


def topology(vhost: str) -> list[Any]:
    return [
        ExchangeRecord(vhost, "ex", "direct", True, False, False, {"v": vhost}),
        QueueRecord(vhost, "q", True, False, {"v": vhost}),
        QueueRecord(vhost, "other", True, False, {}),
        BindingRecord(vhost, "ex", "q", False, "rk", {}),
    ]


async def test_same_names_in_two_vhosts_are_different_queues(url: str) -> None:
    store = PostgresStore(url)
    await store.open()
    await store.commit(Batch(definitions=[*topology("a"), *topology("b")]))
    await store.commit(
        Batch(
            messages=[msg(1), msg(2), msg(3)],
            enqueues=[Enqueue("a", "q", 1), Enqueue("b", "q", 2), Enqueue("a", "q", 3), Enqueue("b", "q", 3)],
        )
    )
    await store.commit(Batch(removals=[Remove("a", "q", 2), Remove("b", "q", 3)], marks=[DeliveredMark("a", "q", 3)]))
    snap = await reopen(store, url)
    assert [m.msg_id for m in snap.messages[("a", "q")]] == [1, 3]
    assert [m.msg_id for m in snap.messages[("b", "q")]] == [2]
    assert snap.delivered[("a", "q")] == {3} and snap.delivered[("b", "q")] == set()
    assert snap.queues[("b", "q")].arguments == {"v": "b"}

    store = PostgresStore(url)
    await store.open()
    await store.commit(Batch(definitions=[QueueDelete("a", "q"), ExchangeDelete("a", "ex")]))
    snap = await reopen(store, url)
    assert set(snap.queues) == {("a", "other"), ("b", "q"), ("b", "other")}
    assert set(snap.exchanges) == {("b", "ex")}
    assert [(b.vhost, b.source, b.destination) for b in snap.bindings] == [("b", "ex", "q")]
    assert [m.msg_id for m in snap.messages[("b", "q")]] == [2]


async def test_vhost_delete_drops_everything_in_that_vhost_only(url: str) -> None:
    store = PostgresStore(url)
    await store.open()
    await store.commit(Batch(definitions=[VHostRecord("a", {"description": "A"}), VHostRecord("b", {})]))
    await store.commit(Batch(definitions=[*topology("a"), *topology("b")]))
    await store.commit(
        Batch(
            messages=[msg(1), msg(2)],
            enqueues=[Enqueue("a", "q", 1), Enqueue("b", "q", 1), Enqueue("a", "q", 2), Enqueue("a", "other", 2)],
        )
    )
    await store.commit(
        Batch(
            definitions=[VHostDelete("a")],
            marks=[DeliveredMark("a", "q", 1), DeliveredMark("b", "q", 1)],
            removals=[Remove("a", "q", 2)],
        )
    )
    snap = await reopen(store, url)
    assert snap.vhosts == {"b": VHostRecord("b", {})}
    assert {k[0] for k in (*snap.queues, *snap.exchanges)} == {"b"}
    assert {b.vhost for b in snap.bindings} == {"b"}
    assert set(snap.messages) == {("b", "q"), ("b", "other")}
    assert [m.msg_id for m in snap.messages[("b", "q")]] == [1]
    assert snap.delivered[("b", "q")] == {1}
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM amqpd_enqueues WHERE vhost = 'a'") == 0
        assert await conn.fetchval("SELECT count(*) FROM amqpd_definitions WHERE vhost = 'a'") == 0
        assert await conn.fetchval("SELECT array_agg(id ORDER BY id) FROM amqpd_messages") == [1]  # 2 reclaimed
    finally:
        await conn.close()


async def test_vhost_deleted_and_redeclared_in_one_batch_starts_empty(url: str) -> None:
    store = PostgresStore(url)
    await store.open()
    await store.commit(Batch(definitions=[VHostRecord("a", {}), *topology("a")]))
    await store.commit(Batch(messages=[msg(1)], enqueues=[Enqueue("a", "q", 1)]))
    await store.commit(
        Batch(
            definitions=[VHostDelete("a"), VHostRecord("a", {"v": 2}), QueueRecord("a", "q", True, False, {})],
            messages=[msg(2)],
            enqueues=[Enqueue("a", "q", 2)],
            marks=[DeliveredMark("a", "q", 1)],
        )
    )
    snap = await reopen(store, url)
    assert snap.vhosts == {"a": VHostRecord("a", {"v": 2})}
    assert set(snap.queues) == {("a", "q")}
    assert snap.exchanges == {} and snap.bindings == []
    assert [m.msg_id for m in snap.messages[("a", "q")]] == [2]


# ---- upgrade from the schema before vhosts ----------------------------------------------------------------

# The tables and definition encoding exactly as the version before vhosts wrote them (a copy kept for this test).
V1_SCHEMA = """
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


def v1_str(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<I", len(raw)) + raw


def v1_flag(flag: bool) -> bytes:
    return b"\x01" if flag else b"\x00"


def v1_exchange(name: str, kind: str, args: FieldTable) -> bytes:
    return b"X" + v1_str(name) + v1_str(kind) + v1_flag(True) + v1_flag(False) + v1_flag(False) + encode_table(args)


def v1_queue(name: str, args: FieldTable) -> bytes:
    return b"Q" + v1_str(name) + v1_flag(True) + v1_flag(False) + encode_table(args)


def v1_binding(source: str, destination: str, routing_key: str) -> tuple[bytes, bytes]:
    """(row key, record)"""
    fields = v1_str(source) + v1_str(destination) + v1_flag(False) + v1_str(routing_key) + encode_table({})
    key = b"l" + struct.pack("<I", 4) + b"s" + v1_str(source) + b"s" + v1_str(destination) + b"F"
    key += b"s" + v1_str(routing_key) + encode_table({})
    return key, b"B" + fields


async def write_v1_tables(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(V1_SCHEMA)
        bkey, brecord = v1_binding("ex", "q", "a.#")
        await conn.executemany(
            "INSERT INTO amqpd_definitions VALUES ($1, $2, $3)",
            [
                ("X", b"ex", v1_exchange("ex", "topic", {"alternate-exchange": "ae", "f": 0.1})),
                ("Q", b"q", v1_queue("q", {"x-max-length": 10})),
                ("Q", b"q2", v1_queue("q2", {})),
                ("B", bkey, brecord),
            ],
        )
        await conn.executemany(
            "INSERT INTO amqpd_messages VALUES ($1, $2, $3, $4, $5, $6)",
            [(m.msg_id, m.exchange, m.routing_key, m.properties, m.body, m.timestamp_ms) for m in (msg(1), msg(2))],
        )
        await conn.executemany(
            "INSERT INTO amqpd_enqueues VALUES ($1, $2, $3)",
            [("q", 1, False), ("q", 2, True), ("q2", 2, False), ("deleted-queue", 1, False)],
        )
        await conn.execute("INSERT INTO amqpd_meta VALUES ('max_msg_id', 5)")
    finally:
        await conn.close()


async def test_tables_written_before_vhosts_are_migrated_into_the_default_vhost(url: str) -> None:
    import asyncpg

    await write_v1_tables(url)

    def check(snap: Snapshot) -> None:
        assert snap.vhosts == {}
        assert snap.exchanges == {
            ("/", "ex"): ExchangeRecord("/", "ex", "topic", True, False, False, {"alternate-exchange": "ae", "f": 0.1})
        }
        assert snap.queues == {
            ("/", "q"): QueueRecord("/", "q", True, False, {"x-max-length": 10}),
            ("/", "q2"): QueueRecord("/", "q2", True, False, {}),
        }
        assert snap.bindings == [BindingRecord("/", "ex", "q", False, "a.#", {})]
        assert snap.messages == {("/", "q"): [msg(1), msg(2)], ("/", "q2"): [msg(2)]}
        assert snap.delivered == {("/", "q"): {2}, ("/", "q2"): set()}

    store = PostgresStore(url)
    check(await store.open())
    await store.commit(Batch(definitions=[SettingRecord("", "user", "guest", {"tags": ["administrator"]})]))
    # the migrated rows behave like new ones: update and delete them by key, next to another vhost
    await store.commit(
        Batch(
            definitions=[
                QueueRecord("/", "q2", True, False, {"x": 1}),
                BindingDelete("/", "ex", "q", False, "a.#", {}),
                QueueRecord("b", "q", True, False, {}),
            ],
            messages=[msg(6)],
            enqueues=[Enqueue("b", "q", 6), Enqueue("/", "q", 6)],
            removals=[Remove("/", "q", 1)],
        )
    )
    snap = await reopen(store, url)
    assert snap.queues[("/", "q2")].arguments == {"x": 1}
    assert snap.bindings == []
    assert [m.msg_id for m in snap.messages[("/", "q")]] == [2, 6]
    assert [m.msg_id for m in snap.messages[("b", "q")]] == [6]
    assert snap.next_message_id == 7
    assert snap.settings == {("", "user", "guest"): SettingRecord("", "user", "guest", {"tags": ["administrator"]})}

    conn = await asyncpg.connect(url)
    try:
        for table, key in (
            ("amqpd_definitions", ["vhost", "kind", "key"]),
            ("amqpd_enqueues", ["vhost", "queue", "msg_id"]),
        ):
            columns = await conn.fetch(
                "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
                " AND a.attnum = ANY(i.indkey) WHERE i.indrelid = $1::regclass AND i.indisprimary",
                table,
            )
            assert sorted(r["attname"] for r in columns) == sorted(key)
        assert await conn.fetchval("SELECT v FROM amqpd_meta WHERE k = 'schema_version'") == 3
    finally:
        await conn.close()


async def test_migration_is_idempotent_and_reopening_changes_nothing(url: str) -> None:
    await write_v1_tables(url)
    store = PostgresStore(url)
    first = await store.open()
    second = await reopen(store, url)
    third = await reopen(PostgresStore(url), url)
    assert first == second == third
    assert set(first.queues) == {("/", "q"), ("/", "q2")}


async def test_a_fresh_database_and_a_migrated_one_have_the_same_columns(url: str) -> None:
    import asyncpg

    async def columns() -> dict[str, list[tuple[str, str, bool]]]:
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch(
                "SELECT table_name, column_name, data_type, is_nullable, column_default"
                " FROM information_schema.columns WHERE table_schema = current_schema()"
                " AND table_name LIKE 'amqpd_%' ORDER BY table_name, column_name"
            )
            out: dict[str, list[tuple[str, str, bool]]] = {}
            for r in rows:
                assert r["column_default"] is None
                out.setdefault(r["table_name"], []).append((r["column_name"], r["data_type"], r["is_nullable"]))
            return out
        finally:
            await conn.close()

    await reopen(PostgresStore(url), url)  # creates the tables
    fresh = await columns()
    conn = await asyncpg.connect(url)
    await conn.execute(f"DROP TABLE {TABLES} CASCADE")
    await conn.close()
    await write_v1_tables(url)
    await reopen(PostgresStore(url), url)
    assert await columns() == fresh


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


async def settings_rows(url: str) -> list[tuple[str, str, str]]:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT vhost, kind, name FROM amqpd_settings ORDER BY vhost, kind, name")
        return [(r["vhost"], r["kind"], r["name"]) for r in rows]
    finally:
        await conn.close()


async def test_settings_round_trip_exactly_through_a_restart(url: str) -> None:
    store = PostgresStore(url)
    assert (await store.open()).settings == {}
    await store.commit(Batch(definitions=[VHostRecord("a", {}), *some_settings()]))
    snap = await reopen(store, url)
    assert snap.settings == settings_by_key(some_settings())
    assert snap.settings[("a", "vhost-limits", "limits")].value == LIMITS
    assert await settings_rows(url) == sorted(settings_by_key(some_settings()))


async def test_a_setting_with_the_same_vhost_kind_and_name_replaces_the_old_one(url: str) -> None:
    store = PostgresStore(url)
    await store.open()
    await store.commit(Batch(definitions=some_settings()))
    newer = SettingRecord("a", "permission", "guest", {"configure": "", "write": "", "read": ""})
    newest = SettingRecord("", "user", "guest", {"tags": []})
    # the same key twice in one batch: the last one wins (and the row is written once)
    await store.commit(Batch(definitions=[newer, SettingRecord("", "user", "guest", {"tags": ["x"]}), newest]))
    snap = await reopen(store, url)
    assert snap.settings == settings_by_key([*some_settings(), newer, newest])
    assert snap.settings[("b", "permission", "guest")] == some_settings()[3]  # same kind and name, other vhost


async def test_setting_delete_removes_only_that_setting(url: str) -> None:
    store = PostgresStore(url)
    await store.open()
    await store.commit(Batch(definitions=some_settings()))
    await store.commit(
        Batch(definitions=[SettingDelete("a", "permission", "guest"), SettingDelete("a", "user", "nobody")])
    )
    # stored and deleted in one batch: no row at all
    await store.commit(Batch(definitions=[SettingRecord("c", "policy", "p", {}), SettingDelete("c", "policy", "p")]))
    snap = await reopen(store, url)
    expected = settings_by_key([s for s in some_settings() if s.vhost != "a" or s.kind != "permission"])
    assert snap.settings == expected
    assert await settings_rows(url) == sorted(expected)


async def test_vhost_delete_drops_its_settings_and_keeps_broker_wide_and_other_vhosts_ones(url: str) -> None:
    store = PostgresStore(url)
    await store.open()
    await store.commit(Batch(definitions=[VHostRecord("a", {}), VHostRecord("b", {}), *some_settings()]))
    # deleted and declared again in one batch: a setting stored after the delete is the vhost's only one
    again = SettingRecord("a", "permission", "admin", PERMISSION)
    await store.commit(Batch(definitions=[VHostDelete("a"), VHostRecord("a", {}), again]))
    await store.commit(Batch(definitions=[VHostDelete("")]))  # "" is no vhost: broker-wide settings stay
    snap = await reopen(store, url)
    expected = settings_by_key([s for s in some_settings() if s.vhost != "a"] + [again])
    assert snap.settings == expected
    assert await settings_rows(url) == sorted(expected)


async def test_a_batch_with_settings_is_still_a_single_round_trip(url: str) -> None:
    store = PostgresStore(url)
    await store.open()
    await store.commit(Batch(definitions=[*declare("q").definitions, *some_settings()]))
    conn = store._conn
    counting = CountingConnection(conn)
    store._conn = counting
    await store.commit(
        Batch(
            definitions=[VHostDelete("a"), SettingDelete("", "user", "guest"), SettingRecord("b", "user", "x", {})],
            messages=[msg(1)],
            enqueues=[Enqueue("/", "q", 1)],
        )
    )
    assert len(counting.calls) == 1
    store._conn = conn
    snap = await reopen(store, url)
    assert set(snap.settings) == {("b", "permission", "guest"), ("b", "user", "x")}
    assert [m.msg_id for m in snap.messages[("/", "q")]] == [1]


async def test_a_database_written_before_settings_gets_the_table_on_open(url: str) -> None:
    import asyncpg

    store = PostgresStore(url)
    await store.open()
    await store.commit(Batch(definitions=[VHostRecord("a", {}), *declare("q").definitions]))
    await store.commit(Batch(messages=[msg(1)], enqueues=[Enqueue("/", "q", 1)]))
    await store.close()
    conn = await asyncpg.connect(url)
    try:  # what the version before settings left behind: no settings table, schema version 2
        await conn.execute("DROP TABLE amqpd_settings")
        await conn.execute("UPDATE amqpd_meta SET v = 2 WHERE k = 'schema_version'")
    finally:
        await conn.close()
    store = PostgresStore(url)
    snap = await store.open()
    assert snap.settings == {}
    assert snap.vhosts == {"a": VHostRecord("a", {})}
    assert [m.msg_id for m in snap.messages[("/", "q")]] == [1]
    await store.commit(Batch(definitions=some_settings()))
    snap = await reopen(store, url)
    assert snap.settings == settings_by_key(some_settings())
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT v FROM amqpd_meta WHERE k = 'schema_version'") == 3
    finally:
        await conn.close()
