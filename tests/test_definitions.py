"""RabbitMQ 3.10 definitions files: what loading one produces, how it merges into existing state, how a bad
file stops the start (naming the file and the object), and that an export loads back into the same export."""

from __future__ import annotations

import copy
import json
import logging
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from amqpd.broker.access.passwords import MD5, SHA256, SHA512, hash_password
from amqpd.broker.model.exchange import Exchange
from amqpd.broker.model.queue import Queue
from amqpd.broker.server import cli
from amqpd.broker.server.config import Config
from amqpd.broker.server.definitions import (
    DefinitionsError,
    export_definitions,
    import_definitions,
    load_definitions_file,
)
from amqpd.broker.server.server import Server
from tests.support.amqp import uniq
from tests.support.processes import REPO_ROOT
from tests.support.server_thread import ServerThread

ALICE_HASH = hash_password("alice-pw", SHA256)
BOB_HASH = hash_password("bob-pw", SHA512)

# Written the way RabbitMQ 3.10's export writes it, with a few things a person would write by hand instead:
# a clear-text password, tags as one comma-separated string, an exchange-to-exchange binding.
DOCUMENT: dict[str, Any] = {
    "rabbit_version": "3.10.7",
    "rabbitmq_version": "3.10.7",
    "product_name": "RabbitMQ",
    "product_version": "3.10.7",
    "users": [
        {
            "name": "alice",
            "password_hash": ALICE_HASH,
            "hashing_algorithm": "rabbit_password_hashing_sha256",
            "tags": ["administrator", "monitoring"],
            "limits": {"max-connections": 3},
        },
        {
            "name": "bob",
            "password_hash": BOB_HASH,
            "hashing_algorithm": "rabbit_password_hashing_sha512",
            "tags": "management,policymaker",
        },
        {"name": "carol", "password": "carol-pw", "tags": ""},
    ],
    "vhosts": [{"name": "/"}, {"name": "prod", "description": "production"}],
    "permissions": [
        {"user": "alice", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"},
        {"user": "alice", "vhost": "prod", "configure": ".*", "write": ".*", "read": ".*"},
        {"user": "bob", "vhost": "prod", "configure": "^bob-", "write": "^(amq\\.topic|events)$", "read": ".*"},
        {"user": "carol", "vhost": "/", "configure": "", "write": "", "read": "^scratch$"},
    ],
    "topic_permissions": [
        {"user": "bob", "vhost": "prod", "exchange": "amq.topic", "write": "^{username}\\.", "read": ".*"}
    ],
    "parameters": [
        {
            "value": {"max-connections": 10, "max-queues": 20},
            "vhost": "prod",
            "component": "vhost-limits",
            "name": "limits",
        }
    ],
    "global_parameters": [{"name": "cluster_name", "value": "rabbit@example"}],
    "policies": [],
    "exchanges": [
        {
            "name": "events",
            "vhost": "prod",
            "type": "topic",
            "durable": True,
            "auto_delete": False,
            "internal": False,
            "arguments": {},
        },
        {
            "name": "audit",
            "vhost": "prod",
            "type": "fanout",
            "durable": True,
            "auto_delete": False,
            "internal": True,
            "arguments": {"alternate-exchange": "events"},
        },
        {
            "name": "by-header",
            "vhost": "/",
            "type": "headers",
            "durable": False,
            "auto_delete": False,
            "internal": False,
            "arguments": {},
        },
    ],
    "queues": [
        {
            "name": "orders",
            "vhost": "prod",
            "durable": True,
            "auto_delete": False,
            "arguments": {"x-max-length": 100, "x-queue-type": "classic", "x-dead-letter-exchange": "audit"},
        },
        {"name": "audit-log", "vhost": "prod", "durable": True, "auto_delete": False, "arguments": {}},
        {
            "name": "scratch",
            "vhost": "/",
            "durable": False,
            "auto_delete": False,
            "arguments": {"x-message-ttl": 60000},
        },
    ],
    "bindings": [
        {
            "source": "events",
            "vhost": "prod",
            "destination": "orders",
            "destination_type": "queue",
            "routing_key": "order.#",
            "arguments": {},
        },
        {
            "source": "events",
            "vhost": "prod",
            "destination": "audit",
            "destination_type": "exchange",
            "routing_key": "#",
            "arguments": {},
        },
        {
            "source": "audit",
            "vhost": "prod",
            "destination": "audit-log",
            "destination_type": "queue",
            "routing_key": "",
            "arguments": {},
        },
        {
            "source": "by-header",
            "vhost": "/",
            "destination": "scratch",
            "destination_type": "queue",
            "routing_key": "",
            "arguments": {"x-match": "any", "kind": "test"},
        },
    ],
}


def write_json(path: Path, document: object) -> str:
    path.write_text(json.dumps(document))
    return str(path)


def loaded(path: str) -> Server:
    """A broker configured with the definitions file at ``path`` (so not seeded), the file loaded into it."""
    server = Server(Config(store="memory://", definitions=path))
    load_definitions_file(server, path)
    return server


def canonical(items: list[dict[str, Any]]) -> list[str]:
    """A list of JSON objects, order and key order ignored."""
    return sorted(json.dumps(item, sort_keys=True) for item in items)


def same_sections(a: dict[str, Any], b: dict[str, Any], *sections: str) -> None:
    for section in sections:
        assert canonical(a[section]) == canonical(b[section]), section


def routed(exchange: Exchange, routing_key: str, headers: dict[str, object] | None = None) -> set[str]:
    out: set[Any] = set()
    exchange.route(routing_key, headers, out)
    return {d.name for d in out if isinstance(d, (Queue, Exchange))}


# ------------------------------------------------------------------------------ what a file produces


def test_a_hand_written_document_produces_exactly_its_state(tmp_path: Path) -> None:
    server = loaded(write_json(tmp_path / "defs.json", DOCUMENT))
    exported = export_definitions(server, "test")

    assert sorted(server.vhosts) == ["/", "prod"]  # and no default user or vhost besides the file's
    assert sorted(server.access.users) == ["alice", "bob", "carol"]
    users = {u["name"]: u for u in exported["users"]}
    assert users["alice"] == {
        "name": "alice",
        "password_hash": ALICE_HASH,
        "hashing_algorithm": SHA256,
        "tags": ["administrator", "monitoring"],
        "limits": {"max-connections": 3},
    }
    assert users["bob"] == {
        "name": "bob",
        "password_hash": BOB_HASH,
        "hashing_algorithm": SHA512,
        "tags": ["management", "policymaker"],
        "limits": {},
    }
    assert users["carol"]["tags"] == [] and users["carol"]["hashing_algorithm"] == SHA256
    same_sections(
        exported, DOCUMENT, "permissions", "topic_permissions", "parameters", "exchanges", "queues", "bindings"
    )

    for user, password in (("alice", "alice-pw"), ("bob", "bob-pw"), ("carol", "carol-pw")):
        assert server.login("PLAIN", user, password, from_loopback=False) is not None, user
        assert server.login("PLAIN", user, password + "!", from_loopback=False) is None, user

    prod = server.vhosts["prod"]
    assert prod.exchanges["audit"].internal
    assert routed(prod.exchanges["events"], "order.1") == {"orders", "audit"}
    assert routed(prod.exchanges["audit"], "anything") == {"audit-log"}
    assert routed(server.vhosts["/"].exchanges["by-header"], "", {"kind": "test"}) == {"scratch"}
    assert server.access.vhost_limit("prod", "max-queues") == 20
    assert server.access.topic_permissions[("bob", "prod")]["amq.topic"].write == "^{username}\\."


def test_a_clear_text_password_is_stored_as_a_salted_hash(tmp_path: Path) -> None:
    server = loaded(write_json(tmp_path / "defs.json", DOCUMENT))
    carol = server.access.users["carol"]
    assert carol.password_hash and "carol-pw" not in carol.password_hash
    assert "carol-pw" not in json.dumps(export_definitions(server, "test"))


def test_hashes_in_a_file_from_before_rabbitmq_3_6_are_md5(tmp_path: Path) -> None:
    document = {
        "rabbit_version": "3.5.7",
        "users": [{"name": "old", "password_hash": hash_password("old-pw", MD5), "tags": "administrator"}],
    }
    server = loaded(write_json(tmp_path / "defs.json", document))
    assert server.access.users["old"].hashing_algorithm == MD5
    assert server.login("PLAIN", "old", "old-pw", from_loopback=False) is not None


def test_a_user_without_password_or_hash_can_only_use_external(tmp_path: Path) -> None:
    server = loaded(write_json(tmp_path / "defs.json", {"users": [{"name": "cert", "password_hash": "", "tags": []}]}))
    assert server.login("PLAIN", "cert", "", from_loopback=True) is None
    assert server.login("EXTERNAL", "cert", None, from_loopback=True) is not None


def test_a_per_vhost_document_loads_into_the_given_vhost() -> None:
    server = Server(Config(store="memory://"))
    server.add_vhost("team")
    counts = import_definitions(
        server,
        {
            "exchanges": [{"name": "x", "type": "direct", "durable": True}],
            "queues": [{"name": "q", "durable": True, "arguments": {}}],
            "bindings": [{"source": "x", "destination": "q", "destination_type": "queue", "routing_key": "k"}],
            "users": [{"name": "ignored", "password": "pw"}],  # not part of a per-vhost document
        },
        only_vhost="team",
    )
    assert (counts["exchanges"], counts["queues"], counts["bindings"], counts["users"]) == (1, 1, 1, 0)
    assert routed(server.vhosts["team"].exchanges["x"], "k") == {"q"}
    assert "x" not in server.vhosts["/"].exchanges
    assert "ignored" not in server.access.users


# ------------------------------------------------------------------------------ merging into what exists


def test_existing_exchanges_and_queues_are_kept_while_users_and_permissions_are_replaced(tmp_path: Path) -> None:
    server = Server(Config(store="memory://"))  # seeded: guest and "/"
    root = server.vhosts["/"]
    root.declare_exchange("keep-x", "direct", durable=True)
    root.declare_queue("keep-q", None, durable=True, arguments={"x-max-length": 5})
    server.access.add_user("alice", "old-pw", tags=["monitoring"])
    server.set_permissions("alice", "/", "^a", "^a", "^a")
    server.access.add_user("dave", "dave-pw")
    document = {
        "users": [{"name": "alice", "password": "new-pw", "tags": ["administrator"]}],
        "vhosts": [{"name": "/"}],
        "permissions": [{"user": "alice", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}],
        "exchanges": [
            {"name": "keep-x", "vhost": "/", "type": "fanout", "durable": False},
            {"name": "new-x", "vhost": "/", "type": "topic", "durable": True},
        ],
        "queues": [{"name": "keep-q", "vhost": "/", "durable": True, "arguments": {"x-max-length": 99}}],
        "bindings": [
            {"source": "keep-x", "vhost": "/", "destination": "keep-q", "destination_type": "queue", "routing_key": "k"}
        ],
    }
    load_definitions_file(server, write_json(tmp_path / "defs.json", document))

    assert root.exchanges["keep-x"].type_name == "direct"  # kept as it was, not redeclared
    assert root.exchanges["keep-x"].durable
    assert root.queues["keep-q"].arguments == {"x-max-length": 5}
    assert root.exchanges["new-x"].type_name == "topic"
    assert routed(root.exchanges["keep-x"], "k") == {"keep-q"}  # bindings are added to existing objects
    assert server.login("PLAIN", "alice", "new-pw", from_loopback=False) is not None
    assert server.login("PLAIN", "alice", "old-pw", from_loopback=False) is None
    assert server.access.users["alice"].tags == ("administrator",)
    assert server.access.permissions[("alice", "/")].configure == ".*"
    assert "dave" in server.access.users and "guest" in server.access.users  # users not in the file stay


def test_loading_the_same_file_twice_changes_nothing(tmp_path: Path) -> None:
    path = write_json(tmp_path / "defs.json", DOCUMENT)
    server = loaded(path)
    before = export_definitions(server, "test")
    load_definitions_file(server, path)
    after = export_definitions(server, "test")
    for export in (before, after):  # a clear-text password is hashed again, with a new salt: the same password
        export["users"] = [u for u in export["users"] if u["name"] != "carol"]
    same_sections(
        before, after, "users", "vhosts", "permissions", "topic_permissions", "parameters", "exchanges", "queues"
    )
    same_sections(before, after, "bindings")
    assert server.login("PLAIN", "carol", "carol-pw", from_loopback=False) is not None


# ------------------------------------------------------------------------------ a bad file stops the start


def bad_documents(tmp_path: Path) -> dict[str, tuple[str, list[str]]]:
    """case -> (path of the file, what the error must name besides the file)."""
    perm = {"user": "alice", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}
    alice = {"name": "alice", "password": "pw"}
    cases: dict[str, tuple[object, list[str]]] = {
        "unknown-vhost": (
            {"users": [alice], "permissions": [{**perm, "vhost": "nope"}]},
            ["permission of user 'alice'", "vhost 'nope' does not exist"],
        ),
        "queue-in-unknown-vhost": (
            {"queues": [{"name": "q", "vhost": "nope", "durable": True}]},
            ["queue 'q'", "vhost 'nope' does not exist"],
        ),
        "bad-regex": (
            {"users": [alice], "vhosts": [{"name": "/"}], "permissions": [{**perm, "write": "(unclosed"}]},
            ["permission of user 'alice' in vhost '/'", "invalid regular expression '(unclosed' for write"],
        ),
        "bad-topic-regex": (
            {
                "users": [alice],
                "vhosts": [{"name": "/"}],
                "topic_permissions": [{"user": "alice", "vhost": "/", "exchange": "t", "write": "[", "read": ""}],
            },
            ["topic permission of user 'alice' in vhost '/'", "invalid regular expression '['"],
        ),
        "bad-hash": (
            {"users": [{"name": "alice", "password_hash": "not base64!"}]},
            ["user 'alice'", "password_hash is not valid base64"],
        ),
        "bad-limit": (
            {
                "vhosts": [{"name": "/"}],
                "parameters": [{"vhost": "/", "component": "vhost-limits", "name": "limits", "value": {"max-x": 1}}],
            },
            ["parameter 'vhost-limits/limits' in vhost '/'", "unknown vhost limit 'max-x'"],
        ),
        "bad-queue-argument": (
            {"vhosts": [{"name": "/"}], "queues": [{"name": "q", "vhost": "/", "arguments": {"x-max-length": "x"}}]},
            ["queue 'q' in vhost '/'", "invalid arg 'x-max-length'"],
        ),
    }
    out: dict[str, tuple[str, list[str]]] = {}
    for case, (document, names) in cases.items():
        out[case] = (write_json(tmp_path / f"{case}.json", document), names)
    bad_json = tmp_path / "bad-json.json"
    bad_json.write_text('{"users": [}')
    out["bad-json"] = (str(bad_json), ["is not valid JSON"])
    out["missing-file"] = (str(tmp_path / "absent.json"), ["cannot read definitions file", "No such file"])
    return out


BAD_CASES = [
    "unknown-vhost",
    "queue-in-unknown-vhost",
    "bad-regex",
    "bad-topic-regex",
    "bad-hash",
    "bad-limit",
    "bad-queue-argument",
    "bad-json",
    "missing-file",
]


@pytest.mark.parametrize("case", BAD_CASES)
async def test_a_bad_definitions_file_fails_the_start_naming_the_file_and_the_object(tmp_path: Path, case: str) -> None:
    path, names = bad_documents(tmp_path)[case]
    server = Server(Config(host="127.0.0.1", port=0, store="memory://", definitions=path))
    with pytest.raises(DefinitionsError) as info:
        await server.start()
    message = str(info.value)
    assert repr(path) in message
    for name in names:
        assert name in message
    assert not server._servers  # nothing listens


@pytest.mark.parametrize("case", BAD_CASES)
def test_the_amqpd_command_exits_2_with_one_line_for_a_bad_definitions_file(
    tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, names = bad_documents(tmp_path)[case]
    monkeypatch.setattr(cli, "configure_logging", lambda level: None)  # keep the test run's logging as it is
    argv = ["--host", "127.0.0.1", "--port", "0", "--store", "memory://", "--definitions", path]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("amqpd: ") and err.count("\n") == 1, err
    assert repr(path) in err
    for name in names:
        assert name in err


def test_python_dash_m_broker_exits_2_for_a_bad_definitions_file(tmp_path: Path) -> None:
    path, _ = bad_documents(tmp_path)["unknown-vhost"]
    argv = [sys.executable, "-m", "amqpd", "--host", "127.0.0.1", "--port", "0", "--store", "memory://"]
    done = subprocess.run([*argv, "--definitions", path], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done.stderr
    assert f"amqpd: definitions file {path!r}: permission of user 'alice': vhost 'nope' does not exist" in done.stderr
    assert "Traceback" not in done.stderr


async def test_a_failed_start_releases_the_embedded_store(tmp_path: Path) -> None:
    path, _ = bad_documents(tmp_path)["bad-regex"]
    config = Config(host="127.0.0.1", port=0, data_dir=str(tmp_path / "data"), definitions=path)
    server = Server(config)
    with pytest.raises(DefinitionsError):
        await server.start()
    assert not [t for t in threading.enumerate() if t.name.startswith("amqpd-store")]


def test_a_policy_is_reported_in_one_warning_and_does_not_fail_the_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    document = copy.deepcopy(DOCUMENT)
    document["policies"] = [
        {"vhost": "prod", "name": "ha-all", "pattern": ".*", "apply-to": "queues", "definition": {"ha-mode": "all"}},
        {"vhost": "/", "name": "ttl", "pattern": "^t", "apply-to": "queues", "definition": {"message-ttl": 1}},
    ]
    document["parameters"].append(
        {"vhost": "prod", "component": "federation-upstream", "name": "up", "value": {"uri": "amqp://elsewhere"}}
    )
    caplog.set_level(logging.INFO, logger="amqpd.definitions")
    server = loaded(write_json(tmp_path / "defs.json", document))
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    for name in ("policy 'ha-all'", "policy 'ttl'", "parameter 'federation-upstream/up'"):
        assert name in message
    assert "orders" in server.vhosts["prod"].queues  # everything else loaded
    assert server.access.vhost_limit("prod", "max-connections") == 10


# ------------------------------------------------------------------------------ export


async def test_export_then_import_into_a_fresh_broker_gives_the_same_export(
    broker_server: ServerThread, amqp_url: str, tmp_path: Path
) -> None:
    def set_up_access(server: Server) -> None:
        server.add_vhost("second")
        server.access.add_user("ops", "ops-pw", tags=["administrator", "custom-tag"], limits={"max-channels": 9})
        server.set_permissions("ops", "second", "^ops-", ".*", ".*")
        server.set_permissions("guest", "second", ".*", ".*", ".*")
        server.set_topic_permissions("ops", "second", "amq.topic", "^{username}\\.", "^x")
        server.set_vhost_limits("second", {"max-queues": 50, "max-connections": -1})

    broker_server.call(set_up_access, broker_server.server)
    names = {kind: uniq(kind) for kind in ("topic", "headers", "e2e", "work", "dlq", "private")}
    async with await aio_pika.connect(amqp_url) as connection:
        channel = await connection.channel()
        topic = await channel.declare_exchange(names["topic"], "topic", durable=True, arguments={"x-x": "y"})
        headers = await channel.declare_exchange(names["headers"], "headers", auto_delete=True)
        e2e = await channel.declare_exchange(names["e2e"], "fanout", durable=True, internal=True)
        work = await channel.declare_queue(
            names["work"],
            durable=True,
            arguments={"x-max-length": 10, "x-dead-letter-exchange": names["e2e"], "x-message-ttl": 60000},
        )
        dlq = await channel.declare_queue(names["dlq"], durable=False, auto_delete=True)
        private = await channel.declare_queue(names["private"], exclusive=True)
        await work.bind(topic, "a.*")
        await dlq.bind(headers, arguments={"x-match": "all", "k": "v"})
        await e2e.bind(topic, "#")
        await dlq.bind(e2e)
        await private.bind(topic, "private.#")
        await work.bind("amq.direct", "direct-key")

        first = broker_server.call(export_definitions, broker_server.server, "test")

        exported_queues = {q["name"] for q in first["queues"]}
        assert names["private"] not in exported_queues  # exclusive queues are the connection's, not the broker's
        assert {names["work"], names["dlq"]} <= exported_queues
        assert not [x for x in first["exchanges"] if x["name"].startswith("amq.") or x["name"] == ""]
        assert not [b for b in first["bindings"] if b["destination"] == names["private"] or b["source"] == ""]
        assert {"source": "amq.direct", "destination": names["work"]}.items() <= next(
            b for b in first["bindings"] if b["source"] == "amq.direct"
        ).items()  # bindings from the built-in exchanges are exported

        fresh = loaded(write_json(tmp_path / "export.json", first))
        second = export_definitions(fresh, "test")
        assert {k: v for k, v in first.items() if not isinstance(v, list)} == {
            k: v for k, v in second.items() if not isinstance(v, list)
        }
        same_sections(
            first,
            second,
            "users",
            "vhosts",
            "permissions",
            "topic_permissions",
            "parameters",
            "global_parameters",
            "policies",
            "exchanges",
            "queues",
            "bindings",
        )
        assert fresh.login("PLAIN", "guest", "guest", from_loopback=True) is not None
        assert fresh.login("PLAIN", "ops", "ops-pw", from_loopback=False) is not None

        for queue in (work, dlq):
            await queue.delete()
        for exchange in (topic, headers, e2e):
            await exchange.delete()
    broker_server.call(broker_server.server.delete_vhost, "second")
    broker_server.call(broker_server.server.delete_user, "ops")


def test_an_export_is_rabbitmqs_format(tmp_path: Path) -> None:
    exported = export_definitions(Server(Config(store="memory://")), "1.2.3")
    assert exported["rabbit_version"].startswith("3.10.")
    assert exported["product_name"] == "amqpd" and exported["product_version"] == "1.2.3"
    assert set(exported) >= {
        "users",
        "vhosts",
        "permissions",
        "topic_permissions",
        "parameters",
        "global_parameters",
        "policies",
        "queues",
        "exchanges",
        "bindings",
    }
    (guest,) = exported["users"]
    assert guest["name"] == "guest" and guest["tags"] == ["administrator"]
    assert guest["hashing_algorithm"] == "rabbit_password_hashing_sha256"
    assert exported["vhosts"] == [{"name": "/"}]
    assert exported["permissions"] == [{"user": "guest", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}]
    json.dumps(exported)  # plain JSON all the way down
