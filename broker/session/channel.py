"""One AMQP channel: publishing, confirms, consumers, delivery tags, acknowledgements, prefetch and transactions.

Everything here is synchronous and runs inside the connection's ``data_received``: a publish is routed, enqueued
and (when a consumer has capacity) delivered before the next frame is read, and all resulting frames leave in the
connection's single write at the end of the read.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from pamqp import commands
from pamqp.base import Frame

from amqpd.broker.access.grants import CONFIGURE, EXCHANGE, QUEUE, READ, WRITE, Grants
from amqpd.broker.durability.messages import store_message
from amqpd.broker.features import reply_to
from amqpd.broker.features.publish_extras import EXTRA_FLAGS, route_extras
from amqpd.broker.model.arguments import validate_consume_arguments, validate_expiration
from amqpd.broker.model.exchange import EXCHANGE_TYPES
from amqpd.broker.model.message import Message
from amqpd.broker.model.names import default_exchange_refused, generate_queue_name, normalize_name
from amqpd.broker.model.queue import Entry, Queue
from amqpd.broker.session import consumer_timeout
from amqpd.broker.session.confirms import Confirms
from amqpd.broker.session.consumer import ChannelConsumer, new_consumer_tag
from amqpd.broker.session.unacked import Unacked
from amqpd.protocol import fastcodec
from amqpd.protocol.errors import (
    ACCESS_REFUSED,
    NOT_ALLOWED,
    NOT_FOUND,
    NOT_IMPLEMENTED,
    PRECONDITION_FAILED,
    SYNTAX_ERROR,
    ChannelError,
    ConnectionError_,
)

if TYPE_CHECKING:
    from amqpd.broker.model.vhost import VHost
    from amqpd.broker.session.connection import BrokerConnection


class _DeclareOk(commands.Queue.DeclareOk):
    """Queue.DeclareOk without pamqp's name check: its spec regex refuses names RabbitMQ accepts ('é', '*')."""

    def validate(self) -> None:
        pass


class Channel:
    def __init__(self, conn: BrokerConnection, number: int, vhost: VHost) -> None:
        self.conn = conn
        self.proto = conn.proto
        self.number = number
        self.vhost = vhost
        self.consumers: dict[str, ChannelConsumer] = {}
        self.delivery_tag = 0
        self.unacked = Unacked()
        self.consumer_prefetch = 0
        self.global_prefetch = 0
        self.flow_active = True
        self.deliverable = True  # flow_active and the connection's transport is writable
        self.confirms: Confirms | None = None  # set by confirm.select
        self.tx_mode = False
        # (message, the queues it was routed to, mandatory, property flags): enqueued at commit
        self.tx_publishes: list[tuple[Message, Collection[Queue], bool, int]] = []
        self.tx_acks: list[tuple[int, Entry, int]] = []  # (tag, entry, ACK / REQUEUE / REJECT)
        self.last_queue = ""  # the "most recently declared queue" for empty queue names
        self.reply_address: str | None = None  # of this channel's direct reply-to queue, while it consumes
        self.flow_high = conn.server.config.flow_high
        user = conn.user
        # What this channel's user may do here; None only for a session with no login (unit tests).
        self.grants = Grants(conn.server.access, user, vhost.name) if user is not None else None
        self.write_ok = self.grants.write_ok if self.grants is not None else None  # read on every publish
        self.closed = False
        consumer_timeout.watch(conn.server)  # its timer finds unacked deliveries: nothing per delivery here
        self._dispatch: dict[type, Callable[[Any], None]] = {
            commands.Exchange.Declare: self._exchange_declare,
            commands.Exchange.Delete: self._exchange_delete,
            commands.Exchange.Bind: self._exchange_bind,
            commands.Exchange.Unbind: self._exchange_unbind,
            commands.Queue.Declare: self._queue_declare,
            commands.Queue.Bind: self._queue_bind,
            commands.Queue.Unbind: self._queue_unbind,
            commands.Queue.Purge: self._queue_purge,
            commands.Queue.Delete: self._queue_delete,
            commands.Basic.Qos: self._basic_qos,
            commands.Basic.Consume: self._basic_consume,
            commands.Basic.Cancel: self._basic_cancel,
            commands.Basic.Get: self._basic_get,
            commands.Basic.Recover: self._basic_recover,
            commands.Basic.RecoverAsync: self._basic_recover_async,
            commands.Channel.Flow: self._channel_flow,
            commands.Confirm.Select: self._confirm_select,
            commands.Tx.Select: self._tx_select,
            commands.Tx.Commit: self._tx_commit,
            commands.Tx.Rollback: self._tx_rollback,
        }

    # ------------------------------------------------------------------ helpers
    def send_method(self, method: Frame) -> None:
        self.proto.send_method(self.number, method)

    def _queue_name(self, name: str) -> str:
        if name:
            return name
        if not self.last_queue:
            raise ChannelError(NOT_FOUND, "no previously declared queue")
        return self.last_queue

    def _queue(self, name: str) -> Queue:
        return self.vhost.get_queue(self._queue_name(name), self.conn)

    def _readable(self, name: str) -> str:
        """The queue name (shortcut resolved) once the user may read it: get, consume and purge."""
        name = normalize_name(self._queue_name(name))
        if self.grants is not None:
            self.grants.check(QUEUE, name, READ)
        return name

    def _check_binding(self, dest_kind: str, destination: str, source: str, routing_key: str) -> None:
        """RabbitMQ's binding_action checks: write on the destination, neither end the default exchange, read
        on the source, and the topic read permission for a topic source."""
        grants = self.grants
        if grants is None:
            return
        grants.check(dest_kind, destination, WRITE)
        if source == "" or (dest_kind == EXCHANGE and destination == ""):
            raise default_exchange_refused()
        grants.check(EXCHANGE, source, READ)
        ex = self.vhost.exchanges.get(source)
        if ex is not None and ex.type_name == "topic":
            grants.check_topic(source, routing_key, READ)

    def handle(self, method: Frame) -> None:
        handler = self._dispatch.get(type(method))
        if handler is None:
            raise ConnectionError_(503, "unimplemented method")
        handler(method)
        if self.vhost.persisted:
            # A durable declare/delete/bind was handed to the store: its -Ok (and everything after it on this
            # connection) leaves only once that is on disk.
            self.vhost.persisted = False
            self.conn.hold_output_until_durable()

    # ------------------------------------------------------------------ publish (hot)
    def publish(self, exchange: str, routing_key: str, mandatory: bool, header: bytes, body: bytes) -> None:
        write_ok = self.write_ok
        if write_ok is not None and exchange not in write_ok:
            # Before the lookup, as RabbitMQ: no permission hides whether the exchange exists.
            grants = self.grants
            assert grants is not None  # write_ok is set with it
            grants.write_exchange(exchange)
        ex = self.vhost.exchanges.get(exchange)
        if ex is None:
            raise ChannelError(NOT_FOUND, f"no exchange '{exchange}' in vhost '{self.vhost.name}'")
        if ex.internal:
            raise ChannelError(
                ACCESS_REFUSED,
                f"cannot publish to internal exchange '{exchange}' in vhost '{self.vhost.name}'",
            )
        if ex.type_name == "topic":
            grants = self.grants
            if grants is not None and grants.has_topic_permissions:
                grants.check_topic(exchange, routing_key, WRITE)
        flags = fastcodec.property_flags(header)
        expiration = None
        if flags & _CHECKED_FLAGS:
            expiration = self._check_properties(flags, header)
        msg = Message(exchange, routing_key, header, body)
        vhost = self.vhost
        # expiration, reply-to, CC/BCC take route_extras (queue-features)
        queues = route_extras(self, vhost, ex, msg, flags, expiration) if flags & EXTRA_FLAGS else vhost.route(ex, msg)
        if not queues and not exchange:
            queues = reply_to.route(vhost, routing_key)  # direct reply-to addresses
        if self.tx_mode:
            # RabbitMQ routes a transactional publish now and enqueues it at commit: a binding made in between
            # does not change where it goes.
            self.tx_publishes.append((msg, queues, mandatory, flags))
            return
        outcome = self._enqueue(msg, queues, flags) if queues else 0
        if not queues and mandatory:
            self._return(312, b"NO_ROUTE", msg)
        confirms = self.confirms
        if confirms is not None:
            confirms.publish(bool(outcome & _STORED), bool(outcome & _REFUSED))
            self.conn.want_confirm_flush(self)

    def _enqueue(self, msg: Message, queues: Collection[Queue], flags: int) -> int:
        """Store (persistent message, durable queue among them), then enqueue; returns _STORED | _REFUSED bits."""
        vhost = self.vhost
        outcome = 0
        if (
            vhost.committer is not None
            and flags & fastcodec.HAS_DELIVERY_MODE
            and fastcodec.delivery_mode(msg.header) == 2
        ):
            durable = [q for q in queues if q.store is not None]
            if durable:
                store_message(vhost.committer, msg, durable, vhost.next_message_id())
                self.conn.published_persistent = True
                outcome = _STORED
        for q in queues:
            if q.put(msg):  # refused by x-overflow reject-publish (queue-features)
                outcome |= _REFUSED
            if q.consumers and len(q.ready) > self.flow_high:
                self.conn.throttle(q)
        return outcome

    def _check_properties(self, flags: int, header: bytes) -> int | None:
        try:
            props = fastcodec.decode_properties(header)
        except ValueError as exc:  # the protocol layer refuses these first; client data never earns a 541
            raise ConnectionError_(SYNTAX_ERROR, f"malformed content header properties: {exc}") from None
        if (
            flags & fastcodec.HAS_USER_ID
            and props.user_id != self.conn.proto.username
            and not (self.grants is not None and self.grants.user.is_impersonator)
        ):
            raise ChannelError(
                PRECONDITION_FAILED,
                f"user_id property set to '{props.user_id}' but authenticated user was '{self.conn.proto.username}'",
            )
        if flags & fastcodec.HAS_EXPIRATION and props.expiration is not None:
            return validate_expiration(props.expiration)
        return None

    def _return(self, code: int, text: bytes, msg: Message) -> None:
        send = self.proto.send
        send(fastcodec.encode_return(self.number, code, text, msg.exchange_b, msg.routing_key_b))
        send(fastcodec.encode_content(self.number, msg.header, msg.body, self.proto.frame_max))

    def flush_confirms(self) -> None:
        confirms = self.confirms
        if confirms is None:
            return
        upto = confirms.wait_for_store()
        if upto:
            committer = self.vhost.committer
            assert committer is not None
            committer.on_durable(lambda: self._durable(upto))
        confirms.flush(self._send_ack, self._send_nack)

    def _send_ack(self, upto: int, multiple: bool) -> None:
        self.proto.send(fastcodec.encode_ack(self.number, upto, multiple))

    def _send_nack(self, seq: int) -> None:
        self.proto.send(fastcodec.encode_nack(self.number, seq, False, False))

    def _durable(self, upto: int) -> None:
        if self.confirms is not None:
            self.confirms.made_durable(upto)
        if not self.closed:
            self.conn.want_confirm_flush(self)

    # ------------------------------------------------------------------ delivery (hot)
    def track_unacked(self, tag: int, entry: Entry, consumer: ChannelConsumer | None) -> None:
        """A delivery (or basic.get) that now waits for its ack; ``consumer`` is None for basic.get."""
        self.unacked.add(tag, entry)
        entry.consumer = consumer
        msg_id = entry.msg.msg_id
        if msg_id and entry.delivery_count == 1:
            store = entry.queue.store
            if store is not None:  # so that it comes back redelivered=True after a restart
                store.add_mark(entry.queue.vhost, entry.queue.name, msg_id)

    # ------------------------------------------------------------------ acknowledgements (hot)
    def ack(self, tag: int, multiple: bool) -> None:
        taken = self.unacked.take(tag, multiple, 80)
        if self.tx_mode:
            self.tx_acks.extend((t, e, ACK) for t, e in taken)
            return
        self._settle(taken, requeue=False)

    def nack(self, tag: int, multiple: bool, requeue: bool, method_id: int = 120) -> None:
        taken = self.unacked.take(tag, multiple, method_id)
        if self.tx_mode:
            self.tx_acks.extend((t, e, REQUEUE if requeue else REJECT) for t, e in taken)
            return
        self._settle(taken, requeue=requeue, rejected=not requeue)

    def reject(self, tag: int, requeue: bool) -> None:
        self.nack(tag, False, requeue, 90)

    def _settle(self, taken: list[tuple[int, Entry]], requeue: bool, rejected: bool = False) -> None:
        if not taken:
            return
        parked = False
        for _t, e in taken:
            c = e.consumer
            if c is not None:
                c.unacked -= 1
                parked = parked or c.parked
                e.consumer = None
        self.unacked.settled(len(taken))
        if not requeue:
            for _t, e in taken:
                if e.msg.msg_id:
                    e.queue.forget(e)
                if rejected and e.queue.dlx is not None:  # nack/reject without requeue (queue-features)
                    e.queue.dead_letter([e], "rejected")
        else:
            by_queue: dict[Queue, list[Entry]] = {}
            for _t, e in taken:
                by_queue.setdefault(e.queue, []).append(e)
            for q, entries in by_queue.items():
                q.requeue(entries)
        if parked or self.global_prefetch:
            self.unpark_consumers()

    def unpark_consumers(self) -> None:
        for c in list(self.consumers.values()):
            if c.parked:
                c.queue.unpark(c)

    def set_deliverable(self) -> None:
        was = self.deliverable
        self.deliverable = self.flow_active and self.conn.writable
        if self.deliverable and not was:
            self.unpark_consumers()

    # ------------------------------------------------------------------ consumers
    def _basic_consume(self, m: commands.Basic.Consume) -> None:
        reply = m.queue == reply_to.REPLY_TO
        q = self._queue(self._readable(m.queue)) if not reply else None
        tag = m.consumer_tag or new_consumer_tag()
        if tag in self.consumers:
            raise ConnectionError_(NOT_ALLOWED, f"attempt to reuse consumer tag '{tag}'", 60, 20)
        if q is None:
            q = reply_to.consume_queue(self.vhost, self, bool(m.no_ack))
        elif m.arguments:
            validate_consume_arguments(q.name, self.vhost.name, q.arguments, m.arguments)
        if q.exclusive_consumer is not None or (m.exclusive and q.consumers):
            raise ChannelError(ACCESS_REFUSED, f"queue '{q.name}' in vhost '{self.vhost.name}' in exclusive use")
        consumer = ChannelConsumer(
            self, tag, q, bool(m.no_ack), bool(m.exclusive), self.consumer_prefetch, dict(m.arguments or {})
        )
        self.consumers[tag] = consumer
        if not m.nowait:
            self.send_method(commands.Basic.ConsumeOk(consumer_tag=tag))
        q.add_consumer(consumer)

    def _basic_cancel(self, m: commands.Basic.Cancel) -> None:
        consumer = self.consumers.pop(m.consumer_tag or "", None)
        if not m.nowait:
            self.send_method(commands.Basic.CancelOk(consumer_tag=m.consumer_tag))
        if consumer is not None:
            consumer.queue.remove_consumer(consumer)

    def consumer_cancelled_by_server(self, consumer: ChannelConsumer) -> None:
        """``consumer``'s queue is gone: forget it now, tell the client after the current reply (if any)."""
        if self.consumers.get(consumer.tag) is not consumer:
            return
        del self.consumers[consumer.tag]
        if not self.closed and self.conn.proto.capabilities.get("consumer_cancel_notify"):
            self.conn.after_reply(lambda: self._send_cancel(consumer.tag))

    def _send_cancel(self, tag: str) -> None:
        if not self.closed:
            self.send_method(commands.Basic.Cancel(consumer_tag=tag, nowait=True))

    def cancel_timed_out(self, consumer: ChannelConsumer) -> None:
        """``consumer`` held a delivery unacked too long (broker/consumer_timeout.py) and its client understands
        a server-sent basic.cancel: cancel it and requeue what it holds unacked here; the channel stays open."""
        if self.consumers.get(consumer.tag) is consumer:
            del self.consumers[consumer.tag]
            self.send_method(commands.Basic.Cancel(consumer_tag=consumer.tag, nowait=True))
            consumer.queue.remove_consumer(consumer)  # first, so the requeue below cannot hand them back to it
        held = self.unacked.take_where([t for t, e in self.unacked.by_tag.items() if e.consumer is consumer])
        self._settle(held, requeue=True)

    def _basic_qos(self, m: commands.Basic.Qos) -> None:
        if m.prefetch_size:
            raise ConnectionError_(NOT_IMPLEMENTED, f"prefetch_size!=0 ({m.prefetch_size})", 60, 10)
        if m.global_:
            self.global_prefetch = m.prefetch_count
        else:
            self.consumer_prefetch = m.prefetch_count
        self.send_method(commands.Basic.QosOk())
        self.unpark_consumers()

    def _basic_get(self, m: commands.Basic.Get) -> None:
        q = self._queue(self._readable(m.queue))
        entry = q.get()
        if entry is None:
            self.send_method(commands.Basic.GetEmpty())
            return
        self.delivery_tag = tag = self.delivery_tag + 1
        msg = entry.msg
        entry.delivery_count += 1
        self.proto.send(
            fastcodec.encode_get_ok(
                self.number, tag, entry.redelivered, msg.exchange_b, msg.routing_key_b, q.message_count
            )
        )
        self.proto.send(fastcodec.encode_content(self.number, msg.header, msg.body, self.proto.frame_max))
        if m.no_ack:
            q.forget(entry)
            return
        self.track_unacked(tag, entry, None)

    def _basic_recover(self, m: commands.Basic.Recover) -> None:
        if not m.requeue:
            raise ConnectionError_(NOT_IMPLEMENTED, "requeue=false", 60, 110)
        self.send_method(commands.Basic.RecoverOk())  # before the redeliveries, as RabbitMQ's arrive after it
        self.requeue_all_unacked()

    def _basic_recover_async(self, m: commands.Basic.RecoverAsync) -> None:
        if not m.requeue:
            raise ConnectionError_(NOT_IMPLEMENTED, "requeue=false", 60, 100)
        self.requeue_all_unacked()

    def requeue_all_unacked(self) -> None:
        self._settle(self.unacked.take_all(), requeue=True)

    def _channel_flow(self, m: commands.Channel.Flow) -> None:
        # RabbitMQ answers active=false with 540; the spec says pause deliveries to this channel, so we do.
        self.flow_active = bool(m.active)
        self.send_method(commands.Channel.FlowOk(active=self.flow_active))  # before the deliveries it frees
        self.set_deliverable()

    # ------------------------------------------------------------------ confirms and transactions
    def _confirm_select(self, m: commands.Confirm.Select) -> None:
        if self.tx_mode:
            raise ChannelError(PRECONDITION_FAILED, "cannot switch from tx to confirm mode")
        if self.confirms is None:
            self.confirms = Confirms()
        if not m.nowait:
            self.send_method(commands.Confirm.SelectOk())

    def _tx_select(self, _m: commands.Tx.Select) -> None:
        if self.confirms is not None:
            raise ChannelError(PRECONDITION_FAILED, "cannot switch from confirm to tx mode")
        self.tx_mode = True
        self.send_method(commands.Tx.SelectOk())

    def _tx_commit(self, _m: commands.Tx.Commit) -> None:
        if not self.tx_mode:
            raise ChannelError(PRECONDITION_FAILED, "channel is not transactional")
        publishes, self.tx_publishes = self.tx_publishes, []
        acks, self.tx_acks = self.tx_acks, []
        stored = False
        for msg, queues, mandatory, flags in publishes:
            live = [q for q in queues if not q.deleted]
            if live:
                stored = bool(self._enqueue(msg, live, flags) & _STORED) or stored
            elif mandatory and not queues:
                self._return(312, b"NO_ROUTE", msg)
        self._settle([(t, e) for t, e, mode in acks if mode == ACK], requeue=False)
        self._settle([(t, e) for t, e, mode in acks if mode == REJECT], requeue=False, rejected=True)
        self._settle([(t, e) for t, e, mode in acks if mode == REQUEUE], requeue=True)
        self.send_method(commands.Tx.CommitOk())
        if stored:
            # As RabbitMQ's: commit-ok says the transaction's persistent messages are on disk.
            self.conn.hold_output_until_durable()

    def _tx_rollback(self, _m: commands.Tx.Rollback) -> None:
        if not self.tx_mode:
            raise ChannelError(PRECONDITION_FAILED, "channel is not transactional")
        self.tx_publishes = []
        acks, self.tx_acks = self.tx_acks, []
        # RabbitMQ keeps the messages whose acks were rolled back unacked on the channel.
        self.unacked.restore((t, e) for t, e, _mode in acks)
        self.send_method(commands.Tx.RollbackOk())

    # ------------------------------------------------------------------ exchanges
    def _exchange_declare(self, m: commands.Exchange.Declare) -> None:
        grants = self.grants
        name = normalize_name(m.exchange)
        # An unknown type and the default exchange are refused first (by the model), as in RabbitMQ.
        if grants is not None and not m.passive and name and m.exchange_type in EXCHANGE_TYPES:
            grants.check(EXCHANGE, name, CONFIGURE)
            alternate = (m.arguments or {}).get("alternate-exchange")
            if isinstance(alternate, (str, bytes)) and name not in self.vhost.exchanges:
                grants.check(EXCHANGE, name, READ)
                ae = alternate.decode("utf-8", "replace") if isinstance(alternate, bytes) else alternate
                grants.check(EXCHANGE, ae, WRITE)
        self.vhost.declare_exchange(
            m.exchange,
            m.exchange_type,
            passive=bool(m.passive),
            durable=bool(m.durable),
            auto_delete=bool(m.auto_delete),
            internal=bool(m.internal),
            arguments=dict(m.arguments or {}),
        )
        if not m.nowait:
            self.send_method(commands.Exchange.DeclareOk())

    def _exchange_delete(self, m: commands.Exchange.Delete) -> None:
        name = normalize_name(m.exchange)
        if self.grants is not None and name and not name.startswith("amq."):  # those are refused anyway
            self.grants.check(EXCHANGE, name, CONFIGURE)
        self.vhost.delete_exchange(m.exchange, if_unused=bool(m.if_unused))
        if not m.nowait:
            self.send_method(commands.Exchange.DeleteOk())

    def _exchange_bind(self, m: commands.Exchange.Bind) -> None:
        self._check_binding(EXCHANGE, normalize_name(m.destination), normalize_name(m.source), m.routing_key)
        self.vhost.bind_exchange(m.destination, m.source, m.routing_key, dict(m.arguments or {}))
        if not m.nowait:
            self.send_method(commands.Exchange.BindOk())

    def _exchange_unbind(self, m: commands.Exchange.Unbind) -> None:
        self._check_binding(EXCHANGE, normalize_name(m.destination), normalize_name(m.source), m.routing_key)
        self.vhost.unbind_exchange(m.destination, m.source, m.routing_key, dict(m.arguments or {}))
        if not m.nowait:
            self.send_method(commands.Exchange.UnbindOk())

    # ------------------------------------------------------------------ queues
    def _queue_declare(self, m: commands.Queue.Declare) -> None:
        name = m.queue
        if m.passive:
            # No "last declared queue" shortcut here: RabbitMQ answers 404 no queue '' (rabbit_channel).
            q = self.vhost.declare_queue(name, self.conn, passive=True)
        else:
            name = normalize_name(name)
            server_named = not name
            if server_named:
                name = generate_queue_name()  # here, so that the configure check sees the name (RabbitMQ)
            self._check_queue_declare(name, m.arguments or {})
            q = self.vhost.declare_queue(
                name,
                self.conn,
                server_named=server_named,
                durable=bool(m.durable),
                exclusive=bool(m.exclusive),
                auto_delete=bool(m.auto_delete),
                arguments=dict(m.arguments or {}),
            )
            if q.exclusive_owner is self.conn:
                self.conn.exclusive_queues.add(q)
        self.last_queue = q.name
        q.touch()  # a declare restarts the x-expires countdown (queue-features)
        if not m.nowait:
            self.send_method(
                _DeclareOk(queue=q.name, message_count=q.message_count, consumer_count=q.consumer_count)
            )

    def _check_queue_declare(self, name: str, arguments: dict[str, Any]) -> None:
        grants = self.grants
        if grants is not None:
            grants.check(QUEUE, name, CONFIGURE)
        vhost = self.vhost
        if name in vhost.queues:
            return
        limit = self.conn.server.access.vhost_limit(vhost.name, "max-queues")
        if limit is not None and len(vhost.queues) >= limit:
            raise ChannelError(
                PRECONDITION_FAILED,
                f"cannot declare queue '{name}': queue limit in vhost '{vhost.name}' ({limit}) is reached",
            )
        dlx = arguments.get("x-dead-letter-exchange")
        if grants is not None and isinstance(dlx, (str, bytes)):
            grants.check(QUEUE, name, READ)
            grants.check(EXCHANGE, dlx.decode("utf-8", "replace") if isinstance(dlx, bytes) else dlx, WRITE)

    def _queue_bind(self, m: commands.Queue.Bind) -> None:
        # Shortcuts first, as RabbitMQ: an empty queue name means the last declared queue (404 when none),
        # and with it an empty routing key means that queue's name.
        name = self._queue_name(m.queue)
        routing_key = m.routing_key if m.queue or m.routing_key else name
        self._check_binding(QUEUE, normalize_name(name), normalize_name(m.exchange), routing_key)
        if m.exchange == "":
            raise ChannelError(ACCESS_REFUSED, "operation not permitted on the default exchange")
        self.vhost.get_exchange(m.exchange)
        q = self.vhost.get_queue(name, self.conn)
        self.vhost.bind_queue(q, m.exchange, routing_key, dict(m.arguments or {}))
        if not m.nowait:
            self.send_method(commands.Queue.BindOk())

    def _queue_unbind(self, m: commands.Queue.Unbind) -> None:
        name = self._queue_name(m.queue)
        routing_key = m.routing_key if m.queue or m.routing_key else name  # the same shortcut as queue.bind
        self._check_binding(QUEUE, normalize_name(name), normalize_name(m.exchange), routing_key)
        q = self.vhost.queues.get(name)
        if q is not None:
            if q.exclusive_owner is not None and q.exclusive_owner is not self.conn:
                raise self.vhost.locked(name)
            self.vhost.unbind_queue(q, m.exchange, routing_key, dict(m.arguments or {}))
        elif m.exchange == "":
            raise ChannelError(ACCESS_REFUSED, "operation not permitted on the default exchange")
        self.send_method(commands.Queue.UnbindOk())

    def _queue_purge(self, m: commands.Queue.Purge) -> None:
        q = self._queue(self._readable(m.queue))
        n = q.purge()
        if not m.nowait:
            self.send_method(commands.Queue.PurgeOk(message_count=n))

    def _queue_delete(self, m: commands.Queue.Delete) -> None:
        name = self._queue_name(m.queue)
        if self.grants is not None:
            self.grants.check(QUEUE, normalize_name(name), CONFIGURE)
        q = self.vhost.queues.get(name)
        n = self.vhost.delete_queue_checked(name, self.conn, if_unused=bool(m.if_unused), if_empty=bool(m.if_empty))
        if q is not None and q.deleted:
            self.conn.exclusive_queues.discard(q)
        if not m.nowait:
            self.send_method(commands.Queue.DeleteOk(message_count=n))

    # ------------------------------------------------------------------ teardown
    def close(self) -> None:
        """The channel is gone (closed by either side, or the connection died): release everything it held."""
        if self.closed:
            return
        self.closed = True
        consumers = list(self.consumers.values())
        self.consumers.clear()
        for c in consumers:
            c.queue.remove_consumer(c)
        self.tx_publishes = []
        self.unacked.restore((t, e) for t, e, _mode in self.tx_acks)
        self.tx_acks = []
        self._settle(self.unacked.take_all(), requeue=True)


_CHECKED_FLAGS = fastcodec.HAS_USER_ID | fastcodec.HAS_EXPIRATION

# What a transactional ack / nack / reject does at commit.
ACK = 0
REQUEUE = 1
REJECT = 2  # nack or reject without requeue: dropped, or dead-lettered when the queue has a DLX

# Channel._enqueue outcome bits
_STORED = 1
_REFUSED = 2
