"""Result documents: the environment they were measured in, the summary table, the files under results/."""

from __future__ import annotations

import datetime as dt
import json
import platform
import shlex
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from amqpd.benchmarks.procstats import machine_info

CONVENTION = (
    "ratio > 1 means amqpd is better: amqpd/reference for rates, reference/amqpd for latencies and memory"
)
RESULTS_DIR = Path(__file__).resolve().parent / "results"
# keys of one run's result that hold its time series (benchmarks/series.py); never medians
SERIES_KEYS = ("series", "series_windows")


def _pkg(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def environment(brokers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``brokers`` maps a target name to {product, version, url, pid}."""
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(),
        "python": platform.python_version(),
        "uvloop": _pkg("uvloop"),
        "pamqp": _pkg("pamqp"),
        "aio-pika": _pkg("aio-pika"),
        "brokers": brokers,
    }


def ratio(amqpd: float | None, reference: float | None, higher_is_better: bool) -> float | None:
    if not amqpd or not reference:
        return None
    return amqpd / reference if higher_is_better else reference / amqpd


def median_result(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from repeated runs of a scenario on one broker: every numeric metric is the median over the
    runs that did not fail (the upper median for an even count); anything else is taken from the first of them.
    All runs failed: the first failure."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[0] if runs else {"error": "not run"}
    if len(ok) == 1:
        return ok[0]
    out = dict(ok[0])
    for key, value in ok[0].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            values = sorted(r[key] for r in ok if isinstance(r.get(key), int | float) and r[key] is not None)
            out[key] = values[len(values) // 2]
    out["runs"] = len(ok)
    out["failed_runs"] = len(runs) - len(ok)
    # a time series is one run's: the charts take them from the document's ``runs``, not from the median
    for key in SERIES_KEYS:
        out.pop(key, None)
    return out


def fmt_value(value: Any, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "msg/s":
        return f"{value:,.0f} msg/s"
    if unit == "ms":
        return f"{value:.2f} ms"
    if unit == "B":
        return f"{value:,.0f} B"
    return str(value)


def fmt_cpu(value: Any) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def fmt_mib(value: Any) -> str:
    return "-" if not value else f"{value / 2**20:,.0f} MiB"


def _rss(res: dict[str, Any]) -> Any:
    for key in ("broker_rss_full", "broker_rss_with_connections", "broker_rss_end"):
        if res.get(key):
            return res[key]
    return None


def _waits(res: dict[str, Any]) -> str:
    return f"{fmt_cpu(res.get('broker_cpu_wait'))}/{fmt_cpu(res.get('client_cpu_wait'))}"


def table_rows(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    names: list[str] = doc["targets"]
    compare = len(names) == 2
    head = ["scenario", "metric", *names]
    if compare:
        head.append("ratio")
    head += [
        f"broker CPU ({'/'.join(names)})",
        f"client CPU ({'/'.join(names)})",
        f"broker RSS ({'/'.join(names)})",
        f"broker/client CPU wait ({'/'.join(names)})",
    ]
    rows: list[list[str]] = []
    for sc in doc["scenarios"]:
        results: dict[str, dict[str, Any]] = sc["results"]
        for i, m in enumerate(sc["headline"]):
            row = [sc["name"] if i == 0 else "", m["key"]]
            row += [fmt_value(results.get(n, {}).get(m["key"]), m["unit"]) for n in names]
            if compare:
                r = sc["ratios"].get(m["key"])
                row.append("-" if r is None else f"{r:.2f}")
            if i == 0:
                row.append(" / ".join(fmt_cpu(results.get(n, {}).get("broker_cpu")) for n in names))
                row.append(" / ".join(fmt_cpu(results.get(n, {}).get("client_cpu")) for n in names))
                row.append(" / ".join(fmt_mib(_rss(results.get(n, {}))) for n in names))
                row.append(" / ".join(_waits(results.get(n, {})) for n in names))
            else:
                row += ["", "", "", ""]
            rows.append(row)
        for n in names:
            err = results.get(n, {}).get("error")
            if err:
                rows.append(["", f"{n} failed", err[:80], *[""] * (len(head) - 3)])
    return head, rows


def baseline_rows(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Variant scenarios next to their baseline (both must be in the document): per broker and headline metric,
    the two values and variant/baseline (> 1: the variant is faster, for a rate)."""
    by_name = {sc["name"]: sc for sc in doc["scenarios"]}
    head = ["scenario", "vs baseline", "broker", "metric", "variant", "baseline", "variant/baseline"]
    rows: list[list[str]] = []
    for sc in doc["scenarios"]:
        base = by_name.get(sc.get("baseline") or "")
        if base is None:
            continue
        first = True
        for name in doc["targets"]:
            for m in sc["headline"]:
                v = sc["results"].get(name, {}).get(m["key"])
                b = base["results"].get(name, {}).get(m["key"])
                r = f"{v / b:.2f}" if v and b else "-"
                row = [sc["name"] if first else "", base["name"] if first else "", name, m["key"]]
                rows.append([*row, fmt_value(v, m["unit"]), fmt_value(b, m["unit"]), r])
                first = False
    return head, rows


def markdown_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def text_table(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=False)]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=False))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) for r in rows]
    return "\n".join(out)


def environment_items(doc: dict[str, Any]) -> list[str]:
    """The bullet points that say where, how and with what a document was measured (Markdown: the command is
    in backquotes)."""
    env = doc["environment"]
    m = env["machine"]
    brokers = "; ".join(
        f"{n}: {b.get('product', '?')} {b.get('version', '?')}" for n, b in env["brokers"].items()
    )
    items = [
        f"date: {env['date']}",
        f"machine: {m['nproc']} CPUs, {m['cpu_model']}, {m['mem_total_bytes'] / 2**30:.1f} GiB RAM "
        "(client and brokers share it)",
        f"Python {env['python']}, uvloop {env['uvloop']}, pamqp {env['pamqp']}, aio-pika {env['aio-pika']}",
        f"brokers: {brokers}",
        f"client: {doc['client']}{' (quick mode)' if doc['quick'] else ''}",
        f"command: `{doc['command']}`",
        CONVENTION,
        "CPU is a share of one core over the measurement window (200% = both cores); RSS is the broker's VmRSS",
        "CPU wait: share of the window the process was runnable but waiting for a core (/proc schedstat); "
        "high values mean other work on the machine held it back",
    ]
    if doc.get("repeat", 1) > 1:
        items.append(f"every value is the median of {doc['repeat']} interleaved runs")
    return items


def markdown_document(doc: dict[str, Any]) -> str:
    head, rows = table_rows(doc)
    parts = [
        f"# amqpd benchmark: {doc['set']}",
        "",
        *(f"- {item}" for item in environment_items(doc)),
        "",
        markdown_table(head, rows),
        "",
    ]
    pair_head, pair_rows = baseline_rows(doc)
    if pair_rows:
        parts += ["Variants next to their baseline scenario:", "", markdown_table(pair_head, pair_rows), ""]
    return "\n".join(parts)


def result_stem(doc: dict[str, Any]) -> str:
    """``<date>-<set>``: the name of a document's files (.json, .md, .html and the charts' .png)."""
    return f"{dt.date.today().isoformat()}-{doc['set']}"


def portable_command(argv: list[str]) -> str:
    """``python -m benchmarks ARGS`` with this machine's paths taken out: the working directory's prefix is
    dropped (paths become relative) and the home directory becomes ``~``."""
    command = "python -m benchmarks " + shlex.join(argv)
    cwd = str(Path.cwd()).rstrip("/") + "/"
    home = str(Path.home()).rstrip("/") + "/"
    command = command.replace(cwd, "")
    return command.replace(home, "~/") if home != "/" else command


def write_results(doc: dict[str, Any], directory: Path | None = None) -> tuple[Path, Path]:
    directory = directory or RESULTS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    stem = result_stem(doc)
    json_path = directory / f"{stem}.json"
    md_path = directory / f"{stem}.md"
    json_path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    md_path.write_text(markdown_document(doc))
    return json_path, md_path
