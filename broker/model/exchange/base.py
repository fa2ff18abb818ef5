"""Exchange types: one small class per routing rule over a base that owns binding identity.

A binding is identified, as in RabbitMQ, by (source, destination, routing key, arguments) with the arguments
compared by value; binding the same triple twice leaves one binding. The base class keeps that registry (and a
per-destination index for ``unbind_all``); each subclass keeps only the structure its ``route`` needs,
refcounted because several bindings may share a routing entry (say the same queue bound with two argument
tables).

Destinations are opaque hashables (queues or exchanges). ``route`` only adds the direct destinations of this
exchange to ``out``; following exchange-to-exchange bindings and alternate exchanges is the vhost's job.
The types live one per module beside this one (direct, fanout, topic, headers); registry.py names them.
"""

from __future__ import annotations

import datetime
from collections.abc import Hashable, Iterator, Mapping
from decimal import Decimal
from operator import itemgetter
from typing import ClassVar

# Binding arguments reduced to a hashable, order-independent, type-tagged value.
FrozenArgs = tuple[tuple[str, Hashable], ...]
BindingId = tuple[Hashable, str, FrozenArgs]

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
