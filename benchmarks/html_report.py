"""The HTML report of a results document: charts to compare brokers and runs at a glance, in one file.

``python -m benchmarks suite ... --report DIR`` (or ``python -m benchmarks report RESULTS.json``) writes
``DIR/<date>-<set>.html`` and, next to it, every chart as ``DIR/<date>-<set>-<chart>.png``. The HTML embeds the
PNGs as data URIs, so it is one self-contained file that works offline. Charts:

- throughput: every headline rate, amqpd next to the reference broker (bars = the median; with ``--repeat``
  a dot per run and a min-max bar);
- latency: the percentiles of every scenario that measures latency, per broker;
- over time, one per scenario: throughput, broker CPU and broker RSS, both brokers overlaid (from the ``series``
  of each run, benchmarks/series.py; documents saved before it existed have none).

matplotlib is the optional ``bench`` extra; it is imported only here, and only when a report is asked for.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from amqpd.benchmarks.report import baseline_rows, environment_items, table_rows
from amqpd.benchmarks.series import SAMPLE_INTERVAL

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MISSING_MATPLOTLIB = (
    "--report draws its charts with matplotlib, which is not installed: "
    "pip install 'amqpd[bench]' (or pip install 'matplotlib>=3.8')"
)
COLORS = {"amqpd": "#1f77b4", "broker": "#1f77b4", "reference": "#ff7f0e"}
OTHER_COLORS = ("#2ca02c", "#d62728", "#9467bd")
PERCENTILES = (
    ("p50", "latency_p50_ms"),
    ("p95", "latency_p95_ms"),
    ("p99", "latency_p99_ms"),
    ("p99.9", "latency_p999_ms"),
    ("max", "latency_max_ms"),
)
DPI = 100
LOG_WHEN_SPREAD = 8.0  # a value axis turns logarithmic when its largest value is this many times its smallest
GAP = 1.9 * SAMPLE_INTERVAL  # seconds without a sample that break a line: the pause between two runs


class ReportError(RuntimeError):
    """The report cannot be drawn (matplotlib is missing)."""


def require_matplotlib() -> None:
    """Raise :class:`ReportError` naming the extra to install when matplotlib cannot be imported; called before a
    suite runs, so a missing extra is found before the benchmarks, not after them."""
    try:
        import matplotlib.figure  # noqa: F401
    except ImportError as e:
        raise ReportError(MISSING_MATPLOTLIB) from e


# ---------------------------------------------------------------------------------------------- reading the doc
def _color(target: str, i: int) -> str:
    return COLORS.get(target) or OTHER_COLORS[i % len(OTHER_COLORS)]


def _broker_label(doc: dict[str, Any], target: str) -> str:
    b = doc.get("environment", {}).get("brokers", {}).get(target, {})
    product = f"{b.get('product', '')} {b.get('version', '')}".strip()
    return f"{target} ({product})" if product and product.split()[0] != target else (product or target)


def _runs(sc: dict[str, Any], target: str) -> list[dict[str, Any]]:
    """The successful runs of a scenario on one broker: every run with ``--repeat``, else the one result."""
    runs = sc.get("runs", {}).get(target) or [sc["results"].get(target, {})]
    return [r for r in runs if r and "error" not in r]


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


def _median_run(sc: dict[str, Any], target: str) -> dict[str, Any] | None:
    """The run whose first headline metric is the (upper) median, the way the result's medians are taken."""
    runs = [r for r in _runs(sc, target) if r.get("series")]
    if not runs:
        return None
    key = sc["headline"][0]["key"] if sc.get("headline") else ""
    ranked = sorted(runs, key=lambda r: _number(r.get(key)) or 0.0)
    return ranked[len(ranked) // 2]


def _si(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 1e4:
        return f"{value / 1e3:.0f}k"
    if value >= 1e3:
        return f"{value / 1e3:.1f}k"
    return f"{value:.0f}"


def _ms(value: float) -> str:
    return f"{value:.3g} ms" if value < 10 else f"{value:.0f} ms"


def _png(fig: Figure) -> bytes:
    """The figure as a PNG with a palette of 128 colours: a third of the size of the RGBA that matplotlib writes,
    which matters for reports kept in the repository, and no visible difference for these flat charts (Pillow is
    one of matplotlib's own dependencies)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    try:
        from PIL import Image
    except ImportError:
        return buf.getvalue()
    buf.seek(0)
    with Image.open(buf) as image:
        small = image.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out = io.BytesIO()
    small.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _log_if_spread(ax: Axes, values: list[float], axis: str, label: Callable[[float], str]) -> bool:
    """Make the value axis logarithmic when the values span a wide range, with readable tick labels at 1, 2
    and 5 times each power of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    positive = [v for v in values if v > 0]
    log = bool(positive) and max(positive) / min(positive) >= LOG_WHEN_SPREAD
    target = ax.xaxis if axis == "x" else ax.yaxis
    if log:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
        target.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        target.set_minor_formatter(NullFormatter())
    target.set_major_formatter(FuncFormatter(lambda v, _pos: label(v)))
    return log


# ---------------------------------------------------------------------------------------------- charts
def throughput_chart(doc: dict[str, Any]) -> bytes | None:
    """Horizontal grouped bars: one group per (scenario, headline rate), one bar per broker (the median), the
    ratio at the right; with several runs a dot per run and a min-max whisker."""
    targets: list[str] = doc["targets"]
    groups: list[tuple[dict[str, Any], dict[str, Any]]] = [
        (sc, m) for sc in doc["scenarios"] for m in sc["headline"] if m["unit"] == "msg/s"
    ]
    if not groups:
        return None
    from matplotlib.transforms import blended_transform_factory

    fig = _figure(10.5, max(3.0, 1.4 + 0.62 * len(groups)))
    ax = fig.subplots()
    height = 0.8 / len(targets)
    values: list[float] = []
    several = False
    for ti, target in enumerate(targets):
        color = _color(target, ti)
        for gi, (sc, m) in enumerate(groups):
            y = gi - 0.4 + height * (ti + 0.5)
            median = _number(sc["results"].get(target, {}).get(m["key"]))
            runs = [v for r in _runs(sc, target) if (v := _number(r.get(m["key"]))) is not None]
            if median is None:
                ax.text(
                    1,
                    y,
                    " no result",
                    va="center",
                    fontsize=8,
                    color=color,
                    transform=blended_transform_factory(ax.transAxes, ax.transData),
                    ha="right",
                )
                continue
            values += [median, *runs]
            ax.barh(y, median, height=height * 0.92, color=color, label=_broker_label(doc, target) if gi == 0 else None)
            if len(runs) > 1:
                several = True
                ax.errorbar(
                    median,
                    y,
                    xerr=[[median - min(runs)], [max(runs) - median]],
                    fmt="none",
                    ecolor="#333333",
                    elinewidth=1,
                    capsize=3,
                )
                ax.plot(runs, [y] * len(runs), "o", color="#222222", markersize=3, zorder=3)
            ax.text(max([median, *runs]) * 1.03, y, _si(median), va="center", fontsize=8)
    if not values:
        return None  # every run of every rate failed: the table says why
    log = _log_if_spread(ax, values, "x", _si)
    ax.set_xlim(left=min(values) / 2 if log else 0, right=max(values) * (2.2 if log else 1.15))
    ax.set_yticks(range(len(groups)))
    ax.set_yticklabels([f"{sc['name']}\n{m['key']}" for sc, m in groups], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("messages/s" + (" (log scale)" if log else "") + " — longer is better")
    ax.grid(axis="x", which="both", alpha=0.25)
    title = "Throughput per scenario (headline rates)"
    if several:
        title += f"\nbar = median of {doc.get('repeat', '?')} runs, dots = the runs, whisker = min to max"
    fig.suptitle(title, fontsize=11)
    if len(targets) == 2:
        trans = blended_transform_factory(ax.transAxes, ax.transData)
        ax.text(1.01, -0.75, "ratio", transform=trans, fontsize=8, weight="bold", va="center")
        for gi, (sc, m) in enumerate(groups):
            r = sc.get("ratios", {}).get(m["key"])
            if r:
                ax.text(
                    1.01,
                    gi,
                    f"\u00d7{r:.2f}",
                    transform=trans,
                    fontsize=9,
                    va="center",
                    color="#006400" if r >= 1 else "#8b0000",
                )
    fig.legend(loc="outside lower center", ncols=len(targets), fontsize=9, frameon=False)
    fig.get_layout_engine().set(w_pad=0.3)  # type: ignore[union-attr]
    return _png(fig)


def _latency_scenarios(doc: dict[str, Any]) -> list[tuple[dict[str, Any], list[tuple[str, str]]]]:
    out = []
    for sc in doc["scenarios"]:
        present = [
            (label, key)
            for label, key in PERCENTILES
            if any(_number(sc["results"].get(t, {}).get(key)) for t in doc["targets"])
        ]
        if present:
            out.append((sc, present))
    return out


def latency_chart(doc: dict[str, Any]) -> bytes | None:
    """One panel per scenario that measures latency, stacked: grouped bars per percentile, one bar per broker;
    with two brokers the ratio reference/amqpd under each percentile."""
    scenarios = _latency_scenarios(doc)
    if not scenarios:
        return None
    targets: list[str] = doc["targets"]
    fig = _figure(10.5, 1.2 + 3.3 * len(scenarios))
    axes = fig.subplots(len(scenarios), 1, squeeze=False)[:, 0]
    several = False
    width = 0.8 / len(targets)
    for ax, (sc, percentiles) in zip(axes, scenarios, strict=True):
        values: list[float] = []
        for ti, target in enumerate(targets):
            color = _color(target, ti)
            runs = _runs(sc, target)
            for pi, (_label, key) in enumerate(percentiles):
                x = pi - 0.4 + width * (ti + 0.5)
                median = _number(sc["results"].get(target, {}).get(key))
                if median is None:
                    continue
                per_run = [v for r in runs if (v := _number(r.get(key))) is not None]
                values += [median, *per_run]
                label = _broker_label(doc, target) if ax is axes[0] and pi == 0 else None
                ax.bar(x, median, width=width * 0.92, color=color, label=label)
                if len(per_run) > 1:
                    several = True
                    ax.plot([x] * len(per_run), per_run, "o", color="#222222", markersize=3, zorder=3)
                top = max([median, *per_run])
                ax.text(x, top * 1.08, _ms(median), ha="center", va="bottom", fontsize=8)
        log = _log_if_spread(ax, values, "y", lambda v: f"{v:g}")
        if values:
            ax.set_ylim(bottom=min(values) / 2 if log else 0, top=max(values) * (3 if log else 1.25))
        ticks = []
        for label, key in percentiles:
            if len(targets) == 2:
                a = _number(sc["results"].get(targets[0], {}).get(key))
                b = _number(sc["results"].get(targets[1], {}).get(key))
                label += f"\n\u00d7{b / a:.2f}" if a and b else ""
            ticks.append(label)
        ax.set_xticks(range(len(percentiles)))
        ax.set_xticklabels(ticks)
        ax.set_ylabel("ms" + (" (log scale)" if log else ""))
        ax.set_title(f"{sc['name']}: {sc.get('description', '')}", fontsize=10, loc="left")
        ax.grid(axis="y", which="both", alpha=0.25)
    title = "Latency percentiles (shorter is better)"
    if several:
        title += f"\nbar = median of {doc.get('repeat', '?')} runs, dots = the runs"
    if len(targets) == 2:
        title += f"; under each percentile: {targets[1]}/{targets[0]} (> 1: {targets[0]} faster)"
    fig.suptitle(title, fontsize=11)
    fig.legend(loc="outside lower center", ncols=len(targets), fontsize=9, frameon=False)
    return _png(fig)


def _segments(points: list[dict[str, Any]], key: str) -> Iterator[tuple[list[float], list[float]]]:
    """Pieces of a series without gaps (a scenario made of several runs pauses between them)."""
    xs: list[float] = []
    ys: list[float] = []
    last_t: float | None = None
    for p in points:
        if key not in p or p[key] is None:
            continue
        if last_t is not None and p["t"] - last_t > GAP and xs:
            yield xs, ys
            xs, ys = [], []
        xs.append(p["t"])
        ys.append(p[key])
        last_t = p["t"]
    if xs:
        yield xs, ys


_PANELS = (  # series key, panel title, y label, scale
    ("rate", "throughput", "messages/s", 1.0),
    ("broker_cpu", "broker CPU (share of one core; 200% = both cores)", "CPU, %", 100.0),
    ("broker_rss", "broker resident memory (VmRSS)", "RSS, MiB", 1 / 2**20),
)


def timeline_chart(doc: dict[str, Any], sc: dict[str, Any]) -> bytes | None:
    """Three panels over the run's time: throughput, broker CPU, broker RSS; a line per broker (the median run
    solid, other runs thin), the measurement windows shaded."""
    targets: list[str] = doc["targets"]
    chosen = {t: _median_run(sc, t) for t in targets}
    if not any(chosen.values()):
        return None
    fig = _figure(10.5, 7.2)
    axes = fig.subplots(3, 1, sharex=True)
    rate_of = ""
    for ti, target in enumerate(targets):
        best = chosen[target]
        if best is None:
            continue
        rate_of = rate_of or best.get("series_rate", "")
        color = _color(target, ti)
        others = [r for r in _runs(sc, target) if r.get("series") and r is not best]
        for ax, (key, _title, _label, scale) in zip(axes, _PANELS, strict=True):
            for run in others:
                for xs, ys in _segments(run["series"], key):
                    ax.plot(xs, [y * scale for y in ys], color=color, linewidth=0.8, alpha=0.35)
            first = True
            few = len(best["series"]) < 12  # a quick run: show the samples
            for xs, ys in _segments(best["series"], key):
                name = _broker_label(doc, target) + (" (median run; thin: other runs)" if others else "")
                ax.plot(
                    xs,
                    [y * scale for y in ys],
                    color=color,
                    linewidth=1.8,
                    label=name if first else None,
                    marker="." if few else None,
                )
                first = False
        for a, b in best.get("series_windows", []):  # each broker's own (they differ where the work is fixed)
            for ax in axes:
                ax.axvspan(a, b, color=color, alpha=0.07, linewidth=0)
    for ax, (key, title, label, _scale) in zip(axes, _PANELS, strict=True):
        if key == "rate" and rate_of:
            title = f"{title}: {rate_of} per second"
        ax.set_title(title, fontsize=9, loc="left")
        ax.set_ylabel(label, fontsize=9)
        ax.grid(alpha=0.25)
        top = max((max(line.get_ydata(), default=0) for line in ax.lines), default=0)  # type: ignore[type-var]
        if not ax.lines:
            why = "no samples" if key == "rate" else "not measured (broker pid unknown)"
            ax.text(0.5, 0.5, why, transform=ax.transAxes, ha="center", color="#777777")
        else:
            ax.set_ylim(bottom=0, top=float(top) * 1.15 or 1)
    from matplotlib.ticker import FuncFormatter

    axes[0].yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: _si(v)))
    axes[0].set_xlim(left=0)
    legend: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    fig.legend(
        list(legend.values()), list(legend), loc="outside lower center", ncols=len(targets), fontsize=9, frameon=False
    )
    axes[-1].set_xlabel("seconds since the scenario started (shaded in each broker's colour: its measurement windows)")
    fig.suptitle(f"{sc['name']}: {sc.get('description', '')}", fontsize=11)
    return _png(fig)


# ---------------------------------------------------------------------------------------------- the page
_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1150px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
h3 { font-size: 1em; margin-bottom: 0.2em; }
table { border-collapse: collapse; font-size: 0.82em; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; white-space: nowrap; }
th { background: #f2f2f2; } tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; border: 1px solid #eee; }
code { background: #f4f4f4; padding: 0 0.2em; white-space: pre-wrap; word-break: break-all; }
.note { color: #555; font-size: 0.9em; } .wide { overflow-x: auto; }
"""


def _html_table(head: list[str], rows: list[list[str]]) -> str:
    out = ['<div class="wide"><table>', "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows]
    out.append("</table></div>")
    return "\n".join(out)


def _item(text: str) -> str:
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(text, quote=False))


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def charts(doc: dict[str, Any]) -> list[tuple[str, str, bytes]]:
    """Every chart of a document as (file suffix, caption, PNG), in page order."""
    out: list[tuple[str, str, bytes]] = []
    if (png := throughput_chart(doc)) is not None:
        out.append(("throughput", "Throughput", png))
    if (png := latency_chart(doc)) is not None:
        out.append(("latency", "Latency", png))
    for sc in doc["scenarios"]:
        if (png := timeline_chart(doc, sc)) is not None:
            out.append((f"timeline-{sc['name']}", sc["name"], png))
    return out


def html_document(doc: dict[str, Any], drawn: list[tuple[str, str, bytes]]) -> str:
    head, rows = table_rows(doc)
    pair_head, pair_rows = baseline_rows(doc)
    by_suffix = {suffix: png for suffix, _caption, png in drawn}
    title = f"amqpd benchmark: {doc['set']}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<ul>" + "".join(f"<li>{_item(i)}</li>" for i in environment_items(doc)) + "</ul>",
    ]
    if "throughput" in by_suffix:
        parts += [
            "<h2>Throughput</h2>",
            _img(by_suffix["throughput"], "throughput per scenario"),
            '<p class="note">Every headline rate of the suite, in messages per second over the measurement '
            "window; the ratio at the right is amqpd/reference (&gt; 1: amqpd faster).</p>",
        ]
    if "latency" in by_suffix:
        parts += [
            "<h2>Latency</h2>",
            _img(by_suffix["latency"], "latency percentiles"),
            '<p class="note">Publish-to-delivery latency (request/reply: the round trip through the broker twice) '
            "over the measurement window.</p>",
        ]
    parts += ["<h2>Summary table</h2>", _html_table(head, rows)]
    if pair_rows:
        parts += ["<p>Variants next to their baseline scenario:</p>", _html_table(pair_head, pair_rows)]
    timelines = [(sc, by_suffix.get(f"timeline-{sc['name']}")) for sc in doc["scenarios"]]
    parts.append("<h2>Over time</h2>")
    if any(png for _sc, png in timelines):
        parts.append(
            '<p class="note">Sampled every 0.5 s: messages/s of the run, the broker\'s CPU (share of one core; '
            "200% = both cores) and its resident memory. The spans shaded in a broker's colour are its measurement "
            "windows, where the table's rates come from; before them is the warm-up, after them the consumers' "
            "drain. With several runs the median run (by the first headline metric) is drawn bold.</p>"
        )
    for sc, png in timelines:
        if png is None:
            continue
        parts += [f"<h3>{html.escape(sc['name'])}</h3>", _img(png, f"{sc['name']} over time")]
    missing = [sc["name"] for sc, png in timelines if png is None]
    if missing:
        parts.append(
            f'<p class="note">No time series for: {html.escape(", ".join(missing))} (results saved before the '
            "harness recorded them, or runs that failed).</p>"
        )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(doc: dict[str, Any], directory: Path, stem: str) -> Path:
    """Write ``directory/stem.html`` and its charts as ``directory/stem-<chart>.png``; returns the HTML path."""
    require_matplotlib()
    directory.mkdir(parents=True, exist_ok=True)
    drawn = charts(doc)
    for suffix, _caption, png in drawn:
        (directory / f"{stem}-{suffix}.png").write_bytes(png)
    path = directory / f"{stem}.html"
    path.write_text(html_document(doc, drawn))
    return path
