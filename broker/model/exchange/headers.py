"""Headers-exchange matching: x-match modes, binding validation and AMQP field-value comparison.

Semantics follow RabbitMQ 3.x ``rabbit_exchange_type_headers``:

* ``x-match`` is ``all`` (the default when absent), ``any``, ``all-with-x`` or ``any-with-x``. A binding
  whose ``x-match`` is missing is accepted; one whose value is another string, or not a longstr at all, is
  refused at bind time with 406 and RabbitMQ's text (a stored binding with an odd value routes as ``all``).
* the binding key ``x-match`` never takes part in matching; other ``x-``-prefixed binding keys are ignored
  except in the ``-with-x`` modes. Message headers are all visible (an ``x-`` header matters only when a
  ``-with-x`` binding names it).
* a binding value of type void (``None`` here) asks only that the header be present, whatever its value.
* ``all`` with nothing left to compare matches every message; ``any`` with nothing left matches none.

The points above, and the comparisons below marked as RabbitMQ's, were checked against RabbitMQ 3.10.8 on the
wire (binding with pika/aio-pika, publishing with mandatory and confirms).

Value comparison. RabbitMQ 3.10-3.12 compare the decoded values with Erlang's ``==`` and ignore the field type
tag at the top level: so signedint 1 equals long 1, and integer 1 equals double 1.0 (3.13 moved to ``=:=``,
which keeps 1 and 1.0 apart; we follow the 3.10 reference broker). pamqp decodes field tables into plain
Python values and drops the wire type, which is mostly what that comparison wants, except where Python's
``==`` is looser than Erlang's:

* ``bool`` is an ``int`` in Python, but ``true`` is an atom in Erlang: booleans equal only booleans;
* longstr and byte-array values are both binaries in Erlang, so ``str`` (UTF-8), ``bytes`` and ``bytearray``
  compare by their bytes;
* a decimal is ``{Scale, Unscaled}`` in Erlang: 1.0 (scale 1) differs from 1 (scale 0), so ``Decimal``
  compares by its digits and exponent, not numerically;
* inside arrays and tables Erlang keeps the type tags; pamqp has lost them, so nested values compare by the
  rules above (so a nested signedint 1 equals a nested long 1 here, where RabbitMQ would say they differ).
"""

from __future__ import annotations

import datetime
from collections.abc import Hashable, Mapping
from decimal import Decimal
from typing import Final

from amqpd.broker.model.exchange.base import BindingId, Exchange
from amqpd.protocol.errors import PRECONDITION_FAILED, ChannelError

X_MATCH: Final = "x-match"
X_MATCH_MODES: Final = frozenset({"all", "any", "all-with-x", "any-with-x"})

# Python types whose own == is exactly Erlang's == when both sides have that type.
_PLAIN_TYPES: Final = frozenset({str, int, bool, float, bytes, bytearray, datetime.datetime, type(None)})

_MISSING: Final = object()

# One compiled binding term: (header name, expected value, presence-only?)
Term = tuple[str, object, bool]


def validate_x_match(arguments: Mapping[str, object] | None) -> None:
    """Raise 406 the way RabbitMQ does when a headers binding carries an unusable ``x-match``."""
    if not arguments or X_MATCH not in arguments:
        return
    value = arguments[X_MATCH]
    if isinstance(value, str):
        if value in X_MATCH_MODES:
            return
        raise ChannelError(
            PRECONDITION_FAILED,
            f"Invalid x-match field value {erl_binary(value.encode())}; expected all, any, all-with-x, or any-with-x",
        )
    if isinstance(value, bytes):
        # pamqp hands back a longstr that is not valid UTF-8 as bytes: still a longstr, just not a mode
        raise ChannelError(
            PRECONDITION_FAILED,
            f"Invalid x-match field value {erl_binary(value)}; expected all, any, all-with-x, or any-with-x",
        )
    raise ChannelError(
        PRECONDITION_FAILED,
        f"Invalid x-match field type {field_type_name(value)} (value {erl_value(value)}); expected longstr",
    )


def compile_binding(arguments: Mapping[str, object] | None) -> tuple[bool, tuple[Term, ...]]:
    """Reduce binding arguments to (match_all?, terms to test): done once per binding, not per message."""
    args = arguments or {}
    mode = args.get(X_MATCH)
    if not isinstance(mode, str) or mode not in X_MATCH_MODES:
        mode = "all"  # RabbitMQ's legacy fallback for values stored before validation existed
    with_x = mode in ("all-with-x", "any-with-x")
    terms = tuple(
        (key, value, value is None)
        for key, value in args.items()
        if key != X_MATCH and (with_x or not key.startswith("x-"))
    )
    return mode.startswith("all"), terms


def headers_match(match_all: bool, terms: tuple[Term, ...], headers: Mapping[str, object]) -> bool:
    """Does a message with ``headers`` satisfy a binding compiled by :func:`compile_binding`?"""
    if match_all:
        for key, expected, presence_only in terms:
            actual = headers.get(key, _MISSING)
            if actual is _MISSING:
                return False
            if not presence_only and not field_equal(expected, actual):
                return False
        return True
    for key, expected, presence_only in terms:
        actual = headers.get(key, _MISSING)
        if actual is not _MISSING and (presence_only or field_equal(expected, actual)):
            return True
    return False


def field_equal(a: object, b: object) -> bool:
    """Compare two decoded field values as RabbitMQ's headers exchange would (see the module docstring)."""
    ta = type(a)
    if ta is type(b) and ta in _PLAIN_TYPES:
        return a == b
    return _canonical(a) == _canonical(b)


def _canonical(v: object) -> object:
    """A form in which Python's == behaves like Erlang's == on the original typed value."""
    if isinstance(v, bool):
        return ("bool", v)
    if isinstance(v, int | float):
        return ("num", v)
    if isinstance(v, str):
        return ("bin", v.encode("utf-8"))
    if isinstance(v, bytes | bytearray | memoryview):
        return ("bin", bytes(v))
    if isinstance(v, Decimal):
        return ("dec", v.as_tuple())
    if isinstance(v, list | tuple):
        return ("arr", [_canonical(x) for x in v])
    if isinstance(v, Mapping):
        return ("tbl", {k: _canonical(x) for k, x in v.items()})
    return (type(v).__name__, v)


# ----------------------------------------------------------------------------------------------------
# Rendering values the way RabbitMQ 3.10 prints them with ~p (3.12+ use ~tp), so error texts read alike.

_ESCAPES: Final = {
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
    ord("\v"): "\\v",
    ord("\b"): "\\b",
    ord("\f"): "\\f",
    0x1B: "\\e",
    ord('"'): '\\"',
    ord("\\"): "\\\\",
}


def erl_binary(raw: bytes) -> str:
    """A binary as RabbitMQ 3.10's ``~p`` prints it: ``<<"text">>`` when every byte is printable Latin-1, else
    ``<<196,129>>``.

    ``~p`` emits printable bytes unchanged, so ``<<"é">>`` carries the UTF-8 bytes of é as they came. Our reply
    texts are str, so bytes that are not UTF-8 come out as their Latin-1 characters (re-encoded as UTF-8 on the
    wire, where RabbitMQ would send the raw bytes).
    """
    if all(32 <= c < 127 or c >= 160 or c in _ESCAPES for c in raw):
        escaped = b"".join(_ESCAPES[c].encode() if c in _ESCAPES else bytes((c,)) for c in raw)
        try:
            text = escaped.decode("utf-8")
        except UnicodeDecodeError:
            text = escaped.decode("latin-1")
        return '<<"' + text + '">>'
    return "<<" + ",".join(str(c) for c in raw) + ">>"


def field_type_name(v: object) -> str:
    """RabbitMQ's name for the field type ``v`` probably arrived as.

    pamqp discards the wire type, so numbers get the name the usual client would have sent: integers as
    signedint, or long beyond 32 bits (pika, the Java and .NET clients), floats as float (aio-pika/pamqp; pika
    cannot send floats). A client that chose another width is reported under that guess.
    """
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "signedint" if -(2**31) <= v < 2**31 else "long"
    if isinstance(v, float):
        return "float"
    if isinstance(v, Decimal):
        return "decimal"
    if isinstance(v, str | bytes):
        return "longstr"
    if isinstance(v, bytearray):
        return "binary"
    if isinstance(v, datetime.datetime):
        return "timestamp"
    if isinstance(v, Mapping):
        return "table"
    if isinstance(v, list | tuple):
        return "array"
    return "void"


def erl_value(v: object) -> str:
    """Render a decoded field value roughly as ``~p`` prints RabbitMQ's representation of it."""
    if v is None:
        return "undefined"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return erl_binary(v.encode("utf-8"))
    if isinstance(v, bytes | bytearray):
        return erl_binary(bytes(v))
    if isinstance(v, Decimal):
        sign, digits, exponent = v.as_tuple()
        unscaled = int("".join(map(str, digits)) or "0") * (-1 if sign else 1)
        scale = -exponent if isinstance(exponent, int) else 0
        return f"{{{scale},{unscaled}}}"
    if isinstance(v, datetime.datetime):
        return str(int(v.timestamp()))
    if isinstance(v, Mapping):
        items = ",".join(f"{{{erl_binary(str(k).encode())},{field_type_name(x)},{erl_value(x)}}}" for k, x in v.items())
        return f"[{items}]"
    if isinstance(v, list | tuple):
        return "[" + ",".join(f"{{{field_type_name(x)},{erl_value(x)}}}" for x in v) + "]"
    return repr(v)


_EMPTY_HEADERS: Final[Mapping[str, object]] = {}


class HeadersExchange(Exchange):
    """Matches message headers against binding arguments under x-match (see broker.model.exchange.headers)."""

    type_name = "headers"
    needs_headers = True
    __slots__ = ("_compiled", "_table")

    def _init_routes(self) -> None:
        self._compiled: dict[BindingId, tuple[Hashable, bool, tuple[Term, ...]]] = {}
        # the same entries as a tuple that route() iterates without copying; None after a change, rebuilt by
        # the next route() (so unbind_all of many bindings does not rebuild it once per binding)
        self._table: tuple[tuple[Hashable, bool, tuple[Term, ...]], ...] | None = ()

    @classmethod
    def validate_binding(cls, arguments: Mapping[str, object] | None) -> None:
        validate_x_match(arguments)

    def route(self, routing_key: str, headers: Mapping[str, object] | None, out: set[Hashable]) -> None:
        table = self._table
        if table is None:
            table = self._table = tuple(self._compiled.values())
        hs = _EMPTY_HEADERS if headers is None else headers
        for dest, match_all, terms in table:
            if dest not in out and headers_match(match_all, terms, hs):
                out.add(dest)

    def _add(self, bid: BindingId, dest: Hashable, routing_key: str, arguments: dict[str, object]) -> None:
        match_all, terms = compile_binding(arguments)
        self._compiled[bid] = (dest, match_all, terms)
        self._table = None

    def _remove(self, bid: BindingId, dest: Hashable, routing_key: str, arguments: dict[str, object]) -> None:
        del self._compiled[bid]
        self._table = None
