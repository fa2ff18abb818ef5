"""The brokers under test: amqpd started here as a subprocess (so its pid is known), or a running broker."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from amqpd.benchmarks.procstats import beam_pid, listening_pid
from amqpd.benchmarks.rawclient import URL, RawConnection

START_TIMEOUT = 20.0


@dataclass(slots=True)
class Target:
    """One broker endpoint; ``pid`` is None when its process cannot be found (then no memory/CPU figures)."""

    name: str
    url: str
    pid: int | None = None
    product: str = ""
    version: str = ""
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    async def probe(self) -> None:
        conn = await RawConnection.connect(self.url, name="amqpd-bench-probe")
        self.product, self.version = conn.product, conn.version
        await conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def amqpd_command(port: int, override: str | None = None) -> list[str]:
    """The command that runs amqpd on ``port``: ``override`` (``{port}`` is substituted), else the CLI, else
    this package's stand-in runner."""
    if override:
        return [part.replace("{port}", str(port)) for part in shlex.split(override)]
    if importlib.util.find_spec("amqpd.__main__") is not None:
        return [
            sys.executable,
            "-m",
            "broker",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--store",
            "memory://",
        ]
    return [sys.executable, "-m", "amqpd.benchmarks._serve", "--port", str(port)]


async def start_amqpd(command: str | None = None) -> Target:
    port = free_port()
    cmd = amqpd_command(port, command)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    url = f"amqp://guest:guest@127.0.0.1:{port}/"
    deadline = time.monotonic() + START_TIMEOUT
    # The log goes to a file, not a pipe: nobody drains a pipe during a run and a full one would stall
    # the broker. Closing our handle after start-up is fine: the child keeps its own descriptor.
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)
        while True:
            if proc.poll() is not None:
                log.seek(0)
                err = log.read().decode(errors="replace")
                raise RuntimeError(
                    f"amqpd exited with {proc.returncode} at start: {shlex.join(cmd)}\n{err[-2000:]}"
                )
            try:
                _r, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    stop_amqpd_proc(proc)
                    raise RuntimeError(
                        f"amqpd did not listen on {port} within {START_TIMEOUT:.0f} s"
                    ) from None
                await asyncio.sleep(0.05)
    target = Target("amqpd", url, pid=proc.pid, proc=proc)
    await target.probe()
    return target


def stop_amqpd_proc(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def stop_target(target: Target) -> None:
    if target.proc is not None:
        stop_amqpd_proc(target.proc)
        target.proc = None


async def external_target(url: str, name: str = "reference") -> Target:
    u = URL.parse(url)
    pid = None
    if u.host in ("127.0.0.1", "localhost", "::1"):
        pid = listening_pid(u.port) or beam_pid()
    target = Target(name, url, pid=pid)
    await target.probe()
    return target
