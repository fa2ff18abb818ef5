"""Topic-exchange routing micro-benchmark: N bindings with realistic wildcards, then route M keys.

    python -m benchmarks.route_topic [--bindings 10000] [--keys 1000000] [--seed 1]

Keys look like ``region.service.entity.event.severity``; binding patterns mix literals, ``*`` and ``#`` in the
proportions a busy event bus tends to have (mostly one or two wildcards, some trailing ``#``, a few leading or
inner ``#``). Routing goes through ``TopicExchange.route`` with one reused result set, the way the vhost calls it.
The run is bounded by ``--keys``; nothing touches the network.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Hashable

from amqpd.broker.model.exchange.topic import TopicExchange

VOCAB = {
    "region": [f"r{i}" for i in range(8)],
    "service": [f"svc{i}" for i in range(30)],
    "entity": [f"ent{i}" for i in range(50)],
    "event": [f"ev{i}" for i in range(20)],
    "severity": ["debug", "info", "warn", "error", "fatal"],
}
LEVELS = list(VOCAB.values())


def make_pattern(rnd: random.Random) -> str:
    words = [rnd.choice(level) for level in LEVELS]
    shape = rnd.random()
    if shape < 0.35:  # one '*' somewhere: "r1.svc3.*.ev2.error"
        words[rnd.randrange(len(words))] = "*"
    elif shape < 0.60:  # a prefix then '#': "r1.svc3.ent7.#"
        words = [*words[: rnd.randint(3, 4)], "#"]
    elif shape < 0.80:  # two '*': "*.svc3.*.ev2.error"
        for i in rnd.sample(range(1, len(words)), 2):
            words[i] = "*"
    elif shape < 0.90:  # leading '#': "#.ent7.ev2.error"
        words = ["#", *words[2:]]
    else:  # inner '#': "r1.svc3.#.error"
        words = [words[0], words[1], "#", words[-1]]
    return ".".join(words)


def make_key(rnd: random.Random) -> str:
    return ".".join(rnd.choice(level) for level in LEVELS)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--bindings", type=int, default=10_000)
    parser.add_argument("--keys", type=int, default=1_000_000, help="routing calls to time")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    rnd = random.Random(args.seed)
    ex = TopicExchange("bench")
    queues = [f"q{i}" for i in range(1000)]
    t0 = time.perf_counter()
    while ex.binding_count() < args.bindings:
        ex.bind(rnd.choice(queues), make_pattern(rnd), None)
    build_s = time.perf_counter() - t0
    pool = [make_key(rnd) for _ in range(min(args.keys, 100_000))]

    route = ex.route
    out: set[Hashable] = set()
    matched = 0
    n = args.keys
    t0 = time.perf_counter()
    for i in range(n):
        out.clear()
        route(pool[i % len(pool)], None, out)
        matched += len(out)
    elapsed = time.perf_counter() - t0

    print(f"bindings: {ex.binding_count()} built in {build_s:.3f}s")
    print(f"routed {n} keys in {elapsed:.3f}s: {n / elapsed:,.0f} routes/s, {elapsed / n * 1e6:.2f} us/route")
    print(f"destinations per key: {matched / n:.2f} on average")


if __name__ == "__main__":
    main()
