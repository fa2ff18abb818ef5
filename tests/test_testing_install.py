"""End to end, as a user gets the pytest plugin: a fresh virtualenv, ``pip install`` of this checkout (plus pytest,
pytest-asyncio, aio-pika and pika from the package index pip is configured with), and pytest run in a directory
holding nothing but README.md's example application and its tests (one async test with aio-pika, one sync
test with pika).

About a minute, and it needs a package index: `make test` skips it; `make test-plugin-install` (and so
.ci/run) runs it by setting AMQPD_TEST_PLUGIN_INSTALL=1.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import REPO_ROOT

ENV_SWITCH = "AMQPD_TEST_PLUGIN_INSTALL"
# What `pip install <checkout>` needs: the build's inputs, without the checkout's virtualenv, caches and tests.
SOURCES = ("pyproject.toml", "README.md", "amqpd", "broker", "protocol", "storage", "benchmarks")
CLIENTS = ("pytest", "pytest-asyncio", "aio-pika", "pika")

needs_install = pytest.mark.skipif(
    os.environ.get(ENV_SWITCH) != "1",
    reason=f"installs amqpd into a fresh virtualenv (about a minute); `make test-plugin-install` or {ENV_SWITCH}=1",
)


def readme_example() -> dict[str, str]:
    """The files of README.md's "Testing your application" example: Python blocks whose first line is `# NAME.py`."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("## Testing your application", 1)[1].split("\n## ", 1)[0]
    files: dict[str, str] = {}
    for block in re.findall(r"```python\n(.*?)```", section, re.DOTALL):
        first = block.splitlines()[0]
        match = re.fullmatch(r"# (\w+\.py)", first)
        if match:
            files[match.group(1)] = block
    return files


def test_the_readme_example_is_an_application_and_its_tests() -> None:
    # Not skipped in `make test`: the example the slow test runs is still where it looks for it.
    files = readme_example()
    assert set(files) == {"app.py", "test_app.py"}
    assert "aio_pika" in files["app.py"] and "pika.BlockingConnection" in files["app.py"]
    assert "amqp_url" in files["test_app.py"] and "@pytest.mark.asyncio" in files["test_app.py"]


def clean_env() -> dict[str, str]:
    """This environment without what would leak the checkout or its test settings into the user's run."""
    drop = {"PYTHONPATH", "PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD", "VIRTUAL_ENV"}
    drop.add("AMQP_URL")
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("AMQPD_")}


def run(command: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.mark.slow
@pytest.mark.timeout(900)
@needs_install
def test_pip_install_gives_an_application_suite_a_broker(tmp_path: Path) -> None:
    source = tmp_path / "amqpd-source"
    source.mkdir()
    for name in SOURCES:
        path = REPO_ROOT / name
        if path.is_dir():
            shutil.copytree(
                path,
                source / name,
                symlinks=True,  # amqpd/'s links to the other folders stay links, as in a git checkout
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "results"),
            )
        else:
            shutil.copy2(path, source / name)

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], tmp_path, 120)
    python = venv / ("Scripts" if os.name == "nt" else "bin") / "python"
    pip_install = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    run([*pip_install, str(source), *CLIENTS], tmp_path, 600)

    project = tmp_path / "project"
    project.mkdir()
    for name, code in readme_example().items():
        (project / name).write_text(code)
    assert sorted(os.listdir(project)) == ["app.py", "test_app.py"]

    done = run([str(python), "-m", "pytest", "-v", "-p", "no:cacheprovider"], project, 300)
    assert re.search(r"\b2 passed\b", done.stdout), done.stdout
    assert "test_app.py::test_an_order_is_queued PASSED" in done.stdout
    assert "test_app.py::test_orders_are_taken_in_order PASSED" in done.stdout
    # The installed amqpd served them, not this checkout.
    where = run([str(python), "-c", "import amqpd.broker.testing as t; print(t.__file__)"], project, 60)
    assert str(venv) in where.stdout
    # One import name: an application's own package called `storage` (or broker, protocol, benchmarks) is
    # neither shadowed by amqpd nor shadows it.
    (project / "storage").mkdir()
    (project / "storage" / "__init__.py").write_text('OWNER = "the application"\n')
    probe = (
        "import importlib.util, storage, amqpd.storage\n"
        "assert storage.OWNER == 'the application', storage.__file__\n"
        "assert amqpd.storage.Store is not None\n"
        "assert [n for n in ('broker', 'protocol', 'benchmarks') if importlib.util.find_spec(n)] == []\n"
        "print('both imported')\n"
    )
    both = run([str(python), "-c", probe], project, 60)
    assert "both imported" in both.stdout
