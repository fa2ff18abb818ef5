"""The PostgreSQL store against a real server. Start one with `tests/start_postgres.sh`."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

from storage import (
    Batch,
    BindingRecord,
    DeliveredMark,
    Enqueue,
    ExchangeRecord,
    MessageRecord,
    QueueDelete,
    QueueRecord,
    Remove,
    open_store,
)
from storage.postgres import PostgresStore

URL = os.environ.get("AMQPD_TEST_POSTGRES_URL", "")
pytestmark = pytest.mark.skipif(
    not URL, reason="AMQPD_TEST_POSTGRES_URL is not set (start a server with tests/start_postgres.sh)"
)


@pytest.fixture
async def url() -> AsyncIterator[str]:
    import asyncpg

    conn = await asyncpg.connect(URL)
    await conn.execute("DROP TABLE IF EXISTS amqpd_definitions, amqpd_messages, amqpd_enqueues, amqpd_meta CASCADE")
    await conn.close()
    yield URL


def msg(msg_id: int, body: bytes = b"0123456789abcdef") -> MessageRecord:
    return MessageRecord(msg_id, "ex", "rk", b"\x10\x00\x02", body, 1_700_000_000_000 + msg_id)


def declare(*names: str) -> Batch:
    return Batch(definitions=[QueueRecord(n, True, False, {"x-f": 0.1}) for n in names])


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
    exchange = ExchangeRecord("ex", "direct", True, False, False, {"alternate-exchange": "ae"})
    binding = BindingRecord("ex", "q", False, "rk", {})
    await store.commit(Batch(definitions=[exchange, QueueRecord("q", True, False, {}), binding]))
    await store.commit(Batch(messages=[msg(1), msg(2)], enqueues=[Enqueue("q", 1), Enqueue("q", 2)]))
    await store.commit(Batch(marks=[DeliveredMark("q", 2)], removals=[Remove("q", 1)]))
    snap = await reopen(store, url)
    assert snap.exchanges == {"ex": exchange}
    assert snap.bindings == [binding]
    assert snap.messages["q"] == [msg(2)]
    assert snap.delivered["q"] == {2}
    assert snap.next_message_id == 3


async def test_fanned_out_message_is_one_row_shared_by_every_queue(url: str) -> None:
    store = PostgresStore(url)
    await store.open()
    await store.commit(declare("a", "b"))
    await store.commit(Batch(messages=[msg(1)], enqueues=[Enqueue("a", 1), Enqueue("b", 1)]))
    snap = await reopen(store, url)
    assert snap.messages["a"][0] is snap.messages["b"][0]


async def test_a_batch_is_a_single_round_trip(url: str) -> None:
    store = PostgresStore(url)
    await store.open()
    await store.commit(declare("a", "b"))
    conn = store._conn
    counting = CountingConnection(conn)
    store._conn = counting
    await store.commit(
        Batch(
            definitions=[QueueRecord("c", True, False, {})],
            messages=[msg(i) for i in range(1, 200)],
            enqueues=[Enqueue(q, i) for i in range(1, 200) for q in ("a", "b")],
        )
    )
    await store.commit(Batch(removals=[Remove("a", i) for i in range(1, 200)]))
    assert len(counting.calls) == 2
    store._conn = conn
    snap = await reopen(store, url)
    assert len(snap.messages["b"]) == 199
    assert snap.messages["a"] == []


async def test_deleting_and_redeclaring_a_queue_in_one_batch_keeps_only_new_messages(url: str) -> None:
    store = PostgresStore(url)
    await store.open()
    await store.commit(declare("q"))
    await store.commit(Batch(messages=[msg(1)], enqueues=[Enqueue("q", 1)]))
    await store.commit(
        Batch(
            definitions=[QueueDelete("q"), QueueRecord("q", True, False, {})],
            messages=[msg(2)],
            enqueues=[Enqueue("q", 2)],
            removals=[Remove("q", 1)],
        )
    )
    snap = await reopen(store, url)
    assert [m.msg_id for m in snap.messages["q"]] == [2]


async def test_queue_delete_drops_its_bindings(url: str) -> None:
    store = PostgresStore(url)
    await store.open()
    await store.commit(
        Batch(
            definitions=[
                ExchangeRecord("ex", "fanout", True, False, False, {}),
                QueueRecord("q", True, False, {}),
                BindingRecord("ex", "q", False, "", {}),
            ]
        )
    )
    await store.commit(Batch(definitions=[QueueDelete("q")]))
    snap = await reopen(store, url)
    assert snap.bindings == []
    assert "q" not in snap.queues
