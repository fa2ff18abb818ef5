"""Smoke test of the benchmark harness: one quick scenario against an in-process amqpd, JSON shape only."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json

from benchmarks.__main__ import main
from broker.config import Config
from broker.server import Server


async def test_quick_scenario_reports_json_with_positive_rates() -> None:
    server = Server(Config(host="127.0.0.1", port=0, store="memory://"))
    await server.start()
    out = io.StringIO()
    err = io.StringIO()
    argv = ["run", "--scenario", "1p1c-ack-p100", "--quick", "--url", server.url, "--json", "--no-save",
            "--no-progress"]
    try:
        # the harness runs its own event loop; give it a thread so this loop keeps serving the broker
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = await asyncio.wait_for(asyncio.to_thread(main, argv), 30)
    finally:
        await server.shutdown("test over")

    assert rc == 0, err.getvalue()
    doc = json.loads(out.getvalue())
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
