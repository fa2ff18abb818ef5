"""Embedded store: write N messages, then time a cold replay and report its memory.

    python -m benchmarks.storage_replay --messages 1000000 --body-size 16 [--dir DIR] [--keep]

The replay runs in a fresh child process so that its RSS is the cost of recovery alone.
Also reports the write rate with large batches and the latency of single-message batches (fsync-bound).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from amqpd.storage import Batch, Enqueue, MessageRecord, QueueRecord, Remove
from amqpd.storage.embedded import EmbeddedStore

PROPS = b"\x10\x00\x02"  # delivery-mode = 2, as a persistent publish carries it


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def fill(data_dir: str, messages: int, body_size: int, batch_size: int) -> dict[str, float]:
    store = EmbeddedStore(data_dir)
    await store.open()
    await store.commit(Batch(definitions=[QueueRecord("/", "bench", True, False, {})]))
    body = b"x" * body_size
    started = time.perf_counter()
    for first in range(1, messages + 1, batch_size):
        ids = range(first, min(first + batch_size, messages + 1))
        await store.commit(
            Batch(
                messages=[MessageRecord(i, "amq.direct", "bench", PROPS, body, 1_700_000_000_000) for i in ids],
                enqueues=[Enqueue("/", "bench", i) for i in ids],
            )
        )
    write_s = time.perf_counter() - started
    # fsync-bound latency: one message per batch, then ack them again
    single = 200
    started = time.perf_counter()
    for i in range(messages + 1, messages + 1 + single):
        await store.commit(
            Batch(
                messages=[MessageRecord(i, "", "bench", PROPS, body, 0)],
                enqueues=[Enqueue("/", "bench", i)],
            )
        )
    single_s = time.perf_counter() - started
    await store.commit(Batch(removals=[Remove("/", "bench", i) for i in range(messages + 1, messages + 1 + single)]))
    await store.close()
    return {
        "write_seconds": round(write_s, 2),
        "write_msgs_per_s": round(messages / write_s),
        "single_batch_commit_ms": round(single_s / single * 1000, 3),
    }


async def replay(data_dir: str) -> dict[str, float]:
    before = _rss_kib()
    started = time.perf_counter()
    store = EmbeddedStore(data_dir)
    snap = await store.open()
    elapsed = time.perf_counter() - started
    count = sum(len(m) for m in snap.messages.values())
    after = _rss_kib()
    await store.close()
    return {
        "replayed_messages": count,
        "replay_seconds": round(elapsed, 2),
        "rss_before_mib": round(before / 1024, 1),
        "rss_after_mib": round(after / 1024, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--body-size", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--dir", default=None, help="data directory (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    parser.add_argument("--replay-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.replay_only:
        print(json.dumps(asyncio.run(replay(args.dir))))
        return
    data_dir = args.dir or tempfile.mkdtemp(prefix="amqpd-bench-")
    try:
        results = asyncio.run(fill(data_dir, args.messages, args.body_size, args.batch_size))
        child = subprocess.run(
            [sys.executable, "-m", "amqpd.benchmarks.storage_replay", "--replay-only", "--dir", data_dir],
            check=True,
            capture_output=True,
            text=True,
        )
        results.update(json.loads(child.stdout))
        disk = sum(p.stat().st_size for p in EmbeddedStore(data_dir).segment_paths())
        results["disk_mib"] = round(disk / 2**20, 1)
        print(json.dumps({"messages": args.messages, "body_size": args.body_size, **results}, indent=2))
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
