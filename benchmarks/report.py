"""Result documents: the environment they were measured in, the summary table, the files under results/."""

from __future__ import annotations

import datetime as dt
import json
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from benchmarks.procstats import machine_info

CONVENTION = (
    "ratio > 1 means amqpd is better: amqpd/reference for rates, reference/amqpd for latencies and memory"
)
RESULTS_DIR = Path(__file__).resolve().parent / "results"


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
            else:
                row += ["", "", ""]
            rows.append(row)
        for n in names:
            err = results.get(n, {}).get("error")
            if err:
                rows.append(["", f"{n} failed", err[:80], *[""] * (len(head) - 3)])
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


def markdown_document(doc: dict[str, Any]) -> str:
    env = doc["environment"]
    m = env["machine"]
    brokers = "; ".join(
        f"{n}: {b.get('product', '?')} {b.get('version', '?')}" for n, b in env["brokers"].items()
    )
    head, rows = table_rows(doc)
    parts = [
        f"# amqpd benchmark: {doc['set']}",
        "",
        f"- date: {env['date']}",
        f"- machine: {m['nproc']} CPUs, {m['cpu_model']}, {m['mem_total_bytes'] / 2**30:.1f} GiB RAM "
        "(client and brokers share it)",
        f"- Python {env['python']}, uvloop {env['uvloop']}, pamqp {env['pamqp']}, aio-pika {env['aio-pika']}",
        f"- brokers: {brokers}",
        f"- client: {doc['client']}{' (quick mode)' if doc['quick'] else ''}",
        f"- command: `{doc['command']}`",
        f"- {CONVENTION}",
        "- CPU is a share of one core over the measurement window (200% = both cores); "
        "RSS is the broker's VmRSS",
        "",
        markdown_table(head, rows),
        "",
    ]
    return "\n".join(parts)


def write_results(doc: dict[str, Any], directory: Path | None = None) -> tuple[Path, Path]:
    directory = directory or RESULTS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"{dt.date.today().isoformat()}-{doc['set']}"
    json_path = directory / f"{stem}.json"
    md_path = directory / f"{stem}.md"
    json_path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    md_path.write_text(markdown_document(doc))
    return json_path, md_path
