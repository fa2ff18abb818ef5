"""Topic permissions: per user, vhost and exchange, a write regex for the routing key of basic.publish and a read
regex for the binding key of queue.bind / queue.unbind / exchange.bind / exchange.unbind (on the source), with
``{username}`` and ``{vhost}`` expanded first. RabbitMQ 3.10.8 checks them on topic exchanges only, and only
where an entry exists for that exchange (rabbit_channel:check_topic_authorisation,
rabbit_auth_backend_internal:check_topic_access).

topic-user has write ``^{vhost}\\.{username}\\..*`` and read ``^{vhost}\\..*`` on topic-x in access-test, and
``^$`` / ``^$`` on the direct exchange plain-x (never consulted). Refusals are 403, channel level.
"""

from __future__ import annotations

import uuid

import aio_pika
import pytest
from aiormq.exceptions import ChannelAccessRefused
from pamqp import commands
from pamqp.base import Frame

from tests.support import access_world as w
from tests.support.access_checks import Publish, Step, attempt, channel_refusal
from tests.support.raw_client import RawClient

pytestmark = pytest.mark.integration

V = w.ACCESS_VHOST
U = w.TOPIC_USER


def topic_denied(key: str, exchange: str = w.TOPIC_X, user: w.User = U) -> str:
    return (
        f"ACCESS_REFUSED - access to topic '{key}' in exchange '{exchange}' in vhost '{V}' refused for user "
        f"'{user.name}'"
    )


@pytest.fixture
def amqpd_settings() -> dict[str, object]:
    return dict(w.AMQPD_SETTINGS)


@pytest.fixture
def broker(amqp_url: str) -> w.Broker:
    return w.Broker.from_url(amqp_url)


# ------------------------------------------------------------------------------------------------ publishing
REFUSED_KEYS = {
    "another user's name in the key": f"{V}.someone.news",
    "no vhost prefix": f"{U.name}.news",
    "the variables written literally": "{vhost}.{username}.news",
    "the empty key": "",
}


@pytest.mark.parametrize("case", list(REFUSED_KEYS))
def test_publish_with_a_key_outside_the_topic_write_permission_is_refused(
    case: str, broker: w.Broker, loop_kind: str
) -> None:
    key = REFUSED_KEYS[case]
    outcome = attempt(broker.url(U), Publish(w.TOPIC_X, key))
    assert outcome == channel_refusal(403, topic_denied(key), 60, 40)


ALLOWED_PUBLISHES = {
    "a key matching the expanded write permission": (U, w.TOPIC_X, w.ALLOWED_TOPIC_KEY),
    "a topic exchange without topic permissions for the user": (U, w.OPEN_TOPIC_X, "anything.at.all"),
    "a direct exchange whose ^$ topic permissions are ignored": (U, w.PLAIN_X, "anything.at.all"),
    "another user without topic permissions on the exchange": (w.GUEST, w.TOPIC_X, "anything.at.all"),
}


@pytest.mark.parametrize("case", list(ALLOWED_PUBLISHES))
def test_publish_allowed_by_topic_permissions(case: str, broker: w.Broker, loop_kind: str) -> None:
    user, exchange, key = ALLOWED_PUBLISHES[case]
    assert attempt(broker.url(user), Publish(exchange, key)) == commands.Basic.Ack


def test_a_missing_exchange_is_404_before_any_topic_check(broker: w.Broker, loop_kind: str) -> None:
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    outcome = attempt(broker.url(U), Publish(missing, "not.allowed"))
    assert outcome == channel_refusal(404, f"NOT_FOUND - no exchange '{missing}' in vhost '{V}'", 60, 40)


async def test_a_message_with_an_allowed_key_is_routed_to_an_allowed_binding(broker: w.Broker) -> None:
    async with await aio_pika.connect(broker.url(U)) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(w.TOPIC_X, routing_key=w.ALLOWED_TOPIC_BINDING)
        topic_x = await channel.get_exchange(w.TOPIC_X)
        await topic_x.publish(aio_pika.Message(b"news"), routing_key=w.ALLOWED_TOPIC_KEY)
        message = await queue.get(no_ack=True, timeout=5)
        assert (message.body, message.routing_key) == (b"news", w.ALLOWED_TOPIC_KEY)


async def test_a_refused_topic_publish_closes_the_channel_only(broker: w.Broker) -> None:
    key = f"{U.name}.news"
    async with await aio_pika.connect(broker.url(U)) as connection:
        channel = await connection.channel()
        topic_x = await channel.get_exchange(w.TOPIC_X)
        with pytest.raises(ChannelAccessRefused) as info:
            await topic_x.publish(aio_pika.Message(b"refused"), routing_key=key)
        assert info.value.args[0] == topic_denied(key)
        await (await connection.channel()).close()


# ------------------------------------------------------------------------------------------------- binding
Q = f"topic-{uuid.uuid4().hex[:8]}-q"
DECLARE_Q = commands.Queue.Declare(queue=Q, exclusive=True)
DECLARE_X = commands.Exchange.Declare(
    exchange=f"topic-{uuid.uuid4().hex[:8]}-x", exchange_type="topic", auto_delete=True
)
NEW_X = DECLARE_X.exchange


def q_bind(exchange: str, key: str) -> commands.Queue.Bind:
    return commands.Queue.Bind(queue=Q, exchange=exchange, routing_key=key)


def q_unbind(exchange: str, key: str) -> commands.Queue.Unbind:
    return commands.Queue.Unbind(queue=Q, exchange=exchange, routing_key=key)


BINDINGS: dict[str, tuple[tuple[Step, ...], type[Frame] | tuple[str, int, int]]] = {
    # (steps, expected reply or (refused key, class id, method id))
    "queue.bind with a key matching the read permission is allowed": (
        (DECLARE_Q, q_bind(w.TOPIC_X, w.ALLOWED_TOPIC_BINDING)),
        commands.Queue.BindOk,
    ),
    "queue.bind with a key outside the read permission is refused": (
        (DECLARE_Q, q_bind(w.TOPIC_X, "#")),
        ("#", 50, 20),
    ),
    "queue.unbind with a key matching the read permission is allowed": (
        (DECLARE_Q, q_bind(w.TOPIC_X, w.ALLOWED_TOPIC_BINDING), q_unbind(w.TOPIC_X, w.ALLOWED_TOPIC_BINDING)),
        commands.Queue.UnbindOk,
    ),
    "queue.unbind with a key outside the read permission is refused": (
        (DECLARE_Q, q_unbind(w.TOPIC_X, "#")),
        ("#", 50, 50),
    ),
    "exchange.bind from the topic exchange with a key outside the read permission is refused": (
        (DECLARE_X, commands.Exchange.Bind(destination=NEW_X, source=w.TOPIC_X, routing_key="#")),
        ("#", 40, 30),
    ),
    "exchange.bind from the topic exchange with an allowed key is allowed": (
        (DECLARE_X, commands.Exchange.Bind(destination=NEW_X, source=w.TOPIC_X, routing_key=w.ALLOWED_TOPIC_BINDING)),
        commands.Exchange.BindOk,
    ),
    "exchange.unbind from the topic exchange with a key outside the read permission is refused": (
        (DECLARE_X, commands.Exchange.Unbind(destination=NEW_X, source=w.TOPIC_X, routing_key="#")),
        ("#", 40, 40),
    ),
    "exchange.bind to the topic exchange as destination is not topic-checked": (
        (DECLARE_X, commands.Exchange.Bind(destination=w.TOPIC_X, source=NEW_X, routing_key="#")),
        commands.Exchange.BindOk,
    ),
    "queue.bind to a topic exchange without topic permissions takes any key": (
        (DECLARE_Q, q_bind(w.OPEN_TOPIC_X, "#")),
        commands.Queue.BindOk,
    ),
    "queue.bind to a direct exchange ignores its ^$ topic permissions": (
        (DECLARE_Q, q_bind(w.PLAIN_X, "any-key")),
        commands.Queue.BindOk,
    ),
}


@pytest.mark.parametrize("case", list(BINDINGS))
def test_binding_keys_are_checked_against_the_topic_read_permission(
    case: str, broker: w.Broker, loop_kind: str
) -> None:
    steps, expected = BINDINGS[case]
    try:
        outcome = attempt(broker.url(U), *steps)
    finally:
        remove_bindings_to_topic_x(broker)
    if isinstance(expected, tuple):
        key, class_id, method_id = expected
        assert outcome == channel_refusal(403, topic_denied(key), class_id, method_id)
    else:
        assert outcome == expected


def remove_bindings_to_topic_x(broker: w.Broker) -> None:
    """The exchange-to-exchange binding with topic-x as destination outlives its connection: guest removes it
    (and the auto-delete exchange goes with it)."""
    with RawClient.open(broker.url(w.GUEST)) as client:
        client.open_channel(1)
        client.send_method(1, commands.Exchange.Unbind(destination=w.TOPIC_X, source=NEW_X, routing_key="#"))
        client.expect(1, commands.Exchange.UnbindOk)
        client.send_method(1, commands.Exchange.Delete(exchange=NEW_X))
        client.expect(1, commands.Exchange.DeleteOk)
        client.close_connection()
