"""Message TTL at scale: expiry work is O(expired), never a scan of the queue.

Drives ``broker.model.queue.Queue`` directly (no sockets, no event loop) with a hand-turned clock: publishes N messages
into a queue with ``x-message-ttl`` while time advances, then turns the clock tick by tick and measures what each
expiry timer firing costs against how many messages it expired. A tick that expires nothing must cost the same
on a queue of 1M messages as on an empty one.

    python -m benchmarks.expiry_scale [--messages 1000000] [--ttl-ms 1000] [--per-ms 1000]
"""

from __future__ import annotations

import argparse
import time

from amqpd.broker.model.clock import ManualClock
from amqpd.broker.model.message import Message
from amqpd.broker.model.queue import Queue

HEADER = (60).to_bytes(2, "big") + b"\x00\x00" + (8).to_bytes(8, "big") + b"\x00\x00"  # no properties


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--ttl-ms", type=int, default=5000)
    parser.add_argument("--per-ms", type=int, default=1000, help="messages published per clock millisecond")
    args = parser.parse_args()

    clock = ManualClock()
    q = Queue("bench", arguments={"x-message-ttl": args.ttl_ms})
    q.clock = clock
    body = b"x" * 8
    start = time.perf_counter()
    for i in range(args.messages):
        if i and i % args.per_ms == 0:
            clock.now += 1
        q.put(Message("", "bench", HEADER, body))
    publish_s = time.perf_counter() - start
    print(
        f"published {args.messages:,} TTL messages in {publish_s:.2f} s ({publish_s / args.messages * 1e6:.2f} µs each)"
    )
    print(f"queue length {q.message_count:,}; pending timers: {sum(1 for t in clock.timers if not t.cancelled)}")

    # Ticks before the first deadline: timers may fire but expire nothing.
    idle = []
    for _ in range(5):
        t0 = time.perf_counter()
        q._on_expiry_timer()  # what the loop would run if the timer fired early
        idle.append(time.perf_counter() - t0)
    print(f"expiry tick with 0 expired on a {q.message_count:,}-message queue: {min(idle) * 1e6:.1f} µs")

    # Advance to the first deadline, then in steps; record cost per tick against messages expired.
    first_deadline = q.ready[0].expires
    clock.advance(max(0, first_deadline - clock.now - 1))
    assert q.message_count == args.messages, "publishing took longer than the TTL: raise --ttl-ms"
    rows: list[tuple[int, float]] = []
    total_start = time.perf_counter()
    step = 1
    while q.message_count:
        before = q.message_count
        t0 = time.perf_counter()
        clock.advance(step)
        rows.append((before - q.message_count, time.perf_counter() - t0))
        step = min(step * 2, 256)
    total = time.perf_counter() - total_start
    print(
        f"expired {args.messages:,} messages in {len(rows)} ticks, {total:.2f} s total "
        f"({total / args.messages * 1e6:.2f} µs per expired message)"
    )
    print(f"{'expired in tick':>16} {'tick time':>12} {'µs per expired':>15}")
    for i in range(len(rows)):
        n, secs = rows[i]
        per = secs / n * 1e6 if n else float("nan")
        print(f"{n:>16,} {secs * 1e3:>10.3f} ms {per:>15.2f}")


if __name__ == "__main__":
    main()
