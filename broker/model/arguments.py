"""Declare-argument rules, redeclare equivalence and the ``expiration`` property, with RabbitMQ 3.x texts.

Everything here is pure: a function returns, or raises the :class:`~protocol.errors.AMQPError` RabbitMQ would
answer with, carrying the exact reply text. Texts were checked against RabbitMQ 3.10.8 on the wire; where
RabbitMQ crashes (541, reset) we raise the precise 406 its surrounding code intends instead. Raised errors
carry class/method 0/0: the caller fills them in with ``AMQPError.with_method``.

Field tables reach us decoded by pamqp, so the AMQP type a value travelled as is gone; :func:`amqp_type_name`
names the type pamqp would send the value as (the smallest fitting integer type, ``float`` for floats),
which is what aio-pika clients send. RabbitMQ renders error terms with Erlang's ``~p``; the small renderer
below reproduces the shapes that occur here (atoms, strings, 2-tuples, binaries, floats).
"""

from __future__ import annotations

import calendar
import datetime
import decimal
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, TypeGuard

from amqpd.protocol.errors import PRECONDITION_FAILED, RESOURCE_LOCKED, AMQPError, ChannelError

__all__ = [
    "CLASSIC_QUEUE_ARGS",
    "QUORUM_QUEUE_ARGS",
    "ExchangeShape",
    "QueueShape",
    "amqp_type_name",
    "check_exchange_equivalence",
    "check_queue_equivalence",
    "exclusive_locked",
    "queue_type_of",
    "validate_consume_arguments",
    "validate_exchange_arguments",
    "validate_expiration",
    "validate_queue_arguments",
]

# rabbit_misc:check_expiry: TTLs, x-expires and message expirations are capped at ten years.
MAX_EXPIRY_MS: Final = 315_360_000_000
MAX_PRIORITY: Final = 255  # ?MAX_SUPPORTED_PRIORITY

# ----------------------------------------------------------------------------------------------------
# Erlang term rendering (only what the error texts need)


class _Atom(str):
    """An Erlang atom: rendered bare, or single-quoted when it is not a plain lowercase word."""

    __slots__ = ()


class _ErlStr(str):
    """An Erlang string (a list of characters): rendered double-quoted by ``~p``."""

    __slots__ = ()


_BARE_ATOM = re.compile(r"[a-z][A-Za-z0-9_@]*\Z")
_RESERVED_WORDS = frozenset(
    {
        "after", "and", "andalso", "band", "begin", "bnot", "bor", "bsl", "bsr", "bxor", "case", "catch",
        "cond", "div", "end", "fun", "if", "let", "maybe", "not", "of", "or", "orelse", "receive", "rem",
        "try", "when", "xor",
    }
)  # fmt: skip
# Control characters ``~p`` prints as escapes inside a string; any other one makes the list non-printable.
_STRING_ESCAPES = {
    0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0B: "\\v", 0x0C: "\\f", 0x0D: "\\r", 0x1B: "\\e",
    0x22: '\\"', 0x5C: "\\\\",
}  # fmt: skip


def _atom_text(name: str) -> str:
    if _BARE_ATOM.match(name) and name not in _RESERVED_WORDS:
        return name
    return "'" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _string_text(text: str) -> str:
    """``~p`` of a byte string: quoted if every byte is printable Latin-1, else a list of integers.

    RabbitMQ 3.10 feeds ``~p`` the UTF-8 bytes of the text, so characters whose bytes are all >= 160 (é, ü,
    most of Latin-1) come out intact, and any byte in 128..159 turns the whole thing into a list.
    """
    raw = text.encode("utf-8", "surrogateescape")
    printable = all(32 <= b <= 126 or b >= 160 or b in _STRING_ESCAPES for b in raw)
    if not printable:
        return "[" + ",".join(str(b) for b in raw) + "]"
    return '"' + "".join(_STRING_ESCAPES.get(ord(ch), ch) if ord(ch) < 128 else ch for ch in text) + '"'


def _binary_text(raw: bytes) -> str:
    """``~tp`` of a binary: ``<<"abc">>``, ``<<"café"/utf8>>`` or a list of byte values."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "<<" + ",".join(str(b) for b in raw) + ">>"
    if all(32 <= ord(ch) <= 126 or ord(ch) in _STRING_ESCAPES for ch in text):
        return '<<"' + "".join(_STRING_ESCAPES.get(ord(ch), ch) for ch in text) + '">>'
    if all(ord(ch) >= 160 or 32 <= ord(ch) <= 126 or ord(ch) in _STRING_ESCAPES for ch in text):
        return '<<"' + "".join(_STRING_ESCAPES.get(ord(ch), ch) for ch in text) + '"/utf8>>'
    return "<<" + ",".join(str(b) for b in raw) + ">>"


def erlang_float(value: float) -> str:
    """Erlang/OTP 25's shortest round-trip float text: ``10.0``, ``0.0001``, ``1.0e-5``, ``1.0e10``.

    Python's ``repr`` already yields the shortest digits; only the choice between fixed and exponent notation
    differs (Erlang picks whichever is shorter, and never fixed notation for magnitudes of 2**53 and above).
    """
    if value != value or value in (float("inf"), float("-inf")):
        return repr(value)  # cannot occur in Erlang: its table decoder rejects them
    if value == 0.0:
        return "-0.0" if str(value).startswith("-") else "0.0"
    sign = "-" if value < 0 else ""
    digits_tuple = decimal.Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(str(d) for d in digits_tuple.digits)
    exponent = digits_tuple.exponent
    assert isinstance(exponent, int)
    count = len(digits)
    place = count + exponent  # the decimal point sits after `place` digits
    if place == 0:
        return sign + "0." + digits
    if 0 < place < count:
        return sign + digits[:place] + "." + digits[place:]
    exp_text = str(place - 1)
    exp_cost = len(exp_text) + 1 + (2 if count == 1 else 1)
    scientific = digits[0] + "." + (digits[1:] or "0") + "e" + exp_text
    if place < 0:
        return sign + ("0." + "0" * -place + digits if 2 - place <= exp_cost else scientific)
    if place - count + 2 <= exp_cost and abs(value) < float(1 << 53):
        return sign + digits + "0" * (place - count) + ".0"
    return sign + scientific


_Term = object  # int | float | bool | str (atom/string/binary text) | bytes | tuple | list | None


def _flat(term: _Term) -> str:
    if term is None:
        return "undefined"
    if isinstance(term, bool):
        return "true" if term else "false"
    if isinstance(term, int):
        return str(term)
    if isinstance(term, float):
        return erlang_float(term)
    if isinstance(term, _Atom):
        return _atom_text(term)
    if isinstance(term, _ErlStr):
        return _string_text(term)
    if isinstance(term, str):
        return _binary_text(term.encode("utf-8", "surrogateescape"))
    if isinstance(term, bytes | bytearray):
        return _binary_text(bytes(term))
    if isinstance(term, tuple):
        return "{" + ",".join(_flat(t) for t in term) + "}"
    if isinstance(term, list):
        return "[" + ",".join(_flat(t) for t in term) + "]"
    return repr(term)


def _pretty(term: _Term, column: int, width: int) -> str:
    """``~Wp`` of ``term`` printed at ``column``: a tuple too wide for the line puts each element on a line.

    Observed with width 80: a term ending in column 78 stays flat, one ending in column 79 wraps, as
    ``invalid expiration '9…9': {value_too_large,`` newline, column + 1 spaces, ``9…9}``.
    """
    flat = _flat(term)
    if column + len(flat) <= width - 2 or not isinstance(term, tuple) or len(term) < 2:
        return flat
    return "{" + (",\n" + " " * (column + 1)).join(_flat(t) for t in term) + "}"


def _with_term(prefix: str, term: _Term, width: int) -> str:
    column = len(prefix.rsplit("\n", 1)[-1])
    return prefix + _pretty(term, column, width)


# ----------------------------------------------------------------------------------------------------
# AMQP field types of decoded Python values


def amqp_type_name(value: object) -> str:
    """RabbitMQ's name for the field-table type ``value`` travels as when pamqp (aio-pika) encodes it.

    pamqp sends an int in the smallest type that holds it (byte, short, unsignedshort, signedint, unsignedint,
    long); pika would send ``signedint``/``long`` instead, which we cannot tell apart after decoding. A float
    may have arrived as ``double``; pamqp sends ``float``.
    """
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        if -128 <= value <= 127:
            return "byte"
        if -32768 <= value <= 32767:
            return "short"
        if 0 <= value <= 65535:
            return "unsignedshort"
        if -(2**31) <= value < 2**31:
            return "signedint"
        if 0 <= value < 2**32:
            return "unsignedint"
        return "long"
    if isinstance(value, float):
        return "float"
    if isinstance(value, decimal.Decimal):
        return "decimal"
    if isinstance(value, str | bytes):
        return "longstr"  # pamqp decodes a longstr that is not UTF-8 to bytes
    if isinstance(value, bytearray):
        return "binary"
    if isinstance(value, datetime.datetime | time.struct_time):
        return "timestamp"
    if isinstance(value, Mapping):
        return "table"
    if isinstance(value, list | tuple):
        return "array"
    if value is None:
        return "void"
    return type(value).__name__


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_longstr(value: object) -> TypeGuard[str | bytes]:
    return isinstance(value, str | bytes)


def _text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _to_erlang(value: object) -> _Term:
    """The Erlang value RabbitMQ holds for a decoded field value (binaries as bytes, decimals {Scale,Raw})."""
    if isinstance(value, bool | int | float | _Atom) or value is None:
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, decimal.Decimal):
        exponent = value.as_tuple().exponent
        scale = -exponent if isinstance(exponent, int) and exponent < 0 else 0
        raw = int(value.scaleb(scale))
        return (scale, raw)
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            return int(value.timestamp())
        return calendar.timegm(value.utctimetuple())
    if isinstance(value, time.struct_time):
        return calendar.timegm(value)
    if isinstance(value, Mapping):
        return [(str(k).encode(), _Atom(amqp_type_name(v)), _to_erlang(v)) for k, v in value.items()]
    if isinstance(value, list | tuple):
        return [(_Atom(amqp_type_name(v)), _to_erlang(v)) for v in value]
    return repr(value)


def _exact_key(term: _Term) -> object:
    """A key equal for two terms exactly when Erlang's ``=:=`` holds (1 =/= 1.0, true =/= 1)."""
    if isinstance(term, bool):
        return ("atom", "true" if term else "false")
    if term is None:
        return ("atom", "undefined")
    if isinstance(term, _Atom):
        return ("atom", str(term))
    if isinstance(term, int):
        return ("int", term)
    if isinstance(term, float):
        return ("float", term)
    if isinstance(term, bytes):
        return ("binary", term)
    if isinstance(term, tuple):
        return ("tuple", tuple(_exact_key(t) for t in term))
    if isinstance(term, list):
        return ("list", tuple(_exact_key(t) for t in term))
    return ("other", repr(term))


def _equivalent(current: object, received: object) -> bool:
    """rabbit_misc:assert_args_equivalence's rule for two present values.

    Equal when the type classes match and the values are ``==``, or when the bare values match exactly. Since
    Python ints already merge every integer type, this comes down to an exact match of the Erlang values: 10
    sent as short or long is equal, 10 vs 10.0 or vs "10" is not, longstr "ae" vs binary "ae" is.
    """
    return _exact_key(_to_erlang(current)) == _exact_key(_to_erlang(received))


# ----------------------------------------------------------------------------------------------------
# Resource names and error constructors


def _rs(kind: str, name: str, vhost: str) -> str:
    return f"{kind} '{name}' in vhost '{vhost}'"


def _invalid_arg(key: str, queue: str, vhost: str, term: _Term) -> AMQPError:
    # "~255p": the term wraps only past column 255.
    return ChannelError(
        PRECONDITION_FAILED, _with_term(f"invalid arg '{key}' for {_rs('queue', queue, vhost)}: ", term, 255)
    )


def _invalid_type(key: str, kind: str, name: str, vhost: str, value: object) -> AMQPError:
    return ChannelError(
        PRECONDITION_FAILED,
        f"invalid type '{amqp_type_name(value)}' for arg '{key}' in {_rs(kind, name, vhost)}",
    )


def exclusive_locked(queue: str, vhost: str) -> AMQPError:
    """405 for a queue owned by another connection, or redeclared with a different ``exclusive`` flag."""
    return ChannelError(
        RESOURCE_LOCKED,
        f"cannot obtain exclusive access to locked {_rs('queue', queue, vhost)}. It could be originally "
        "declared on another connection or the exclusive property value does not match that of the original "
        "declaration.",
    )


# ----------------------------------------------------------------------------------------------------
# Per-argument validators: each returns None for a fine value, else the Erlang error term RabbitMQ prints.

_Validator = Callable[[object, Mapping[str, object]], _Term | None]


def _unacceptable(value: object) -> _Term:
    return (_Atom("unacceptable_type"), _Atom(amqp_type_name(value)))


def _check_int(value: object, _args: Mapping[str, object]) -> _Term | None:
    if _is_int(value):
        return None
    return _ErlStr(f"expected integer, got {_atom_text(amqp_type_name(value))}")


def _int_rule(rule: Callable[[int], _Term | None]) -> _Validator:
    """An integer argument: the type check first, then ``rule`` on the value."""

    def check(value: object, args: Mapping[str, object]) -> _Term | None:
        if not isinstance(value, int) or isinstance(value, bool):
            return _check_int(value, args)
        return rule(value)

    return check


def _non_negative(value: int) -> _Term | None:
    return (_Atom("value_negative"), value) if value < 0 else None


def _expiry(value: int) -> _Term | None:
    """rabbit_misc:check_expiry."""
    if value < 0:
        return (_Atom("value_negative"), value)
    if value > MAX_EXPIRY_MS:
        return (_Atom("value_too_large"), value)
    return None


def _positive_expiry(value: int) -> _Term | None:
    return (_Atom("value_zero"), 0) if value == 0 else _expiry(value)


def _positive(value: int) -> _Term | None:
    return _non_negative(value) or ((_Atom("value_zero"), 0) if value == 0 else None)


def _max_priority(value: int) -> _Term | None:
    return _non_negative(value) or ((_Atom("max_value_exceeded"), value) if value > MAX_PRIORITY else None)


def _queue_version(value: int) -> _Term | None:
    if value in (1, 2):
        return None
    return _non_negative(value) or _ErlStr(f"unsupported queue version '{value}'")


_check_non_neg_int = _int_rule(_non_negative)
_check_message_ttl = _int_rule(_expiry)
_check_positive_expiry = _int_rule(_positive_expiry)  # x-expires, amqpd's x-consumer-timeout
_check_positive_int = _int_rule(_positive)
_check_max_priority = _int_rule(_max_priority)
_check_queue_version = _int_rule(_queue_version)


def _check_bool(value: object, _args: Mapping[str, object]) -> _Term | None:
    return None if isinstance(value, bool) else _unacceptable(value)


def _check_dlx_name(value: object, _args: Mapping[str, object]) -> _Term | None:
    return None if _is_longstr(value) else _unacceptable(value)


def _check_dlx_routing_key(value: object, args: Mapping[str, object]) -> _Term | None:
    if not _is_longstr(value):
        return _unacceptable(value)
    if "x-dead-letter-exchange" not in args:
        return _Atom("routing_key_but_no_dlx_defined")
    return None


def _one_of(choices: frozenset[str], on_unknown: Callable[[str], _Term]) -> _Validator:
    def check(value: object, _args: Mapping[str, object]) -> _Term | None:
        if not _is_longstr(value):
            return _unacceptable(value)
        text = _text(value)
        return None if text in choices else on_unknown(text)

    return check


_OVERFLOW_MODES = frozenset({"drop-head", "reject-publish", "reject-publish-dlx"})
_QUEUE_MODES = frozenset({"default", "lazy"})
_DLX_STRATEGIES = frozenset({"at-most-once", "at-least-once"})
_MASTER_LOCATORS = frozenset({"min-masters", "client-local", "random"})
_LEADER_LOCATORS = frozenset({"client-local", "balanced", "random", "least-leaders"})
# amqpd runs classic semantics only: 'quorum' is accepted (a durable classic queue underneath, but with
# quorum's argument set and property rules so clients see RabbitMQ's answers); 'stream' is unsupported.
SUPPORTED_QUEUE_TYPES: Final = frozenset({"classic", "quorum"})


_check_overflow = _one_of(_OVERFLOW_MODES, lambda _text: _Atom("invalid_overflow"))
_check_queue_mode = _one_of(_QUEUE_MODES, lambda text: _ErlStr(f"unsupported queue mode '{text}'"))
_check_dlx_strategy = _one_of(_DLX_STRATEGIES, lambda _text: _Atom("invalid_dlx_strategy"))
_check_queue_type = _one_of(SUPPORTED_QUEUE_TYPES, lambda text: _ErlStr(f"unsupported queue type '{text}'"))
_check_leader_locator = _one_of(_LEADER_LOCATORS, lambda _text: _Atom("invalid_queue_locator_arg"))
# RabbitMQ 3.10-3.13 do not validate this one at declare time and crash later (541, empty text); we answer
# like its sibling x-queue-leader-locator does.
_check_master_locator = _one_of(_MASTER_LOCATORS, lambda _text: _Atom("invalid_queue_locator_arg"))

# Checked in this order (rabbit_amqqueue:declare_args/0); only those the queue type accepts run.
_DECLARE_VALIDATORS: Final[Sequence[tuple[str, _Validator]]] = (
    ("x-expires", _check_positive_expiry),
    ("x-message-ttl", _check_message_ttl),
    ("x-dead-letter-exchange", _check_dlx_name),
    ("x-dead-letter-routing-key", _check_dlx_routing_key),
    ("x-dead-letter-strategy", _check_dlx_strategy),
    ("x-max-length", _check_non_neg_int),
    ("x-max-length-bytes", _check_non_neg_int),
    ("x-max-in-memory-length", _check_non_neg_int),
    ("x-max-in-memory-bytes", _check_non_neg_int),
    ("x-max-priority", _check_max_priority),
    ("x-overflow", _check_overflow),
    ("x-queue-mode", _check_queue_mode),
    ("x-queue-version", _check_queue_version),
    ("x-single-active-consumer", _check_bool),
    ("x-consumer-timeout", _check_positive_expiry),  # amqpd extension (RabbitMQ 4.x validates it too)
    ("x-queue-type", _check_queue_type),
    ("x-quorum-initial-group-size", _check_positive_int),
    ("x-queue-leader-locator", _check_leader_locator),
    ("x-queue-master-locator", _check_master_locator),  # not validated by RabbitMQ (crashes instead)
    ("x-delivery-limit", _check_non_neg_int),  # not validated by RabbitMQ 3.x
)

# The arguments each queue type accepts, in RabbitMQ's order: that order is also the order equivalence checks
# compare them in (rabbit_classic_queue / rabbit_quorum_queue capabilities, 3.10-3.13).
CLASSIC_QUEUE_ARGS: Final = (
    "x-expires", "x-message-ttl", "x-dead-letter-exchange", "x-dead-letter-routing-key", "x-max-length",
    "x-max-length-bytes", "x-max-priority", "x-overflow", "x-queue-mode", "x-queue-version",
    "x-single-active-consumer", "x-queue-type", "x-queue-master-locator",
)  # fmt: skip
QUORUM_QUEUE_ARGS: Final = (
    "x-dead-letter-exchange", "x-dead-letter-routing-key", "x-dead-letter-strategy", "x-expires",
    "x-max-length", "x-max-length-bytes", "x-max-in-memory-length", "x-max-in-memory-bytes", "x-overflow",
    "x-single-active-consumer", "x-queue-type", "x-quorum-initial-group-size", "x-delivery-limit",
    "x-message-ttl", "x-queue-leader-locator",
)  # fmt: skip
_STREAM_QUEUE_ARGS: Final = (
    "x-max-length-bytes", "x-queue-type", "x-max-age", "x-stream-max-segment-size-bytes",
    "x-initial-cluster-size", "x-queue-leader-locator",
)  # fmt: skip
# Accepted by amqpd on both types but never compared on redeclare (RabbitMQ 3.x does not know them).
# x-delivery-limit on classic queues is an amqpd extension (RabbitMQ 3.x: quorum queues only).
_AMQPD_EXTRA_ARGS: Final = ("x-consumer-timeout", "x-delivery-limit")

_TYPE_MODULES: Final = MappingProxyType({"classic": "rabbit_classic_queue", "quorum": "rabbit_quorum_queue"})
_TYPE_ARGS: Final = MappingProxyType({"classic": CLASSIC_QUEUE_ARGS, "quorum": QUORUM_QUEUE_ARGS})
_ALL_QUEUE_ARGS: Final = frozenset(CLASSIC_QUEUE_ARGS + QUORUM_QUEUE_ARGS + _STREAM_QUEUE_ARGS)


# rabbit_classic_queue / rabbit_quorum_queue consumer_arguments; x-stream-offset belongs to streams only.
def _check_credit(value: object, _args: Mapping[str, object]) -> _Term | None:
    # RabbitMQ reads credit and drain out of a table and ignores any other shape of table; a value that is not a
    # table crashes its channel (541). We answer with the precise 406 instead.
    return None if isinstance(value, dict) else _unacceptable(value)


_CONSUME_VALIDATORS: Final[Sequence[tuple[str, _Validator]]] = (
    ("x-priority", _check_int),
    ("x-cancel-on-ha-failover", _check_bool),
    ("x-credit", _check_credit),
)
_CONSUME_TYPE_ARGS: Final = MappingProxyType(
    {"classic": ("x-cancel-on-ha-failover", "x-priority", "x-credit"), "quorum": ("x-priority", "x-credit")}
)
_ALL_CONSUME_ARGS: Final = frozenset({"x-cancel-on-ha-failover", "x-priority", "x-credit", "x-stream-offset"})


def queue_type_of(args: Mapping[str, object]) -> str:
    """``classic`` or ``quorum`` for validated arguments (a missing x-queue-type means classic)."""
    value = args.get("x-queue-type")
    if value is None or not _is_longstr(value):
        return "classic"
    text = _text(value)
    return text if text in _TYPE_ARGS else "classic"


def _check_queue_type_arg(queue: str, vhost: str, args: Mapping[str, object]) -> None:
    if "x-queue-type" in args:
        error = _check_queue_type(args["x-queue-type"], args)
        if error is not None:
            raise _invalid_arg("x-queue-type", queue, vhost, error)


def validate_queue_arguments(
    queue: str,
    vhost: str,
    args: Mapping[str, object],
    *,
    durable: bool = True,
    exclusive: bool = False,
    auto_delete: bool = False,
    server_named: bool = False,
) -> None:
    """Check a new queue's declare arguments the way RabbitMQ does before creating it; raise the first error.

    Call only when the queue does not exist yet (a redeclare is compared, never validated: see
    :func:`check_queue_equivalence`). ``queue`` is the final name (the generated one for a server-named queue,
    with ``server_named=True``). The keyword flags enable the quorum property checks; the defaults skip them.
    Order, as RabbitMQ: (server-named only: x-queue-type, then whether the type allows server naming), the
    x-dead-letter-exchange type, x-queue-type, each argument in declare_args order, arguments that belong to
    another queue type (in table order), then the quorum properties auto-delete, exclusive, durable.
    Unknown and non-``x-`` arguments are ignored.
    """
    if server_named:
        # RabbitMQ asks the queue type first and crashes (541) on a bad one; we report the bad type instead.
        _check_queue_type_arg(queue, vhost, args)
        if queue_type_of(args) == "quorum":
            raise ChannelError(
                PRECONDITION_FAILED, "Cannot declare a server-named queue for type rabbit_quorum_queue"
            )
    # rabbit_channel checks the DLX's type itself, with its own wording, before the generic validators run.
    dlx = args.get("x-dead-letter-exchange", "")
    if not _is_longstr(dlx):
        raise _invalid_type("x-dead-letter-exchange", "queue", queue, vhost, dlx)
    _check_queue_type_arg(queue, vhost, args)
    qtype = queue_type_of(args)
    accepted = frozenset(_TYPE_ARGS[qtype] + _AMQPD_EXTRA_ARGS)
    for key, check in _DECLARE_VALIDATORS:
        if key in args and key in accepted:
            error = check(args[key], args)
            if error is not None:
                raise _invalid_arg(key, queue, vhost, error)
    foreign = _ALL_QUEUE_ARGS - accepted
    for key in args:
        if key in foreign:
            raise ChannelError(
                PRECONDITION_FAILED,
                f"invalid arg '{key}' for {_rs('queue', queue, vhost)} of queue type {_TYPE_MODULES[qtype]}",
            )
    if qtype == "quorum":
        effective_durable = durable and not exclusive
        for bad, prop in (
            (auto_delete, "auto-delete"),
            (exclusive, "exclusive-owner"),
            (not effective_durable, "non-durable"),
        ):
            if bad:
                raise ChannelError(
                    PRECONDITION_FAILED, f"invalid property '{prop}' for {_rs('queue', queue, vhost)}"
                )


def validate_consume_arguments(
    queue: str, vhost: str, queue_args: Mapping[str, object], args: Mapping[str, object]
) -> None:
    """``basic.consume`` arguments: x-priority must be an integer, x-cancel-on-ha-failover a bool, and
    x-stream-offset is refused. ``queue_args`` are the queue's own arguments (to know its type)."""
    qtype = queue_type_of(queue_args)
    accepted = _CONSUME_TYPE_ARGS[qtype]
    for key, check in _CONSUME_VALIDATORS:
        if key in args and key in accepted:
            error = check(args[key], args)
            if error is not None:
                raise _invalid_arg(key, queue, vhost, error)
    foreign = _ALL_CONSUME_ARGS - frozenset(accepted)
    for key in args:
        if key in foreign:
            raise ChannelError(
                PRECONDITION_FAILED,
                f"invalid arg '{key}' for {_rs('queue', queue, vhost)} of queue type {_TYPE_MODULES[qtype]}",
            )


def validate_exchange_arguments(exchange: str, vhost: str, args: Mapping[str, object]) -> None:
    """A new exchange's arguments: only ``alternate-exchange`` is checked, and only for being a longstr."""
    ae = args.get("alternate-exchange", "")
    if not _is_longstr(ae):
        raise _invalid_type("alternate-exchange", "exchange", exchange, vhost, ae)


# ----------------------------------------------------------------------------------------------------
# Redeclare equivalence

_EMPTY: Mapping[str, object] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class QueueShape:
    """What a queue.declare says about a queue, as compared on redeclare."""

    durable: bool
    exclusive: bool
    auto_delete: bool
    arguments: Mapping[str, object] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class ExchangeShape:
    """What an exchange.declare says about an exchange, as compared on redeclare."""

    type: str
    durable: bool
    auto_delete: bool
    internal: bool
    arguments: Mapping[str, object] = field(default_factory=lambda: _EMPTY)


def _shown(value: object) -> str:
    """rabbit_misc:val/1 for a bare value: binaries as text, anything else (atoms too) as ``~tp``."""
    if isinstance(value, str | bytes | bytearray) and not isinstance(value, _Atom):
        return "'" + _text(bytes(value) if isinstance(value, bytearray) else value) + "'"
    return "'" + _flat(_to_erlang(value)) + "'"


def _shown_typed(value: object) -> str:
    """rabbit_misc:val/1 for a value with its type, used when the other side lacks the argument."""
    if isinstance(value, str | bytes | bytearray):
        body = _text(bytes(value) if isinstance(value, bytearray) else value)
    else:
        body = _flat(_to_erlang(value))
    return f"the value '{body}' of type '{amqp_type_name(value)}'"


def _inequivalent(key: str, kind: str, name: str, vhost: str, received: str, current: str) -> AMQPError:
    return ChannelError(
        PRECONDITION_FAILED,
        f"inequivalent arg '{key}' for {_rs(kind, name, vhost)}: received {received} but current is {current}",
    )


def _compare_field(key: str, kind: str, name: str, vhost: str, current: object, received: object) -> None:
    if _exact_key(_to_erlang(current)) != _exact_key(_to_erlang(received)):
        raise _inequivalent(key, kind, name, vhost, _shown(received), _shown(current))


def _compare_args(
    keys: Sequence[str],
    kind: str,
    name: str,
    vhost: str,
    current: Mapping[str, object],
    received: Mapping[str, object],
) -> None:
    for key in keys:
        has_cur, has_rec = key in current, key in received
        if not has_cur and not has_rec:
            continue
        if has_cur and has_rec:
            cur, rec = current[key], received[key]
            if _equivalent(cur, rec):
                continue
            # A void value is Erlang's `undefined`, which val/1 prints as none.
            rec_text = "none" if rec is None else _shown(rec)
            cur_text = "none" if cur is None else _shown(cur)
            raise _inequivalent(key, kind, name, vhost, rec_text, cur_text)
        if key == "x-queue-type" and _text_or_none(current.get(key, received.get(key))) == "classic":
            continue  # a classic queue may or may not carry x-queue-type=classic
        rec_text = _shown_typed(received[key]) if has_rec else "none"
        cur_text = _shown_typed(current[key]) if has_cur else "none"
        raise _inequivalent(key, kind, name, vhost, rec_text, cur_text)


def _text_or_none(value: object) -> str | None:
    return _text(value) if isinstance(value, str | bytes) else None


def check_queue_equivalence(queue: str, vhost: str, current: QueueShape, received: QueueShape) -> None:
    """Raise RabbitMQ's error when a queue.declare does not match the existing queue; return if it does.

    Order, as rabbit_amqqueue:assert_equivalence: exclusive (405), durable, auto_delete, then the arguments
    the queue's type knows, in that type's order (classic: :data:`CLASSIC_QUEUE_ARGS`). Other arguments are
    ignored, and values are never validated on a redeclare, only compared. ``durable`` is taken as ``durable
    and not exclusive`` on both sides, as RabbitMQ stores it. The caller still checks that an exclusive queue
    belongs to the declaring connection (same 405: :func:`exclusive_locked`).
    """
    if current.exclusive != received.exclusive:
        raise exclusive_locked(queue, vhost)
    cur_durable = current.durable and not current.exclusive
    rec_durable = received.durable and not received.exclusive
    _compare_field("durable", "queue", queue, vhost, cur_durable, rec_durable)
    _compare_field("auto_delete", "queue", queue, vhost, current.auto_delete, received.auto_delete)
    keys = _TYPE_ARGS[queue_type_of(current.arguments)]
    _compare_args(keys, "queue", queue, vhost, current.arguments, received.arguments)


def check_exchange_equivalence(
    exchange: str, vhost: str, current: ExchangeShape, received: ExchangeShape
) -> None:
    """Raise RabbitMQ's error when an exchange.declare does not match the existing exchange.

    Order: type, durable, auto_delete, internal, then ``alternate-exchange`` (the only argument compared).
    """
    _compare_field("type", "exchange", exchange, vhost, _Atom(current.type), _Atom(received.type))
    _compare_field("durable", "exchange", exchange, vhost, current.durable, received.durable)
    _compare_field("auto_delete", "exchange", exchange, vhost, current.auto_delete, received.auto_delete)
    _compare_field("internal", "exchange", exchange, vhost, current.internal, received.internal)
    _compare_args(("alternate-exchange",), "exchange", exchange, vhost, current.arguments, received.arguments)


# ----------------------------------------------------------------------------------------------------
# The `expiration` message property

_LEADING_INTEGER = re.compile(r"[+-]?[0-9]+")  # Erlang string:to_integer: optional sign, ASCII digits


def validate_expiration(value: str) -> int:
    """Parse a message's ``expiration`` property into milliseconds, or raise RabbitMQ's 406.

    ``'abc'`` -> ``invalid expiration 'abc': no_integer``; ``'-5'`` -> ``{value_negative,-5}``; ``'5x'`` ->
    ``{leftover_string,"x"}``; above ten years -> ``{value_too_large,N}``. A leading ``+`` or zeros are
    fine; spaces are not. Call it only when the property is present (an empty string is ``no_integer``).
    """
    match = _LEADING_INTEGER.match(value)
    term: _Term
    if match is None:
        term = _Atom("no_integer")
    elif match.end() != len(value):
        term = (_Atom("leftover_string"), _ErlStr(value[match.end() :]))
    else:
        number = int(match.group())
        error = _expiry(number)
        if error is None:
            return number
        term = error
    # "~p" with Erlang's default line width of 80.
    raise ChannelError(PRECONDITION_FAILED, _with_term(f"invalid expiration '{value}': ", term, 80))
