"""The direct exchange: routing-key equality."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

from amqpd.broker.model.exchange.base import BindingId, Exchange, _decr, _incr


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
