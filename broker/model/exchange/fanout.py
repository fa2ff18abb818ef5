"""The fanout exchange: every bound destination."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

from amqpd.broker.model.exchange.base import BindingId, Exchange, _decr, _incr


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
