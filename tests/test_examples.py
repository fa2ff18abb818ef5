"""The examples in examples/ run, as a user runs them: ``python examples/X.py`` in a subprocess, against the test
broker (``AMQP_URL``), and print what they claim to show.

- message_patterns.py: every section ends with ``PROVED: ...``, and nothing it created is left on the broker.
- amqp_client.py: the summary accounts for every event; the failing payment was dead-lettered, retried and
  recovered; the poison one was parked.
- render_diagram.py: a well-formed SVG, a PNG and Mermaid text naming every queue and exchange, from the topology
  file or (against a stub that answers as RabbitMQ's management API does) from /api/definitions and /api/consumers.
- amqp_broker.py: starts, has the topology declared, accepts a connection, and stops cleanly on SIGINT.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pika
import pytest

from tests.support.server_thread import ServerThread

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
TOPOLOGY = json.loads((EXAMPLES / "ecommerce_topology.json").read_text())
QUEUES = ["orders", "inventory", "email", "sms", "analytics"]
EXCHANGES = ["order.events", "user.events", "payment.events"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_example(name: str, *args: str, url: str | None = None, cwd: Path = REPO, timeout: float = 50.0) -> str:
    """Run examples/`name` to completion; its stdout (stderr too when it fails)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if url is not None:
        env["AMQP_URL"] = url
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"{name} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


# ------------------------------------------------------------------------------------------------ message_patterns

CLAIMS = {
    "work-queue": "PROVED: fair dispatch",
    "pubsub": "PROVED: publish/subscribe",
    "routing": "PROVED: routing",
    "topics": "PROVED: topics",
    "headers": "PROVED: headers routing",
    "rpc": "PROVED: RPC",
    "at-most-once": "PROVED: at-most-once",
    "at-least-once": "PROVED: at-least-once",
    "exactly-once": "PROVED: exactly-once",
}


def test_message_patterns_proves_every_section_and_cleans_up(
    amqp_url: str, amqpd_instance: ServerThread | None
) -> None:
    out = run_example("message_patterns.py", url=amqp_url)

    proved = [line for line in out.splitlines() if line.startswith("PROVED: ")]
    assert len(proved) == len(CLAIMS), out
    for claim in CLAIMS.values():
        assert any(line.startswith(claim) for line in proved), f"no {claim!r} line in:\n{out}"
    assert "NOT PROVED" not in out
    # What the guarantees sections show, in numbers.
    assert "lost: 7 (order-4, order-5" in out  # at-most-once: auto-ack lost what the crashed worker held
    assert "lost: 0; processed twice: order-4" in out  # at-least-once: one duplicate
    assert "lost: 0; applied twice: 0" in out  # exactly-once: neither
    if amqpd_instance is not None:
        prefix = re.search(r"(patterns-[0-9a-f]{6})\.", out)
        assert prefix is not None, out
        server = amqpd_instance.server
        left = amqpd_instance.call(
            lambda: [n for vh in server.vhosts.values() for n in [*vh.queues, *vh.exchanges] if prefix[1] in n]
        )
        assert left == [], f"message_patterns.py left these behind: {left}"


def test_message_patterns_only_runs_the_named_section(amqp_url: str) -> None:
    out = run_example("message_patterns.py", "--only", "rpc", "--only", "topics", url=amqp_url)

    proved = [line for line in out.splitlines() if line.startswith("PROVED: ")]
    assert len(proved) == 2, out
    assert proved[0].startswith(CLAIMS["topics"]) and proved[1].startswith(CLAIMS["rpc"]), out
    assert "Work queue" not in out


# ------------------------------------------------------------------------------------------------ amqp_client


def summary_counts(out: str) -> dict[str, tuple[int, int]]:
    """'Fulfillment Service : processed 4/4 ...' -> {'Fulfillment Service': (4, 4)}."""
    return {
        m.group(1).strip(): (int(m.group(2)), int(m.group(3)))
        for m in re.finditer(r"^  (\w[\w ]*?Service)\s*: processed (\d+)/(\d+)", out, re.MULTILINE)
    }


def test_amqp_client_processes_every_order_and_retries_the_failing_payment(amqp_url: str) -> None:
    out = run_example(
        "amqp_client.py", "--orders", "4", "--users", "2", "--interval", "0.01", "--timeout", "30", url=amqp_url
    )

    assert summary_counts(out) == {
        "Fulfillment Service": (4, 4),
        "Inventory Service": (4, 4),
        "Email Service": (2, 2),
        "SMS Service": (2, 2),
        "Analytics Service": (3, 4),  # the fourth payment is the poison one, parked
    }, out
    assert "published and confirmed : 2 user.registered, 4 order.created, 4 payment.captured" in out
    # PAY-5002 fails once, is dead-lettered to analytics.retry and comes back after the TTL; PAY-5004 never works.
    assert re.search(r"PAY-5002 +attempt 1 failed: .* dead-lettered to analytics\.retry", out), out
    assert "PAY-5002 recovered on attempt 2" in out
    assert "dead-lettered           : 3 rejection(s) of 2 payment(s)" in out
    assert "parked                  : PAY-5004" in out
    assert "RESULT: OK - all 4 orders processed" in out


# ------------------------------------------------------------------------------------------------ render_diagram


def assert_diagram_files(directory: Path, names: list[str]) -> str:
    """The three files exist and are what they say; returns the Mermaid text."""
    svg = directory / "topology.svg"
    root = ET.parse(svg).getroot()  # well-formed XML, or this raises
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    svg_text = " ".join(t for t in root.itertext() if t.strip())
    for name in names:
        assert name in svg_text, f"{name!r} is not written in the SVG"

    png = (directory / "topology.png").read_bytes()
    assert png[:8] == PNG_SIGNATURE
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")  # the IHDR chunk
    assert width >= 1200 and height >= 600, (width, height)
    assert len(png) > 20_000

    mermaid = (directory / "topology.mmd").read_text()
    assert mermaid.splitlines()[0] == "flowchart LR"
    for name in names:
        assert f'"{name}<br/>' in mermaid, f"{name!r} has no node in the Mermaid text"
    return mermaid


def test_render_diagram_draws_the_declared_topology_in_the_current_directory(tmp_path: Path) -> None:
    out = run_example("render_diagram.py", cwd=tmp_path)

    consumers = [c["name"] for c in TOPOLOGY["consumers"]]
    producers = [p["name"] for p in TOPOLOGY["producers"]]
    mermaid = assert_diagram_files(tmp_path, QUEUES + EXCHANGES + consumers + producers)
    assert '-->|"order.*"|' in mermaid  # bindings are labelled with their keys
    assert "-.->" in mermaid  # dead-lettering is drawn
    assert "3 producers, 4 exchanges, 7 queues, 5 consumers" in out


class FakeManagementAPI(BaseHTTPRequestHandler):
    """Answers the three GETs render_diagram.py makes with documents shaped as RabbitMQ 3.x's management API
    returns them (trimmed), and 401 without guest's basic auth."""

    documents: dict[str, object] = {}
    requests: list[str] = []

    def do_GET(self) -> None:
        self.requests.append(self.path)
        expected = "Basic " + base64.b64encode(b"guest:guest").decode()
        if self.headers.get("Authorization") != expected:
            self.send_response(401)
            self.end_headers()
            return
        document = self.documents.get(self.path)
        body = json.dumps(document).encode()
        self.send_response(200 if document is not None else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def management_api() -> Iterator[str]:
    FakeManagementAPI.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeManagementAPI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://guest:guest@127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_render_diagram_reads_a_management_api(tmp_path: Path, management_api: str) -> None:
    definitions = {
        "rabbit_version": "3.13.7",
        "exchanges": [*TOPOLOGY["exchanges"], {"name": "other-vhost.events", "vhost": "staging", "type": "topic"}],
        "queues": [
            *TOPOLOGY["queues"],
            {"name": "audit", "vhost": "/", "durable": True, "auto_delete": False, "arguments": {}},
        ],
        "bindings": [
            *TOPOLOGY["bindings"],
            {
                "source": "order.events",
                "vhost": "/",
                "destination": "audit",
                "destination_type": "queue",
                "routing_key": "order.#",
                "arguments": {},
            },
        ],
    }
    conn = "127.0.0.1:50432 -> 127.0.0.1:5672"
    FakeManagementAPI.documents = {
        "/api/definitions": definitions,
        "/api/connections": [
            {
                "name": conn,
                "user_provided_name": "Audit Service",
                "client_properties": {"connection_name": "Audit Service"},
            }
        ],
        "/api/consumers/%2F": [
            {
                "queue": {"name": "audit", "vhost": "/"},
                "consumer_tag": "amq.ctag-1",
                "prefetch_count": 20,
                "ack_required": True,
                "channel_details": {"connection_name": conn, "number": 1},
            },
            {
                "queue": {"name": "orders", "vhost": "/"},
                "consumer_tag": "amq.ctag-2",
                "prefetch_count": 0,
                "ack_required": False,
                "channel_details": {"connection_name": "unnamed", "number": 1},
            },
        ],
    }
    out_dir = tmp_path / "diagram"

    run_example("render_diagram.py", "--management-url", management_api, "--output-dir", str(out_dir))

    assert set(FakeManagementAPI.requests) == set(FakeManagementAPI.documents)
    mermaid = assert_diagram_files(out_dir, [*QUEUES, "audit", *EXCHANGES, "Audit Service", "amq.ctag-2"])
    assert "other-vhost.events" not in mermaid  # another vhost's
    assert "Fulfillment Service" not in mermaid  # consumers come from the API, not from the file ...
    assert '"Order Service<br/>' in mermaid  # ... producers do (the API does not know them)
    assert '-->|"order.#"| Q_audit' in mermaid


# ------------------------------------------------------------------------------------------------ amqp_broker


def test_amqp_broker_serves_the_topology_and_stops_on_sigint() -> None:
    args = ["--host", "127.0.0.1", "--port", "0", "--store", "memory://"]
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "amqp_broker.py"), *args],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout or ()], daemon=True)
    reader.start()
    seen: list[str] = []

    def read_until(marker: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(marker in line for line in seen):
            assert time.monotonic() < deadline, f"no {marker!r} from amqp_broker.py:\n{''.join(seen)}"
            with contextlib.suppress(queue.Empty):
                seen.append(lines.get(timeout=0.2))

    try:
        read_until("Press Ctrl-C")
        match = re.search(r"is listening on (amqp://\S+)", "".join(seen))
        assert match is not None, "".join(seen)
        connection = pika.BlockingConnection(pika.URLParameters(match.group(1)))
        channel = connection.channel()
        for name in EXCHANGES:
            channel.exchange_declare(name, passive=True)  # a missing one: 404, and pika raises
        for name in QUEUES:
            assert channel.queue_declare(name, passive=True).method.message_count == 0
        assert "order.events (topic) -> orders [order.*], inventory [order.created]" in "".join(seen)

        # Ctrl-C with a client still connected: the client is told (320) and the broker exits 0.
        proc.send_signal(signal.SIGINT)
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                connection.process_data_events(time_limit=0.2)
        assert closed.value.reply_code == 320
        assert proc.wait(15) == 0
        read_until("amqpd stopped cleanly.", timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        reader.join(5)
        if proc.stdout is not None:
            proc.stdout.close()
