"""RabbitMQ's definitions format (3.10): load a file at start, and export the broker's state the same way.

Import follows ``rabbit_definitions:apply_defs``: users, vhosts, permissions, topic permissions, exchanges,
parameters, queues, bindings, in that order, merging into what exists: users and permissions are replaced,
an exchange, queue or binding that already exists is kept as it is. A file exported from RabbitMQ loads
unchanged. Policies and runtime parameters other than vhost limits are not supported yet: they are listed in
one warning, not silently dropped.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from amqpd.broker.access.passwords import MD5, SHA256
from amqpd.broker.access.users import AccessConfigError
from amqpd.broker.durability.journal import is_stored_queue
from amqpd.broker.model.exchange import Exchange
from amqpd.broker.model.queue import Queue
from amqpd.protocol.errors import AMQPError

if TYPE_CHECKING:
    from amqpd.broker.server.server import Server

log = logging.getLogger("amqpd.definitions")

FORMAT_VERSION = "3.10.8"  # the RabbitMQ release whose format we write (importers read the hash default from it)


# Resolves an object's vhost (the per-vhost import's, or its 'vhost' key) and checks it exists; the argument
# after the item names the object for the error message.
VHostOf = Callable[[dict[str, Any], str], str]


class DefinitionsError(ValueError):
    """The file cannot be loaded; the message names the file and the object at fault."""


def load_definitions_file(server: Server, path: str) -> dict[str, int]:
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except OSError as exc:
        raise DefinitionsError(f"cannot read definitions file {path!r}: {exc.strerror or exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DefinitionsError(f"definitions file {path!r} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise DefinitionsError(f"definitions file {path!r} must hold a JSON object")
    try:
        counts = import_definitions(server, data)
    except DefinitionsError as exc:
        raise DefinitionsError(f"definitions file {path!r}: {exc}") from exc
    log.info(
        "loaded definitions from %s: %s",
        path,
        ", ".join(f"{n} {kind}" for kind, n in counts.items() if n) or "nothing",
    )
    return counts


def _items(data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = data.get(key) or []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise DefinitionsError(f"'{key}' must be a list of objects")
    return value


def _text(item: dict[str, Any], key: str, what: str, default: str | None = None) -> str:
    value = item.get(key, default)
    if not isinstance(value, str):
        raise DefinitionsError(f"{what}: '{key}' must be a string, got {value!r}")
    return value


@contextlib.contextmanager
def _about(what: str) -> Iterator[None]:
    """Name the object at fault in an error raised while applying it (a bad regex, hash, tag list, limit)."""
    try:
        yield
    except DefinitionsError:
        raise
    except ValueError as exc:  # AccessConfigError, PasswordHashError
        raise DefinitionsError(f"{what}: {exc}") from exc


def _flag(value: object) -> bool:
    return value in (True, "true", "True", 1)


def _default_algorithm(rabbit_version: object) -> str:
    """As RabbitMQ: hashes from before 3.6 are MD5; otherwise the default (SHA-256)."""
    if isinstance(rabbit_version, str):
        parts = rabbit_version.split(".")
        if len(parts) >= 2 and parts[0] == "3" and parts[1].isdigit() and int(parts[1]) < 6:
            return MD5
    return SHA256


def import_definitions(server: Server, data: dict[str, Any], only_vhost: str | None = None) -> dict[str, int]:
    """Apply ``data`` (a parsed definitions document) to ``server``. ``only_vhost``: a per-vhost document
    (no users, vhosts or permissions; objects without a 'vhost' key go there)."""
    counts = dict.fromkeys(
        ("users", "vhosts", "permissions", "topic_permissions", "exchanges", "queues", "bindings"), 0
    )
    access = server.access

    def vhost_of(item: dict[str, Any], what: str) -> str:
        name = only_vhost if only_vhost is not None else _text(item, "vhost", what)
        if name not in server.vhosts:
            raise DefinitionsError(f"{what}: vhost '{name}' does not exist")
        return name

    try:
        if only_vhost is None:
            algorithm = _default_algorithm(data.get("rabbit_version"))
            for item in _items(data, "users"):
                name = _text(item, "name", "user")
                what = f"user '{name}'"
                password = item.get("password")
                with _about(what):
                    access.add_user(
                        name,
                        password if isinstance(password, str) else None,
                        password_hash=_text(item, "password_hash", what, "") if password is None else None,
                        hashing_algorithm=_text(item, "hashing_algorithm", what, algorithm),
                        tags=item.get("tags", ()),
                        limits=item.get("limits") if isinstance(item.get("limits"), dict) else None,
                    )
                counts["users"] += 1
            for item in _items(data, "vhosts"):
                name = _text(item, "name", "vhost")
                metadata = {k: v for k, v in item.items() if k in ("description", "tags", "default_queue_type")}
                server.add_vhost(name, metadata)
                counts["vhosts"] += 1
            for item in _items(data, "permissions"):
                user = _text(item, "user", "permission")
                what = f"permission of user '{user}'"
                vhost = vhost_of(item, what)
                with _about(f"{what} in vhost '{vhost}'"):
                    server.set_permissions(
                        user,
                        vhost,
                        _text(item, "configure", what),
                        _text(item, "write", what),
                        _text(item, "read", what),
                    )
                counts["permissions"] += 1
            for item in _items(data, "topic_permissions"):
                user = _text(item, "user", "topic permission")
                what = f"topic permission of user '{user}'"
                vhost = vhost_of(item, what)
                with _about(f"{what} in vhost '{vhost}'"):
                    server.set_topic_permissions(
                        user,
                        vhost,
                        _text(item, "exchange", what),
                        _text(item, "write", what),
                        _text(item, "read", what),
                    )
                counts["topic_permissions"] += 1
        for item in _items(data, "exchanges"):
            _import_exchange(server, item, vhost_of)
            counts["exchanges"] += 1
        unsupported = _import_parameters(server, data, vhost_of)
        if unsupported:
            log.warning("definitions: not supported yet, skipped: %s", ", ".join(unsupported))
        for item in _items(data, "queues"):
            _import_queue(server, item, vhost_of)
            counts["queues"] += 1
        for item in _items(data, "bindings"):
            _import_binding(server, item, vhost_of)
            counts["bindings"] += 1
    except (AccessConfigError, ValueError) as exc:
        if isinstance(exc, DefinitionsError):
            raise
        raise DefinitionsError(str(exc)) from exc
    return counts


def _import_exchange(server: Server, item: dict[str, Any], vhost_of: VHostOf) -> None:
    name = _text(item, "name", "exchange")
    what = f"exchange '{name}'"
    vhost = server.vhosts[vhost_of(item, what)]
    if name == "" or name.startswith("amq.") or name in vhost.exchanges:
        return  # the built-in ones, and existing exchanges, are kept as they are
    try:
        vhost.declare_exchange(
            name,
            _text(item, "type", what),
            durable=_flag(item.get("durable", True)),
            auto_delete=_flag(item.get("auto_delete", False)),
            internal=_flag(item.get("internal", False)),
            arguments=dict(item.get("arguments") or {}),
        )
    except AMQPError as exc:
        raise DefinitionsError(f"{what} in vhost '{vhost.name}': {exc.detail}") from exc


def _import_queue(server: Server, item: dict[str, Any], vhost_of: VHostOf) -> None:
    name = _text(item, "name", "queue")
    what = f"queue '{name}'"
    vhost = server.vhosts[vhost_of(item, what)]
    if name in vhost.queues:
        return
    try:
        vhost.declare_queue(
            name,
            None,
            durable=_flag(item.get("durable", True)),
            auto_delete=_flag(item.get("auto_delete", False)),
            arguments=dict(item.get("arguments") or {}),
        )
    except AMQPError as exc:
        raise DefinitionsError(f"{what} in vhost '{vhost.name}': {exc.detail}") from exc


def _import_binding(server: Server, item: dict[str, Any], vhost_of: VHostOf) -> None:
    source = _text(item, "source", "binding")
    destination = _text(item, "destination", "binding")
    what = f"binding of '{destination}' to '{source}'"
    vhost = server.vhosts[vhost_of(item, what)]
    kind = _text(item, "destination_type", what, "queue")
    routing_key = _text(item, "routing_key", what, "")
    arguments = dict(item.get("arguments") or {})
    if source == "":
        return  # default-exchange bindings are implicit
    try:
        if kind == "exchange":
            vhost.bind_exchange(destination, source, routing_key, arguments)
        elif kind == "queue":
            vhost.bind_queue(vhost.get_queue(destination), source, routing_key, arguments)
        else:
            raise DefinitionsError(f"{what}: unknown destination_type '{kind}'")
    except AMQPError as exc:
        raise DefinitionsError(f"{what} in vhost '{vhost.name}': {exc.detail}") from exc


def _import_parameters(server: Server, data: dict[str, Any], vhost_of: VHostOf) -> list[str]:
    unsupported: list[str] = []
    for item in _items(data, "parameters"):
        component = _text(item, "component", "parameter")
        name = _text(item, "name", f"parameter of {component}", "")
        what = f"parameter '{component}/{name}'"
        if component == "vhost-limits":
            value = item.get("value")
            if not isinstance(value, dict):
                raise DefinitionsError(f"{what}: value must be an object")
            vhost = vhost_of(item, what)
            with _about(f"{what} in vhost '{vhost}'"):
                server.set_vhost_limits(vhost, value)
        else:
            unsupported.append(what)
    unsupported.extend(f"policy '{p.get('name')}'" for p in _items(data, "policies"))
    return unsupported


# ---------------------------------------------------------------------------------------------- export
def export_definitions(server: Server, version: str) -> dict[str, Any]:
    """The whole broker in RabbitMQ 3.10's export format (what ``rabbitmqctl export_definitions`` writes)."""
    access = server.access
    users = [
        {
            "name": u.name,
            "password_hash": u.password_hash,
            "hashing_algorithm": u.hashing_algorithm,
            "tags": list(u.tags),
            "limits": dict(u.limits),
        }
        for u in access.users.values()
    ]
    permissions = [
        {"user": user, "vhost": vhost, "configure": p.configure, "write": p.write, "read": p.read}
        for (user, vhost), p in access.permissions.items()
    ]
    topic_permissions = [
        {"user": user, "vhost": vhost, "exchange": x, "write": p.write, "read": p.read}
        for (user, vhost), table in access.topic_permissions.items()
        for x, p in table.items()
    ]
    parameters = [
        {"value": dict(limits), "vhost": vhost, "component": "vhost-limits", "name": "limits"}
        for vhost, limits in access.vhost_limits.items()
    ]
    out: dict[str, Any] = {
        "rabbit_version": FORMAT_VERSION,
        "rabbitmq_version": FORMAT_VERSION,
        "product_name": "amqpd",
        "product_version": version,
        "users": users,
        "vhosts": [{"name": name} for name in server.vhosts],
        "permissions": permissions,
        "topic_permissions": topic_permissions,
        "parameters": parameters,
        "global_parameters": [],
        "policies": [],
    }
    out.update(_topology(server.vhosts.items(), with_vhost=True))
    return out


def _topology(vhosts: Iterable[tuple[str, Any]], with_vhost: bool) -> dict[str, list[dict[str, Any]]]:
    queues: list[dict[str, Any]] = []
    exchanges: list[dict[str, Any]] = []
    bindings: list[dict[str, Any]] = []

    def scoped(vhost: str, item: dict[str, Any]) -> dict[str, Any]:
        if with_vhost:
            item["vhost"] = vhost
        return item

    for vname, vhost in vhosts:
        exported: set[str] = set()
        for q in vhost.queues.values():
            if q.exclusive:
                continue
            exported.add(q.name)
            queues.append(
                scoped(
                    vname,
                    {
                        "name": q.name,
                        "durable": is_stored_queue(q),
                        "auto_delete": q.auto_delete,
                        "arguments": _json_table(q.arguments),
                    },
                )
            )
        for ex in vhost.exchanges.values():
            if ex.name == "" or ex.name.startswith("amq."):
                continue
            exchanges.append(
                scoped(
                    vname,
                    {
                        "name": ex.name,
                        "type": ex.type_name,
                        "durable": ex.durable,
                        "auto_delete": ex.auto_delete,
                        "internal": ex.internal,
                        "arguments": _json_table(ex.arguments),
                    },
                )
            )
        for ex in vhost.exchanges.values():
            if ex.name == "":
                continue
            for dest, key, args in ex.bindings():
                if not isinstance(dest, (Queue, Exchange)) or (isinstance(dest, Queue) and dest.name not in exported):
                    continue  # exclusive queues, and pseudo-destinations, are not exported
                bindings.append(
                    scoped(
                        vname,
                        {
                            "source": ex.name,
                            "destination": dest.name,
                            "destination_type": "exchange" if isinstance(dest, Exchange) else "queue",
                            "routing_key": key,
                            "arguments": _json_table(args),
                        },
                    )
                )
    return {"queues": queues, "exchanges": exchanges, "bindings": bindings}


def _json_table(table: dict[str, Any]) -> dict[str, Any]:
    """AMQP field values as JSON can carry them (bytes as text, decimals and timestamps as strings)."""

    def convert(value: Any) -> Any:
        if isinstance(value, (bytes, bytearray)):
            return bytes(value).decode("utf-8", "replace")
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, list):
            return [convert(v) for v in value]
        if value is None or isinstance(value, (str, int, float, bool)):
            return value
        return str(value)

    return {k: convert(v) for k, v in table.items()}
