"""Durable state for amqpd behind one small interface. Never imports `broker` or `protocol`."""

from __future__ import annotations

from urllib.parse import urlsplit

from amqpd.storage.base import (
    BROKER_WIDE,
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
    ScopedName,
    SettingDelete,
    SettingKey,
    SettingRecord,
    Snapshot,
    StorageError,
    Store,
    VHostDelete,
    VHostRecord,
)
from amqpd.storage.committer import GroupCommitter


def open_store(url: str, data_dir: str) -> Store:
    """Pick a backend by URL scheme. Nothing is read until `await store.open()`.

    - ``memory://``: nothing persisted
    - ``""`` or ``file://``: the embedded segment log in ``data_dir``; ``file:///some/dir`` uses that dir
    - ``postgresql://...`` / ``postgres://...``: PostgreSQL through asyncpg (installed separately)
    """
    scheme = urlsplit(url).scheme if url else "file"
    if scheme == "memory":
        from amqpd.storage.memory import MemoryStore

        return MemoryStore()
    if scheme == "file":
        from amqpd.storage.embedded import EmbeddedStore

        path = urlsplit(url).path if url else ""
        return EmbeddedStore(path or data_dir)
    if scheme in ("postgresql", "postgres"):
        from amqpd.storage.postgres import PostgresStore

        return PostgresStore(url)
    raise StorageError(f"unsupported store URL scheme {scheme!r} (use memory://, file:// or postgresql://)")


__all__ = [
    "BROKER_WIDE",
    "Batch",
    "BindingDelete",
    "BindingRecord",
    "DeliveredMark",
    "Enqueue",
    "ExchangeDelete",
    "ExchangeRecord",
    "GroupCommitter",
    "MessageRecord",
    "QueueDelete",
    "QueueRecord",
    "Remove",
    "ScopedName",
    "SettingDelete",
    "SettingKey",
    "SettingRecord",
    "Snapshot",
    "StorageError",
    "Store",
    "VHostDelete",
    "VHostRecord",
    "open_store",
]
