"""The order of a synchronous reply and the asynchronous notifications the same method causes, frame by frame.

RabbitMQ answers the method first and notifies afterwards wherever its queue process answers the channel before
the channels hear of the queue's end: a queue.delete sends Delete-Ok, then a basic.cancel to each consumer of
the queue. Clients depend on it: py-amqp (kombu, Celery) raises ConsumerCancelled from its own queue_delete
when the basic.cancel comes first.

What RabbitMQ 3.10.8 does, as probed with raw frames (each several times):

- queue.delete, consumer on the deleting channel: Delete-Ok, then Basic.Cancel (always);
- queue.delete, consumer on another channel of the same connection: either order (a race between two Erlang
  processes); amqpd sends Delete-Ok first, as on the same channel;
- queue.delete, consumer on another connection: Delete-Ok to one, Basic.Cancel to the other;
- queue.purge, queue.delete refused (if-unused, if-empty): no Basic.Cancel;
- connection.close with consumers of its exclusive queue: Close-Ok only; channel.close of the declaring channel
  leaves the exclusive queue and its consumers alone;
- basic.cancel of an auto-delete queue's last consumer: Cancel-Ok alone (the queue goes a moment later);
- tx.commit with a consumer on the same channel: the delivery, then Commit-Ok;
- basic.qos raising a global limit: Qos-Ok, then the deliveries it allows; basic.recover: Recover-Ok, then the
  redelivery;
- a channel error on a channel holding unacked messages: their redelivery to a consumer on another channel of
  the connection, then Channel.Close.

amqpd only (RabbitMQ 3.10.8 cannot show it): single-active-consumer hand-over on basic.cancel (3.10.8 never
hands over, and its queue process crashes at the next publish, cancelling the remaining consumer), and the
consumer timeout (3.10 ignores x-consumer-timeout).
"""

from __future__ import annotations

import os
import uuid
from urllib.parse import quote, unquote, urlsplit

import kombu
import pytest
from pamqp import commands
from pamqp.common import FieldTable

from tests.support.raw_client import RawClient

pytestmark = pytest.mark.integration

EXTERNAL = bool(os.environ.get("AMQP_URL"))
Seq = list[tuple[int, str]]

DELETE_OK = "Queue.DeleteOk"
CANCEL = "Basic.Cancel"
CANCEL_OK = "Basic.CancelOk"
DELIVER = "Basic.Deliver"
DECLARE_OK = "Queue.DeclareOk"
CHANNEL_CLOSE = "Channel.Close"


def uniq(prefix: str) -> str:
    return f"order-{prefix}-{uuid.uuid4().hex[:12]}"


def call(client: RawClient, channel: int, method: commands.Frame, reply: str) -> Seq:
    """Send ``method`` and read through its reply; returns everything read, in order."""
    client.send_method(channel, method)
    return client.read_through(channel, reply)


def declare(client: RawClient, channel: int, queue: str, **kwargs: object) -> None:
    call(client, channel, commands.Queue.Declare(queue=queue, **kwargs), DECLARE_OK)


def consume(client: RawClient, channel: int, queue: str, tag: str, **kwargs: object) -> Seq:
    return call(client, channel, commands.Basic.Consume(queue=queue, consumer_tag=tag, **kwargs), "Basic.ConsumeOk")


def fence(client: RawClient, channel: int, queue: str) -> Seq:
    """A passive declare: once its Declare-Ok is read, whatever the broker sent on ``channel`` before is read."""
    return call(client, channel, commands.Queue.Declare(queue=queue, passive=True), DECLARE_OK)


def on_channel(seq: Seq, channel: int) -> list[str]:
    return [name for ch, name in seq if ch == channel]


# ------------------------------------------------------------------------------------------- queue.delete


def test_queue_delete_on_the_consuming_channel_answers_before_it_cancels(amqp_url: str, loop_kind: str) -> None:
    q = uniq("q")
    with RawClient.open(amqp_url) as client:
        client.open_channel(1)
        declare(client, 1, q)
        consume(client, 1, q, "c1")
        client.send_method(1, commands.Queue.Delete(queue=q))
        assert client.read_methods(2) == [(1, DELETE_OK), (1, CANCEL)]
        assert client.received[-1][1].consumer_tag == "c1"
        client.close_connection()


def test_queue_delete_with_a_consumer_on_another_channel_of_the_connection(amqp_url: str, loop_kind: str) -> None:
    q = uniq("q")
    with RawClient.open(amqp_url) as client:
        client.open_channel(1)
        client.open_channel(2)
        declare(client, 1, q)
        consume(client, 2, q, "c2")
        client.send_method(1, commands.Queue.Delete(queue=q))
        seq = client.read_methods(2)
        assert sorted(seq) == [(1, DELETE_OK), (2, CANCEL)]
        if not EXTERNAL:  # RabbitMQ races its channels here; amqpd answers first, as on one channel
            assert seq == [(1, DELETE_OK), (2, CANCEL)]
        client.close_connection()


def test_queue_delete_with_consumers_on_both_channels(amqp_url: str, loop_kind: str) -> None:
    q = uniq("q")
    with RawClient.open(amqp_url) as client:
        client.open_channel(1)
        client.open_channel(2)
        declare(client, 1, q)
        consume(client, 2, q, "c2")
        consume(client, 1, q, "c1")
        client.send_method(1, commands.Queue.Delete(queue=q))
        seq = client.read_methods(3)
        assert on_channel(seq, 1) == [DELETE_OK, CANCEL]
        assert on_channel(seq, 2) == [CANCEL]
        if not EXTERNAL:
            assert seq[0] == (1, DELETE_OK)
        client.close_connection()


def test_queue_delete_with_a_consumer_on_another_connection(amqp_url: str, loop_kind: str) -> None:
    q = uniq("q")
    with RawClient.open(amqp_url) as consumer, RawClient.open(amqp_url) as admin:
        consumer.open_channel(1)
        admin.open_channel(1)
        declare(consumer, 1, q)
        consume(consumer, 1, q, "c1")
        admin.send_method(1, commands.Queue.Delete(queue=q))
        assert admin.read_methods(1) == [(1, DELETE_OK)]
        assert consumer.read_methods(1) == [(1, CANCEL)]
        admin.close_connection()
        consumer.close_connection()


def test_nowait_queue_delete_still_cancels_its_consumer(amqp_url: str, loop_kind: str) -> None:
    q, other = uniq("q"), uniq("fence")
    with RawClient.open(amqp_url) as client:
        client.open_channel(1)
        declare(client, 1, q)
        declare(client, 1, other, exclusive=True)
        consume(client, 1, q, "c1")
        client.send_method(1, commands.Queue.Delete(queue=q, nowait=True))
        client.send_method(1, commands.Queue.Declare(queue=other, passive=True))
        seq = client.read_methods(2)
        assert sorted(seq) == [(1, CANCEL), (1, DECLARE_OK)]
        if not EXTERNAL:  # RabbitMQ's cancel races the next reply; amqpd's follows the method that caused it
            assert seq == [(1, CANCEL), (1, DECLARE_OK)]
        client.close_connection()


@pytest.mark.parametrize("condition", ["if_unused", "if_empty"])
def test_a_refused_queue_delete_cancels_nobody(amqp_url: str, loop_kind: str, condition: str) -> None:
    q = uniq("q")
    with RawClient.open(amqp_url) as client:
        client.open_channel(1)
        client.open_channel(2)
        declare(client, 2, q, exclusive=True)
        for body in (b"held", b"ready"):
            client.publish(2, body, routing_key=q)
        call(client, 2, commands.Basic.Qos(prefetch_count=1), "Basic.QosOk")
        consume(client, 2, q, "c2")
        assert client.read_methods(1) == [(2, DELIVER)]  # one held unacked, one ready: the queue is not empty
        client.send_method(1, commands.Queue.Delete(queue=q, **{condition: True}))
        assert client.read_methods(1) == [(1, CHANNEL_CLOSE)]
        assert client.received[-1][1].reply_code == 406
        client.send_method(1, commands.Channel.CloseOk())
        assert fence(client, 2, q) == [(2, DECLARE_OK)]
        client.close_connection()


# ------------------------------------------------------------------------------------------- queue.purge


def test_queue_purge_with_consumers_answers_and_cancels_nobody(amqp_url: str, loop_kind: str) -> None:
    q = uniq("q")
    with RawClient.open(amqp_url) as client:
        client.open_channel(1)
        client.open_channel(2)
        declare(client, 1, q, exclusive=True)
        call(client, 1, commands.Basic.Qos(prefetch_count=1), "Basic.QosOk")
        for body in (b"a", b"b", b"c"):
            client.publish(1, body, routing_key=q)
        consume(client, 1, q, "c1")
        consume(client, 2, q, "c2", no_ack=True)  # takes whatever c1 cannot: the queue ends up empty
        client.read_sequence(lambda _seq: sum(isinstance(f, commands.Basic.Deliver) for _c, f in client.received) == 3)
        client.send_method(1, commands.Queue.Purge(queue=q))
        assert client.read_methods(1) == [(1, "Queue.PurgeOk")]
        assert fence(client, 1, q) == [(1, DECLARE_OK)]
        assert fence(client, 2, q) == [(2, DECLARE_OK)]
        client.close_connection()


# ------------------------------------------------------------------------------- exclusive queues, closing


def test_connection_close_with_consumers_of_its_exclusive_queue_sends_only_close_ok(
    amqp_url: str, loop_kind: str
) -> None:
    q = uniq("q")
    with RawClient.open(amqp_url) as client:
        client.open_channel(1)
        client.open_channel(2)
        declare(client, 1, q, exclusive=True)
        consume(client, 1, q, "c1")
        consume(client, 2, q, "c2")
        client.send_method(0, commands.Connection.Close(200, "bye", 0, 0))
        assert client.read_methods(1) == [(0, "Connection.CloseOk")]  # and no Basic.Cancel before it


def test_closing_the_declaring_channel_leaves_the_exclusive_queue_and_its_consumers(
    amqp_url: str, loop_kind: str
) -> None:
    q = uniq("q")
    with RawClient.open(amqp_url) as client:
        client.open_channel(1)
        client.open_channel(2)
        declare(client, 1, q, exclusive=True)
        consume(client, 2, q, "c2")
        assert call(client, 1, commands.Channel.Close(200, "bye", 0, 0), "Channel.CloseOk") == [
            (1, "Channel.CloseOk")
        ]
        assert fence(client, 2, q) == [(2, DECLARE_OK)]
        assert client.received[-1][1].consumer_count == 1
        client.close_connection()


# ------------------------------------------------------------------------------------------- basic.cancel


def test_basic_cancel_is_answered_with_cancel_ok_alone(amqp_url: str, loop_kind: str) -> None:
    q = uniq("q")
    with RawClient.open(amqp_url) as client:
        client.open_channel(1)
        declare(client, 1, q, exclusive=True)
        consume(client, 1, q, "c1")
        assert call(client, 1, commands.Basic.Cancel(consumer_tag="c1"), CANCEL_OK) == [(1, CANCEL_OK)]
        assert fence(client, 1, q) == [(1, DECLARE_OK)]
        client.close_connection()


def test_cancelling_the_last_consumer_of_an_auto_delete_queue_answers_with_cancel_ok_alone(
    amqp_url: str, loop_kind: str
) -> None:
    q, other = uniq("q"), uniq("fence")
    with RawClient.open(amqp_url) as client:
        client.open_channel(1)
        declare(client, 1, q, auto_delete=True)
        declare(client, 1, other, exclusive=True)
        consume(client, 1, q, "c1")
        # Not pipelined: RabbitMQ's queue process sends the Cancel-Ok on the channel's behalf, so the reply
        # to a method sent right behind the basic.cancel can overtake it.
        assert call(client, 1, commands.Basic.Cancel(consumer_tag="c1"), CANCEL_OK) == [(1, CANCEL_OK)]
        assert fence(client, 1, other) == [(1, DECLARE_OK)]
        if not EXTERNAL:
            # Gone at once in amqpd; RabbitMQ's queue deletes itself a moment later, and a passive declare that
            # meets it dying can hang for seconds.
            client.send_method(1, commands.Queue.Declare(queue=q, passive=True))
            assert client.read_methods(1) == [(1, CHANNEL_CLOSE)]
            assert client.received[-1][1].reply_code == 404
            client.send_method(1, commands.Channel.CloseOk())
        client.close_connection()


@pytest.mark.parametrize("same_channel", [False, True], ids=["other-channel", "same-channel"])
def test_single_active_consumer_hand_over_comes_after_the_cancel_ok(
    amqp_url: str, loop_kind: str, same_channel: bool
) -> None:
    if EXTERNAL:
        pytest.skip("RabbitMQ 3.10.8 never hands over on basic.cancel (its queue then crashes at the next publish)")
    q, busy = uniq("sac"), uniq("busy")
    nxt = 1 if same_channel else 2
    with RawClient.open(amqp_url) as client:
        client.open_channel(1)
        client.open_channel(2)
        declare(client, 1, q, exclusive=True, arguments={"x-single-active-consumer": True})
        declare(client, 1, busy, exclusive=True)
        # Channel 1's global limit is taken by a delivery from another queue: the active consumer "a" holds
        # nothing and gets nothing, so messages wait in the queue for the hand-over to "b" (no-ack, so no
        # limit applies to it).
        call(client, 1, commands.Basic.Qos(prefetch_count=1, global_=True), "Basic.QosOk")
        client.publish(1, b"busy", routing_key=busy)
        consume(client, 1, busy, "busy")
        assert client.read_methods(1) == [(1, DELIVER)]
        for body in (b"m0", b"m1"):
            client.publish(1, body, routing_key=q)
        consume(client, 1, q, "a")
        consume(client, nxt, q, "b", no_ack=True)
        client.received.clear()
        client.send_method(1, commands.Basic.Cancel(consumer_tag="a"))
        assert client.read_methods(3) == [(1, CANCEL_OK), (nxt, DELIVER), (nxt, DELIVER)]
        tags = [getattr(f, "consumer_tag", None) for _ch, f in client.received]
        assert [t for t in tags if t is not None] == ["a", "b", "b"]
        client.close_connection()


# ---------------------------------------------------------------- replies that come after their deliveries


def test_tx_commit_delivers_to_a_consumer_on_the_channel_before_commit_ok(amqp_url: str, loop_kind: str) -> None:
    q = uniq("q")
    with RawClient.open(amqp_url) as client:
        client.open_channel(1)
        declare(client, 1, q, exclusive=True)
        consume(client, 1, q, "c1", no_ack=True)
        call(client, 1, commands.Tx.Select(), "Tx.SelectOk")
        client.publish(1, b"x", routing_key=q)
        client.send_method(1, commands.Tx.Commit())
        assert client.read_methods(2) == [(1, DELIVER), (1, "Tx.CommitOk")]
        client.close_connection()


def test_raising_a_global_prefetch_answers_before_the_deliveries_it_allows(amqp_url: str, loop_kind: str) -> None:
    q = uniq("q")
    with RawClient.open(amqp_url) as client:
        client.open_channel(1)
        declare(client, 1, q, exclusive=True)
        for body in (b"a", b"b", b"c"):
            client.publish(1, body, routing_key=q)
        call(client, 1, commands.Basic.Qos(prefetch_count=1, global_=True), "Basic.QosOk")
        consume(client, 1, q, "c1")
        assert client.read_methods(1) == [(1, DELIVER)]
        client.send_method(1, commands.Basic.Qos(prefetch_count=3, global_=True))
        assert client.read_methods(3) == [(1, "Basic.QosOk"), (1, DELIVER), (1, DELIVER)]
        client.close_connection()


def test_basic_recover_answers_before_the_redelivery(amqp_url: str, loop_kind: str) -> None:
    q = uniq("q")
    with RawClient.open(amqp_url) as client:
        client.open_channel(1)
        declare(client, 1, q, exclusive=True)
        client.publish(1, b"m", routing_key=q)
        consume(client, 1, q, "c1")
        assert client.read_methods(1) == [(1, DELIVER)]
        client.send_method(1, commands.Basic.Recover(requeue=True))
        assert client.read_methods(2) == [(1, "Basic.RecoverOk"), (1, DELIVER)]
        assert client.received[-1][1].redelivered
        client.close_connection()


def test_a_channel_error_redelivers_what_the_channel_held_before_its_channel_close(
    amqp_url: str, loop_kind: str
) -> None:
    q = uniq("q")
    with RawClient.open(amqp_url) as client:
        client.open_channel(1)
        client.open_channel(2)
        declare(client, 1, q, exclusive=True)
        client.publish(1, b"m", routing_key=q)
        consume(client, 1, q, "c1")
        assert client.read_methods(1) == [(1, DELIVER)]
        consume(client, 2, q, "c2")
        client.send_method(1, commands.Basic.Ack(delivery_tag=99))  # unknown tag: 406 on channel 1
        assert client.read_methods(2) == [(2, DELIVER), (1, CHANNEL_CLOSE)]
        client.send_method(1, commands.Channel.CloseOk())
        client.close_connection()


# ------------------------------------------------------------------------------------------ consumer timeout

TIMEOUT_ARGS: FieldTable = {"x-consumer-timeout": 200}
NO_CANCEL_NOTIFY: FieldTable = {"publisher_confirms": True, "basic.nack": True}


@pytest.mark.parametrize("notify", [True, False], ids=["cancel-notify", "no-cancel-notify"])
def test_consumer_timeout_notifies_before_it_redelivers(amqp_url: str, loop_kind: str, notify: bool) -> None:
    if EXTERNAL:
        pytest.skip("amqpd setting: RabbitMQ 3.10 ignores x-consumer-timeout")
    q = uniq("q")
    caps = {} if notify else {"capabilities": NO_CANCEL_NOTIFY}
    with RawClient.open(amqp_url, **caps) as client:
        client.open_channel(1)
        client.open_channel(2)
        declare(client, 1, q, exclusive=True, arguments=TIMEOUT_ARGS)
        client.publish(1, b"m", routing_key=q)
        consume(client, 1, q, "slow")
        assert client.read_methods(1) == [(1, DELIVER)]
        consume(client, 2, q, "next")
        # With cancel notify: Basic.Cancel, then the redelivery. Without: the redelivery, then Channel.Close
        # (as any channel error, see above).
        expected = [(1, CANCEL), (2, DELIVER)] if notify else [(2, DELIVER), (1, CHANNEL_CLOSE)]
        assert client.read_methods(2) == expected
        client.close_connection()


# ------------------------------------------------------------------------------------------------- kombu


def kombu_url(amqp_url: str) -> str:
    """kombu's spelling of ``amqp_url``: py-amqp transport, and the vhost "/" written as a double slash."""
    parts = urlsplit(amqp_url)
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    user, password = unquote(parts.username or "guest"), unquote(parts.password or "guest")
    return f"amqp://{quote(user, safe='')}:{quote(password, safe='')}@{parts.hostname}:{parts.port}/" + (
        "/" if vhost == "/" else quote(vhost, safe="")
    )


def test_kombu_consumer_deletes_its_own_queue_without_consumer_cancelled(amqp_url: str, loop_kind: str) -> None:
    """py-amqp raises ConsumerCancelled from queue_delete itself when the broker's basic.cancel arrives before
    the delete-ok it waits for: the broker must answer first."""
    name = uniq("kombu")
    bodies: list[object] = []

    def on_message(body: object, message: kombu.Message) -> None:
        bodies.append(body)
        message.ack()

    with kombu.Connection(kombu_url(amqp_url)) as conn:
        channel = conn.channel()
        queue = kombu.Queue(name, routing_key=name, auto_delete=False)
        with kombu.Consumer(channel, queues=[queue], callbacks=[on_message], accept=["json"]):
            kombu.Producer(channel).publish({"n": 1}, routing_key=name, serializer="json")
            while not bodies:
                conn.drain_events(timeout=5)
            assert queue(channel).delete() == 0  # the message was acked: nothing ready
        assert bodies == [{"n": 1}]
