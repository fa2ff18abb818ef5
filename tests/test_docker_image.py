"""The Docker image is a drop-in for rabbitmq:3: its variables, guest from other containers, RabbitMQ's startup line.

Docker does not run here, so these tests run what the container would: docker/entrypoint.sh with the image's
ENV (read from docker/Dockerfile) plus the variables a CI job sets, amqpd listening on every interface, and a
client coming from a non-loopback address of this machine as another container would.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

import pika
import pytest

from tests.support.access_world import non_loopback_address
from tests.support.processes import REPO_ROOT, free_port

ENTRYPOINT = REPO_ROOT / "docker" / "entrypoint.sh"
DOCKERFILE = REPO_ROOT / "docker" / "Dockerfile"
STARTUP_LINE = "Server startup complete"  # what testcontainers' RabbitMQ modules wait for
# Where the image puts the entry point (on the PATH), as its ENTRYPOINT and HEALTHCHECK name it.
IMAGE_ENTRYPOINT = "docker-entrypoint.sh"


def dockerfile_text() -> str:
    return DOCKERFILE.read_text().replace("\\\n", " ")


def image_env() -> dict[str, str]:
    """The AMQPD_* values of the image's ENV instructions."""
    env: dict[str, str] = {}
    for line in dockerfile_text().splitlines():
        if line.startswith("ENV "):
            env.update((k, v) for k, v in re.findall(r"\b(AMQPD_\w+)=(\S+)", line))
    return env


def exec_form(instruction: str) -> list[str]:
    match = re.search(rf"^{instruction} .*?(\[.*\])\s*$", dockerfile_text(), re.MULTILINE)
    assert match is not None, f"docker/Dockerfile has no exec-form {instruction}"
    value: list[str] = json.loads(match.group(1))
    return value


def local_command(command: list[str]) -> list[str]:
    """An image command as it runs here: the entry point from the checkout instead of the image's PATH."""
    return [str(ENTRYPOINT) if part == IMAGE_ENTRYPOINT else part for part in command]


def container_env(tmp_path: Path, **variables: str) -> dict[str, str]:
    """The environment of a container started from the image with `variables` (`docker run -e ...`): this
    machine's, without any AMQPD_*/RABBITMQ_* of its own, the venv's `amqpd` on the PATH, a data dir in tmp_path."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AMQPD_", "RABBITMQ_"))}
    base["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{base.get('PATH', '')}"
    env = {**base, **image_env(), **variables}
    env["AMQPD_DATA_DIR"] = str(tmp_path / "data")
    return env


class Container:
    """docker/entrypoint.sh run as the container's main process; its output is collected in `lines`."""

    def __init__(self, env: Mapping[str, str], *args: str) -> None:
        self.env = dict(env)
        self.args = args
        self.lines: list[str] = []
        self._started = threading.Event()
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def __enter__(self) -> Container:
        self._proc = subprocess.Popen(
            [str(ENTRYPOINT), *self.args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # `docker logs` shows both
            text=True,
            start_new_session=True,  # a process group of its own: kill() reaches anything it left behind
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 15
        while not self._started.wait(0.05):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"no {STARTUP_LINE!r} in the log:\n{self.log}")
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            self.lines.append(line)
            if STARTUP_LINE in line:
                self._started.set()

    def __exit__(self, *exc: object) -> None:
        self.kill()

    @property
    def proc(self) -> subprocess.Popen[str]:
        assert self._proc is not None
        return self._proc

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def stop(self) -> int:
        """`docker stop`: SIGTERM to the container's main process, then its exit code."""
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(15)
        if self._reader is not None:
            self._reader.join(5)
        return code

    def main_process(self) -> bytes:
        """The command line of the container's main process (PID 1 in the container) as it runs now."""
        return Path(f"/proc/{self.proc.pid}/cmdline").read_bytes()

    def kill(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        if self._reader is not None:
            self._reader.join(5)
        if self._proc.stdout is not None and not (self._reader and self._reader.is_alive()):
            self._proc.stdout.close()


@pytest.fixture
def other_host() -> str:
    """This machine's non-loopback address: connecting to it is what another container does."""
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    return address


def url(host: str, port: int, user: str, password: str, vhost: str = "/") -> str:
    path = "" if vhost == "/" else quote(vhost, safe="")
    return f"amqp://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}/{path}"


def log_in_and_publish(amqp_url: str) -> None:
    """A pika client logs in, opens the vhost, declares a queue and publishes into it with a confirm."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.queue_declare("from-another-container", auto_delete=True)
        channel.basic_publish("", "from-another-container", b"hello")
    finally:
        connection.close()


def refused(amqp_url: str) -> bool:
    try:
        pika.BlockingConnection(pika.URLParameters(amqp_url)).close()
    except pika.exceptions.ProbableAuthenticationError:
        return True
    return False


def healthcheck(env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """The image's HEALTHCHECK command, run the way Docker runs it: in the container's environment."""
    return subprocess.run(local_command(exec_form("HEALTHCHECK")), env=env, capture_output=True, text=True, timeout=30)


def entrypoint_env(env: Mapping[str, str], *args: str) -> dict[str, str]:
    """The environment the entry point passes on to its command (runs `env` through it)."""
    done = subprocess.run([str(ENTRYPOINT), *args, "env"], env=env, capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


# ----------------------------------------------------------------------------------------- the image's files


def test_the_image_runs_the_entry_point_and_health_checks_through_it() -> None:
    assert exec_form("ENTRYPOINT") == [IMAGE_ENTRYPOINT]
    assert exec_form("HEALTHCHECK")[:3] == [IMAGE_ENTRYPOINT, "amqpd", "--check"]
    text = dockerfile_text()
    assert f"COPY docker/entrypoint.sh /usr/local/bin/{IMAGE_ENTRYPOINT}" in text
    assert re.search(r"^EXPOSE 5672$", text, re.MULTILINE)
    assert os.access(ENTRYPOINT, os.X_OK)
    ignore = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    assert "!docker/entrypoint.sh" in ignore  # or the build context would not contain it


def test_the_image_sets_no_variable_a_rabbitmq_one_must_be_able_to_override() -> None:
    env = image_env()
    # Set in the image, these would always beat RABBITMQ_DEFAULT_USER & co; amqpd's defaults already match.
    assert not {"AMQPD_DEFAULT_USER", "AMQPD_DEFAULT_PASS", "AMQPD_DEFAULT_VHOST", "AMQPD_PORT"} & set(env)
    assert env["AMQPD_LOOPBACK_USERS"] == "none"  # guest logs in from other containers, as in rabbitmq:3


# ----------------------------------------------------------------------------------------- the variables


def test_rabbitmq_variables_become_amqpd_ones(tmp_path: Path) -> None:
    env = container_env(
        tmp_path,
        RABBITMQ_DEFAULT_USER="ci",
        RABBITMQ_DEFAULT_PASS="p@ss word",
        RABBITMQ_DEFAULT_VHOST="ci-vhost",
        RABBITMQ_NODE_PORT="5680",
    )
    passed = entrypoint_env(env)
    assert {k: v for k, v in passed.items() if k.startswith("AMQPD_") and k != "AMQPD_DATA_DIR"} == {
        "AMQPD_DEFAULT_USER": "ci",
        "AMQPD_DEFAULT_PASS": "p@ss word",
        "AMQPD_DEFAULT_VHOST": "ci-vhost",
        "AMQPD_PORT": "5680",
        "AMQPD_LOOPBACK_USERS": "none",
    }


def test_amqpd_variables_win_over_rabbitmq_ones_even_when_empty(tmp_path: Path) -> None:
    env = container_env(
        tmp_path,
        RABBITMQ_DEFAULT_USER="rabbit",
        AMQPD_DEFAULT_USER="amqpd-user",
        RABBITMQ_DEFAULT_PASS="rabbit",
        AMQPD_DEFAULT_PASS="",
        RABBITMQ_NODE_PORT="5680",
    )
    passed = entrypoint_env(env)
    assert passed["AMQPD_DEFAULT_USER"] == "amqpd-user"
    assert passed["AMQPD_DEFAULT_PASS"] == ""
    assert passed["AMQPD_PORT"] == "5680"
    assert "AMQPD_DEFAULT_VHOST" not in passed  # nothing set: amqpd's default ("/") applies


def test_without_rabbitmq_variables_nothing_is_added(tmp_path: Path) -> None:
    passed = entrypoint_env(container_env(tmp_path))
    assert {k for k in passed if k.startswith("AMQPD_")} == {"AMQPD_DATA_DIR", "AMQPD_LOOPBACK_USERS"}


def test_options_are_amqpds_and_a_command_runs_as_given(tmp_path: Path) -> None:
    env = container_env(tmp_path)
    version = subprocess.run([str(ENTRYPOINT), "--version"], env=env, capture_output=True, text=True, timeout=30)
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("amqpd ")
    shell = subprocess.run([str(ENTRYPOINT), "sh", "-c", "echo $0"], env=env, capture_output=True, text=True)
    assert shell.stdout.strip() == "sh"


# ----------------------------------------------------------------------------------------- a running "container"


def test_a_ci_job_configured_for_rabbitmq_gets_its_user_vhost_and_port(tmp_path: Path, other_host: str) -> None:
    port = free_port()
    env = container_env(
        tmp_path,
        RABBITMQ_DEFAULT_USER="ci",
        RABBITMQ_DEFAULT_PASS="ci-secret",
        RABBITMQ_DEFAULT_VHOST="ci-vhost",
        RABBITMQ_NODE_PORT=str(port),
    )
    with Container(env) as container:
        assert "Server startup complete; 0 plugins started." in container.log
        if Path("/proc/self/cmdline").exists():
            # The entry point exec'd amqpd: no shell stays in between to swallow `docker stop`'s SIGTERM.
            assert b"entrypoint.sh" not in container.main_process()
            assert b"amqpd" in container.main_process()
        log_in_and_publish(url(other_host, port, "ci", "ci-secret", "ci-vhost"))
        assert refused(url(other_host, port, "guest", "guest"))  # as in RabbitMQ: the default user replaces guest
        check = healthcheck(env)  # sees only the RABBITMQ_* variables, as Docker's health check process does
        assert check.returncode == 0, check.stderr
        assert f"127.0.0.1:{port}, vhost 'ci-vhost'" in check.stdout
        # `docker stop`: the entry point exec'd amqpd, so amqpd itself gets the SIGTERM and shuts down cleanly.
        assert container.stop() == 0
    assert "SIGTERM received, shutting down" in container.log
    assert "shutdown complete" in container.log


def test_guest_logs_in_from_another_container_with_the_defaults(tmp_path: Path, other_host: str) -> None:
    port = free_port()
    env = container_env(tmp_path, AMQPD_PORT=str(port))
    with Container(env) as container:
        log_in_and_publish(url(other_host, port, "guest", "guest"))
        check = healthcheck(env)
        assert check.returncode == 0, check.stderr
        assert container.stop() == 0


def test_the_health_check_fails_when_nothing_listens(tmp_path: Path) -> None:
    check = healthcheck(container_env(tmp_path, RABBITMQ_NODE_PORT=str(free_port())))
    assert check.returncode == 1
    assert "unhealthy" in check.stderr
