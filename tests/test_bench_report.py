"""The HTML report of the benchmark harness: charts from a synthetic document, from a results file saved before
time series existed, and from a real quick run; and the error that names the extra when matplotlib is missing."""

from __future__ import annotations

import base64
import json
import re
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from amqpd.benchmarks.__main__ import main
from amqpd.benchmarks.html_report import MISSING_MATPLOTLIB, write_report
from amqpd.benchmarks.report import CONVENTION, portable_command

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def embedded_pngs(page: str) -> list[bytes]:
    """Every image of the page, decoded; each must be a data URI (the page is self-contained)."""
    sources = re.findall(r'<img [^>]*src="([^"]*)"', page)
    images = []
    for src in sources:
        assert src.startswith("data:image/png;base64,"), src[:60]
        images.append(base64.b64decode(src.removeprefix("data:image/png;base64,"), validate=True))
    return images


def assert_png(data: bytes) -> None:
    assert data.startswith(PNG_SIGNATURE)
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 300 and height > 200


def series(rate: float, cpu: float, rss: int, n: int = 8) -> list[dict[str, Any]]:
    return [
        {"t": 0.5 * (i + 1), "rate": rate * (0.9 + 0.02 * i), "broker_cpu": cpu, "broker_rss": rss + i * 2**20}
        for i in range(n)
    ]


def run(rate: float, cpu: float, rss: int, **extra: Any) -> dict[str, Any]:
    return {
        "consume_rate": rate,
        "publish_rate": rate,
        "broker_cpu": cpu,
        "client_cpu": 0.2,
        "broker_rss_end": rss,
        "errors": [],
        "series_rate": "deliveries",
        "series_windows": [[1.0, 4.0]],
        "series": series(rate, cpu, rss),
        **extra,
    }


def synthetic_document() -> dict[str, Any]:
    """Two brokers, three runs each of a throughput scenario, one latency scenario, and one scenario whose
    results have no time series (as saved before the harness recorded them)."""
    amqpd_runs = [run(r, 0.99, 40 * 2**20) for r in (100_000.0, 120_000.0, 110_000.0)]
    ref_runs = [run(r, 1.6, 180 * 2**20) for r in (50_000.0, 60_000.0, 55_000.0)]
    lat = {"latency_p50_ms": 0.25, "latency_p95_ms": 0.4, "latency_p99_ms": 0.55, "latency_max_ms": 3.0}
    rpc_amqpd = run(1000.0, 0.1, 30 * 2**20, **lat)
    rpc_ref = run(1000.0, 0.2, 140 * 2**20, **{k: v * 1.5 for k, v in lat.items()})
    rate = [{"key": "consume_rate", "unit": "msg/s", "higher_is_better": True}]
    return {
        "set": "synthetic",
        "command": "python -m benchmarks suite --repeat 3 --compare amqp://guest:guest@127.0.0.1:5682/",
        "quick": False,
        "repeat": 3,
        "client": "raw",
        "convention": CONVENTION,
        "targets": ["amqpd", "reference"],
        "environment": {
            "date": "2026-01-01 12:00 UTC",
            "machine": {"nproc": 2, "cpu_model": "Test CPU", "mem_total_bytes": 8 * 2**30},
            "python": "3.11.7",
            "uvloop": "0.23.0",
            "pamqp": "4.0.1",
            "aio-pika": "10.2.1",
            "brokers": {
                "amqpd": {"product": "amqpd", "version": "0.1.0"},
                "reference": {"product": "RabbitMQ", "version": "3.10.8"},
            },
        },
        "scenarios": [
            {
                "name": "1p1c-ack-p1000",
                "description": "1 publisher, 1 consumer",
                "headline": rate,
                "results": {"amqpd": amqpd_runs[2], "reference": ref_runs[2]},
                "ratios": {"consume_rate": 2.0},
                "runs": {"amqpd": amqpd_runs, "reference": ref_runs},
            },
            {
                "name": "rpc-1000",
                "description": "request/reply at 1,000 requests/s",
                "headline": [
                    {"key": "latency_p50_ms", "unit": "ms", "higher_is_better": False},
                    {"key": "latency_p99_ms", "unit": "ms", "higher_is_better": False},
                ],
                "results": {"amqpd": rpc_amqpd, "reference": rpc_ref},
                "ratios": {"latency_p50_ms": 1.5, "latency_p99_ms": 1.5},
            },
            {
                "name": "publish-16b",
                "description": "1 publisher, no consumer",
                "headline": [{"key": "publish_rate", "unit": "msg/s", "higher_is_better": True}],
                "results": {
                    "amqpd": {"publish_rate": 140_000.0, "broker_cpu": 1.0},
                    "reference": {"publish_rate": 5_000.0, "broker_cpu": 1.5},
                },
                "ratios": {"publish_rate": 28.0},
            },
        ],
    }


def test_report_of_a_synthetic_document_embeds_every_chart_and_the_table(tmp_path: Path) -> None:
    path = write_report(synthetic_document(), tmp_path, "2026-01-01-synthetic")

    assert path == tmp_path / "2026-01-01-synthetic.html"
    page = path.read_text()
    images = embedded_pngs(page)
    # throughput, latency, and a timeline for each of the two scenarios with time series
    assert len(images) == 4
    for image in images:
        assert_png(image)
    files = sorted(p.name for p in tmp_path.glob("*.png"))
    assert files == [
        "2026-01-01-synthetic-latency.png",
        "2026-01-01-synthetic-throughput.png",
        "2026-01-01-synthetic-timeline-1p1c-ack-p1000.png",
        "2026-01-01-synthetic-timeline-rpc-1000.png",
    ]
    assert sorted(images) == sorted((tmp_path / f).read_bytes() for f in files)
    # the table, the environment and the convention
    assert "<table>" in page and "<th>scenario</th>" in page
    assert "110,000 msg/s" in page and "55,000 msg/s" in page
    assert "Test CPU" in page and "RabbitMQ 3.10.8" in page
    assert "<code>python -m benchmarks suite --repeat 3" in page
    assert "ratio &gt; 1 means amqpd is better" in page
    assert "No time series for: publish-16b" in page
    assert "http://" not in page and "https://" not in page  # works offline


def test_report_from_a_results_file_saved_before_time_series(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = RESULTS / "2026-12-03-ack-rpc-3runs.json"

    rc = main(["report", str(source), "--report", str(tmp_path)])

    assert rc == 0, capsys.readouterr().err
    page = (tmp_path / "2026-12-03-ack-rpc-3runs.html").read_text()
    images = embedded_pngs(page)
    assert len(images) == 2  # throughput and latency; no timelines without series
    for image in images:
        assert_png(image)
    assert "1p1c-ack-p1000-maxlen" in page and "Variants next to their baseline" in page
    assert "No time series for:" in page


def test_quick_suite_with_report_records_series_and_draws_them(
    amqp_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "suite",
        "--only",
        "1p1c-ack-p100,rpc-1000",
        "--quick",
        "--url",
        amqp_url,
        "--results-dir",
        str(tmp_path),
        "--report",
        str(tmp_path),
        "--no-progress",
    ]

    rc = main(argv)

    assert rc == 0, capsys.readouterr().err
    [json_path] = tmp_path.glob("*-custom-quick.json")
    doc = json.loads(json_path.read_text())
    for sc in doc["scenarios"]:
        result = sc["results"][doc["targets"][0]]
        points = result["series"]
        assert [p["t"] for p in points] == sorted(p["t"] for p in points)
        rates = [p["rate"] for p in points if "rate" in p]
        assert rates and all(r >= 0 for r in rates) and max(rates) > 0, sc["name"]
        assert all(p["t"] > 0 for p in points if "rate" in p)  # a rate is over an interval: never at the start
        if result.get("broker_cpu") is not None:  # the broker's pid is known: its CPU and memory are sampled too
            assert all("broker_rss" in p for p in points)
            assert any("broker_cpu" in p for p in points)
        [[start, end]] = result["series_windows"]
        assert 0 <= start < end
    rpc = next(sc for sc in doc["scenarios"] if sc["name"] == "rpc-1000")["results"][doc["targets"][0]]
    assert rpc["latency_p50_ms"] <= rpc["latency_p95_ms"] <= rpc["latency_p99_ms"] <= rpc["latency_p999_ms"]
    page = json_path.with_suffix(".html").read_text()
    images = embedded_pngs(page)
    assert len(images) == 4  # throughput, latency, two timelines
    for image in images:
        assert_png(image)
    assert "1p1c-ack-p100" in page and "<table>" in page
    assert len(list(tmp_path.glob("*.png"))) == 4


@pytest.mark.parametrize(
    "argv",
    [
        ["suite", "--only", "rpc-1000", "--quick", "--url", "amqp://guest:guest@127.0.0.1:1/"],
        ["run", "--scenario", "rpc-1000", "--url", "amqp://guest:guest@127.0.0.1:1/"],
        ["report", str(RESULTS / "2026-12-03-suite.json")],
    ],
    ids=["suite", "run", "report"],
)
def test_report_without_matplotlib_names_the_extra_before_running_anything(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes "import matplotlib" raise ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)

    rc = main([*argv, "--report", str(tmp_path)])

    assert rc == 2
    err = capsys.readouterr().err
    assert MISSING_MATPLOTLIB in err and "amqpd[bench]" in err
    assert list(tmp_path.iterdir()) == []  # nothing was run (port 1 would have failed) and nothing written


def test_the_suite_without_report_does_not_import_matplotlib() -> None:
    code = (
        "import sys, benchmarks.__main__ as m, benchmarks.report, benchmarks.scenarios\n"
        "m._parser().parse_args(['suite', '--quick'])\n"
        "print('matplotlib' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.strip() == "False"


def test_command_has_no_machine_paths(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", "/home/someone")

    command = portable_command(["suite", "--report", f"{tmp_path}/out", "--results-dir", "/home/someone/res"])

    assert command == "python -m benchmarks suite --report out --results-dir ~/res"
