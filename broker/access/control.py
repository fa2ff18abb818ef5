"""The access database (users, permissions, topic permissions, vhost limits) and the login decision.

Every change clears the per-channel caches (:mod:`broker.access.grants`) registered with it, so a revoked
permission takes effect on the next operation, where RabbitMQ's channels may keep using up to twelve cached
answers.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterable
from typing import Any, Protocol

from amqpd.broker.access.passwords import DEFAULT_ALGORITHM, check_password, hash_password
from amqpd.broker.access.users import (
    VHOST_LIMITS,
    AccessConfigError,
    Permission,
    TopicPermission,
    User,
    check_limits,
    parse_tags,
)

log = logging.getLogger("amqpd.access")

# Setting kinds in the store (storage.SettingRecord): users are broker-wide (vhost ""), the rest per vhost.
USER = "user"
PERMISSION = "permission"
TOPIC_PERMISSION = "topic-permission"
VHOST_LIMITS_KIND = "vhost-limits"
VHOST_LIMITS_NAME = "limits"


class Invalidated(Protocol):
    """A cache of access answers (a channel's Grants) that must forget them when anything changes."""

    def invalidate(self) -> None: ...


class AccessJournal(Protocol):
    """Where changes are made durable (the server writes them to the store); restores are not journaled."""

    def put(self, vhost: str, kind: str, name: str, value: dict[str, Any]) -> None: ...
    def delete(self, vhost: str, kind: str, name: str) -> None: ...


class _NoJournal:
    def put(self, vhost: str, kind: str, name: str, value: dict[str, Any]) -> None:
        pass

    def delete(self, vhost: str, kind: str, name: str) -> None:
        pass


NO_ACCESS_JOURNAL: AccessJournal = _NoJournal()


def user_value(user: User) -> dict[str, Any]:
    return {
        "password_hash": user.password_hash,
        "hashing_algorithm": user.hashing_algorithm,
        "tags": list(user.tags),
        "limits": dict(user.limits),
    }


class AccessControl:
    def __init__(self, loopback_users: Iterable[str] = ("guest",), journal: AccessJournal = NO_ACCESS_JOURNAL):
        self.loopback_users = frozenset(loopback_users)
        self.journal = journal
        self.users: dict[str, User] = {}
        self.permissions: dict[tuple[str, str], Permission] = {}  # (user, vhost)
        self.topic_permissions: dict[tuple[str, str], dict[str, TopicPermission]] = {}  # (user, vhost) -> exchange
        self.vhost_limits: dict[str, dict[str, int]] = {}
        self.generation = 0
        self._caches: weakref.WeakSet[Invalidated] = weakref.WeakSet()

    def register(self, cache: Invalidated) -> None:
        """Tell ``cache`` of every change from now on (it is held weakly: a closed channel just goes away)."""
        self._caches.add(cache)

    def _changed(self) -> None:
        # Pushed rather than polled, so that a cached answer costs the publish path one set lookup and nothing
        # more; changes are rare, and each live channel's cache is cleared in place.
        self.generation += 1
        for cache in list(self._caches):
            cache.invalidate()

    # ------------------------------------------------------------------ login
    def login(self, mechanism: str, username: str, password: str | None, from_loopback: bool) -> User | None:
        """The user, or None (with the reason logged, never the password). ``password`` None means the name
        comes from a verified client certificate (EXTERNAL): the user only has to exist."""
        user = self.users.get(username)
        if user is None or (password is not None and not check_password(
            user.password_hash, user.hashing_algorithm, password
        )):
            log.warning("%s login refused: user '%s' - invalid credentials", mechanism, username)
            return None
        if username in self.loopback_users and not from_loopback:
            log.warning("%s login refused: user '%s' can only connect via localhost", mechanism, username)
            return None
        return user

    # ------------------------------------------------------------------ users
    def add_user(
        self,
        name: str,
        password: str | None = None,
        *,
        password_hash: str | None = None,
        hashing_algorithm: str = DEFAULT_ALGORITHM,
        tags: object = (),
        limits: dict[str, Any] | None = None,
    ) -> User:
        """Create or replace a user: from a clear-text password (hashed here), or a hash as exported by
        RabbitMQ; neither means a user that can only log in with EXTERNAL. Limits not given are kept."""
        if not name:
            raise AccessConfigError("a user name must not be empty")
        if password is not None:
            password_hash = hash_password(password, hashing_algorithm)
        old = self.users.get(name)
        user = User(
            name,
            password_hash or "",
            hashing_algorithm,
            parse_tags(tags),
            dict(limits) if limits is not None else (dict(old.limits) if old is not None else {}),
        )
        self.users[name] = user
        self._user_changed(user)
        return user

    def change_password(self, name: str, password: str | None) -> User:
        user = self.require_user(name)
        user.password_hash = hash_password(password, user.hashing_algorithm) if password is not None else ""
        self._user_changed(user)
        return user

    def set_user_tags(self, name: str, tags: object) -> User:
        user = self.require_user(name)
        user.tags = parse_tags(tags)
        self._user_changed(user)
        return user

    def set_user_limits(self, name: str, limits: dict[str, Any]) -> User:
        user = self.require_user(name)
        merged = dict(user.limits)
        merged.update(limits)
        user.limits = User(name, limits=merged).limits  # validated
        self._user_changed(user)
        return user

    def clear_user_limit(self, name: str, limit: str) -> User:
        user = self.require_user(name)
        if limit == "all":
            user.limits.clear()
        else:
            user.limits.pop(limit, None)
        self._user_changed(user)
        return user

    def _user_changed(self, user: User) -> None:
        self._changed()
        self.journal.put("", USER, user.name, user_value(user))

    def delete_user(self, name: str) -> bool:
        """Remove the user with all its permissions; False when there is no such user."""
        if self.users.pop(name, None) is None:
            return False
        for user, vhost in [k for k in self.permissions if k[0] == name]:
            del self.permissions[(user, vhost)]
            self.journal.delete(vhost, PERMISSION, user)
        for user, vhost in [k for k in self.topic_permissions if k[0] == name]:
            del self.topic_permissions[(user, vhost)]
            self.journal.delete(vhost, TOPIC_PERMISSION, user)
        self.journal.delete("", USER, name)
        self._changed()
        return True

    def require_user(self, name: str) -> User:
        user = self.users.get(name)
        if user is None:
            raise AccessConfigError(f"no such user '{name}'")
        return user

    # ------------------------------------------------------------------ permissions
    def set_permissions(self, user: str, vhost: str, configure: str, write: str, read: str) -> Permission:
        self.require_user(user)
        perm = Permission.of(configure, write, read)
        self.permissions[(user, vhost)] = perm
        self._changed()
        self.journal.put(vhost, PERMISSION, user, {"configure": configure, "write": write, "read": read})
        return perm

    def clear_permissions(self, user: str, vhost: str) -> bool:
        if self.permissions.pop((user, vhost), None) is None:
            return False
        self._changed()
        self.journal.delete(vhost, PERMISSION, user)
        return True

    def set_topic_permissions(self, user: str, vhost: str, exchange: str, write: str, read: str) -> None:
        self.require_user(user)
        perm = TopicPermission(exchange, write, read)
        table = self.topic_permissions.setdefault((user, vhost), {})
        table[exchange] = perm
        self._changed()
        self._journal_topics(user, vhost)

    def clear_topic_permissions(self, user: str, vhost: str, exchange: str | None = None) -> bool:
        table = self.topic_permissions.get((user, vhost))
        if not table or (exchange is not None and exchange not in table):
            return False
        if exchange is None:
            table.clear()
        else:
            del table[exchange]
        if not table:
            del self.topic_permissions[(user, vhost)]
        self._changed()
        self._journal_topics(user, vhost)
        return True

    def _journal_topics(self, user: str, vhost: str) -> None:
        table = self.topic_permissions.get((user, vhost))
        if not table:
            self.journal.delete(vhost, TOPIC_PERMISSION, user)
        else:
            value = {x: {"write": p.write, "read": p.read} for x, p in table.items()}
            self.journal.put(vhost, TOPIC_PERMISSION, user, value)

    def has_vhost_access(self, user: str, vhost: str) -> bool:
        return (user, vhost) in self.permissions

    # ------------------------------------------------------------------ vhost limits
    def set_vhost_limits(self, vhost: str, limits: dict[str, Any]) -> dict[str, int]:
        """Replace the vhost's limits (RabbitMQ's set_vhost_limits replaces the whole set)."""
        checked = check_limits(limits, VHOST_LIMITS, "vhost")
        if checked:
            self.vhost_limits[vhost] = checked
            self.journal.put(vhost, VHOST_LIMITS_KIND, VHOST_LIMITS_NAME, dict(checked))
        elif self.vhost_limits.pop(vhost, None) is not None:
            self.journal.delete(vhost, VHOST_LIMITS_KIND, VHOST_LIMITS_NAME)
        self._changed()
        return checked

    def vhost_limit(self, vhost: str, name: str) -> int | None:
        limits = self.vhost_limits.get(vhost)
        if not limits:
            return None
        value = limits.get(name)
        return value if value is not None and value >= 0 else None

    def forget_vhost(self, vhost: str) -> None:
        """The vhost is gone: drop what referred to it (the store's vhost delete drops the stored copies)."""
        for key in [k for k in self.permissions if k[1] == vhost]:
            del self.permissions[key]
        for key in [k for k in self.topic_permissions if k[1] == vhost]:
            del self.topic_permissions[key]
        self.vhost_limits.pop(vhost, None)
        self._changed()

    # ------------------------------------------------------------------ recovery
    def restore(self, vhost: str, kind: str, name: str, value: dict[str, Any]) -> None:
        """Load one stored setting (no journaling). Unknown kinds are not ours: ignored."""
        if kind == USER:
            self.users[name] = User(
                name,
                str(value.get("password_hash") or ""),
                str(value.get("hashing_algorithm") or DEFAULT_ALGORITHM),
                parse_tags(value.get("tags")),
                dict(value.get("limits") or {}),
            )
        elif kind == PERMISSION:
            self.permissions[(name, vhost)] = Permission.of(
                str(value.get("configure", "")), str(value.get("write", "")), str(value.get("read", ""))
            )
        elif kind == TOPIC_PERMISSION:
            self.topic_permissions[(name, vhost)] = {
                x: TopicPermission(x, str(p.get("write", "")), str(p.get("read", "")))
                for x, p in value.items()
                if isinstance(p, dict)
            }
        elif kind == VHOST_LIMITS_KIND:
            self.vhost_limits[vhost] = check_limits(value, VHOST_LIMITS, "vhost")
        else:
            return
        self._changed()
