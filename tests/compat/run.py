"""Run the client libraries' own test suites (aio-pika, pika) against amqpd or another broker.

    python tests/compat/run.py [--url URL] [--suite aio-pika|pika|all] [--results DIR] ...
    python tests/compat/run.py diff BASELINE.xml CANDIDATE.xml

The suites' sources are fetched at run time and never committed: aio-pika's tests from its PyPI sdist,
pika's acceptance tests from a git repository of pika (``PIKA_GIT_DIR``) at its release tag. They run in a
dedicated virtualenv (``COMPAT_VENV``, default under ~/.cache/amqpd-compat) because aio-pika's tests need
the aiomisc-pytest plugin, which must not be installed next to the project's pytest-asyncio. Without
``--url`` each suite gets a fresh amqpd subprocess on a free port. Each suite prints one line
``SUITE: N passed, N failed, N skipped`` as its closing line and leaves a JUnit XML file in the results
directory, to compare broker against broker with ``diff``. Failures listed in known-failures.txt (tests that
fail on RabbitMQ too) are reported as known and do not fail the run. Exit status: 0 when every failure is a
known one, 1 when any other test failed (or amqpd exited, or pytest stopped early), 2 when a suite could
not run. ``--ci`` makes a suite that is skipped for want of ``PIKA_GIT_DIR`` an error (2) as well.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SKIPLIST = HERE / "skiplist.txt"
KNOWN_FAILURES = HERE / "known-failures.txt"
ADDON = HERE / "conftest_addon.py"

AIO_PIKA_VERSION = "10.2.1"  # the version pinned in pyproject.toml's dev dependencies
PIKA_TAG = "1.4.4"
# The suites' own test dependencies (aio-pika's "test" group, pika's adapters), pinned to a set known to work.
SUITE_REQUIREMENTS = (
    f"aio-pika=={AIO_PIKA_VERSION}",
    "aiomisc==18.0.37",
    "aiomisc-pytest==2.0.0",
    "shortuuid==1.0.13",
    "pytest==9.2.0",
    "pytest-timeout==2.4.0",
    "gevent==26.9.0",
    "tornado==6.6.1",
)
PIKA_TESTS = ("tests/acceptance/async_adapter_tests.py", "tests/acceptance/blocking_adapter_test.py")
LISTENING = re.compile(r"listening on [^\s,]+:(\d+)")


@dataclass
class Outcome:
    passed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # node -> first line of the error
    skipped: dict[str, str] = field(default_factory=dict)  # node -> reason

    def summary(self, suite: str) -> str:
        return f"{suite}: {len(self.passed)} passed, {len(self.failed)} failed, {len(self.skipped)} skipped"


class SuiteUnavailable(Exception):
    """The suite cannot run here (missing sources, broken setup); the message says what to do.

    ``details`` (e.g. pip's error output) is printed before the suite's one-line closing message.
    """

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


@dataclass
class SuiteResult:
    suite: str
    outcome: Outcome | None = None  # None: the suite did not run, or ended without a JUnit XML file
    not_run: str = ""  # why it did not run, one line
    details: str = ""  # what the failing step printed
    problems: list[str] = field(default_factory=list)  # failures outside the tests (amqpd exited, ...)
    optional: bool = False  # pika without PIKA_GIT_DIR: not an error unless --ci


# ---------------------------------------------------------------------------------------------- environment


def log(message: str) -> None:
    print(f"[compat] {message}", flush=True)


def venv_dir() -> Path:
    configured = os.environ.get("COMPAT_VENV")
    if configured:
        return Path(configured)
    digest = hashlib.sha256("\n".join(SUITE_REQUIREMENTS).encode()).hexdigest()[:10]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "amqpd-compat" / f"venv-{digest}"


def ensure_venv() -> Path:
    """The dedicated virtualenv's python, created and filled on first use (about 30 s).

    Raises SuiteUnavailable naming the step that failed (e.g. PyPI unreachable) with its output.
    """
    root = venv_dir()
    python = root / "bin" / "python"
    stamp = root / "amqpd-compat-requirements.txt"
    wanted = "\n".join(SUITE_REQUIREMENTS) + "\n"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    log(f"installing the suites' test dependencies into {root}")
    steps = (
        ("create the virtualenv", [sys.executable, "-m", "venv", str(root)]),
        (
            "install the suites' test dependencies (pip install from PyPI or the configured index)",
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--root-user-action=ignore",  # CI runs as root; the venv is ours alone
                *SUITE_REQUIREMENTS,
            ],
        ),
    )
    for what, command in steps:
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            # No stamp is written, so the next run starts this over.
            output = (done.stdout + done.stderr).strip()
            raise SuiteUnavailable(
                f"could not {what} in {root}: {' '.join(command[:4])} ... exited with {done.returncode}"
                + pip_error(output),
                output,
            )
    stamp.write_text(wanted)
    return python


def pip_error(output: str) -> str:
    """pip's own last ERROR line (e.g. no matching distribution, connection refused), for a one-line message."""
    errors = [line.strip() for line in output.splitlines() if line.startswith("ERROR:")]
    return f": {errors[-1][:200]}" if errors else ""


def read_entries(path: Path, suite: str) -> list[tuple[str, str]]:
    """The (pattern, reason) pairs for `suite` of a reviewed list: lines of SUITE PATTERN REASON."""
    entries: list[tuple[str, str]] = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 2)
        if len(parts) != 3:
            raise SystemExit(f"{path}:{number}: expected SUITE PATTERN REASON")
        if parts[0] == suite:
            entries.append((parts[1], parts[2]))
    return entries


def read_skiplist(suite: str) -> list[tuple[str, str]]:
    return read_entries(SKIPLIST, suite)


def read_known_failures(suite: str) -> list[tuple[str, str]]:
    return read_entries(KNOWN_FAILURES, suite)


def known_pattern(pattern: str) -> re.Pattern[str]:
    # "*" is the only wildcard: parametrized ids carry brackets, which fnmatch would read as character sets.
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")))


@dataclass
class Verdict:
    known: dict[str, str] = field(default_factory=dict)  # failed test -> reason from known-failures.txt
    unexpected: dict[str, str] = field(default_factory=dict)  # failed test -> its error line
    known_passed: list[str] = field(default_factory=list)  # listed tests that passed this time (flaky ones)


def classify(outcome: Outcome, known: Sequence[tuple[str, str]]) -> Verdict:
    """Split the failures into known ones (listed, failing on RabbitMQ too) and the rest."""
    compiled = [(known_pattern(pattern), reason) for pattern, reason in known]

    def reason_for(test: str) -> str | None:
        return next((reason for regex, reason in compiled if regex.fullmatch(test)), None)

    verdict = Verdict()
    for test, error in outcome.failed.items():
        reason = reason_for(test)
        if reason is None:
            verdict.unexpected[test] = error
        else:
            verdict.known[test] = reason
    verdict.known_passed = [test for test in outcome.passed if reason_for(test) is not None]
    return verdict


def extract_tar(data: bytes, dest: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        archive.extractall(dest, filter="data")


def append_addon(conftest: Path) -> None:
    # Appended, not imported: the suite's fixtures and hooks of the same names must be replaced in place.
    with conftest.open("a") as out:
        out.write("\n\n# ---- added by amqpd's tests/compat/run.py ----\n")
        out.write(ADDON.read_text())


def replace_once(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    if text.count(old) != 1:
        raise SuiteUnavailable(f"{path.name}: expected exactly one {old!r} to point the suite at the broker")
    path.write_text(text.replace(old, new))


# -------------------------------------------------------------------------------------------------- sources


def prepare_aio_pika(python: Path, work: Path) -> Path:
    download = work / "sdist"
    log(f"downloading aio-pika {AIO_PIKA_VERSION}'s sdist from PyPI")
    # --no-binary for aio-pika only: its build backend may come as a wheel (pip builds metadata on download).
    fetched = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--no-binary",
            "aio-pika",
            f"aio-pika=={AIO_PIKA_VERSION}",
            "-d",
            str(download),
        ],
        capture_output=True,
        text=True,
    )
    if fetched.returncode != 0:
        output = (fetched.stdout + fetched.stderr).strip()
        raise SuiteUnavailable(
            f"pip could not download aio-pika {AIO_PIKA_VERSION}'s sdist from PyPI or the configured index "
            f"(exited with {fetched.returncode}){pip_error(output)}",
            output,
        )
    sdists = list(download.glob("aio_pika-*.tar.gz"))
    if len(sdists) != 1:
        raise SuiteUnavailable(f"expected one aio-pika sdist in {download}, found {sdists}")
    extract_tar(sdists[0].read_bytes(), work)
    tree = work / f"aio_pika-{AIO_PIKA_VERSION}"
    append_addon(tree / "tests" / "conftest.py")
    return tree


def pika_git_dir() -> str:
    """PIKA_GIT_DIR, checked to hold pika's release tag; SuiteUnavailable saying how to get one otherwise."""
    git_dir = os.environ.get("PIKA_GIT_DIR")
    if not git_dir:
        raise SuiteUnavailable(
            "PIKA_GIT_DIR is not set. pika's PyPI packages ship no tests; clone its repository "
            f"(git clone --bare https://github.com/pika/pika pika.git) and set PIKA_GIT_DIR to it "
            f"(tag {PIKA_TAG} is used)"
        )
    found = subprocess.run(
        ["git", "--git-dir", git_dir, "rev-parse", "--verify", "--quiet", f"refs/tags/{PIKA_TAG}^{{commit}}"],
        capture_output=True,
        text=True,
    )
    if found.returncode != 0:
        raise SuiteUnavailable(f"PIKA_GIT_DIR={git_dir} has no tag {PIKA_TAG}: git fetch --tags there first")
    return git_dir


def prepare_pika(work: Path, host: str, port: int) -> Path:
    git_dir = pika_git_dir()
    archive = subprocess.run(
        ["git", "--git-dir", git_dir, "archive", "--format=tar", f"refs/tags/{PIKA_TAG}"],
        capture_output=True,
        check=True,
    )
    tree = work / f"pika-{PIKA_TAG}"
    tree.mkdir()
    extract_tar(archive.stdout, tree)
    # pika's acceptance tests hard-code the broker at localhost:5672.
    replace_once(
        tree / "tests" / "base" / "async_test_base.py",
        "pika.ConnectionParameters(host='localhost', port=5672)",
        f"pika.ConnectionParameters(host={host!r}, port={port})",
    )
    blocking = tree / "tests" / "acceptance" / "blocking_adapter_test.py"
    replace_once(blocking, "'amqp://guest:guest@127.0.0.1:%(port)s", f"'amqp://guest:guest@{host}:%(port)s")
    replace_once(
        blocking,
        "DEFAULT_URL = PARAMS_URL_TEMPLATE % {'port': 5672}",
        f"DEFAULT_URL = PARAMS_URL_TEMPLATE % {{'port': {port}}}",
    )
    append_addon(tree / "tests" / "conftest.py")
    return tree


# --------------------------------------------------------------------------------------------------- broker


class Amqpd:
    """amqpd as a subprocess on 127.0.0.1 and a free port, with a fresh data directory; log to a file."""

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        self.log_path = log_path
        self.port = 0
        self._ready = threading.Event()
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "amqpd",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--data-dir",
                str(data_dir),
            ],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        if not self._ready.wait(30) or not self.port:
            self.stop()
            raise SuiteUnavailable(f"amqpd did not start; see {log_path}")

    def _drain(self) -> None:
        assert self._proc.stderr is not None
        with self.log_path.open("w") as out:
            for line in self._proc.stderr:
                out.write(line)
                out.flush()
                match = LISTENING.search(line)
                if match and not self._ready.is_set():
                    self.port = int(match.group(1))
                    self._ready.set()
        self._ready.set()  # exited before listening

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def exit_code(self) -> int | None:
        return self._proc.poll()

    def stop(self) -> int:
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._reader.join(5)
        return self._proc.returncode


# -------------------------------------------------------------------------------------------------- running


def error_line(problem: ET.Element) -> str:
    """One line that says what went wrong: the exception, not the first line of a wrapped traceback."""
    # pytest marks the exception's lines with "E" in the report text; its message attribute may be truncated.
    raised = [line[1:].strip() for line in (problem.text or "").splitlines() if line.startswith("E ")]
    lines = [line for line in raised if line] or [
        line.strip() for line in (problem.get("message") or "").splitlines() if line.strip()
    ]
    if not lines:
        return problem.tag
    # pika's threaded tests re-raise as "AssertionError: Traceback ...": the cause is in its last line.
    chosen = lines[-1] if "Traceback (most recent call last):" in lines[0] else lines[0]
    return chosen[:300]


def parse_junit(path: Path) -> Outcome:
    outcome = Outcome()
    for case in ET.parse(path).getroot().iter("testcase"):
        node = f"{case.get('classname', '')}::{case.get('name', '')}"
        problems = [child for child in case if child.tag in ("failure", "error")]
        skipped = case.find("skipped")
        if problems:
            outcome.failed[node] = error_line(problems[0])
        elif skipped is not None:
            outcome.skipped[node] = (skipped.get("message") or "").strip()
        else:
            outcome.passed.append(node)
    return outcome


def run_pytest(
    python: Path,
    tree: Path,
    targets: Sequence[str],
    extra: Sequence[str],
    env: dict[str, str],
    junit: Path,
    output: Path,
    test_timeout: int,
    total_timeout: int,
    quiet: bool,
) -> int:
    """pytest's exit status (negative: killed by that signal)."""
    command = [
        str(python),
        "-m",
        "pytest",
        *targets,
        "-p",
        "no:cacheprovider",
        "-q",
        "-rfE",
        "-o",
        "log_cli=false",
        f"--junitxml={junit}",
        f"--timeout={test_timeout}",
        f"--session-timeout={total_timeout}",
        *extra,
    ]
    # A hard stop a little after pytest-timeout's own session timeout, which ends the run in order.
    with output.open("wb") as out:
        proc = subprocess.Popen(
            command,
            cwd=tree,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stream = proc.stdout
        assert isinstance(stream, io.BufferedReader)
        killer = threading.Timer(total_timeout + 120, os.killpg, (proc.pid, signal.SIGKILL))
        killer.start()
        try:
            # Chunks, not lines: pytest's progress dots come without a newline for a whole test file.
            for chunk in iter(lambda: stream.read1(65536), b""):
                out.write(chunk)
                out.flush()
                if not quiet:
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()
        finally:
            killer.cancel()
            proc.wait()
    return proc.returncode


def suite_env(url: str, skips: list[tuple[str, str]]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AMQP_URL", "PYTEST_ADDOPTS")}
    env["AMQPD_COMPAT_URL"] = url
    env["AMQPD_COMPAT_SKIPS"] = json.dumps(skips)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"  # progress shows as it happens
    return env


def pytest_problem(status: int, outcome: Outcome, output: Path, total_timeout: int) -> str | None:
    """Why pytest's exit status means a failure that the JUnit XML does not show, if it does."""
    if status == 0 or (status == 1 and outcome.failed):
        return None
    if status == 1:
        text = output.read_text(errors="replace")
        if "session-timeout" in text:
            return f"the suite ran out of its {total_timeout} s and stopped before all tests ran"
        return "pytest exited with status 1 but the JUnit XML records no failed test"
    if status < 0:
        return f"pytest was killed by signal {-status}"
    meaning = {2: "interrupted", 3: "internal error", 4: "usage error", 5: "no tests collected"}
    return f"pytest exited with status {status} ({meaning.get(status, 'unknown status')})"


def run_suite(
    suite: str, args: argparse.Namespace, python: Path, work: Path, results: Path
) -> SuiteResult:
    result = SuiteResult(suite)
    label = args.label or ("amqpd" if args.url is None else "external")
    junit = results / f"{suite}-{label}.xml"
    output = results / f"{suite}-{label}.log"
    junit.unlink(missing_ok=True)  # a reused results dir must not report an earlier run
    suite_work = work / suite
    suite_work.mkdir()
    broker: Amqpd | None = None
    started = time.monotonic()
    try:
        if suite == "pika":
            pika_git_dir()  # before starting a broker for nothing
        if args.url is None:
            data_dir = suite_work / "amqpd-data"
            data_dir.mkdir()
            broker = Amqpd(data_dir, results / f"{suite}-{label}-amqpd.log")
            url = broker.url
            log(f"{suite}: amqpd listening at {url} (log: {broker.log_path})")
        else:
            url = args.url
        parts = urllib.parse.urlsplit(url)
        if suite == "aio-pika":
            tree = prepare_aio_pika(python, suite_work)
            targets: tuple[str, ...] = ("tests",)
            extra: list[str] = []
        else:
            login = (parts.username or "guest", parts.password or "guest", parts.path or "/")
            if login != ("guest", "guest", "/"):
                raise SuiteUnavailable("pika's acceptance tests log in as guest/guest on vhost '/'")
            tree = prepare_pika(suite_work, parts.hostname or "127.0.0.1", parts.port or 5672)
            targets = PIKA_TESTS
            extra = ["-p", "no:aiomisc"]  # pika's tests are unittest-based; aio-pika's loop plugin stays out
        total = args.aio_pika_total_timeout if suite == "aio-pika" else args.pika_total_timeout
        log(f"{suite}: running against {url} (JUnit XML: {junit}, output: {output})")
        status = run_pytest(
            python,
            tree,
            targets,
            [*extra, *args.pytest_args],
            suite_env(url, read_skiplist(suite)),
            junit,
            output,
            args.test_timeout,
            total,
            args.quiet,
        )
    except SuiteUnavailable as exc:
        result.not_run, result.details = str(exc), exc.details
        result.optional = suite == "pika" and not os.environ.get("PIKA_GIT_DIR")
        return result
    finally:
        if broker is not None:
            died = broker.exit_code()
            code = broker.stop()
            if died is not None:
                result.problems.append(f"amqpd exited with code {code} during the suite; see {broker.log_path}")
    log(f"{suite}: took {time.monotonic() - started:.0f} s")
    if not junit.exists():
        result.not_run = f"pytest ended without a JUnit XML file (exit status {status}); see {output}"
        return result
    result.outcome = parse_junit(junit)
    problem = pytest_problem(status, result.outcome, output, total)
    if problem:
        result.problems.append(f"{problem}; see {output}")
    return result


def report(result: SuiteResult, known: Sequence[tuple[str, str]], ci: bool) -> int:
    """Print what a suite's run amounts to, closing with its one-line summary; return its exit status."""
    suite = result.suite
    if result.outcome is None:
        if result.details:
            print(result.details)
        print(f"{suite}: not run: {result.not_run}", flush=True)
        return 0 if result.optional and not ci else 2
    verdict = classify(result.outcome, known)
    for test, reason in sorted(verdict.known.items()):
        print(f"known failure: {suite} {test} ({reason})")
    for test in verdict.known_passed:
        print(f"known failure passed this time: {suite} {test}")
    if verdict.unexpected or result.problems:
        rule = "!" * 100
        print(rule)
        if verdict.unexpected:
            print(
                f"{suite}: {len(verdict.unexpected)} failed test(s) not in "
                f"{KNOWN_FAILURES.relative_to(REPO)} (known to fail on RabbitMQ too):"
            )
        for test, error in sorted(verdict.unexpected.items()):
            print(f"FAILED {suite} {test}\n    {error}")
        for problem in result.problems:
            print(f"FAILED {suite}: {problem}")
        print(rule)
    print(result.outcome.summary(suite), flush=True)
    return 1 if verdict.unexpected or result.problems else 0


# ----------------------------------------------------------------------------------------------------- diff


def diff(baseline: Path, candidate: Path) -> int:
    """Tests that pass in `baseline` and fail in `candidate` (and the reverse), with the error they get."""
    base, cand = parse_junit(baseline), parse_junit(candidate)
    base_passed, cand_passed = set(base.passed), set(cand.passed)
    regressions = sorted(node for node in cand.failed if node in base_passed)
    print(f"pass in {baseline.name}, fail in {candidate.name}: {len(regressions)}")
    for node in regressions:
        print(f"  {node}\n      {cand.failed[node]}")
    gains = sorted(node for node in base.failed if node in cand_passed)
    print(f"fail in {baseline.name}, pass in {candidate.name}: {len(gains)}")
    for node in gains:
        print(f"  {node}\n      {base.failed[node]}")
    differ = sorted(node for node in set(base.skipped) ^ set(cand.skipped))
    if differ:
        print(f"skipped in one run only: {len(differ)}")
        for node in differ:
            print(f"  {node}: {base.skipped.get(node) or cand.skipped.get(node)}")
    return 1 if regressions else 0


# ----------------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="run against this broker instead of a fresh amqpd per suite")
    parser.add_argument("--suite", choices=("aio-pika", "pika", "all"), default="all")
    parser.add_argument(
        "--results", type=Path, help="directory for JUnit XML and logs (default: a new temp dir)"
    )
    parser.add_argument(
        "--label", help="file name label of the results (default: amqpd, or external with --url)"
    )
    parser.add_argument("--test-timeout", type=int, default=60, help="seconds per test (pytest-timeout)")
    parser.add_argument(
        "--aio-pika-total-timeout", type=int, default=1500, help="seconds for the aio-pika suite"
    )
    parser.add_argument("--pika-total-timeout", type=int, default=600, help="seconds for the pika suite")
    parser.add_argument("--keep", action="store_true", help="keep the unpacked suites in the work dir")
    parser.add_argument("--quiet", action="store_true", help="print only the summary lines")
    parser.add_argument(
        "--ci",
        action="store_true",
        help="every selected suite must run: pika without PIKA_GIT_DIR is an error (exit status 2)",
    )
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments, after --")
    return parser.parse_args(argv)


@dataclass
class WorkDir:
    path: Path
    keep: bool

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc: object) -> None:
        if self.keep:
            log(f"kept the unpacked suites in {self.path}")
        else:
            shutil.rmtree(self.path, ignore_errors=True)


def suites(choice: str) -> Iterator[str]:
    # One after the other, never at once: both suites use fixed queue names.
    yield from (("aio-pika", "pika") if choice == "all" else (choice,))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["diff"]:
        if len(argv) != 3:
            print("usage: run.py diff BASELINE.xml CANDIDATE.xml", file=sys.stderr)
            return 2
        return diff(Path(argv[1]), Path(argv[2]))
    args = parse_args(argv)
    known = {suite: read_known_failures(suite) for suite in suites(args.suite)}  # a typo fails before the run
    results = args.results or Path(tempfile.mkdtemp(prefix="amqpd-compat-results-"))
    results.mkdir(parents=True, exist_ok=True)
    try:
        python = ensure_venv()
    except SuiteUnavailable as exc:
        if exc.details:
            print(exc.details)
        return max(report(SuiteResult(suite, not_run=str(exc)), [], args.ci) for suite in suites(args.suite))
    with WorkDir(Path(tempfile.mkdtemp(prefix="amqpd-compat-")), args.keep) as work:
        outcomes = [run_suite(suite, args, python, work, results) for suite in suites(args.suite)]
    log(f"results in {results}")
    # The suites' closing lines come last, so that they end the output.
    return max(report(result, known[result.suite], args.ci) for result in outcomes)


if __name__ == "__main__":
    sys.exit(main())
