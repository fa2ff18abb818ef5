"""The access database's journal over the store: each change becomes a setting record (see storage.SettingRecord)."""

from __future__ import annotations

from typing import Any, cast

from amqpd.storage import GroupCommitter, SettingDelete, SettingRecord
from amqpd.storage.base import FieldTable


class StoreSettingsJournal:
    """Implements broker.access's AccessJournal (structurally: durability does not import access)."""

    __slots__ = ("committer",)

    def __init__(self, committer: GroupCommitter) -> None:
        self.committer = committer

    def put(self, vhost: str, kind: str, name: str, value: dict[str, Any]) -> None:
        self.committer.add_definition(SettingRecord(vhost, kind, name, cast("FieldTable", value)))

    def delete(self, vhost: str, kind: str, name: str) -> None:
        self.committer.add_definition(SettingDelete(vhost, kind, name))
