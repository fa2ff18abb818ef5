"""Queue and exchange name rules, as RabbitMQ 3.x applies them.

RabbitMQ enforces almost none of the spec's name grammar: any UTF-8 shortstr is a valid name (spaces, ``/``,
``#``, NUL included), CR and LF are silently removed, and only the ``amq.`` prefix is reserved. A name that is
not valid UTF-8 never reaches these functions: RabbitMQ's frame parser closes the connection with
``501 FRAME_ERROR - Malformed UTF-8 in shortstr`` (class/method 0/0), which is the protocol layer's job.
"""

from __future__ import annotations

import base64
import secrets
from typing import Final

from amqpd.protocol.errors import (
    ACCESS_REFUSED,
    FRAME_ERROR,
    PRECONDITION_FAILED,
    AMQPError,
    ChannelError,
    amqp_error,
)

__all__ = [
    "MAX_NAME_BYTES",
    "check_not_default_exchange",
    "check_reserved_prefix",
    "generate_queue_name",
    "normalize_name",
    "validate_name",
]

MAX_NAME_BYTES: Final = 255  # a shortstr
RESERVED_PREFIX: Final = "amq."


def normalize_name(name: str) -> str:
    """Drop CR and LF from a queue or exchange name, as RabbitMQ does before any other check or lookup."""
    if "\r" in name or "\n" in name:
        return name.replace("\r", "").replace("\n", "")
    return name


def validate_name(kind: str, name: str) -> None:
    """Reject a name no AMQP client could have sent: not encodable as UTF-8, or longer than a shortstr.

    Names decoded from frames always pass (pamqp already enforced both limits); this guards names that come
    from elsewhere (definitions, configuration, management). Malformed UTF-8 gets RabbitMQ's frame-level 501,
    an over-long name a 406 (RabbitMQ itself has no text for it).
    """
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise amqp_error(FRAME_ERROR, "Malformed UTF-8 in shortstr") from None
    if size > MAX_NAME_BYTES:
        raise ChannelError(
            PRECONDITION_FAILED, f"{kind} name is too long: {size} bytes, at most {MAX_NAME_BYTES}"
        )


def check_reserved_prefix(kind: str, name: str) -> None:
    """403 for a name starting with ``amq.`` (case-sensitive; ``amq`` alone is fine).

    When to call it, as RabbitMQ: for ``queue.declare`` non-passive with a non-empty name, whether or not the
    queue exists (so redeclaring a server-named ``amq.gen-…`` queue by name is refused); for
    ``exchange.declare`` non-passive only when the exchange does not exist yet (so redeclaring ``amq.direct``
    with matching properties succeeds). Never for passive declares. Pass the name after
    :func:`normalize_name`.
    """
    if name.startswith(RESERVED_PREFIX):
        raise ChannelError(ACCESS_REFUSED, f"{kind} name '{name}' contains reserved prefix 'amq.*'")


def check_not_default_exchange(name: str) -> None:
    """403 when exchange.declare/delete/bind or queue.bind/unbind name the default exchange."""
    if name == "":
        raise default_exchange_refused()


def default_exchange_refused() -> AMQPError:
    return ChannelError(ACCESS_REFUSED, "operation not permitted on the default exchange")


def generate_queue_name() -> str:
    """A server-named queue's name: ``amq.gen-`` and 22 URL-safe base64 characters of 128 random bits."""
    return "amq.gen-" + base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode("ascii")
