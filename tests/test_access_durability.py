"""Users, permissions, topic permissions, vhosts and limits are kept in the store: they survive a restart,
deletions stay deleted, the default user is seeded once only, and data from before users existed opens with it.

Each test restarts an in-process amqpd on its own store: the embedded one in a temporary data directory, and the
PostgreSQL one too when ``AMQPD_TEST_POSTGRES_URL`` names a server (tests/start_postgres.sh starts one)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import pika
import pika.exceptions
import pytest

from amqpd.broker.access.passwords import SHA512, hash_password
from amqpd.broker.server.config import Config
from amqpd.broker.server.definitions import export_definitions
from amqpd.broker.server.server import Server
from amqpd.storage import SettingRecord
from tests.conftest import external_url
from tests.support.server_thread import ServerThread

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(external_url() is not None, reason="restarts an in-process amqpd on its own store"),
]

T = TypeVar("T")
POSTGRES_URL = os.environ.get("AMQPD_TEST_POSTGRES_URL", "")
POSTGRES_SKIP = "AMQPD_TEST_POSTGRES_URL is not set (start a server with tests/start_postgres.sh)"
POSTGRES_TABLES = "amqpd_definitions, amqpd_messages, amqpd_enqueues, amqpd_meta, amqpd_settings"
FIXTURE_V1 = Path(__file__).parent / "fixtures" / "embedded_v1"
ACCESS_SECTIONS = ("users", "vhosts", "permissions", "topic_permissions", "parameters")


async def _drop_postgres_tables() -> None:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {POSTGRES_TABLES} CASCADE")
    finally:
        await conn.close()


@pytest.fixture(params=["embedded", "postgres"])
def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Config fields that give a fresh, empty store of each kind (the database's tables are dropped after too:
    users left behind would lock other tests out)."""
    settings: dict[str, Any] = {"data_dir": str(tmp_path / "data")}
    if request.param == "embedded":
        yield settings
        return
    if not POSTGRES_URL:
        pytest.skip(POSTGRES_SKIP)
    asyncio.run(_drop_postgres_tables())
    settings["store"] = POSTGRES_URL
    yield settings
    asyncio.run(_drop_postgres_tables())


@contextlib.contextmanager
def running(loop_kind: str, **settings: Any) -> Iterator[ServerThread]:
    """amqpd on ``settings`` until the block ends; stopping it flushes the store."""
    thread = ServerThread(Config(host="127.0.0.1", port=0, heartbeat=60, **settings), loop_kind).start()
    try:
        yield thread
    finally:
        thread.stop()


def on_server(thread: ServerThread, action: Callable[[Server], T]) -> T:
    return thread.call(lambda: action(thread.server))


def url_for(thread: ServerThread, user: str, password: str, vhost: str = "/") -> str:
    return f"amqp://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{thread.port}/{quote(vhost, safe='')}"


def can_log_in(thread: ServerThread, user: str, password: str, vhost: str = "/") -> bool:
    """Whether a pika client gets a connection; True only for an open one (closed again at once)."""
    try:
        connection = pika.BlockingConnection(pika.URLParameters(url_for(thread, user, password, vhost)))
    except pika.exceptions.ProbableAuthenticationError:
        return False
    connection.close()
    return True


def access_export(thread: ServerThread) -> dict[str, list[str]]:
    """The access part of the broker's definitions export, each section in a canonical order."""
    exported = on_server(thread, lambda s: export_definitions(s, "test"))
    return {k: sorted(json.dumps(item, sort_keys=True) for item in exported[k]) for k in ACCESS_SECTIONS}


# ------------------------------------------------------------------------------ settings survive a restart


def test_users_permissions_topic_permissions_vhosts_and_limits_survive_a_restart(
    store_settings: dict[str, Any], loop_kind: str
) -> None:
    bob_hash = hash_password("bob-pw", SHA512)

    def configure(server: Server) -> None:
        access = server.access
        server.add_vhost("prod")
        access.add_user("alice", "alice-pw", tags=["administrator", "custom"], limits={"max-channels": 5})
        access.add_user("bob", password_hash=bob_hash, hashing_algorithm=SHA512, tags="management")
        access.add_user("temp", "temp-pw")
        access.set_user_tags("bob", "monitoring,policymaker")
        access.set_user_limits("alice", {"max-connections": 4})
        access.change_password("guest", "changed")
        server.set_permissions("alice", "prod", "^a", "^b", "^c")
        server.set_permissions("alice", "/", ".*", ".*", ".*")
        server.set_permissions("bob", "/", ".*", "", ".*")
        access.clear_permissions("bob", "/")
        server.set_topic_permissions("alice", "prod", "amq.topic", "^{username}\\.", ".*")
        server.set_topic_permissions("alice", "prod", "other", "x", "y")
        access.clear_topic_permissions("alice", "prod", "other")
        server.set_vhost_limits("prod", {"max-queues": 7, "max-connections": 20})
        server.set_vhost_limits("/", {"max-queues": 100})
        server.set_vhost_limits("/", {})  # cleared again
        server.delete_user("temp")

    with running(loop_kind, **store_settings) as first:
        on_server(first, configure)
        before = access_export(first)
        limits_before = on_server(first, lambda s: dict(s.access.vhost_limits))

    with running(loop_kind, **store_settings) as second:
        assert access_export(second) == before
        assert (
            on_server(second, lambda s: dict(s.access.vhost_limits))
            == limits_before
            == {"prod": {"max-queues": 7, "max-connections": 20}}
        )
        users = on_server(second, lambda s: {n: (u.tags, dict(u.limits)) for n, u in s.access.users.items()})
        assert users == {
            "guest": (("administrator",), {}),
            "alice": (("administrator", "custom"), {"max-channels": 5, "max-connections": 4}),
            "bob": (("monitoring", "policymaker"), {}),
        }
        assert on_server(second, lambda s: sorted(s.access.permissions)) == [
            ("alice", "/"),
            ("alice", "prod"),
            ("guest", "/"),
        ]
        topic = on_server(second, lambda s: s.access.topic_permissions[("alice", "prod")])
        assert list(topic) == ["amq.topic"] and topic["amq.topic"].write == "^{username}\\."
        assert sorted(on_server(second, lambda s: list(s.vhosts))) == ["/", "prod"]
        assert can_log_in(second, "alice", "alice-pw", "prod")
        assert can_log_in(second, "guest", "changed")
        assert not can_log_in(second, "guest", "guest")
        assert on_server(second, lambda s: s.login("PLAIN", "bob", "bob-pw", from_loopback=True)) is not None


def test_a_deleted_vhost_and_its_settings_stay_deleted_after_a_restart(
    store_settings: dict[str, Any], loop_kind: str
) -> None:
    def configure(server: Server) -> None:
        server.access.add_user("alice", "pw")
        for vhost in ("gone", "kept"):
            server.add_vhost(vhost)
            server.set_permissions("guest", vhost, ".*", ".*", ".*")
            server.set_permissions("alice", vhost, ".*", ".*", ".*")
            server.set_topic_permissions("alice", vhost, "amq.topic", ".*", ".*")
            server.set_vhost_limits(vhost, {"max-queues": 3})

    with running(loop_kind, **store_settings) as first:
        on_server(first, configure)
        connection = pika.BlockingConnection(pika.URLParameters(url_for(first, "guest", "guest", "gone")))
        channel = connection.channel()
        channel.confirm_delivery()
        channel.exchange_declare("gone-x", "topic", durable=True)
        channel.queue_declare("gone-q", durable=True)
        channel.queue_bind("gone-q", "gone-x", "#")
        channel.basic_publish("gone-x", "k", b"lost with the vhost", pika.BasicProperties(delivery_mode=2))
        connection.close()
        assert on_server(first, lambda s: s.delete_vhost("gone"))

    with running(loop_kind, **store_settings) as second:
        assert sorted(on_server(second, lambda s: list(s.vhosts))) == ["/", "kept"]
        assert on_server(second, lambda s: sorted(s.access.permissions)) == [
            ("alice", "kept"),
            ("guest", "/"),
            ("guest", "kept"),
        ]
        assert on_server(second, lambda s: list(s.access.topic_permissions)) == [("alice", "kept")]
        assert on_server(second, lambda s: dict(s.access.vhost_limits)) == {"kept": {"max-queues": 3}}
        assert "alice" in on_server(second, lambda s: list(s.access.users))  # users are not per vhost
        on_server(second, lambda s: s.add_vhost("gone"))  # the same name again: a new, empty vhost
        assert on_server(second, lambda s: (list(s.vhosts["gone"].queues), "gone-x" in s.vhosts["gone"].exchanges)) == (
            [],
            False,
        )

    with running(loop_kind, **store_settings) as third:
        assert sorted(on_server(third, lambda s: list(s.vhosts))) == ["/", "gone", "kept"]
        assert on_server(third, lambda s: list(s.vhosts["gone"].queues)) == []
        assert not on_server(third, lambda s: s.access.has_vhost_access("guest", "gone"))
        assert on_server(third, lambda s: s.access.vhost_limits.get("gone")) is None


def test_the_default_user_is_seeded_once_and_later_defaults_do_not_apply(
    store_settings: dict[str, Any], loop_kind: str
) -> None:
    with running(loop_kind, default_pass="first-pw", **store_settings) as first:
        assert can_log_in(first, "guest", "first-pw")
    # Changing the default password (or vhost) in the settings does nothing to a broker that already has users:
    # the stored password still applies, as in RabbitMQ, where the defaults only seed a node's first start.
    with running(loop_kind, default_pass="second-pw", default_vhost="other", **store_settings) as second:
        assert can_log_in(second, "guest", "first-pw")
        assert not can_log_in(second, "guest", "second-pw")
        assert "other" not in on_server(second, lambda s: list(s.vhosts))

        def replace_guest(server: Server) -> None:
            server.access.add_user("admin", "admin-pw", tags=["administrator"])
            server.set_permissions("admin", "/", ".*", ".*", ".*")
            server.delete_user("guest")

        on_server(second, replace_guest)
    with running(loop_kind, **store_settings) as third:
        assert on_server(third, lambda s: sorted(s.access.users)) == ["admin"]  # the deleted guest stays deleted
        assert can_log_in(third, "admin", "admin-pw")
        on_server(third, lambda s: s.delete_user("admin"))
    with running(loop_kind, **store_settings) as fourth:
        # No user left is not a fresh store: the defaults are not seeded again (RabbitMQ seeds a first start only).
        assert on_server(fourth, lambda s: sorted(s.access.users)) == []
        assert not can_log_in(fourth, "guest", "guest")


def test_an_unusable_stored_user_is_skipped_with_an_error_and_the_rest_still_loads(
    store_settings: dict[str, Any], loop_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    with running(loop_kind, **store_settings) as first:

        def store_a_broken_user(server: Server) -> None:
            assert server.committer is not None
            # As a hand edit or a newer version could leave it: an algorithm this version does not know.
            value = {"password_hash": "", "hashing_algorithm": "sha256", "tags": [], "limits": {}}
            server.committer.add_definition(SettingRecord("", "user", "mallory", value))

        on_server(first, store_a_broken_user)
    with caplog.at_level("ERROR", logger="amqpd"), running(loop_kind, **store_settings) as second:
        assert can_log_in(second, "guest", "guest")
        assert "mallory" not in on_server(second, lambda s: list(s.access.users))
    assert "stored user 'mallory' (vhost '') is unusable and was skipped" in caplog.text


# ------------------------------------------------------------------------------ a definitions file on a fresh store


def test_a_definitions_file_on_a_fresh_store_seeds_nothing_else(tmp_path: Path, loop_kind: str) -> None:
    definitions = tmp_path / "definitions.json"
    definitions.write_text(
        json.dumps(
            {
                "users": [{"name": "alice", "password": "alice-pw", "tags": "administrator"}],
                "vhosts": [{"name": "prod"}],
                "permissions": [{"user": "alice", "vhost": "prod", "configure": ".*", "write": ".*", "read": ".*"}],
                "queues": [{"name": "jobs", "vhost": "prod", "durable": True, "arguments": {}}],
            }
        )
    )
    settings: dict[str, Any] = {"data_dir": str(tmp_path / "data"), "definitions": str(definitions)}
    for _start in range(2):  # the first start, then a restart that loads the file again over the stored state
        with running(loop_kind, **settings) as server:
            assert on_server(server, lambda s: (sorted(s.vhosts), sorted(s.access.users))) == (["prod"], ["alice"])
            assert not can_log_in(server, "guest", "guest", "prod")
            assert can_log_in(server, "alice", "alice-pw", "prod")
            assert on_server(server, lambda s: list(s.vhosts["prod"].queues)) == ["jobs"]
    # Without the file, the store still holds what it loaded, and a store with users is not seeded.
    with running(loop_kind, data_dir=settings["data_dir"]) as server:
        assert on_server(server, lambda s: (sorted(s.vhosts), sorted(s.access.users))) == (["prod"], ["alice"])


def test_a_definitions_file_with_guest_and_the_default_vhost_has_them_as_the_file_says(
    tmp_path: Path, loop_kind: str
) -> None:
    definitions = tmp_path / "definitions.json"
    definitions.write_text(
        json.dumps(
            {
                "users": [{"name": "guest", "password_hash": hash_password("from-file"), "tags": []}],
                "vhosts": [{"name": "/"}],
                "permissions": [{"user": "guest", "vhost": "/", "configure": "", "write": ".*", "read": ".*"}],
            }
        )
    )
    with running(loop_kind, data_dir=str(tmp_path / "data"), definitions=str(definitions)) as server:
        assert on_server(server, lambda s: (sorted(s.vhosts), sorted(s.access.users))) == (["/"], ["guest"])
        assert can_log_in(server, "guest", "from-file")
        assert not can_log_in(server, "guest", "guest")  # the file's guest, not the seeded one
        assert on_server(server, lambda s: s.access.users["guest"].tags) == ()
        assert on_server(server, lambda s: s.access.permissions[("guest", "/")].configure) == ""


# ------------------------------------------------------------------------------ data from before users existed


def test_a_data_dir_from_before_users_opens_with_the_default_user_and_its_messages(
    tmp_path: Path, loop_kind: str
) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(FIXTURE_V1, data_dir)
    with running(loop_kind, data_dir=str(data_dir)) as first:
        assert on_server(first, lambda s: sorted(s.access.users)) == ["guest"]
        connection = pika.BlockingConnection(pika.URLParameters(url_for(first, "guest", "guest")))
        try:
            channel = connection.channel()
            assert channel.queue_declare("q", durable=True, passive=True).method.message_count == 2
            assert channel.queue_declare("q2", durable=True, passive=True).method.message_count == 1
            channel.exchange_declare("ex", "topic", passive=True)
            method, _props, body = channel.basic_get("q2", auto_ack=False)
            assert body == b"body11"
            assert method is not None
            channel.basic_nack(method.delivery_tag, requeue=True)
        finally:
            connection.close()
        on_server(first, lambda s: s.access.change_password("guest", "changed"))

    # The seeded user was stored (the changed password is the one that applies), and the messages are still there.
    with running(loop_kind, data_dir=str(data_dir)) as second:
        assert not can_log_in(second, "guest", "guest")
        connection = pika.BlockingConnection(pika.URLParameters(url_for(second, "guest", "changed")))
        try:
            channel = connection.channel()
            bodies = []
            while (got := channel.basic_get("q", auto_ack=True))[0] is not None:
                bodies.append(got[2])
            assert bodies == [b"body11", b"body12"]
            channel.queue_delete("q")
            channel.queue_delete("q2")
            channel.exchange_delete("ex")
        finally:
            connection.close()

    # "/" held nothing of its own in that data (no vhost record): with its queues and exchange gone it must stay.
    with running(loop_kind, data_dir=str(data_dir)) as third:
        assert on_server(third, lambda s: sorted(s.vhosts)) == ["/"]
        assert can_log_in(third, "guest", "changed")
