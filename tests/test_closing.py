"""Closes complete cleanly under real clients' timing (issue 12).

Lingering close: a client may still be writing when the connection ends (it pipelined publishes behind its
Close, another of its threads keeps publishing, its frames crossed our Close). A broker that closes its socket
with those bytes unread makes the kernel answer with RST, and the client reads ECONNRESET instead of the
Close-Ok it is owed. These clients treat a reset as a failure (``reset_is_eof = False``), send everything in
one write so the broker really has bytes to read after the close, and run 20 at once.

Crossing closes: both peers send Channel.Close (or Connection.Close) before seeing the other's. The spec's rule,
which RabbitMQ follows for channels: a peer that sent Close answers a crossing Close with Close-Ok, and discards
everything else on that channel until the Close-Ok for its own Close arrives.

Tests marked integration talk only AMQP and also run against AMQP_URL (RabbitMQ 3.10); RabbitMQ does not hang
up after a client's Close-Ok (it leaves that to the client), so EOF is checked only in-process.
"""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import aio_pika
import pika
import pytest
from pamqp import body, commands, frame, header
from pamqp.base import Frame

from amqpd.broker.session.connection import BrokerConnection
from tests.support.processes import AmqpdProcess
from tests.support.raw_client import RawClient
from tests.support.server_thread import ServerThread
from tests.support.waiting import wait_until

EXTERNAL = bool(os.environ.get("AMQP_URL"))
CONNECTIONS = 20
PUBLISHES = 5000
NOWHERE = "amqpd-test-closing-nowhere"  # no such queue: publishes to it are dropped without a reply
MISSING_QUEUE = "amqpd-test-closing-missing"
TIMEOUT = 30.0  # only bounds a hang; never part of what passes

T = TypeVar("T")


def m(channel: int, method: Frame) -> bytes:
    return frame.marshal(method, channel)


def publishes(channel: int, count: int) -> bytes:
    one = (
        m(channel, commands.Basic.Publish(exchange="", routing_key=NOWHERE))
        + frame.marshal(header.ContentHeader(0, 10, commands.Basic.Properties()), channel)
        + frame.marshal(body.ContentBody(b"0123456789"), channel)
    )
    return one * count


CLOSE = m(0, commands.Connection.Close(200, "bye", 0, 0))


def strict_client(url: str) -> RawClient:
    """A RawClient for which a reset is an error, not an EOF."""
    client = RawClient.open(url, timeout=TIMEOUT)
    client.reset_is_eof = False
    return client


def expect_eof(client: RawClient) -> None:
    """Nothing more from the broker, then a clean end of stream (a reset raises ConnectionResetError)."""
    got = client.read_frame()
    assert got is None, f"expected the broker to hang up, got {got!r}"


def read_to_end(client: RawClient) -> tuple[list[tuple[int, str]], str]:
    """Every frame until the broker hangs up, and how it did: "eof" or "reset"."""
    frames: list[tuple[int, str]] = []
    try:
        while (got := client.read_frame()) is not None:
            frames.append((got[0], type(got[1]).__qualname__))
    except ConnectionResetError:
        return frames, "reset"
    return frames, "eof"


def expect_end_after_server_close(client: RawClient) -> list[tuple[int, str]]:
    """After the Close-Ok for a Close the *broker* sent: the frames left, then an EOF. RabbitMQ 3.10 hangs up on
    that Close-Ok with a reset (an abortive close), whatever the client still sends; amqpd ends with FIN, as
    a client reading to EOF expects, so only RabbitMQ is let off."""
    frames, end = read_to_end(client)
    assert end == "eof" or (EXTERNAL and end == "reset"), f"the broker hung up with a {end}"
    return frames


def all_at_once(count: int, client: Callable[[threading.Barrier], T]) -> list[T]:
    """Run `client` in `count` threads; they pass a barrier together just before their burst."""
    barrier = threading.Barrier(count, timeout=TIMEOUT)
    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(client, barrier) for _ in range(count)]
        return [f.result(TIMEOUT * 2) for f in futures]


# ------------------------------------------------------------------------------------------ lingering close


@pytest.mark.integration
@pytest.mark.parametrize("after_close", [0, PUBLISHES], ids=["close-last", "publishing-after-close"])
def test_a_burst_of_publishes_then_close_gets_close_ok_and_a_clean_end(
    amqp_url: str, loop_kind: str, after_close: int
) -> None:
    def client(barrier: threading.Barrier) -> None:
        with strict_client(amqp_url) as c:
            c.open_channel(1)
            burst = publishes(1, PUBLISHES) + CLOSE + publishes(1, after_close)
            barrier.wait()
            c.send_frame(burst)
            c.expect(0, commands.Connection.CloseOk)
            if not EXTERNAL:
                expect_eof(c)

    all_at_once(CONNECTIONS, client)


@pytest.mark.integration
def test_a_connection_error_amid_a_burst_gets_close_and_a_clean_end(amqp_url: str, loop_kind: str) -> None:
    def client(barrier: threading.Barrier) -> None:
        with strict_client(amqp_url) as c:
            c.open_channel(1)
            # Qos on channel 5, never opened: 504, a connection error, with thousands of frames behind it.
            burst = publishes(1, PUBLISHES // 2) + m(5, commands.Basic.Qos(prefetch_count=1)) + publishes(1, PUBLISHES)
            barrier.wait()
            c.send_frame(burst)
            close = c.expect(0, commands.Connection.Close)
            assert close.reply_code == 504
            c.send_method(0, commands.Connection.CloseOk())
            c.send_frame(publishes(1, 100))  # another thread of the client, still publishing after the Close-Ok
            assert expect_end_after_server_close(c) == []

    all_at_once(CONNECTIONS, client)


class BusyPublisher:
    """A raw client whose writer thread publishes without pause, as a producer thread that knows nothing of the
    broker's shutdown would; the test's thread reads, and hands the frames it must send to the writer (which
    sends them between two chunks, in order with everything else)."""

    def __init__(self, url: str) -> None:
        self.client = strict_client(url)
        self.client.open_channel(1)
        self.outbox: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self.started = threading.Event()
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._write, daemon=True)
        self.thread.start()

    def _write(self) -> None:
        chunk = publishes(1, 200)
        try:
            while not self.stop.is_set():
                try:
                    self.client.send_frame(self.outbox.get_nowait())
                except queue.Empty:
                    self.client.send_frame(chunk)
                self.started.set()
        except BaseException as exc:
            self.errors.append(exc)

    def answer_shutdown(self) -> None:
        try:
            close = self.client.expect(0, commands.Connection.Close)
            assert (close.reply_code, close.reply_text) == (320, SHUTDOWN_TEXT)
            self.outbox.put(m(0, commands.Connection.CloseOk()))
            expect_eof(self.client)  # the writer goes on publishing behind its Close-Ok until here
        finally:
            self.stop.set()
            self.thread.join(TIMEOUT)
            self.client.close()
        assert not self.errors, self.errors


SHUTDOWN_TEXT = "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"
PUBLISHERS = 5  # each flat out from its own thread of this process; the broker runs in another


def test_graceful_shutdown_while_clients_are_writing_ends_every_connection_cleanly(loop_kind: str) -> None:
    with AmqpdProcess("--store", "memory://", "--loop", loop_kind) as amqpd:
        publishers = [BusyPublisher(amqpd.url) for _ in range(PUBLISHERS)]
        for p in publishers:
            assert p.started.wait(TIMEOUT)
        amqpd.proc.send_signal(signal.SIGTERM)
        with ThreadPoolExecutor(PUBLISHERS) as pool:
            for f in [pool.submit(p.answer_shutdown) for p in publishers]:
                f.result(TIMEOUT * 2)
        assert amqpd.proc.wait(TIMEOUT) == 0
        amqpd.kill()  # joins the log reader
        assert "shutdown complete" in amqpd.log
        assert "Traceback" not in amqpd.log and "no Close-Ok" not in amqpd.log, amqpd.log


def _only_connection(thread: ServerThread) -> BrokerConnection:
    (conn,) = thread.server.connections
    assert isinstance(conn, BrokerConnection)
    return conn


def test_a_server_close_completes_while_reading_is_paused_for_the_store(broker_server: ServerThread) -> None:
    with strict_client(broker_server.url) as c:
        c.open_channel(1)
        broker_server.call(lambda: _only_connection(broker_server).pause_reading_for_store(True))
        c.send_frame(publishes(1, 1000))  # lies unread in the broker's socket while the store is behind
        broker_server.call(lambda: _only_connection(broker_server).close(320, "CONNECTION_FORCED - test"))
        close = c.expect(0, commands.Connection.Close)
        assert close.reply_code == 320
        # A closing connection reads again whatever paused it: else this Close-Ok would wait behind the backlog.
        c.send_method(0, commands.Connection.CloseOk())
        expect_eof(c)
    wait_until(lambda: broker_server.stats()["connections"] == 0)


def test_frames_after_close_are_counted_as_discarded(broker_server: ServerThread) -> None:
    with strict_client(broker_server.url) as c:
        c.open_channel(1)
        c.send_frame(CLOSE)
        c.expect(0, commands.Connection.CloseOk)
        conn = _only_connection(broker_server)
        c.send_frame(publishes(1, 10))
        wait_until(lambda: broker_server.call(lambda: conn.discarded_bytes) == len(publishes(1, 10)))
        assert broker_server.call(lambda: conn.lingering)
        expect_eof(c)


# ------------------------------------------------------------------------------------------ crossing closes


@pytest.mark.integration
def test_crossing_channel_closes_both_complete_and_the_connection_lives_on(amqp_url: str, loop_kind: str) -> None:
    with strict_client(amqp_url) as c:
        c.open_channel(1)
        # One write: the broker closes channel 1 for the declare while our Close is already on its way.
        c.send_frame(
            m(1, commands.Queue.Declare(queue=MISSING_QUEUE, passive=True))
            + m(1, commands.Channel.Close(200, "bye", 0, 0))
        )
        close = c.expect(1, commands.Channel.Close)
        assert (close.reply_code, close.class_id, close.method_id) == (404, 50, 10)
        c.expect(1, commands.Channel.CloseOk)  # the broker's answer to our crossing Close
        # Our answer to the broker's Close, and straight on with the connection: the Close-Ok must not be taken
        # for a frame on a closed channel (it used to cost the whole connection a 504).
        c.send_frame(m(1, commands.Channel.CloseOk()) + m(1, commands.Channel.Open()) + m(2, commands.Channel.Open()))
        c.expect(1, commands.Channel.OpenOk)
        c.expect(2, commands.Channel.OpenOk)
        c.send_frame(CLOSE)
        c.expect(0, commands.Connection.CloseOk)
        if not EXTERNAL:
            expect_eof(c)


@pytest.mark.integration
def test_frames_after_a_crossing_channel_close_are_discarded_until_its_close_ok(
    amqp_url: str, loop_kind: str
) -> None:
    with strict_client(amqp_url) as c:
        c.open_channel(1)
        c.send_frame(
            m(1, commands.Queue.Declare(queue=MISSING_QUEUE, passive=True))
            + m(1, commands.Channel.Close(200, "bye", 0, 0))
            + m(1, commands.Basic.Qos(prefetch_count=1))  # sent before the client saw either Close: dropped
        )
        c.expect(1, commands.Channel.Close)
        c.expect(1, commands.Channel.CloseOk)
        c.send_frame(m(1, commands.Channel.CloseOk()) + m(1, commands.Channel.Open()))
        c.expect(1, commands.Channel.OpenOk)  # nothing came for the Qos
        c.send_frame(CLOSE)
        c.expect(0, commands.Connection.CloseOk)


@pytest.mark.integration
def test_crossing_connection_closes_complete(amqp_url: str, loop_kind: str) -> None:
    with strict_client(amqp_url) as c:
        # One write: a connection error (504, channel 5 never opened) and our Close right behind it.
        c.send_frame(m(5, commands.Basic.Qos(prefetch_count=1)) + CLOSE)
        close = c.expect(0, commands.Connection.Close)
        assert close.reply_code == 504
        # Having sent Close, the client answers the broker's crossing Close with Close-Ok, as the spec says.
        c.send_method(0, commands.Connection.CloseOk())
        rest = expect_end_after_server_close(c)
        if EXTERNAL:
            # RabbitMQ 3.10 ignores a Connection.Close that crosses its own (it waits for Close-Ok only), against
            # the spec's "the response to receiving a Close after sending Close must be to send Close-Ok".
            assert rest == []
        else:
            assert rest == [(0, "Connection.CloseOk")]


# ------------------------------------------------------------------------------------------ real clients


@pytest.mark.integration
async def test_aio_pika_closing_one_connection_from_two_tasks_closes_it_once_for_both(amqp_url: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel()
    assert await asyncio.gather(channel.close(), channel.close()) == [None, None]
    channel = await connection.channel(publisher_confirms=False)
    for _ in range(PUBLISHES):  # left in the client's write buffer behind its Close
        await channel.default_exchange.publish(aio_pika.Message(b"x"), routing_key=NOWHERE)
    assert await asyncio.gather(connection.close(), connection.close()) == [None, None]
    assert connection.is_closed


@pytest.mark.integration
async def test_aio_pika_closes_many_connections_at_once_while_publishing(amqp_url: str) -> None:
    connections = [await aio_pika.connect(amqp_url) for _ in range(CONNECTIONS)]

    async def publish_then_close(connection: aio_pika.abc.AbstractConnection) -> None:
        channel = await connection.channel(publisher_confirms=False)
        for _ in range(500):
            await channel.default_exchange.publish(aio_pika.Message(b"x"), routing_key=NOWHERE)
        await asyncio.gather(channel.close(), connection.close())

    await asyncio.gather(*(publish_then_close(c) for c in connections))
    assert all(c.is_closed for c in connections)


@pytest.mark.integration
def test_pika_publishes_a_burst_and_closes_without_waiting(amqp_url: str, loop_kind: str) -> None:
    # pika's BlockingConnection is not thread-safe, so "two threads closing one connection" is not a thing a pika
    # user may do; its pipelining is: publishes sit in its output buffer and Close goes out right behind them.
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    for _ in range(PUBLISHES):
        channel.basic_publish(exchange="", routing_key=NOWHERE, body=b"x")
    connection.close()
    assert connection.is_closed
