"""Typed AMQP errors: each carries its reply code, the offending class/method ids and its level.

RabbitMQ decides the level (channel = soft, connection = hard) from the reply code alone; we do the same so a
raise site only has to pick the code. The reply text is always ``"<NAME> - <detail>"`` as RabbitMQ writes it.
"""

from __future__ import annotations

CONTENT_TOO_LARGE = 311
NO_ROUTE = 312
NO_CONSUMERS = 313
CONNECTION_FORCED = 320
INVALID_PATH = 402
ACCESS_REFUSED = 403
NOT_FOUND = 404
RESOURCE_LOCKED = 405
PRECONDITION_FAILED = 406
FRAME_ERROR = 501
SYNTAX_ERROR = 502
COMMAND_INVALID = 503
CHANNEL_ERROR = 504
UNEXPECTED_FRAME = 505
RESOURCE_ERROR = 506
NOT_ALLOWED = 530
NOT_IMPLEMENTED = 540
INTERNAL_ERROR = 541

REPLY_NAMES: dict[int, str] = {
    CONTENT_TOO_LARGE: "CONTENT_TOO_LARGE",
    NO_ROUTE: "NO_ROUTE",
    NO_CONSUMERS: "NO_CONSUMERS",
    CONNECTION_FORCED: "CONNECTION_FORCED",
    INVALID_PATH: "INVALID_PATH",
    ACCESS_REFUSED: "ACCESS_REFUSED",
    NOT_FOUND: "NOT_FOUND",
    RESOURCE_LOCKED: "RESOURCE_LOCKED",
    PRECONDITION_FAILED: "PRECONDITION_FAILED",
    FRAME_ERROR: "FRAME_ERROR",
    SYNTAX_ERROR: "SYNTAX_ERROR",
    COMMAND_INVALID: "COMMAND_INVALID",
    CHANNEL_ERROR: "CHANNEL_ERROR",
    UNEXPECTED_FRAME: "UNEXPECTED_FRAME",
    RESOURCE_ERROR: "RESOURCE_ERROR",
    NOT_ALLOWED: "NOT_ALLOWED",
    NOT_IMPLEMENTED: "NOT_IMPLEMENTED",
    INTERNAL_ERROR: "INTERNAL_ERROR",
}

# Codes that close the channel only; every other code closes the whole connection.
SOFT_CODES = frozenset(
    {CONTENT_TOO_LARGE, NO_ROUTE, NO_CONSUMERS, ACCESS_REFUSED, NOT_FOUND, RESOURCE_LOCKED, PRECONDITION_FAILED}
)


class AMQPError(Exception):
    """An error the broker answers with Channel.Close or Connection.Close.

    ``detail`` is the text after ``NAME - ``; ``reply_text`` is the full wire text (truncated to 255 bytes).
    """

    __slots__ = ("class_id", "code", "detail", "method_id")

    def __init__(self, code: int, detail: str, class_id: int = 0, method_id: int = 0) -> None:
        super().__init__(code, detail)
        self.code = code
        self.detail = detail
        self.class_id = class_id
        self.method_id = method_id

    @property
    def is_connection_error(self) -> bool:
        return self.code not in SOFT_CODES

    @property
    def reply_text(self) -> str:
        text = f"{REPLY_NAMES.get(self.code, REPLY_NAMES[INTERNAL_ERROR])} - {self.detail}"
        raw = text.encode("utf-8")
        if len(raw) > 255:  # RabbitMQ keeps 252 bytes and marks the cut with "..."
            text = raw[:252].decode("utf-8", "ignore") + "..."
        return text

    def with_method(self, class_id: int, method_id: int) -> AMQPError:
        """Fill in the offending method when the raise site did not know it."""
        if not self.class_id:
            self.class_id = class_id
            self.method_id = method_id
        return self

    def __str__(self) -> str:
        return f"{self.reply_text} (class {self.class_id}, method {self.method_id})"

    def __repr__(self) -> str:
        return f"AMQPError({self.code}, {self.detail!r}, {self.class_id}, {self.method_id})"


class ChannelError(AMQPError):
    """A soft error: closes the channel (codes 311-406)."""


class ConnectionError_(AMQPError):
    """A hard error: closes the connection."""


def amqp_error(code: int, detail: str, class_id: int = 0, method_id: int = 0) -> AMQPError:
    """Build the right subclass for ``code``."""
    cls = ChannelError if code in SOFT_CODES else ConnectionError_
    return cls(code, detail, class_id, method_id)


def not_found(kind: str, name: str, vhost: str = "/") -> AMQPError:
    """``NOT_FOUND - no queue 'q' in vhost '/'``"""
    return ChannelError(NOT_FOUND, f"no {kind} '{name}' in vhost '{vhost}'")
