"""The harness does what conftest.py promises: both loops, a broker per test, leak detection, RawClient."""

from __future__ import annotations

import asyncio

import aio_pika
import pika
import pytest
from pamqp import commands

from tests.support.loops import LOOP_FACTORIES
from tests.support.raw_client import RawClient
from tests.support.server_thread import IDLE, ServerThread
from tests.support.waiting import wait_for


def running_loop_kind() -> str:
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"


async def test_async_tests_run_once_per_loop_kind(loop_kind: str, request: pytest.FixtureRequest) -> None:
    assert running_loop_kind() == loop_kind
    assert request.node.name.endswith(f"[{loop_kind}]")


def test_every_installed_loop_is_offered() -> None:
    assert "asyncio" in LOOP_FACTORIES
    pytest.importorskip("uvloop")
    assert "uvloop" in LOOP_FACTORIES


def test_sync_tests_naming_loop_kind_run_once_per_loop_kind(
    loop_kind: str, request: pytest.FixtureRequest
) -> None:
    assert request.node.name.endswith(f"[{loop_kind}]")


async def test_in_process_broker_runs_on_the_same_loop_kind_as_the_test(
    broker_server: ServerThread, loop_kind: str
) -> None:
    assert broker_server.loop_kind == loop_kind
    server_loop = await broker_server.arun(_loop_module())
    assert server_loop.startswith("uvloop") == (loop_kind == "uvloop")


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


async def test_wait_for_returns_the_first_truthy_value() -> None:
    calls: list[int] = []

    def third_time_lucky() -> int:
        calls.append(1)
        return len(calls) if len(calls) >= 3 else 0

    assert await wait_for(third_time_lucky) == 3


async def test_wait_for_awaits_async_predicates() -> None:
    async def ready() -> str:
        return "yes"

    assert await wait_for(ready) == "yes"


async def test_wait_for_fails_with_the_condition_after_the_deadline() -> None:
    with pytest.raises(AssertionError, match=r"still false after 0\.05 s"):
        await wait_for(lambda: False, timeout=0.05)


def test_idle_broker_reports_zero_of_everything(broker_server: ServerThread) -> None:
    assert broker_server.stats() == IDLE


def test_leak_check_sees_an_open_connection_until_it_is_closed(broker_server: ServerThread) -> None:
    client = RawClient.open(broker_server.url)
    client.open_channel(1)
    leftovers = broker_server.wait_idle(timeout=0.2)
    assert (leftovers["connections"], leftovers["channels"]) == (1, 1)
    client.close_connection()
    assert broker_server.wait_idle() == IDLE


# ------------------------------------------------------------------------------ any broker (AMQP_URL or ours)


@pytest.mark.integration
async def test_aio_pika_can_connect_open_a_channel_and_close(amqp_url: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        assert not channel.is_closed


@pytest.mark.integration
def test_pika_can_connect_open_a_channel_and_close(amqp_url: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        assert connection.channel().is_open
    finally:
        connection.close()


@pytest.mark.integration
def test_raw_client_reports_a_channel_error_with_its_codes(amqp_url: str) -> None:
    with RawClient.open(amqp_url) as client:
        client.open_channel(1)
        client.send_method(1, commands.Queue.Declare(queue="harness-no-such-queue", passive=True))
        kind, code, text, class_id, method_id, channel = client.read_until_close()
        assert (kind, code, class_id, method_id, channel) == ("channel", 404, 50, 10, 1)
        assert text == "NOT_FOUND - no queue 'harness-no-such-queue' in vhost '/'"
        client.close_connection()


@pytest.mark.integration
def test_raw_client_reports_a_connection_error_with_its_codes(amqp_url: str) -> None:
    with RawClient.open(amqp_url) as client:
        client.send_method(7, commands.Basic.Qos(prefetch_count=1))  # channel 7 was never opened
        info = client.read_until_close()
        assert (info.kind, info.reply_code) == ("connection", 504)
