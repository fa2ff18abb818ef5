"""`AmqpdProcess`: ``python -m broker`` as a subprocess (for signal and crash tests), and `free_port`."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent.parent

LISTENING = re.compile(r"listening on \S*?:(\d+)")


class AmqpdProcess:
    """``python -m broker`` in a subprocess on 127.0.0.1 and a free port; the port is read from its log.

    Use as a context manager; on exit the process is killed if still running. `lines` collects its stderr.
    """

    def __init__(self, *args: str, env: Mapping[str, str] | None = None, start_timeout: float = 15.0) -> None:
        self.args = ["--host", "127.0.0.1", "--port", "0", "--log-level", "info", *args]
        self.env = {**os.environ, **(env or {})}
        self.start_timeout = start_timeout
        self.lines: list[str] = []
        self.port = 0
        self._listening = threading.Event()
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def __enter__(self) -> AmqpdProcess:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "amqpd", *self.args],
            cwd=REPO_ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        # Drain stderr continuously so a chatty broker never blocks on a full pipe.
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + self.start_timeout
        while not self._listening.wait(0.05):
            if self._proc.poll() is not None or time.monotonic() >= deadline:
                self._reader.join(2)
                self.kill()
                raise RuntimeError("amqpd did not start; its log:\n" + "".join(self.lines))
        return self

    def _read_log(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for line in self._proc.stderr:
            self.lines.append(line)
            match = LISTENING.search(line)
            if match and not self._listening.is_set():
                self.port = int(match.group(1))
                self._listening.set()

    def __exit__(self, *exc: object) -> None:
        self.kill()

    @property
    def proc(self) -> subprocess.Popen[str]:
        assert self._proc is not None
        return self._proc

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def signal(self, sig: signal.Signals, timeout: float = 15.0) -> int:
        """Send `sig` and wait for the exit code."""
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        if self._reader is not None:
            self._reader.join(2)
        return code

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)
        if self._proc is not None and self._proc.stderr is not None:
            if self._reader is not None:
                self._reader.join(2)
            self._proc.stderr.close()

    @property
    def log(self) -> str:
        return "".join(self.lines)


def free_port() -> int:
    """A port nothing listens on: bound and released at once (the kernel will not hand it out again soon)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port
