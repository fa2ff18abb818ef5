"""The users, vhosts and permissions world of the access tests (tests/test_access_*.py).

`tests/fixtures/access/definitions.json` is that world as RabbitMQ 3.10.8 exported it (see the README beside it);
this module holds what a definitions file cannot give back: the users' passwords. It also names every user, vhost
and fixture exchange/queue, and builds URLs (user, password and vhost percent-encoded).

The broker behind the tests is the one `amqp_url` names: a fresh in-process amqpd that loads the definitions file
at boot (`AMQPD_SETTINGS`), or, with ``AMQP_URL`` set, that broker's host and port, which must already hold the
definitions (``tests/fixtures/access/load-into-reference.sh`` imports them into a running reference RabbitMQ).
"""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

DEFINITIONS = Path(__file__).resolve().parent.parent / "fixtures" / "access" / "definitions.json"

# What an access test module returns from its `amqpd_settings` fixture: the in-process broker loads the world.
AMQPD_SETTINGS: dict[str, object] = {"definitions": str(DEFINITIONS)}

EXTERNAL = bool(os.environ.get("AMQP_URL"))

# ----------------------------------------------------------------------------------------------------- vhosts
DEFAULT_VHOST = "/"
ACCESS_VHOST = "access-test"  # the permission, topic-permission and tag tests
LIMITS_VHOST = "limits-test"  # vhost limits: max-connections VHOST_MAX_CONNECTIONS, max-queues VHOST_MAX_QUEUES
MISSING_VHOST = "no-such-vhost"  # not in the definitions
VHOST_MAX_CONNECTIONS = 3
VHOST_MAX_QUEUES = 2


# ------------------------------------------------------------------------------------------------------ users
@dataclass(frozen=True, slots=True)
class User:
    name: str
    password: str
    tags: tuple[str, ...] = ()


# administrator, full permissions on "/", access-test and limits-test (RabbitMQ's default user, loopback only)
GUEST = User("guest", "guest", ("administrator",))
# access-test: configure ^cfg-.*  write ^(cfg|wr)-.*  read ^(cfg|rd)-.*  (its password needs percent-encoding)
REGEX = User("regex-user", "re:g@x/p%ss w?rd#")
# access-test: ^$ for configure, write and read
DENY = User("deny-user", "deny-secret")
# access-test: configure .*  write ^$  read ^$
CONFIGURE_ONLY = User("configure-only", "configure-secret")
# permissions on "/" only
STRANGER = User("stranger", "stranger-secret")
# tag monitoring; access-test: configure ^$  write ^$  read ^rd-.*  (nothing on "/")
MONITOR = User("monitor", "monitor-secret", ("monitoring",))
# tag management; no permissions anywhere
MANAGER = User("manager", "manager-secret", ("management",))
# tag administrator; permissions on "/" only
BARE_ADMIN = User("bare-admin", "bare-admin-secret", ("administrator",))
# tag impersonator; access-test: .* .* .*
IMPERSONATOR = User("impersonator", "impersonator-secret", ("impersonator",))
# access-test: .* .* .*; topic permissions on TOPIC_X (write TOPIC_WRITE, read TOPIC_READ) and on PLAIN_X
TOPIC_USER = User("topic-user", "topic-secret")
# user limits max-connections USER_MAX_CONNECTIONS, max-channels USER_MAX_CHANNELS; access-test and
# limits-test: .* .* .*
LIMITED = User("limited-user", "limited-secret")
USER_MAX_CONNECTIONS = 2
USER_MAX_CHANNELS = 2

USERS = (GUEST, REGEX, DENY, CONFIGURE_ONLY, STRANGER, MONITOR, MANAGER, BARE_ADMIN, IMPERSONATOR, TOPIC_USER, LIMITED)
NOBODY = User("nobody", "nobody-secret")  # not in the definitions

# ----------------------------------------------------------------------------- durable topology in access-test
CFG_X, WR_X, RD_X, OTHER_X = "cfg-x", "wr-x", "rd-x", "other-x"  # direct exchanges
CFG_Q, WR_Q, RD_Q, OTHER_Q = "cfg-q", "wr-q", "rd-q", "other-q"  # queues, bound from the same-prefix exchange
TOPIC_X = "topic-x"  # topic exchange with topic permissions for TOPIC_USER
OPEN_TOPIC_X = "open-topic-x"  # topic exchange that no one has topic permissions on
PLAIN_X = "plain-x"  # direct exchange with (ignored) topic permissions ^$ for TOPIC_USER
# bindings: cfg-x -> cfg-q "cfg", wr-x -> wr-q "wr", rd-x -> rd-q "rd", other-x -> other-q "other",
# and the exchange-to-exchange binding rd-x -> cfg-x "e2e"
# TOPIC_USER's topic permissions on TOPIC_X (as stored, with variables), and keys they allow in access-test
TOPIC_WRITE = "^{vhost}\\.{username}\\..*"
TOPIC_READ = "^{vhost}\\..*"
ALLOWED_TOPIC_KEY = f"{ACCESS_VHOST}.{TOPIC_USER.name}.news"  # matches the expanded write permission
ALLOWED_TOPIC_BINDING = f"{ACCESS_VHOST}.#"  # matches the expanded read permission


# -------------------------------------------------------------------------------------------------------- URLs
@dataclass(frozen=True, slots=True)
class Broker:
    """Where the access tests connect: host and port of `amqp_url`, with any user and vhost."""

    host: str
    port: int

    @classmethod
    def from_url(cls, url: str) -> Broker:
        parts = urlsplit(url)
        return cls(parts.hostname or "127.0.0.1", parts.port or 5672)

    def url(self, user: User, vhost: str = ACCESS_VHOST, *, password: str | None = None) -> str:
        return url_for(self.host, self.port, user.name, user.password if password is None else password, vhost)


def url_for(host: str, port: int, user: str, password: str, vhost: str) -> str:
    """An amqp:// URL; user, password and vhost are percent-encoded (so "/" is written %2F)."""
    return f"amqp://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}/{quote(vhost, safe='')}"


def non_loopback_address() -> str | None:
    """An IPv4 address of this machine that is not loopback, or None (then loopback-user tests skip)."""
    candidates: list[str] = []
    with contextlib.suppress(OSError):
        candidates += [str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)]
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: this only asks the kernel for a route
        candidates.append(str(probe.getsockname()[0]))
    return next((a for a in candidates if not a.startswith("127.") and a != "0.0.0.0"), None)
