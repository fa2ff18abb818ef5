"""Smoke test of the benchmark harness: one quick scenario against the in-process amqpd, JSON shape only."""

from __future__ import annotations

import json

import pytest

from amqpd.benchmarks.__main__ import main


def test_quick_scenario_reports_json_with_positive_rates(
    amqp_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # the harness runs its own event loop in this thread; the broker runs on the fixture's thread
    argv = [
        "run",
        "--scenario",
        "1p1c-ack-p100",
        "--quick",
        "--url",
        amqp_url,
        "--json",
        "--no-save",
        "--no-progress",
    ]

    rc = main(argv)

    captured = capsys.readouterr()
    assert rc == 0, captured.err
    doc = json.loads(captured.out)
    assert {"set", "command", "quick", "convention", "targets", "environment", "scenarios"} <= doc.keys()
    assert doc["quick"] is True
    assert {"nproc", "cpu_model"} <= doc["environment"]["machine"].keys()
    [scenario] = doc["scenarios"]
    assert scenario["name"] == "1p1c-ack-p100"
    result = scenario["results"][doc["targets"][0]]
    expected = {"publish_rate", "consume_rate", "published", "consumed", "broker_cpu", "client_cpu", "errors"}
    assert expected <= result.keys()
    assert result["publish_rate"] > 0
    assert result["consume_rate"] > 0
    assert result["errors"] == []
