"""In-process micro-benchmark of the whole publish path, per user: what a permission check costs a publish.

    python -m benchmarks.publish_path [--messages 20000] [--body 16] [--rounds 15] [--ack]

A real ``Server`` (memory store, not listening) gets one ``BrokerConnection`` per round over a fake transport
that swallows its writes. The connection logs in, declares a queue, consumes it (no-ack by default) and then
reads a buffer of publishes to the default exchange in 64 KiB reads, exactly as from a socket: parse, permission
check, route, enqueue, deliver, encode and write. Only those reads are timed, in CPU time of this process,
with the garbage collector paused as timeit does.

Rounds rotate between three users, so a slow spell on a shared machine hits each: ``guest``, an administrator
whose permissions are ``.*``; ``bench``, whose permissions are anchored regular expressions like an
application's; and ``unchecked``, guest with its channel's checks switched off (the path as it was before
permissions existed). The median per user and the ratios are printed. Nothing touches the network.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from typing import Any

from pamqp import commands
from pamqp import frame as pamqp_frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from amqpd.broker.server.config import Config
from amqpd.broker.server.server import Server
from amqpd.broker.session.connection import BrokerConnection
from amqpd.protocol.connection import RUNNING
from amqpd.protocol.constants import PROTOCOL_HEADER

QUEUE = "amqpd-bench-0a1b2c3d-q0"
USERS = {
    # guest with its channel's permission checks switched off: the publish path as it was before permissions
    "unchecked": ("guest", (".*", ".*", ".*")),
    "guest": ("guest", (".*", ".*", ".*")),
    "bench": (
        "bench",
        (
            r"^(amqpd-bench-|amq\.gen-).*",
            r"^(amqpd-bench-[a-z0-9-]+|amq\.default)$",
            r"^amqpd-bench-[a-z0-9]+-(q[0-9]+|direct|fanout|topic|headers)$",
        ),
    ),
}


class NullTransport:
    """What BrokerConnection asks of an asyncio transport; writes are counted and dropped."""

    def __init__(self) -> None:
        self.written = 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def prologue(user: str, password: str, ack: bool) -> bytes:
    steps = [
        (0, commands.Connection.StartOk(mechanism="PLAIN", response=f"\x00{user}\x00{password}")),
        (0, commands.Connection.TuneOk(channel_max=2047, frame_max=131072, heartbeat=0)),
        (0, commands.Connection.Open(virtual_host="/")),
        (1, commands.Channel.Open()),
        (1, commands.Queue.Declare(queue=QUEUE, auto_delete=True)),
        (1, commands.Basic.Qos(prefetch_count=0)),
        (1, commands.Basic.Consume(queue=QUEUE, no_ack=not ack)),
    ]
    return PROTOCOL_HEADER + b"".join(pamqp_frame.marshal(method, channel) for channel, method in steps)


def publishes(messages: int, body_size: int) -> bytes:
    body = b"x" * body_size
    one = b"".join(
        (
            pamqp_frame.marshal(commands.Basic.Publish(exchange="", routing_key=QUEUE), 1),
            pamqp_frame.marshal(ContentHeader(body_size=body_size), 1),
            pamqp_frame.marshal(ContentBody(body), 1) if body_size else b"",
        )
    )
    return one * messages


def new_server(loop: asyncio.AbstractEventLoop) -> Server:
    server = Server(Config(store="memory://", heartbeat=0, consumer_timeout=0))
    server._loop = loop  # never run: timers are only scheduled
    server.connection_limit = 1000
    server.access.add_user("bench", "bench")
    server.set_permissions("bench", "/", *USERS["bench"][1])
    return server


def run_once(server: Server, user: str, data: bytes, messages: int, ack: bool) -> float:
    name, _perms = USERS[user]
    conn = BrokerConnection(server)
    transport = NullTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    conn.data_received(prologue(name, name, ack))
    if conn.user is None or 1 not in conn.channels:
        raise RuntimeError(f"handshake as {name!r} failed")
    if user == "unchecked":
        conn.channels[1].grants = conn.channels[1].write_ok = None
    step = 65536
    pieces = [data[i : i + step] for i in range(0, len(data), step)]
    receive = conn.data_received
    gc.collect()
    gc.disable()  # as timeit does: a collection landing in one user's round would be noise, not its cost
    try:
        start = time.process_time()
        for piece in pieces:
            receive(piece)
        elapsed = time.process_time() - start
    finally:
        gc.enable()
    queue = server.vhosts["/"].queues[QUEUE]
    if ack:
        conn.channels[1].requeue_all_unacked()
    if queue.message_count or transport.written < messages * len(QUEUE) or conn.proto.state != RUNNING:
        raise RuntimeError(f"the publishes did not all get through ({queue.message_count} left in the queue)")
    conn.connection_lost(None)
    return elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--body", type=int, default=16, help="body size in bytes")
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds per user, interleaved")
    parser.add_argument("--ack", action="store_true", help="manual acks (deliveries stay unacked) instead of no-ack")
    args = parser.parse_args(argv)
    loop = asyncio.new_event_loop()
    server = new_server(loop)
    data = publishes(args.messages, args.body)
    for user in USERS:
        run_once(server, user, data, args.messages, args.ack)  # warm-up, and a check that the path works
    per_msg: dict[str, list[float]] = {user: [] for user in USERS}
    for i in range(args.rounds):
        order = list(USERS)[i % 3 :] + list(USERS)[: i % 3]  # each user goes first, second and last in turn
        for user in order:
            per_msg[user].append(run_once(server, user, data, args.messages, args.ack) / args.messages * 1e9)
    median = {user: statistics.median(times) for user, times in per_msg.items()}
    for user, times in per_msg.items():
        print(
            f"{user:>9}: median {median[user]:.0f} ns/msg, best {min(times):.0f} ns/msg "
            f"({1e9 / median[user]:,.0f} msg per CPU-second)"
        )
    print(
        f"CPU time per message, regex user / administrator: {median['bench'] / median['guest']:.3f}; "
        f"administrator / no checks: {median['guest'] / median['unchecked']:.3f} "
        f"({args.rounds} interleaved rounds of {args.messages} publishes, {args.body} B, "
        f"{'acks' if args.ack else 'no-ack'})"
    )
    loop.close()


if __name__ == "__main__":
    main()
