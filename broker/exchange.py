"""Exchange types: one small class per routing rule over a base that owns binding identity.

A binding is identified, as in RabbitMQ, by (source, destination, routing key, arguments) with the arguments
compared by value; binding the same triple twice leaves one binding. The base class keeps that registry (and a
per-destination index for ``unbind_all``); each subclass keeps only the structure its ``route`` needs,
refcounted because several bindings may share a routing entry (say the same queue bound with two argument
tables).

Destinations are opaque hashables (queues or exchanges). ``route`` only adds the direct destinations of this
exchange to ``out``; following exchange-to-exchange bindings and alternate exchanges is the vhost's job.
"""

from __future__ import annotations

import datetime
from collections.abc import Hashable, Iterator, Mapping
from decimal import Decimal
from operator import itemgetter
from typing import ClassVar, Final

from broker.headers_match import Term, compile_binding, headers_match, validate_x_match
from broker.topic import TopicTrie

# Binding arguments reduced to a hashable, order-independent, type-tagged value.
FrozenArgs = tuple[tuple[str, Hashable], ...]
BindingId = tuple[Hashable, str, FrozenArgs]

_EMPTY_HEADERS: Final[Mapping[str, object]] = {}
_first = itemgetter(0)


def freeze_args(arguments: Mapping[str, object] | None) -> FrozenArgs:
    """Hashable identity of a binding's arguments; ``None`` and ``{}`` are the same (empty) table.

    Values are tagged with their kind so that Python's loose equalities do not merge bindings RabbitMQ keeps
    apart (``True`` vs ``1``, ``1`` vs ``1.0``). Integers of different wire widths do merge: pamqp has already
    dropped that distinction when it decoded the table.
    """
    if not arguments:
        return ()
    return tuple(sorted(((k, _freeze(v)) for k, v in arguments.items()), key=_first))


def _freeze(v: object) -> Hashable:
    if isinstance(v, bool):
        return ("t", v)
    if isinstance(v, int):
        return ("i", v)
    if isinstance(v, float):
        return ("d", v.hex())  # hex: -0.0 and nan get stable, distinct identities
    if isinstance(v, str):
        return ("S", v.encode("utf-8"))
    if isinstance(v, bytes):
        return ("S", v)  # pamqp's rendering of a longstr that is not UTF-8
    if isinstance(v, bytearray):
        return ("x", bytes(v))
    if isinstance(v, Decimal):
        return ("D", v.as_tuple())
    if isinstance(v, datetime.datetime):
        return ("T", v)
    if v is None:
        return ("V",)
    if isinstance(v, list | tuple):
        return ("A", tuple(_freeze(x) for x in v))
    if isinstance(v, Mapping):
        return ("F", freeze_args(v))
    try:
        hash(v)
    except TypeError:
        return ("?", repr(v))
    return ("?", type(v).__name__, v)


def _incr(refs: dict[Hashable, int], dest: Hashable) -> None:
    refs[dest] = refs.get(dest, 0) + 1


def _decr(refs: dict[Hashable, int], dest: Hashable) -> None:
    count = refs[dest]
    if count > 1:
        refs[dest] = count - 1
    else:
        del refs[dest]


class Exchange:
    """Base class: binding registry plus the hooks a routing structure needs."""

    type_name: ClassVar[str] = ""
    # True only where route() reads message headers: the caller decodes them only then.
    needs_headers: ClassVar[bool] = False

    __slots__ = (
        "_bindings",
        "_by_dest",
        "alternate_exchange",
        "arguments",
        "auto_delete",
        "durable",
        "internal",
        "name",
    )

    def __init__(
        self,
        name: str,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: dict[str, object] | None = None,
    ) -> None:
        self.name = name
        self.durable = durable
        self.auto_delete = auto_delete
        self.internal = internal
        self.arguments: dict[str, object] = dict(arguments) if arguments else {}
        ae = self.arguments.get("alternate-exchange")
        # Only a longstr names an alternate exchange; rejecting other types (406) is the declarer's job.
        self.alternate_exchange: str | None = ae if isinstance(ae, str) else None
        self._bindings: dict[BindingId, dict[str, object]] = {}
        self._by_dest: dict[Hashable, set[BindingId]] = {}
        self._init_routes()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} bindings={len(self._bindings)}>"

    @classmethod
    def validate_binding(cls, arguments: Mapping[str, object] | None) -> None:
        """Raise an AMQP error if a binding with ``arguments`` may not be made; called before ``bind``."""

    # ------------------------------------------------------------------ bindings
    def bind(self, dest: Hashable, routing_key: str, arguments: dict[str, object] | None) -> bool:
        """Add a binding; False (and no change) if the identical binding already exists."""
        bid: BindingId = (dest, routing_key, freeze_args(arguments))
        if bid in self._bindings:
            return False
        args: dict[str, object] = dict(arguments) if arguments else {}
        self._bindings[bid] = args
        self._by_dest.setdefault(dest, set()).add(bid)
        self._add(bid, dest, routing_key, args)
        return True

    def unbind(self, dest: Hashable, routing_key: str, arguments: dict[str, object] | None) -> bool:
        """Remove a binding; False if there was no such binding."""
        bid: BindingId = (dest, routing_key, freeze_args(arguments))
        args = self._bindings.pop(bid, None)
        if args is None:
            return False
        ids = self._by_dest[dest]
        ids.discard(bid)
        if not ids:
            del self._by_dest[dest]
        self._remove(bid, dest, routing_key, args)
        return True

    def unbind_all(self, dest: Hashable) -> int:
        """Remove every binding to ``dest`` (it is being deleted); returns how many there were."""
        ids = self._by_dest.pop(dest, None)
        if not ids:
            return 0
        for bid in ids:
            args = self._bindings.pop(bid)
            self._remove(bid, dest, bid[1], args)
        return len(ids)

    def has_bindings(self) -> bool:
        return bool(self._bindings)

    def binding_count(self) -> int:
        return len(self._bindings)

    def bindings(self) -> Iterator[tuple[Hashable, str, dict[str, object]]]:
        """(destination, routing key, arguments) per binding; a snapshot, so callers may unbind meanwhile."""
        return iter([(bid[0], bid[1], args) for bid, args in self._bindings.items()])

    # ------------------------------------------------------------------ per-type hooks
    def _init_routes(self) -> None:
        """Create the empty routing structure ``route`` reads; called once, at the end of ``__init__``.

        A hook rather than a constructor per subclass, so the subclasses need not restate the signature.
        """

    def route(self, routing_key: str, headers: Mapping[str, object] | None, out: set[Hashable]) -> None:
        """Add to ``out`` the destinations a message with this key (and headers) is routed to."""
        raise NotImplementedError

    def _add(self, bid: BindingId, dest: Hashable, routing_key: str, arguments: dict[str, object]) -> None:
        raise NotImplementedError

    def _remove(self, bid: BindingId, dest: Hashable, routing_key: str, arguments: dict[str, object]) -> None:
        raise NotImplementedError


class DirectExchange(Exchange):
    """Routing key equality: one dict lookup per message."""

    type_name = "direct"
    __slots__ = ("_routes",)

    def _init_routes(self) -> None:
        # key -> dest -> number of bindings (differing only in arguments) behind that pair
        self._routes: dict[str, dict[Hashable, int]] = {}

    def route(self, routing_key: str, headers: Mapping[str, object] | None, out: set[Hashable]) -> None:
        dests = self._routes.get(routing_key)
        if dests:
            out.update(dests)

    def _add(self, bid: BindingId, dest: Hashable, routing_key: str, arguments: dict[str, object]) -> None:
        dests = self._routes.get(routing_key)
        if dests is None:
            dests = self._routes[routing_key] = {}
        _incr(dests, dest)

    def _remove(self, bid: BindingId, dest: Hashable, routing_key: str, arguments: dict[str, object]) -> None:
        dests = self._routes[routing_key]
        _decr(dests, dest)
        if not dests:
            del self._routes[routing_key]


class FanoutExchange(Exchange):
    """Every bound destination, whatever the key: one precomputed collection."""

    type_name = "fanout"
    __slots__ = ("_dests",)

    def _init_routes(self) -> None:
        # dest -> number of its bindings (keys and arguments do not matter to fanout)
        self._dests: dict[Hashable, int] = {}

    def route(self, routing_key: str, headers: Mapping[str, object] | None, out: set[Hashable]) -> None:
        if self._dests:
            out.update(self._dests)

    def _add(self, bid: BindingId, dest: Hashable, routing_key: str, arguments: dict[str, object]) -> None:
        _incr(self._dests, dest)

    def _remove(self, bid: BindingId, dest: Hashable, routing_key: str, arguments: dict[str, object]) -> None:
        _decr(self._dests, dest)


class TopicExchange(Exchange):
    """Dot-separated words with ``*`` and ``#`` wildcards, matched through a trie (see broker.topic)."""

    type_name = "topic"
    __slots__ = ("_trie",)

    def _init_routes(self) -> None:
        self._trie = TopicTrie()

    def route(self, routing_key: str, headers: Mapping[str, object] | None, out: set[Hashable]) -> None:
        self._trie.match(routing_key, out)

    def _add(self, bid: BindingId, dest: Hashable, routing_key: str, arguments: dict[str, object]) -> None:
        self._trie.add(routing_key, dest)

    def _remove(self, bid: BindingId, dest: Hashable, routing_key: str, arguments: dict[str, object]) -> None:
        self._trie.remove(routing_key, dest)


class HeadersExchange(Exchange):
    """Matches message headers against binding arguments under x-match (see broker.headers_match)."""

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


EXCHANGE_TYPES: dict[str, type[Exchange]] = {
    cls.type_name: cls for cls in (DirectExchange, FanoutExchange, TopicExchange, HeadersExchange)
}

# RabbitMQ looks an exchange type up with list_to_existing_atom: a name that is already an atom in its VM but
# no registered type gets "invalid exchange type", any other name "unknown exchange type". The atom table is
# not ours to know; these names were each seen answered with "invalid" by RabbitMQ 3.10.8 (the empty name too).
_KNOWN_ATOMS: Final = frozenset(
    {
        "", "all", "any", "array", "atom", "bar", "binary", "binding", "bool", "byte", "classic", "decimal",
        "default", "error", "exchange", "false", "float", "foo", "hello", "int", "integer", "invalid", "key",
        "list", "local", "long", "map", "match", "message", "name", "none", "ok", "queue", "quorum", "random",
        "short", "stream", "string", "table", "test", "timestamp", "true", "tuple", "type", "undefined",
        "unknown", "value", "void",
    }
)  # fmt: skip


def unknown_type_text(type_name: str) -> str:
    """The detail of RabbitMQ's 503 for an exchange.declare whose type is not one of EXCHANGE_TYPES."""
    adjective = "invalid" if type_name in _KNOWN_ATOMS else "unknown"
    return f"{adjective} exchange type '{type_name}'"
