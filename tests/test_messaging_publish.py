"""basic.publish and publisher confirms: returns, publish-time errors, size limits, confirm sequencing, sharing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import aio_pika
import pytest
from pamqp import body, commands, header

from amqpd.broker.server.config import Config
from tests.support.amqp import uniq
from tests.support.raw_client import AnyFrame, CloseInfo, RawClient
from tests.support.server_thread import ServerThread
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

EXTERNAL = bool(os.environ.get("AMQP_URL"))


def next_frame(client: RawClient) -> tuple[int, AnyFrame]:
    got = client.read_frame()
    assert got is not None, "broker hung up"
    return got


def read_content(client: RawClient, channel: int) -> tuple[commands.Basic.Properties, bytes]:
    """The content header and all body frames that follow a Deliver/GetOk/Return."""
    ch, hdr = next_frame(client)
    assert ch == channel and isinstance(hdr, header.ContentHeader), hdr
    parts: list[bytes] = []
    received = 0
    while received < hdr.body_size:
        ch, part = next_frame(client)
        assert ch == channel and isinstance(part, body.ContentBody), part
        parts.append(part.value)
        received += len(part.value)
    return hdr.properties, b"".join(parts)


def read_acks(client: RawClient, channel: int, upto: int) -> list[commands.Basic.Ack]:
    """Basic.Ack frames on `channel` until every seqno up to `upto` is confirmed; anything else fails."""
    acks: list[commands.Basic.Ack] = []
    confirmed = 0
    while confirmed < upto:
        ch, frame = next_frame(client)
        assert ch == channel and isinstance(frame, commands.Basic.Ack), frame
        acks.append(frame)
        confirmed = max(confirmed, frame.delivery_tag)
    return acks


def confirmed_tags(acks: list[commands.Basic.Ack]) -> list[int]:
    """Each seqno the acks cover, in the order they were confirmed (a multiple ack covers all before it)."""
    tags: list[int] = []
    done = 0
    for ack in acks:
        if ack.multiple:
            tags.extend(range(done + 1, ack.delivery_tag + 1))
        else:
            tags.append(ack.delivery_tag)
        done = max(done, ack.delivery_tag)
    return tags


FULL_PROPERTIES = commands.Basic.Properties(
    content_type="application/json",
    content_encoding="identity",
    headers={"x-trace": "abc", "n": 7, "nested": {"deep": True}},
    delivery_mode=2,
    priority=3,
    correlation_id="corr-1",
    reply_to="replies",
    expiration="60000",
    message_id="msg-1",
    timestamp=None,
    message_type="order.created",
    user_id="guest",
    app_id="tests",
)


# ---------------------------------------------------------------------------------------------- basic.return


def test_mandatory_unroutable_publish_is_returned_whole_before_its_confirm(amqp_url: str, loop_kind: str) -> None:
    payload = bytes(range(256)) * 800  # 204800 bytes: spans two body frames
    rk = uniq("nowhere")
    with RawClient.open(amqp_url) as client:
        client.open_channel(1)
        client.send_method(1, commands.Confirm.Select())
        client.expect(1, commands.Confirm.SelectOk)
        client.publish(1, payload, routing_key=rk, properties=FULL_PROPERTIES, mandatory=True)
        ret = client.expect(1, commands.Basic.Return)
        assert (ret.reply_code, ret.reply_text, ret.exchange, ret.routing_key) == (312, "NO_ROUTE", "", rk)
        props, content = read_content(client, 1)
        assert props == FULL_PROPERTIES
        assert content == payload
        ack = client.expect(1, commands.Basic.Ack)
        assert (ack.delivery_tag, ack.multiple) == (1, False)
        client.close_connection()


def test_unroutable_publish_without_mandatory_is_confirmed_and_not_returned(amqp_url: str, loop_kind: str) -> None:
    with RawClient.open(amqp_url) as client:
        client.open_channel(1)
        client.send_method(1, commands.Confirm.Select())
        client.expect(1, commands.Confirm.SelectOk)
        for i in range(3):
            client.publish(1, b"m%d" % i, routing_key=uniq("nowhere"))
        acks = read_acks(client, 1, 3)  # a Basic.Return would fail this
        assert sorted(confirmed_tags(acks)) == [1, 2, 3]
        client.close_connection()


async def test_aio_pika_return_callback_receives_the_unroutable_message(amqp_url: str) -> None:
    returned: list[aio_pika.abc.AbstractIncomingMessage] = []
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(on_return_raises=False)
        channel.return_callbacks.add(lambda _ch, msg: returned.append(msg))
        message = aio_pika.Message(b"lost", headers={"k": "v"}, correlation_id="c-9", message_id=uniq("id"))
        await channel.default_exchange.publish(message, routing_key=uniq("nowhere"), mandatory=True)
        await wait_for(lambda: returned)
        assert returned[0].body == b"lost"
        assert returned[0].headers == {"k": "v"}
        assert returned[0].correlation_id == "c-9"


async def test_aio_pika_on_return_raises_reports_the_unroutable_publish(amqp_url: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(on_return_raises=True)
        message = aio_pika.Message(b"lost", message_id=uniq("id"))
        with pytest.raises(aio_pika.exceptions.PublishError):
            await channel.default_exchange.publish(message, routing_key=uniq("nowhere"), mandatory=True)


def test_mandatory_routable_publish_is_not_returned(amqp_url: str, loop_kind: str) -> None:
    q = uniq("q")
    with RawClient.open(amqp_url) as client:
        client.open_channel(1)
        client.send_method(1, commands.Queue.Declare(queue=q, exclusive=True))
        client.expect(1, commands.Queue.DeclareOk)
        client.send_method(1, commands.Confirm.Select())
        client.expect(1, commands.Confirm.SelectOk)
        client.publish(1, b"routed", routing_key=q, mandatory=True)
        acks = read_acks(client, 1, 1)
        assert confirmed_tags(acks) == [1]
        client.send_method(1, commands.Basic.Get(queue=q, no_ack=True))
        ok = client.expect(1, commands.Basic.GetOk)
        assert ok.message_count == 0
        assert read_content(client, 1)[1] == b"routed"
        client.close_connection()


# --------------------------------------------------------------------------------------- publish-time errors


def test_publish_with_immediate_closes_the_connection_with_540(amqp_url: str, loop_kind: str) -> None:
    with RawClient.open(amqp_url) as client:
        client.open_channel(1)
        client.send_frames(
            1,
            commands.Basic.Publish(exchange="", routing_key="x", immediate=True),
            header.ContentHeader(0, 1, commands.Basic.Properties()),
            body.ContentBody(b"x"),
        )
        info = client.read_until_close()
        assert info == CloseInfo("connection", 540, "NOT_IMPLEMENTED - immediate=true", 60, 40, 0)


def test_publish_to_a_missing_exchange_closes_the_channel_with_404(amqp_url: str, loop_kind: str) -> None:
    ex = uniq("no-such-exchange")
    with RawClient.open(amqp_url) as client:
        client.open_channel(1)
        client.publish(1, b"x", exchange=ex, routing_key="k")
        info = client.read_until_close()
        assert info == CloseInfo("channel", 404, f"NOT_FOUND - no exchange '{ex}' in vhost '/'", 60, 40, 1)
        client.close_connection()


def test_publish_with_a_foreign_user_id_closes_the_channel_with_406(amqp_url: str, loop_kind: str) -> None:
    with RawClient.open(amqp_url) as client:
        client.open_channel(1)
        client.publish(1, b"x", routing_key="k", properties=commands.Basic.Properties(user_id="other"))
        info = client.read_until_close()
        text = "PRECONDITION_FAILED - user_id property set to 'other' but authenticated user was 'guest'"
        assert info == CloseInfo("channel", 406, text, 60, 40, 1)
        client.close_connection()


@pytest.mark.parametrize(
    ("expiration", "detail"),
    [("abc", "invalid expiration 'abc': no_integer"), ("-5", "invalid expiration '-5': {value_negative,-5}")],
)
def test_publish_with_a_bad_expiration_closes_the_channel_with_406(
    amqp_url: str, loop_kind: str, expiration: str, detail: str
) -> None:
    with RawClient.open(amqp_url) as client:
        client.open_channel(1)
        client.publish(1, b"x", routing_key="k", properties=commands.Basic.Properties(expiration=expiration))
        info = client.read_until_close()
        assert info == CloseInfo("channel", 406, f"PRECONDITION_FAILED - {detail}", 60, 40, 1)
        client.close_connection()


def test_channel_error_on_publish_leaves_other_channels_working(amqp_url: str, loop_kind: str) -> None:
    q = uniq("q")
    with RawClient.open(amqp_url) as client:
        client.open_channel(1)
        client.open_channel(2)
        client.send_method(2, commands.Queue.Declare(queue=q, exclusive=True))
        client.expect(2, commands.Queue.DeclareOk)
        client.publish(1, b"x", exchange=uniq("missing"))
        assert client.read_until_close().reply_code == 404
        client.publish(2, b"still fine", routing_key=q)
        client.send_method(2, commands.Basic.Get(queue=q, no_ack=True))
        client.expect(2, commands.Basic.GetOk)
        assert read_content(client, 2)[1] == b"still fine"
        client.close_connection()


# ---------------------------------------------------------------------------------------- max message size


@pytest.fixture
def small_limit_broker(loop_kind: str) -> Iterator[ServerThread]:
    if EXTERNAL:
        pytest.skip("needs an amqpd configured with a small max_message_size; AMQP_URL points elsewhere")
    thread = ServerThread(Config(host="127.0.0.1", port=0, store="memory://", max_message_size=1000), loop_kind)
    thread.start()
    yield thread
    thread.stop()


def test_message_over_the_configured_max_size_closes_the_channel_with_406(small_limit_broker: ServerThread) -> None:
    q = uniq("q")
    with RawClient.open(small_limit_broker.url) as client:
        client.open_channel(1)
        client.send_method(1, commands.Queue.Declare(queue=q, exclusive=True))
        client.expect(1, commands.Queue.DeclareOk)
        client.publish(1, b"x" * 1000, routing_key=q)  # exactly the limit is fine
        client.send_method(1, commands.Basic.Get(queue=q, no_ack=True))
        client.expect(1, commands.Basic.GetOk)
        assert len(read_content(client, 1)[1]) == 1000
        client.publish(1, b"x" * 1001, routing_key=q)
        info = client.read_until_close()
        text = "PRECONDITION_FAILED - message size 1001 is larger than configured max size 1000"
        assert info == CloseInfo("channel", 406, text, 60, 40, 1)
        client.close_connection()


def test_max_size_is_enforced_at_the_content_header_before_any_body_arrives(
    small_limit_broker: ServerThread,
) -> None:
    with RawClient.open(small_limit_broker.url) as client:
        client.open_channel(1)
        # Announce 1 GiB and send no body at all: the refusal must come from the header alone.
        client.send_frames(
            1,
            commands.Basic.Publish(exchange="", routing_key="k"),
            header.ContentHeader(0, 1 << 30, commands.Basic.Properties()),
        )
        info = client.read_until_close(reply=False)
        text = f"PRECONDITION_FAILED - message size {1 << 30} is larger than configured max size 1000"
        assert info == CloseInfo("channel", 406, text, 60, 40, 1)
        # Body frames sent before the client saw the Close are discarded with the channel, not misparsed.
        client.send_frames(1, body.ContentBody(b"late"))
        client.send_method(1, commands.Channel.CloseOk())
        client.open_channel(1)
        client.close_connection()


# ------------------------------------------------------------------------------------------------ confirms


def test_confirm_seqnos_count_per_channel(amqp_url: str, loop_kind: str) -> None:
    with RawClient.open(amqp_url) as client:
        for ch in (1, 2):
            client.open_channel(ch)
            client.send_method(ch, commands.Confirm.Select())
            client.expect(ch, commands.Confirm.SelectOk)
        client.publish(1, b"a", routing_key=uniq("nowhere"))
        assert confirmed_tags(read_acks(client, 1, 1)) == [1]
        for _ in range(2):
            client.publish(2, b"b", routing_key=uniq("nowhere"))
        assert sorted(confirmed_tags(read_acks(client, 2, 2))) == [1, 2]
        client.publish(1, b"c", routing_key=uniq("nowhere"))
        assert confirmed_tags(read_acks(client, 1, 2)) == [2]
        client.close_connection()


def test_confirms_for_a_burst_cover_every_seqno_once_and_may_be_coalesced(amqp_url: str, loop_kind: str) -> None:
    q = uniq("q")
    with RawClient.open(amqp_url) as client:
        client.open_channel(1)
        client.send_method(1, commands.Queue.Declare(queue=q, exclusive=True))
        client.expect(1, commands.Queue.DeclareOk)
        client.send_method(1, commands.Confirm.Select(nowait=True))
        frames: list[AnyFrame] = []
        for i in range(50):
            frames += [
                commands.Basic.Publish(exchange="", routing_key=q),
                header.ContentHeader(0, 2, commands.Basic.Properties()),
                body.ContentBody(b"%02d" % i),
            ]
        client.send_frames(1, *frames)  # one write: amqpd sees the whole burst in one read
        acks = read_acks(client, 1, 50)
        assert sorted(confirmed_tags(acks)) == list(range(1, 51))
        if not EXTERNAL:
            assert len(acks) < 50 and acks[-1].multiple  # amqpd acks a read's worth with one multiple ack
        client.send_method(1, commands.Queue.Declare(queue=q, passive=True))
        assert client.expect(1, commands.Queue.DeclareOk).message_count == 50
        client.close_connection()


async def test_aio_pika_publishes_to_a_queue_are_confirmed(amqp_url: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(uniq("q"), exclusive=True)
        for i in range(20):
            confirmation = await channel.default_exchange.publish(aio_pika.Message(b"%d" % i), queue.name)
            assert isinstance(confirmation, commands.Basic.Ack)
        declared = await channel.declare_queue(queue.name, passive=True)
        assert declared.declaration_result.message_count == 20


# ----------------------------------------------------------------------------------------------- sharing


async def test_a_message_routed_to_several_queues_is_stored_once(amqp_url: str, broker_server: ServerThread) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(uniq("fan"), aio_pika.ExchangeType.FANOUT, auto_delete=True)
        queues = [await channel.declare_queue(uniq("q"), exclusive=True) for _ in range(3)]
        for queue in queues:
            await queue.bind(exchange)
        await exchange.publish(aio_pika.Message(b"shared" * 1000), routing_key="")
        names = [q.name for q in queues]

        def entries() -> list[Any]:
            vhost = broker_server.server.vhosts["/"]
            return [vhost.queues[name].ready[0] for name in names if vhost.queues[name].ready]

        found = await wait_for(lambda: len(broker_server.call(entries)) == 3 and broker_server.call(entries))
        msgs = [entry.msg for entry in found]
        assert msgs[0] is msgs[1] is msgs[2]
        assert msgs[0].body is msgs[1].body
        assert [entry.queue.name for entry in found] == names
        await exchange.delete()
