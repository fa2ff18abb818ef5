"""Run amqpd in this process until SIGTERM/SIGINT: the benchmarks' stand-in for when the CLI is not available.

usage: python -m benchmarks._serve --port N [--profile FILE]

``--profile`` runs the broker under cProfile and writes the stats (pstats format) to FILE at shutdown, e.g.
for ``python -m benchmarks perf --amqpd-cmd "python -m benchmarks._serve --port {port} --profile b.prof"``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from amqpd.broker.server.config import Config
from amqpd.broker.server.server import Server


async def _serve(port: int) -> None:
    server = Server(Config(host="127.0.0.1", port=port, store="memory://", log_level="warning"))
    await server.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(server.shutdown("signal")))
    print(f"PORT {server.port}", flush=True)
    await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--profile", metavar="FILE", help="write cProfile stats here at shutdown")
    args = p.parse_args()
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    with contextlib.suppress(KeyboardInterrupt):
        try:
            import uvloop
        except ImportError:
            asyncio.run(_serve(args.port))
        else:
            uvloop.run(_serve(args.port))
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.profile)


if __name__ == "__main__":
    main()
