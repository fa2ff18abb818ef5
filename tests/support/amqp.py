"""Small helpers the integration tests share: unique names, channel-error replies, draining a queue, and a
raw-frame misuse runner.

The aio-pika `connection` / `other_connection` fixtures live in tests/conftest.py; what is here is plain
functions, imported by name.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable

import aio_pika
import pytest
from aiormq.exceptions import (
    ChannelAccessRefused,
    ChannelClosed,
    ChannelLockedResource,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
)
from pamqp import commands
from pamqp.base import Frame

from tests.support.raw_client import CloseInfo, RawClient

# aiormq raises these subclasses with only the reply text in args; the code is implied by the class.
CHANNEL_ERROR_CODES: dict[type[ChannelClosed], int] = {
    ChannelAccessRefused: 403,
    ChannelNotFoundEntity: 404,
    ChannelLockedResource: 405,
    ChannelPreconditionFailed: 406,
}


def uniq(prefix: str) -> str:
    """A name no other test uses, even across the helpers sharing one RabbitMQ."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def unique(kind: str) -> str:
    """`uniq` under the ``model-`` prefix the model tests give their queues and exchanges."""
    return uniq(f"model-{kind}")


async def refused(awaitable: Awaitable[object]) -> tuple[int, str]:
    """Await an operation that must close the channel; return (reply code, reply text)."""
    with pytest.raises(ChannelClosed) as info:
        await awaitable
    exc = info.value
    code = CHANNEL_ERROR_CODES.get(type(exc))
    if code is None:
        return exc.args[0], exc.args[1]
    return code, exc.args[0]


async def ignore(message: object) -> None:
    """A consumer callback for tests that only need a consumer to exist."""


async def drain(queue: aio_pika.abc.AbstractQueue) -> list[bytes]:
    """Get (no-ack) every message ready in `queue` now; their bodies in queue order."""
    bodies: list[bytes] = []
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        bodies.append(message.body)
    return bodies


def raw_close(url: str, *steps: Frame) -> CloseInfo:
    """Send `steps` on channel 1 (each but the last must succeed) and return how the broker closed."""
    with RawClient.open(url) as client:
        client.open_channel(1)
        for step in steps[:-1]:
            client.send_method(1, step)
            _, reply = client.read_frame() or (0, None)
            assert not isinstance(reply, commands.Channel.Close | commands.Connection.Close), reply
        client.send_method(1, steps[-1])
        info = client.read_until_close()
        if info.kind == "channel":
            client.close_connection()
        return info
