"""What one channel's user may do in its vhost, remembered so that the publish path pays one integer compare
and one set lookup per message.

The cache holds only positive answers, is bounded, and is cleared in place whenever the access database changes
(it tells every registered cache), so a revoked permission is enforced from the next operation on. The channel
reads :attr:`Grants.write_ok` directly on publish: a set lookup is the whole cost of a cached answer.
"""

from __future__ import annotations

import re
from typing import Final

from amqpd.broker.access.control import AccessControl
from amqpd.broker.access.users import Permission, User, compile_permission
from amqpd.protocol.errors import ACCESS_REFUSED, ChannelError

CONFIGURE: Final = 0
WRITE: Final = 1
READ: Final = 2
_PERM_NAMES: Final = ("configure", "write", "read")
EXCHANGE: Final = "exchange"
QUEUE: Final = "queue"
_CACHE_MAX: Final = 256  # names remembered per (kind, permission) before the set starts over


def refused(kind: str, name: str, vhost: str, user: str) -> ChannelError:
    return ChannelError(ACCESS_REFUSED, f"access to {kind} '{name}' in vhost '{vhost}' refused for user '{user}'")


class Grants:
    __slots__ = (
        "__weakref__",
        "_control",
        "_ok",
        "_permission",
        "_stale",
        "_topic_ok",
        "_topics",
        "user",
        "vhost",
        "write_ok",
    )

    def __init__(self, control: AccessControl, user: User, vhost: str) -> None:
        self._control = control
        self.user = user
        self.vhost = vhost
        self._stale = True
        self._permission: Permission | None = None
        # index kind_offset + permission: exchange 0..2, queue 3..5
        self._ok: tuple[set[str], ...] = tuple(set() for _ in range(6))
        self.write_ok = self._ok[WRITE]  # exchanges this channel may publish to, as far as it has checked
        self._topics: dict[str, tuple[re.Pattern[str], re.Pattern[str]]] = {}
        self._topic_ok: dict[tuple[str, int], set[str]] = {}
        control.register(self)
        self._refresh()

    def invalidate(self) -> None:
        """The access database changed: forget every answer (in place: the channel holds ``write_ok``)."""
        self._stale = True
        for ok in self._ok:
            ok.clear()
        self._topic_ok.clear()

    def _refresh(self) -> None:
        control = self._control
        self._stale = False
        self.user = control.users.get(self.user.name, self.user)
        self._permission = control.permissions.get((self.user.name, self.vhost))
        for ok in self._ok:
            ok.clear()
        self._topic_ok.clear()
        self._topics = {}
        table = control.topic_permissions.get((self.user.name, self.vhost))
        if table:
            # Variables are expanded in the pattern before compiling (RabbitMQ: a plain text replace).
            def expand(pattern: str) -> re.Pattern[str]:
                pattern = pattern.replace("{username}", self.user.name).replace("{vhost}", self.vhost)
                return compile_permission(pattern, "topic")

            self._topics = {x: (expand(p.write), expand(p.read)) for x, p in table.items()}

    # ------------------------------------------------------------------ resources
    def write_exchange(self, name: str) -> None:
        """Publish: write on the exchange, the default one being 'amq.default'. The channel skips the call when
        ``name in write_ok``."""
        if name not in self.write_ok:
            self.check(EXCHANGE, name, WRITE)

    def check(self, kind: str, name: str, perm: int) -> None:
        if self._stale:
            self._refresh()
        ok = self._ok[perm + (3 if kind == QUEUE else 0)]
        if name in ok:
            return
        shown = "amq.default" if kind == EXCHANGE and name == "" else name
        permission = self._permission
        if permission is None or permission.patterns[perm].search(shown) is None:
            raise refused(kind, shown, self.vhost, self.user.name)
        if len(ok) >= _CACHE_MAX:
            ok.clear()
        ok.add(name)

    # ------------------------------------------------------------------ topic permissions
    @property
    def has_topic_permissions(self) -> bool:
        if self._stale:
            self._refresh()
        return bool(self._topics)

    def check_topic(self, exchange: str, routing_key: str, perm: int) -> None:
        """Routing-key check on a topic exchange; allowed when the user has no topic permission for it."""
        if self._stale:
            self._refresh()
        patterns = self._topics.get(exchange)
        if patterns is None:
            return
        key = (exchange, perm)
        ok = self._topic_ok.get(key)
        if ok is not None and routing_key in ok:
            return
        if patterns[0 if perm == WRITE else 1].search(routing_key) is None:
            raise ChannelError(
                ACCESS_REFUSED,
                f"access to topic '{routing_key}' in exchange '{exchange}' in vhost '{self.vhost}' "
                f"refused for user '{self.user.name}'",
            )
        if ok is None:
            ok = self._topic_ok[key] = set()
        elif len(ok) >= _CACHE_MAX:
            ok.clear()
        ok.add(routing_key)
