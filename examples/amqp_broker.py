"""Run amqpd in this process with the e-commerce topology declared, until Ctrl-C.

    python3 examples/amqp_broker.py                     # port 5672, messages kept in ./data
    python3 examples/amqp_broker.py --port 5673 --store memory://

It starts the broker (the same `Server` the ``amqpd`` command runs), declares the exchanges, queues and bindings
of ``ecommerce_topology.json`` over AMQP as any client would, prints the URL to give the other examples
(``AMQP_URL=...``), and on Ctrl-C (or SIGTERM) closes every client connection and stops cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

import aio_pika
from topology import TOPOLOGY_FILE, declare_topology, describe_topology, load_topology

# The only import of the broker in examples/: a renamed package is a change of this one line.
from amqpd.broker.server import Server, cli, config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="", help="interface to listen on (default: all)")
    parser.add_argument("--port", type=int, default=5672, help="AMQP port; 0 picks a free one (default: 5672)")
    parser.add_argument(
        "--store",
        default="",
        help="storage URL: memory:// (nothing kept), file:///DIR, postgresql://...; default: embedded store in "
        "--data-dir",
    )
    parser.add_argument("--data-dir", default="./data", help="directory of the embedded store (default: ./data)")
    parser.add_argument(
        "--topology", type=Path, default=TOPOLOGY_FILE, help="topology to declare (default: ecommerce_topology.json)"
    )
    parser.add_argument("--log-level", default="warning", help="the broker's log level (default: warning)")
    return parser.parse_args(argv)


def say(text: str = "") -> None:
    print(text, flush=True)  # flushed: whoever waits for the "listening on" line reads a pipe


async def run(args: argparse.Namespace) -> None:
    settings = config.Config(host=args.host, port=args.port, store=args.store, data_dir=args.data_dir)
    server = Server(settings)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        if not stop.is_set():
            say(f"\n{sig.name} received: closing client connections and stopping ...")
        stop.set()

    # Before start(): whoever reads the startup lines may signal at once.
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    await server.start()
    try:
        topology = load_topology(args.topology)
        async with await aio_pika.connect(server.url, client_properties={"connection_name": "amqp_broker.py"}) as conn:
            await declare_topology(await conn.channel(), topology)
        store = args.store or f"embedded store in {args.data_dir}"
        say(f"amqpd {server.version} is listening on {server.url}")
        say(f"  store: {store}")
        say(
            f"  topology from {args.topology.name}: {len(topology.exchanges)} exchanges, "
            f"{len(topology.queues)} queues, {len(topology.bindings)} bindings"
        )
        for line in describe_topology(topology):
            say(f"    {line}")
        say(f"\nRun the clients with: AMQP_URL={server.url} python3 examples/amqp_client.py")
        say("Press Ctrl-C to stop.")
        waiter = asyncio.ensure_future(stop.wait())
        stopped = asyncio.ensure_future(server.serve_forever())
        await asyncio.wait({waiter, stopped}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
    finally:
        await server.shutdown("example broker stopped")
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    say("amqpd stopped cleanly.")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cli.configure_logging(args.log_level)
    _, loop_factory = cli.choose_loop("auto")
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        try:
            runner.run(run(args))
        except OSError as exc:
            print(f"amqp_broker.py: cannot start on port {args.port}: {exc.strerror or exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
