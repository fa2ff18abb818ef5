"""Sans-IO parse micro-benchmark: ``AMQPConnection.receive_data`` over a buffer of small publishes.

    python -m benchmarks.protocol_parse [--messages 10000] [--body 16] [--chunk 65536] [--repeat 100] [--seconds 10]

A connection is driven through the handshake and ``Channel.Open`` with a handler whose callbacks do nothing, then
the buffer (Basic.Publish + content header + body per message, as a client writes them) is fed in reads of
``--chunk`` bytes (0 = the whole buffer in one call). Only the ``receive_data`` calls are timed, by default in CPU
time of this process (on a shared machine, wall time mostly measures the neighbours); each repeat uses a fresh
connection. The run stops after ``--repeat`` repeats or ``--seconds``, whichever comes first, and prints the
median and best time per message. Nothing touches the network or the broker.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from pamqp import commands
from pamqp import frame as pamqp_frame
from pamqp.base import Frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from amqpd.protocol.connection import RUNNING, AMQPConnection
from amqpd.protocol.constants import PROTOCOL_HEADER

CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.process_time, "wall": time.perf_counter}


class NullHandler:
    """Accepts everything and does nothing: only the protocol layer is measured."""

    published = 0

    def on_login(self, mechanism: str, username: str, password: str, client_properties: dict[str, Any]) -> bool:
        return True

    def on_open_vhost(self, vhost: str) -> None:
        pass

    def on_channel_open(self, channel: int) -> None:
        pass

    def on_channel_closed(self, channel: int) -> None:
        pass

    def on_method(self, channel: int, method: Frame) -> None:
        pass

    def on_publish(
        self, channel: int, exchange: str, routing_key: str, mandatory: bool, header: bytes, body: bytes
    ) -> None:
        self.published += 1

    def on_ack(self, channel: int, delivery_tag: int, multiple: bool) -> None:
        pass

    def on_nack(self, channel: int, delivery_tag: int, multiple: bool, requeue: bool) -> None:
        pass

    def on_reject(self, channel: int, delivery_tag: int, requeue: bool) -> None:
        pass

    def on_close(self) -> None:
        pass


def handshake() -> bytes:
    steps: list[tuple[int, Frame]] = [
        (0, commands.Connection.StartOk(mechanism="PLAIN", response="\x00guest\x00guest")),
        (0, commands.Connection.TuneOk(channel_max=2047, frame_max=131072, heartbeat=0)),
        (0, commands.Connection.Open(virtual_host="/")),
        (1, commands.Channel.Open()),
    ]
    return PROTOCOL_HEADER + b"".join(pamqp_frame.marshal(method, channel) for channel, method in steps)


def publishes(messages: int, body_size: int) -> bytes:
    body = b"x" * body_size
    one = b"".join(
        (
            pamqp_frame.marshal(commands.Basic.Publish(exchange="", routing_key="bench-queue"), 1),
            pamqp_frame.marshal(ContentHeader(body_size=body_size), 1),
            pamqp_frame.marshal(ContentBody(body), 1) if body_size else b"",
        )
    )
    return one * messages


def run_once(prologue: bytes, data: bytes, chunk: int, messages: int, clock: Callable[[], float]) -> float:
    handler = NullHandler()
    conn = AMQPConnection(handler)
    conn.receive_data(prologue)
    if conn.state != RUNNING or 1 not in conn.channels:
        raise RuntimeError("handshake failed")
    conn.data_to_send()
    step = chunk or len(data)
    pieces = [data[i : i + step] for i in range(0, len(data), step)]
    receive = conn.receive_data
    start = clock()
    for piece in pieces:
        receive(piece)
    elapsed = clock() - start
    if handler.published != messages or conn.data_to_send():
        raise RuntimeError(f"expected {messages} silent publishes, got {handler.published}")
    return elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--body", type=int, default=16, help="body size in bytes")
    parser.add_argument("--chunk", type=int, default=65536, help="bytes per receive_data call (0 = all at once)")
    parser.add_argument("--repeat", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0, help="stop repeating after this long")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu", help="cpu: process CPU time; wall: elapsed")
    args = parser.parse_args(argv)
    clock = CLOCKS[args.clock]

    prologue = handshake()
    data = publishes(args.messages, args.body)
    run_once(prologue, data, args.chunk, args.messages, clock)  # warm-up, and a check that every publish arrives
    times: list[float] = []
    deadline = time.monotonic() + args.seconds
    while len(times) < args.repeat and time.monotonic() < deadline:
        times.append(run_once(prologue, data, args.chunk, args.messages, clock))
    per_msg = [t / args.messages * 1e9 for t in times]
    print(
        f"receive_data: {args.messages} publishes, {args.body} B bodies, {len(data)} B in reads of "
        f"{args.chunk or len(data)} B, {len(times)} repeats, {args.clock} time: "
        f"median {statistics.median(per_msg):.0f} ns/msg, "
        f"best {min(per_msg):.0f} ns/msg ({args.messages / statistics.median(times):,.0f} msg/s)"
    )


if __name__ == "__main__":
    main()
