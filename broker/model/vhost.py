"""A virtual host: the registry of exchanges, queues and bindings, with RabbitMQ's declare/delete/bind rules.

Every change to definitions goes through this class, so that it can later be persisted or replicated from one
place. Routing follows exchange-to-exchange bindings and alternate exchanges with a visited set, so a message
reaches each queue at most once per publish however the graph loops.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Hashable
from typing import TYPE_CHECKING, Any

from amqpd.broker.model.arguments import (
    ExchangeShape,
    QueueShape,
    check_exchange_equivalence,
    check_queue_equivalence,
    validate_exchange_arguments,
    validate_queue_arguments,
)
from amqpd.broker.model.exchange import EXCHANGE_TYPES, Exchange, unknown_type_text
from amqpd.broker.model.journal import NO_JOURNAL, DefinitionsJournal
from amqpd.broker.model.message import Message
from amqpd.broker.model.names import (
    check_not_default_exchange,
    check_reserved_prefix,
    generate_queue_name,
    normalize_name,
    validate_name,
)
from amqpd.broker.model.queue import Queue
from amqpd.protocol.errors import (
    ACCESS_REFUSED,
    COMMAND_INVALID,
    PRECONDITION_FAILED,
    RESOURCE_LOCKED,
    ChannelError,
    ConnectionError_,
    not_found,
)

DEFAULT_EXCHANGES = (
    ("amq.direct", "direct", False),
    ("amq.fanout", "fanout", False),
    ("amq.topic", "topic", False),
    ("amq.headers", "headers", False),
    ("amq.match", "headers", False),
    ("amq.rabbitmq.trace", "topic", True),
)

if TYPE_CHECKING:
    from amqpd.broker.model.consumer import Session
    from amqpd.broker.model.routing import DeadLetterer
    from amqpd.storage import GroupCommitter

_NO_QUEUES: tuple[Queue, ...] = ()


class VHost:
    """Implements the model's Router (for features) and QueueHost (for its queues)."""

    def __init__(
        self,
        name: str = "/",
        committer: GroupCommitter | None = None,
        message_ids: Callable[[], int] | None = None,
        *,
        journal: DefinitionsJournal = NO_JOURNAL,
        dead_letterer: DeadLetterer | None = None,
    ) -> None:
        self.name = name
        self.committer = committer  # None: nothing is persisted (memory:// store)
        self.journal = journal
        self.dead_letterer = dead_letterer  # None: dead-lettered messages are dropped
        self.persisted = False  # set when a definition change was handed to the store; the channel clears it
        # Store ids of persistent messages: unique in the store, so one counter shared by every vhost.
        self.next_message_id = message_ids if message_ids is not None else itertools.count(1).__next__
        self.exchanges: dict[str, Exchange] = {}
        self.queues: dict[str, Queue] = {}
        self.reply_queues: dict[str, Queue] = {}  # direct reply-to pseudo-queues by address
        self.e2e_bindings = 0  # exchange-to-exchange bindings: routing walks the graph only when > 0
        self.on_queue_deleted: list[Callable[[Queue], None]] = []
        default = EXCHANGE_TYPES["direct"]("", durable=True)
        self.exchanges[""] = default
        for xname, xtype, internal in DEFAULT_EXCHANGES:
            self.exchanges[xname] = EXCHANGE_TYPES[xtype](xname, durable=True, internal=internal)

    def _journaled(self, written: bool) -> None:
        if written:
            self.persisted = True

    def dead_letter(self, source: Queue, msgs: list[Message], reason: str) -> None:
        if self.dead_letterer is not None:
            self.dead_letterer(self, source, msgs, reason)

    # ------------------------------------------------------------------ exchanges
    def get_exchange(self, name: str) -> Exchange:
        name = normalize_name(name)
        ex = self.exchanges.get(name)
        if ex is None:
            raise not_found("exchange", name, self.name)
        return ex

    def declare_exchange(
        self,
        name: str,
        type_name: str,
        *,
        passive: bool = False,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> Exchange:
        name = normalize_name(name)
        if passive:
            check_not_default_exchange(name)
            return self.get_exchange(name)
        # RabbitMQ checks the type first: an unknown type is a connection error even on the default exchange.
        cls = EXCHANGE_TYPES.get(type_name)
        if cls is None:
            raise ConnectionError_(COMMAND_INVALID, unknown_type_text(type_name))
        check_not_default_exchange(name)
        validate_name("exchange", name)
        arguments = dict(arguments or {})
        existing = self.exchanges.get(name)
        if existing is None:
            check_reserved_prefix("exchange", name)
            validate_exchange_arguments(name, self.name, arguments)
            ex = cls(name, durable=durable, auto_delete=auto_delete, internal=internal, arguments=arguments)
            self.exchanges[name] = ex
            self._journaled(self.journal.exchange_declared(ex))
            return ex
        check_exchange_equivalence(
            name,
            self.name,
            ExchangeShape(
                existing.type_name,
                existing.durable,
                existing.auto_delete,
                existing.internal,
                existing.arguments,
            ),
            ExchangeShape(type_name, durable, auto_delete, internal, arguments),
        )
        return existing

    def delete_exchange(self, name: str, if_unused: bool = False) -> None:
        name = normalize_name(name)
        check_not_default_exchange(name)
        # The prefix alone decides, before the lookup: deleting a missing 'amq.x' is refused too.
        if name.startswith("amq."):
            raise ChannelError(
                ACCESS_REFUSED, f"deletion of system exchange '{name}' in vhost '{self.name}' not allowed"
            )
        ex = self.exchanges.get(name)
        if ex is None:
            return
        if if_unused and ex.has_bindings():
            raise ChannelError(PRECONDITION_FAILED, f"exchange '{name}' in vhost '{self.name}' in use")
        self._remove_exchange(ex)

    def _remove_exchange(self, ex: Exchange) -> None:
        if self.exchanges.get(ex.name) is not ex:
            return
        del self.exchanges[ex.name]
        self._journaled(self.journal.exchange_deleted(ex))  # the store drops its bindings too
        for dest, _key, _args in list(ex.bindings()):
            if isinstance(dest, Exchange):
                self.e2e_bindings -= 1
        # bindings where this exchange is the destination
        for source in list(self.exchanges.values()):
            removed = source.unbind_all(ex)
            if removed:
                self.e2e_bindings -= removed
                self._maybe_auto_delete(source)

    def _maybe_auto_delete(self, ex: Exchange) -> None:
        if ex.auto_delete and not ex.has_bindings() and ex.name:
            self._remove_exchange(ex)

    # ------------------------------------------------------------------ queues
    def get_queue(self, name: str, connection: Session | None = None) -> Queue:
        name = normalize_name(name)
        q = self.queues.get(name)
        if q is None:
            raise not_found("queue", name, self.name)
        if connection is not None and q.exclusive_owner is not None and q.exclusive_owner is not connection:
            raise self.locked(name)
        return q

    def locked(self, name: str) -> ChannelError:
        return ChannelError(
            RESOURCE_LOCKED,
            f"cannot obtain exclusive access to locked queue '{name}' in vhost '{self.name}'. It could be "
            "originally declared on another connection or the exclusive property value does not match that of "
            "the original declaration.",
        )

    def declare_queue(
        self,
        name: str,
        connection: Session | None,
        *,
        passive: bool = False,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
        server_named: bool = False,
    ) -> Queue:
        """``server_named``: ``name`` was generated by the caller for a declare with an empty name."""
        if passive:
            return self.get_queue(name, connection)
        name = normalize_name(name)
        if name == "":
            server_named = True
            name = generate_queue_name()
        elif not server_named:
            validate_name("queue", name)
            check_reserved_prefix("queue", name)
        arguments = dict(arguments or {})
        existing = self.queues.get(name)
        if existing is not None:
            if existing.exclusive_owner is not None and existing.exclusive_owner is not connection:
                raise self.locked(name)
            if existing.exclusive != exclusive:
                raise self.locked(name)
            check_queue_equivalence(
                name,
                self.name,
                QueueShape(existing.durable, existing.exclusive, existing.auto_delete, existing.arguments),
                QueueShape(durable, exclusive, auto_delete, arguments),
            )
            return existing
        validate_queue_arguments(
            name,
            self.name,
            arguments,
            durable=durable,
            exclusive=exclusive,
            auto_delete=auto_delete,
            server_named=server_named,
        )
        q = Queue(
            name,
            self.name,
            durable=durable,
            exclusive_owner=connection if exclusive else None,
            auto_delete=auto_delete,
            arguments=arguments,
        )
        self._register(q)
        self._journaled(self.journal.queue_declared(q))
        return q

    def _register(self, q: Queue) -> None:
        q.on_unused = self.delete_queue
        self.queues[q.name] = q
        q.attach(self)  # dead-lettering routes through this vhost; x-expires starts counting

    def delete_queue(self, q: Queue) -> int:
        """Remove a queue, its bindings and consumers; returns how many ready messages it held."""
        if self.queues.get(q.name) is not q:
            return 0
        del self.queues[q.name]
        self._journaled(self.journal.queue_deleted(q))  # the store drops its messages and bindings
        for ex in list(self.exchanges.values()):
            if ex.unbind_all(q):
                self._maybe_auto_delete(ex)
        n = q.delete()
        for hook in self.on_queue_deleted:
            hook(q)
        return n

    def delete_queue_checked(
        self, name: str, connection: Session, *, if_unused: bool = False, if_empty: bool = False
    ) -> int:
        name = normalize_name(name)
        q = self.queues.get(name)
        if q is None:
            return 0
        if q.exclusive_owner is not None and q.exclusive_owner is not connection:
            raise self.locked(name)
        # RabbitMQ's queue process tests emptiness (ready messages only) before use.
        if if_empty and q.ready:
            raise ChannelError(PRECONDITION_FAILED, f"queue '{name}' in vhost '{self.name}' not empty")
        if if_unused and q.consumers:
            raise ChannelError(PRECONDITION_FAILED, f"queue '{name}' in vhost '{self.name}' in use")
        return self.delete_queue(q)

    # ------------------------------------------------------------------ bindings
    def bind_queue(self, queue: Queue, exchange_name: str, routing_key: str, arguments: dict[str, Any]) -> None:
        ex = self._bindable_source(exchange_name)
        ex.validate_binding(arguments)
        if ex.bind(queue, routing_key, arguments):
            self._journaled(self.journal.bound(ex, queue, routing_key, arguments))

    def unbind_queue(self, queue: Queue, exchange_name: str, routing_key: str, arguments: dict[str, Any]) -> None:
        exchange_name = normalize_name(exchange_name)
        check_not_default_exchange(exchange_name)
        ex = self.exchanges.get(exchange_name)
        if ex is None:
            return
        if ex.unbind(queue, routing_key, arguments):
            self._journaled(self.journal.unbound(ex, queue, routing_key, arguments))
            self._maybe_auto_delete(ex)

    def bind_exchange(self, destination: str, source: str, routing_key: str, arguments: dict[str, Any]) -> None:
        destination, source = normalize_name(destination), normalize_name(source)
        # Both ends are checked for the default exchange before either is looked up (403 before 404).
        check_not_default_exchange(destination)
        check_not_default_exchange(source)
        src = self.get_exchange(source)
        dest = self.get_exchange(destination)
        src.validate_binding(arguments)
        if src.bind(dest, routing_key, arguments):
            self.e2e_bindings += 1
            self._journaled(self.journal.bound(src, dest, routing_key, arguments))

    def unbind_exchange(self, destination: str, source: str, routing_key: str, arguments: dict[str, Any]) -> None:
        destination, source = normalize_name(destination), normalize_name(source)
        check_not_default_exchange(destination)
        check_not_default_exchange(source)
        src = self.exchanges.get(source)
        dest = self.exchanges.get(destination)
        if src is None or dest is None:
            return
        if src.unbind(dest, routing_key, arguments):
            self.e2e_bindings -= 1
            self._journaled(self.journal.unbound(src, dest, routing_key, arguments))
            self._maybe_auto_delete(src)

    def _bindable_source(self, name: str) -> Exchange:
        name = normalize_name(name)
        check_not_default_exchange(name)
        return self.get_exchange(name)

    # ------------------------------------------------------------------ recovery (definitions already stored)
    def restore_exchange(
        self, name: str, type_name: str, auto_delete: bool, internal: bool, arguments: dict[str, Any]
    ) -> Exchange | None:
        """A durable exchange read back from the store; None when its type is unknown (or the name is taken)."""
        cls = EXCHANGE_TYPES.get(type_name)
        if cls is None or name in self.exchanges:
            return None
        ex = cls(name, durable=True, auto_delete=auto_delete, internal=internal, arguments=arguments)
        self.exchanges[name] = ex
        return ex

    def restore_queue(self, name: str, auto_delete: bool, arguments: dict[str, Any]) -> Queue:
        """A durable queue read back from the store; its store is attached as on declare."""
        q = Queue(name, self.name, durable=True, auto_delete=auto_delete, arguments=arguments)
        self._register(q)
        q.store = self.committer
        return q

    def restore_binding(
        self, source: str, destination: str, to_exchange: bool, routing_key: str, arguments: dict[str, Any]
    ) -> None:
        src = self.exchanges.get(source)
        dest: Hashable | None = self.exchanges.get(destination) if to_exchange else self.queues.get(destination)
        if src is None or dest is None:
            return
        if src.bind(dest, routing_key, arguments) and to_exchange:
            self.e2e_bindings += 1

    # ------------------------------------------------------------------ routing (hot)
    def route(self, ex: Exchange, msg: Message, routing_key: str | None = None) -> Collection[Queue]:
        """Queues that ``msg`` reaches through ``ex`` (each once), following e2e bindings and alternate exchanges."""
        rk = msg.routing_key if routing_key is None else routing_key
        if not ex.name:
            q = self.queues.get(rk)
            return (q,) if q is not None else _NO_QUEUES
        out: set[Any] = set()
        ex.route(rk, msg.headers() if ex.needs_headers else None, out)
        if out:
            if self.e2e_bindings:
                return self._walk(ex, rk, msg, out)
            return out
        if ex.alternate_exchange is None:
            return out
        return self._walk(ex, rk, msg, out)

    def _walk(self, origin: Exchange, rk: str, msg: Message, first: set[Any]) -> set[Any]:
        """The queues reached from ``origin`` (whose own destinations are ``first``), as RabbitMQ's route1.

        Every exchange is visited at most once per publish. An exchange whose own bindings matched nothing
        (not even another exchange) hands the message to its alternate exchange, if that exists; so does an
        exchange reached through an e2e binding. An exchange that matched only exchanges which in turn matched
        nothing does not: RabbitMQ consults an alternate exchange on the exchange's own result, not the walk's.
        The visited set makes the result independent of the order of the walk and ends any cycle.
        """
        queues: set[Any] = set()
        visited = {origin}
        pending: list[Exchange] = []
        exchanges = self.exchanges

        def absorb(source: Exchange, dests: set[Any]) -> None:
            if not dests:
                ae_name = source.alternate_exchange
                ae = exchanges.get(ae_name) if ae_name is not None else None
                if ae is not None and ae not in visited:
                    visited.add(ae)
                    pending.append(ae)
                return
            for dest in dests:
                if isinstance(dest, Exchange):
                    if dest not in visited:
                        visited.add(dest)
                        pending.append(dest)
                else:
                    queues.add(dest)

        absorb(origin, first)
        while pending:
            current = pending.pop()
            more: set[Any] = set()
            if current.name:
                current.route(rk, msg.headers() if current.needs_headers else None, more)
            # else: an alternate-exchange argument naming the default exchange routes nothing (RabbitMQ 3.10)
            absorb(current, more)
        return queues
