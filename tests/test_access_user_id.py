"""The user_id message property: RabbitMQ 3.10.8 accepts a publish whose user_id is the authenticated user's name,
or any user_id from a user tagged impersonator; any other user_id is 406 PRECONDITION_FAILED at channel level
(rabbit_channel:check_user_id_header). The check comes after the write and topic checks of basic.publish.
"""

from __future__ import annotations

import aio_pika
import pika
import pika.exceptions
import pytest
from aiormq.exceptions import ChannelPreconditionFailed
from pamqp import commands

from tests.support import access_world as w
from tests.support.access_checks import Publish, attempt, channel_refusal

pytestmark = pytest.mark.integration

V = w.ACCESS_VHOST


def claimed(user_id: str, actual: w.User) -> str:
    return f"PRECONDITION_FAILED - user_id property set to '{user_id}' but authenticated user was '{actual.name}'"


def with_user_id(exchange: str, user_id: str, key: str = "unroutable") -> Publish:
    return Publish(exchange, key, commands.Basic.Properties(user_id=user_id))


@pytest.fixture
def amqpd_settings() -> dict[str, object]:
    return dict(w.AMQPD_SETTINGS)


@pytest.fixture
def broker(amqp_url: str) -> w.Broker:
    return w.Broker.from_url(amqp_url)


@pytest.mark.parametrize("user", [w.GUEST, w.REGEX, w.IMPERSONATOR], ids=lambda u: u.name)
def test_a_user_id_equal_to_the_login_is_accepted(user: w.User, broker: w.Broker, loop_kind: str) -> None:
    assert attempt(broker.url(user), with_user_id(w.WR_X, user.name)) == commands.Basic.Ack


@pytest.mark.parametrize(
    ("user", "user_id"),
    [(w.GUEST, "someone-else"), (w.REGEX, w.GUEST.name), (w.GUEST, w.GUEST.name.upper())],
    ids=["guest claims someone-else", "regex-user claims guest", "the login name in another case"],
)
def test_a_user_id_other_than_the_login_is_refused_with_406(
    user: w.User, user_id: str, broker: w.Broker, loop_kind: str
) -> None:
    outcome = attempt(broker.url(user), with_user_id(w.WR_X, user_id))
    assert outcome == channel_refusal(406, claimed(user_id, user), 60, 40)


def test_a_wrong_user_id_to_an_exchange_without_write_is_refused_for_the_write_first(
    broker: w.Broker, loop_kind: str
) -> None:
    outcome = attempt(broker.url(w.REGEX), with_user_id(w.RD_X, "someone-else"))
    expected = f"ACCESS_REFUSED - access to exchange '{w.RD_X}' in vhost '{V}' refused for user 'regex-user'"
    assert outcome == channel_refusal(403, expected, 60, 40)


def test_a_wrong_user_id_with_a_refused_topic_key_is_refused_for_the_topic_first(
    broker: w.Broker, loop_kind: str
) -> None:
    outcome = attempt(broker.url(w.TOPIC_USER), with_user_id(w.TOPIC_X, "someone-else", key="not.allowed"))
    expected = (
        f"ACCESS_REFUSED - access to topic 'not.allowed' in exchange '{w.TOPIC_X}' in vhost '{V}' "
        "refused for user 'topic-user'"
    )
    assert outcome == channel_refusal(403, expected, 60, 40)


@pytest.mark.parametrize("user_id", ["someone-else", w.GUEST.name])
def test_an_impersonator_may_set_any_user_id(user_id: str, broker: w.Broker, loop_kind: str) -> None:
    assert attempt(broker.url(w.IMPERSONATOR), with_user_id(w.WR_X, user_id)) == commands.Basic.Ack


async def test_the_user_id_reaches_the_consumer_unchanged(broker: w.Broker) -> None:
    async with await aio_pika.connect(broker.url(w.IMPERSONATOR)) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        for user_id in (w.IMPERSONATOR.name, "someone-else"):
            await channel.default_exchange.publish(aio_pika.Message(b"m", user_id=user_id), routing_key=queue.name)
        first = await queue.get(no_ack=True, timeout=5)
        second = await queue.get(no_ack=True, timeout=5)
        assert [first.user_id, second.user_id] == [w.IMPERSONATOR.name, "someone-else"]


async def test_aio_pika_publish_with_a_wrong_user_id_raises_precondition_failed(broker: w.Broker) -> None:
    async with await aio_pika.connect(broker.url(w.GUEST)) as connection:
        channel = await connection.channel()
        with pytest.raises(ChannelPreconditionFailed) as info:
            await channel.default_exchange.publish(aio_pika.Message(b"m", user_id="someone-else"), routing_key="x")
        assert info.value.args[0] == claimed("someone-else", w.GUEST)
        assert not connection.is_closed
        await (await connection.channel()).close()


def test_pika_publish_with_a_wrong_user_id_closes_the_channel_with_406(broker: w.Broker, loop_kind: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(broker.url(w.GUEST)))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            channel.basic_publish("", "x", b"m", pika.BasicProperties(user_id="someone-else"))
        assert (info.value.reply_code, info.value.reply_text) == (406, claimed("someone-else", w.GUEST))
        assert connection.is_open
    finally:
        connection.close()
