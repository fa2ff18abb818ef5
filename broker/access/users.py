"""Users, permissions and limits as RabbitMQ's internal database holds them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from amqpd.broker.access.passwords import DEFAULT_ALGORITHM, check_algorithm, decode_hash

# Tags RabbitMQ's management plugin gives meaning to; any other tag is kept and shown, as RabbitMQ does.
ADMINISTRATOR: Final = "administrator"
MONITORING: Final = "monitoring"
POLICYMAKER: Final = "policymaker"
MANAGEMENT: Final = "management"
IMPERSONATOR: Final = "impersonator"

USER_LIMITS: Final = ("max-connections", "max-channels")
VHOST_LIMITS: Final = ("max-connections", "max-queues")


class AccessConfigError(ValueError):
    """A user, permission or limit that cannot be stored as given (bad regex, unknown limit, missing user)."""


@dataclass(slots=True)
class User:
    name: str
    password_hash: str = ""  # base64 salt + digest; "" = no password (EXTERNAL only)
    hashing_algorithm: str = DEFAULT_ALGORITHM
    tags: tuple[str, ...] = ()
    limits: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_algorithm(self.hashing_algorithm)
        if self.password_hash:
            decode_hash(self.password_hash)
        self.limits = check_limits(self.limits, USER_LIMITS, "user")

    @property
    def is_impersonator(self) -> bool:
        return IMPERSONATOR in self.tags

    def limit(self, name: str) -> int | None:
        """The limit, or None when there is none (RabbitMQ: absent or negative)."""
        value = self.limits.get(name)
        return value if value is not None and value >= 0 else None


def parse_tags(tags: object) -> tuple[str, ...]:
    """Tags as RabbitMQ accepts them: a list, or one string separated by commas (definitions and the CLI)."""
    if tags is None:
        return ()
    if isinstance(tags, str):
        items = tags.split(",")
    elif isinstance(tags, (list, tuple)):
        items = [str(t) for t in tags]
    else:
        raise AccessConfigError(f"tags must be a list or a comma-separated string, not {type(tags).__name__}")
    return tuple(dict.fromkeys(t.strip() for t in items if t.strip()))


def check_limits(limits: object, known: tuple[str, ...], what: str) -> dict[str, int]:
    if not isinstance(limits, dict):
        raise AccessConfigError(f"{what} limits must be an object like {{\"{known[0]}\": 10}}")
    out: dict[str, int] = {}
    for key, value in limits.items():
        if key not in known:
            raise AccessConfigError(f"unknown {what} limit '{key}' (known: {', '.join(known)})")
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise AccessConfigError(f"{what} limit '{key}' must be an integer, not {value!r}")
        try:
            number = int(value)
        except ValueError:
            raise AccessConfigError(f"{what} limit '{key}' must be an integer, not {value!r}") from None
        if number != value and not isinstance(value, str):
            raise AccessConfigError(f"{what} limit '{key}' must be an integer, not {value!r}")
        out[str(key)] = number
    return out


def compile_permission(pattern: str, what: str) -> re.Pattern[str]:
    """RabbitMQ matches with an unanchored search, and "" means "^$" (nothing)."""
    try:
        return re.compile(pattern or "^$")
    except re.error as exc:
        raise AccessConfigError(f"invalid regular expression '{pattern}' for {what} permission: {exc}") from None


@dataclass(frozen=True, slots=True)
class Permission:
    """A user's configure / write / read regular expressions in one vhost."""

    configure: str
    write: str
    read: str
    patterns: tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]] = field(compare=False, repr=False)

    @classmethod
    def of(cls, configure: str, write: str, read: str) -> Permission:
        return cls(
            configure,
            write,
            read,
            (
                compile_permission(configure, "configure"),
                compile_permission(write, "write"),
                compile_permission(read, "read"),
            ),
        )


@dataclass(frozen=True, slots=True)
class TopicPermission:
    """Write / read regular expressions on the routing keys of one topic exchange; may use the variables
    {username} and {vhost} (expanded per connection before compiling, as RabbitMQ does)."""

    exchange: str
    write: str
    read: str

    def __post_init__(self) -> None:
        compile_permission(self.write, "topic write")
        compile_permission(self.read, "topic read")
