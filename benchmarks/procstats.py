"""Process measurements from /proc: resident memory, CPU time, and the process behind a TCP port."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def rss_bytes(pid: int) -> int:
    """VmRSS of a process in bytes (0 if it cannot be read)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return 0.0
    # the command name may hold spaces and parentheses: fields start after the last ')'
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def run_queue_wait_seconds(pid: int) -> float | None:
    """Time the threads of a process spent runnable but not running (waiting for a CPU), from
    /proc/PID/task/*/schedstat; None where the kernel does not provide it."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e9


@dataclass(slots=True)
class CpuMeter:
    """CPU used by one process between start() and stop(), as a share of one core; after stop(), ``waited`` is
    the share of the same window its threads spent runnable but waiting for a CPU (summed over threads, like
    the CPU share). A process that is neither running nor waiting for a CPU is waiting for I/O: a large
    ``waited`` means the machine, not the process, held it back (shared cores)."""

    pid: int
    _t0: float = 0.0
    _c0: float = 0.0
    _w0: float | None = None
    waited: float | None = None

    def start(self, now: float) -> None:
        self._t0 = now
        self._c0 = cpu_seconds(self.pid)
        self._w0 = run_queue_wait_seconds(self.pid)

    def stop(self, now: float) -> float:
        wall = now - self._t0
        w1 = run_queue_wait_seconds(self.pid)
        if self._w0 is not None and w1 is not None and wall > 0:
            self.waited = (w1 - self._w0) / wall
        return (cpu_seconds(self.pid) - self._c0) / wall if wall > 0 else 0.0


def open_files_limit(pid: int) -> int | None:
    """The soft RLIMIT_NOFILE of a process (None if unknown or unlimited)."""
    try:
        with open(f"/proc/{pid}/limits") as f:
            for line in f:
                if line.startswith("Max open files"):
                    soft = line.split()[3]
                    return int(soft) if soft.isdigit() else None
    except OSError:
        pass
    return None


def listening_pid(port: int) -> int | None:
    """The pid of the process that listens on TCP ``port`` (needs permission to read other processes' fds)."""
    inodes: set[str] = set()
    hexport = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if cols[1].endswith(hexport) and cols[3] == "0A":  # 0A = LISTEN
                        inodes.add(cols[9])
        except OSError:
            continue
    if not inodes:
        return None
    targets = {f"socket:[{i}]" for i in inodes}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fd_dir = f"/proc/{entry}/fd"
        try:
            for fd in os.listdir(fd_dir):
                try:
                    if os.readlink(f"{fd_dir}/{fd}") in targets:
                        return int(entry)
                except OSError:
                    continue
        except OSError:
            continue
    return None


def beam_pid() -> int | None:
    """Fallback for the reference broker: the (single) Erlang VM process."""
    try:
        out = subprocess.run(["pgrep", "-f", "beam.smp"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    pids = [int(p) for p in out.split()]
    return pids[0] if len(pids) == 1 else None


def machine_info() -> dict[str, str | int]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = re.sub(r"\s+", " ", line.split(":", 1)[1]).strip()
                    break
    except OSError:
        pass
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    return {"nproc": os.cpu_count() or 0, "cpu_model": model, "mem_total_bytes": mem}
