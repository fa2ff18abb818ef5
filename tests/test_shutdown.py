"""Graceful shutdown of the `amqpd` command: SIGTERM or SIGINT closes every client with 320, then exit 0.

The broker runs as a subprocess (`AmqpdProcess`) on the same kind of event loop as the test, so both loops are
covered on the server side. These talk to the subprocess only, never to AMQP_URL.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import aio_pika
import aiormq
import pika
import pika.exceptions
import pytest
from pamqp import commands

from tests.support.processes import AmqpdProcess
from tests.support.raw_client import RawClient

SHUTDOWN_TEXT = "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"


def broker(loop_kind: str, *args: str) -> AmqpdProcess:
    return AmqpdProcess("--store", "memory://", "--loop", loop_kind, *args)


def assert_clean_shutdown_log(amqpd: AmqpdProcess, sig: signal.Signals) -> None:
    log = amqpd.log
    assert f"{sig.name} received, shutting down" in log
    assert "shutdown complete" in log
    assert "Traceback" not in log and "CRITICAL" not in log and "ERROR" not in log, log


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
async def test_a_signal_closes_aio_pika_clients_with_320_and_the_broker_exits_0(
    sig: signal.Signals, loop_kind: str
) -> None:
    with broker(loop_kind) as amqpd:
        connection = await aio_pika.connect(amqpd.url)
        closed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def on_close(_: object, exc: BaseException | None = None) -> None:
            if not closed.done():
                closed.set_result(exc)

        connection.close_callbacks.add(on_close)
        channel = await connection.channel()
        assert not channel.is_closed
        # Signal and wait for the exit in a thread; this loop meanwhile gets the Close and answers Close-Ok.
        code = await asyncio.to_thread(amqpd.signal, sig)
        reason = await asyncio.wait_for(closed, 10)
        assert isinstance(reason, aiormq.exceptions.ConnectionClosed)
        assert reason.args == (320, SHUTDOWN_TEXT)
        assert code == 0
        assert_clean_shutdown_log(amqpd, sig)
        await connection.close()


def test_sigterm_closes_pika_clients_with_320_and_the_broker_exits_0(loop_kind: str) -> None:
    with broker(loop_kind) as amqpd:
        connection = pika.BlockingConnection(pika.URLParameters(amqpd.url))
        assert connection.channel().is_open
        amqpd.proc.send_signal(signal.SIGTERM)
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
            while True:  # pika handles the Close (and answers Close-Ok) only while its I/O loop runs
                connection.process_data_events(time_limit=0.1)
        assert (closed.value.reply_code, closed.value.reply_text) == (320, SHUTDOWN_TEXT)
        assert amqpd.proc.wait(15) == 0
        amqpd.kill()  # joins the log reader, so the log is complete
        assert_clean_shutdown_log(amqpd, signal.SIGTERM)


def test_shutdown_does_not_wait_forever_for_a_client_that_never_answers_close(loop_kind: str) -> None:
    with broker(loop_kind, "--shutdown-timeout", "0.5") as amqpd, RawClient.open(amqpd.url) as client:
        client.open_channel(1)
        amqpd.proc.send_signal(signal.SIGTERM)
        close = client.expect(0, commands.Connection.Close)
        assert (close.reply_code, close.reply_text) == (320, SHUTDOWN_TEXT)
        # No Close-Ok from us: the broker gives up after --shutdown-timeout, hangs up and exits cleanly.
        assert client.read_frame() is None
        assert amqpd.proc.wait(15) == 0
        amqpd.kill()
        assert_clean_shutdown_log(amqpd, signal.SIGTERM)


def test_shutdown_closes_clients_still_in_the_handshake(loop_kind: str) -> None:
    with broker(loop_kind) as amqpd, RawClient(amqpd.url) as client:
        client.send_frame(b"AMQP\x00\x00\x09\x01")
        client.expect(0, commands.Connection.Start)
        assert amqpd.signal(signal.SIGTERM) == 0
        assert client.read_frame() is None
        assert_clean_shutdown_log(amqpd, signal.SIGTERM)
