"""amqpd-bench: load generator and scenario suite, optionally side by side with a reference broker.

    python -m benchmarks perf [--url URL] -x 2 -y 2 --size 1024 --ack multiple --prefetch 500
    python -m benchmarks run --scenario 1p1c-ack-p1000 [--compare amqp://guest:guest@127.0.0.1:5682/]
    python -m benchmarks suite [--compare URL] [--quick] [--repeat N] [--json] [--report DIR]
    python -m benchmarks report RESULTS.json [--report DIR]
    python -m benchmarks list

Without ``--url`` amqpd is started here as a subprocess on a free loopback port (a fresh one per scenario), so
its memory and CPU can be read from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from amqpd.benchmarks.perf import ACK_MODES, EXCHANGE_TYPES, PerfConfig, run_perf
from amqpd.benchmarks.report import (
    CONVENTION,
    baseline_rows,
    environment,
    median_result,
    portable_command,
    ratio,
    result_stem,
    table_rows,
    text_table,
    write_results,
)
from amqpd.benchmarks.scenarios import SCENARIOS, Scenario, Timing
from amqpd.benchmarks.targets import Target, external_target, start_amqpd, stop_target


def _run(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


# ---------------------------------------------------------------------------------------------- perf
def _add_perf_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--publishers", "-x", type=int, default=1)
    p.add_argument("--consumers", "-y", type=int, default=1)
    p.add_argument("--queues", "-u", type=int, default=1)
    p.add_argument("--size", "-s", type=int, default=16, help="message body size in bytes")
    p.add_argument("--persistent", action="store_true", help="delivery mode 2 and durable queues")
    p.add_argument("--confirm", "-c", type=int, default=0, metavar="WINDOW", help="publisher confirms window")
    p.add_argument("--prefetch", "-q", type=int, default=0, help="basic.qos prefetch count (0 = unlimited)")
    p.add_argument(
        "--ack",
        choices=ACK_MODES,
        default="auto",
        help="auto = no-ack; manual = one ack per message; multiple = ack with multiple=True",
    )
    p.add_argument("--ack-every", type=int, default=0, help="multiple: ack at least every N deliveries")
    p.add_argument("--exchange-type", "-t", choices=EXCHANGE_TYPES, default="direct")
    p.add_argument("--rate", "-r", type=float, default=0.0, help="msg/s per publisher (0 = unlimited)")
    p.add_argument("--duration", "-z", type=float, default=10.0, help="seconds of publishing")
    p.add_argument("--pmessages", "-C", type=int, default=0, help="messages per publisher (0 = unlimited)")
    p.add_argument("--latency", action="store_true", help="timestamp every message and report latency")
    p.add_argument("--client", choices=("raw", "aio-pika"), default="raw")


async def _perf(args: argparse.Namespace) -> int:
    target = await (external_target(args.url, "broker") if args.url else start_amqpd(args.amqpd_cmd))
    try:
        cfg = PerfConfig(
            url=target.url,
            publishers=args.publishers,
            consumers=args.consumers,
            queues=args.queues,
            size=args.size,
            persistent=args.persistent,
            confirm=args.confirm,
            prefetch=args.prefetch,
            ack=args.ack,
            ack_every=args.ack_every,
            exchange_type=args.exchange_type,
            rate=args.rate,
            duration=args.duration,
            pmessages=args.pmessages,
            latency=args.latency,
            client=args.client,
            broker_pid=target.pid,
            label=target.name,
        )
        result = await run_perf(cfg)
    finally:
        stop_target(target)
    result["broker"] = {"product": target.product, "version": target.version}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            if key == "series":
                value = f"{len(value)} points"
            print(f"{key:>18}  {value:,.1f}" if isinstance(value, float) else f"{key:>18}  {value}")
    return 0


# ---------------------------------------------------------------------------------------------- scenarios
async def _one(
    scenario: Scenario, target: Target, timing: Timing, client: str, progress: bool
) -> dict[str, Any]:
    try:
        return await asyncio.wait_for(scenario.fn(target, timing, client, progress), 400)
    except Exception as e:  # one failing scenario must not lose the others' results
        return {"error": f"{type(e).__name__}: {e}"}


async def _scenarios(args: argparse.Namespace, names: list[str], set_name: str) -> int:
    timing = Timing.for_mode(args.quick)
    reference = await external_target(args.compare, "reference") if args.compare else None
    fixed = await external_target(args.url, "broker") if args.url else None
    targets = ["amqpd" if fixed is None else "broker"] + (["reference"] if reference else [])
    brokers: dict[str, dict[str, Any]] = {}
    progress = not args.no_progress
    repeat = max(1, args.repeat)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {name: {t: [] for t in targets} for name in names}
    # With --repeat the whole list runs again, so repeats of one scenario are interleaved with the others
    # (A B A B ...): a slow spell on a shared machine then hits every scenario rather than one.
    for rep in range(repeat):
        for i, name in enumerate(names):
            sc = SCENARIOS[name]
            turn = rep * len(names) + i
            order = targets if turn % 2 == 0 else list(reversed(targets))  # alternate who goes first
            for tname in order:
                if tname == "reference":
                    assert reference is not None
                    target = reference
                elif fixed is not None:
                    target = fixed
                else:
                    target = await start_amqpd(args.amqpd_cmd)
                brokers[tname] = {
                    "product": target.product,
                    "version": target.version,
                    "url": target.url,
                    "pid_known": target.pid is not None,
                }
                if progress:
                    nth = f" (run {rep + 1}/{repeat})" if repeat > 1 else ""
                    print(
                        f"== {name} on {tname} ({target.product} {target.version}){nth}",
                        file=sys.stderr,
                        flush=True,
                    )
                try:
                    runs[name][tname].append(await _one(sc, target, timing, args.client, progress))
                finally:
                    if target.proc is not None:
                        stop_target(target)
    doc_scenarios: list[dict[str, Any]] = []
    for name in names:
        sc = SCENARIOS[name]
        results = {t: median_result(rs) for t, rs in runs[name].items()}
        ratios: dict[str, float | None] = {}
        if reference is not None:
            for m in sc.headline:
                ratios[m.key] = ratio(
                    results[targets[0]].get(m.key), results["reference"].get(m.key), m.higher_is_better
                )
        entry: dict[str, Any] = {
            "name": name,
            "description": sc.description,
            "headline": [
                {"key": m.key, "unit": m.unit, "higher_is_better": m.higher_is_better} for m in sc.headline
            ],
            "results": results,
            "ratios": ratios,
        }
        if sc.baseline is not None:
            entry["baseline"] = sc.baseline
        if repeat > 1:
            entry["runs"] = runs[name]
        doc_scenarios.append(entry)
    doc: dict[str, Any] = {
        "set": set_name + ("-quick" if args.quick else ""),
        "command": portable_command(sys.argv[1:] if args.argv is None else args.argv),
        "quick": args.quick,
        "repeat": repeat,
        "client": args.client,
        "convention": CONVENTION,
        "targets": targets,
        "environment": environment(brokers),
        "scenarios": doc_scenarios,
    }
    head, rows = table_rows(doc)
    table = text_table(head, rows)
    pair_head, pair_rows = baseline_rows(doc)
    if pair_rows:
        table += "\n\n" + text_table(pair_head, pair_rows)
    if not args.no_save:
        json_path, md_path = write_results(doc, Path(args.results_dir) if args.results_dir else None)
        print(f"results: {json_path} {md_path}", file=sys.stderr)
    if args.report:
        from amqpd.benchmarks.html_report import write_report

        print(f"report: {write_report(doc, Path(args.report), result_stem(doc))}", file=sys.stderr)
    if args.json:
        print(table, file=sys.stderr)
        print(json.dumps(doc, indent=2, default=str))
    else:
        print(table)
        if reference is not None:
            print(CONVENTION)
    failed = any("error" in r for sc in doc_scenarios for r in sc["results"].values())
    return 1 if failed else 0


# ---------------------------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="amqpd-bench", description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--url", help="benchmark this running broker instead of starting amqpd")
        sp.add_argument("--amqpd-cmd", help="command that runs amqpd; {port} is replaced by the chosen port")
        sp.add_argument("--json", action="store_true", help="print results as JSON on stdout")

    perf = sub.add_parser("perf", help="free-form load generator (PerfTest-like flags)")
    common(perf)
    _add_perf_flags(perf)

    for name, helptext in (("run", "run one scenario"), ("suite", "run every scenario")):
        sp = sub.add_parser(name, help=helptext)
        common(sp)
        if name == "run":
            sp.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
        else:
            sp.add_argument("--only", help="comma-separated scenario names")
        sp.add_argument(
            "--compare", metavar="URL", help="also run each scenario against this reference broker"
        )
        sp.add_argument("--quick", action="store_true", help="shorten every scenario (smoke test)")
        sp.add_argument(
            "--repeat",
            type=int,
            default=1,
            metavar="N",
            help="run the scenario list N times, interleaved; report per-metric medians",
        )
        sp.add_argument("--client", choices=("raw", "aio-pika"), default="raw")
        sp.add_argument("--no-save", action="store_true", help="do not write benchmarks/results/*")
        sp.add_argument("--results-dir", help="where to write the .json and .md results")
        sp.add_argument(
            "--set", dest="set_name", metavar="NAME", help="the set's name in the results and their file names"
        )
        sp.add_argument("--no-progress", action="store_true", help="no per-second progress on stderr")
        sp.add_argument(
            "--report",
            metavar="DIR",
            help="also write an HTML report with charts to DIR/<date>-<set>.html (needs the bench extra)",
        )
    rep = sub.add_parser("report", help="write the HTML report of a saved results .json")
    rep.add_argument("results", metavar="RESULTS.json", help="a document written by run or suite")
    rep.add_argument("--report", metavar="DIR", help="where to write it (default: beside RESULTS.json)")
    sub.add_parser("list", help="list the scenarios")
    return p


def _report(args: argparse.Namespace) -> int:
    from amqpd.benchmarks.html_report import write_report

    source = Path(args.results)
    try:
        doc = json.loads(source.read_text())
    except (OSError, ValueError) as e:
        print(f"cannot read {source}: {e}", file=sys.stderr)
        return 2
    path = write_report(doc, Path(args.report) if args.report else source.parent, source.stem)
    print(f"report: {path}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.argv = argv
    if getattr(args, "set_name", None) and not re.fullmatch(r"[\w.-]+", args.set_name):
        print("--set: letters, digits, '.', '_' and '-' only (it is part of file names)", file=sys.stderr)
        return 2
    if getattr(args, "report", None) or args.cmd == "report":
        # before the benchmarks, so that a missing extra does not cost a whole suite's run
        from amqpd.benchmarks.html_report import ReportError, require_matplotlib

        try:
            require_matplotlib()
        except ReportError as e:
            print(f"amqpd-bench: {e}", file=sys.stderr)
            return 2
    if args.cmd == "report":
        return _report(args)
    if args.cmd == "list":
        for sc in SCENARIOS.values():
            print(f"{sc.name:22} {sc.description}")
        return 0
    if args.cmd == "perf":
        return _run(_perf(args))
    if args.cmd == "run":
        return _run(_scenarios(args, [args.scenario], args.set_name or args.scenario))
    names = list(SCENARIOS)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in SCENARIOS]
        if unknown:
            print(f"unknown scenarios: {', '.join(unknown)}", file=sys.stderr)
            return 2
    return _run(_scenarios(args, names, args.set_name or ("suite" if not args.only else "custom")))


if __name__ == "__main__":
    sys.exit(main())
