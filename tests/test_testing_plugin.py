"""The ``amqpd`` pytest plugin (broker/testing/plugin.py), run the way an application's suite runs it: pytester
writes a small test suite into a temporary directory and runs pytest on it, with the plugin loaded through its
``pytest11`` entry point like any installed plugin."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib.metadata import entry_points

# aio_pika, pika and the broker are imported here, not first inside the runs below: pytester unloads what a run
# imported, and the next run would import (and compile) it all again.
import aio_pika  # noqa: F401
import pika  # noqa: F401
import pytest

import amqpd.broker.server.cli
import amqpd.broker.server.server
import amqpd.broker.testing.embedded
import amqpd.broker.testing.plugin  # noqa: F401

pytest_plugins = ["pytester"]

INI = """\
[pytest]
asyncio_default_fixture_loop_scope = function
asyncio_default_test_loop_scope = function
{extra}
"""


def write_suite(pytester: pytest.Pytester, code: str, ini: str = "") -> None:
    pytester.makeini(INI.format(extra=ini))
    pytester.makepyfile(test_app=textwrap.dedent(code))


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", "-p", "no:hypothesispytest", *args)


# ------------------------------------------------------------------------------------------------ wiring


def test_installing_amqpd_registers_the_plugin() -> None:
    (plugin,) = [ep for ep in entry_points(group="pytest11") if ep.name == "amqpd"]
    assert plugin.value == "amqpd.broker.testing.plugin"


def test_loading_the_plugin_imports_no_broker_code() -> None:
    # pytest loads it in every project where amqpd is installed: a suite without broker tests must not pay.
    code = (
        "import sys, amqpd.broker.testing.plugin; "
        "tops = {'amqpd', 'broker', 'storage', 'protocol', 'pamqp'}; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in tops))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert done.stdout.strip() == "['amqpd', 'amqpd.broker', 'amqpd.broker.testing', 'amqpd.broker.testing.plugin']"


def test_the_options_are_listed_in_help(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI.format(extra=""))
    result = run(pytester, "--help")
    result.stdout.fnmatch_lines(
        ["*--amqpd-scope=*", "*--amqpd-store=*", "*--amqpd-log-level=*", "*--amqpd-leak-check*", "*amqpd_scope*"]
    )


# ------------------------------------------------------------------------------------------------ the fixtures


def test_sync_and_async_tests_get_a_broker(pytester: pytest.Pytester) -> None:
    write_suite(
        pytester,
        """
        import aio_pika
        import pika
        import pytest


        def test_pika(amqpd_broker, amqp_url):
            assert amqp_url == amqpd_broker.url == f"amqp://guest:guest@127.0.0.1:{amqpd_broker.port}/"
            connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
            channel = connection.channel()
            channel.queue_declare("emails")
            channel.basic_publish("", "emails", b"hello")
            connection.close()
            assert amqpd_broker.queue_depth("emails") == 1
            assert amqpd_broker.queues() == {"emails": 1}


        @pytest.mark.asyncio
        async def test_aio_pika(amqpd_broker, amqp_url):
            async with await aio_pika.connect(amqp_url) as connection:
                channel = await connection.channel()
                queue = await channel.declare_queue("emails")
                await channel.default_exchange.publish(aio_pika.Message(b"hi"), routing_key="emails")
                assert amqpd_broker.queue_depth("emails") == 1  # a fresh broker: nothing from test_pika
                message = await queue.get(timeout=5)
                await message.ack()
            assert amqpd_broker.queues() == {"emails": 0}


        @pytest.mark.asyncio(loop_scope="module")
        async def test_aio_pika_on_a_module_loop(amqp_url):
            async with await aio_pika.connect(amqp_url) as connection:
                channel = await connection.channel()
                await channel.declare_queue("q", auto_delete=True)
        """,
    )
    run(pytester).assert_outcomes(passed=3)


def test_function_scope_gives_each_test_its_own_broker(pytester: pytest.Pytester) -> None:
    write_suite(
        pytester,
        """
        import socket

        import pika

        seen = []


        def declare(url):
            connection = pika.BlockingConnection(pika.URLParameters(url))
            connection.channel().queue_declare("leftover")
            connection.close()


        def test_one(amqpd_broker, amqp_url):
            seen.append((amqpd_broker, amqpd_broker.port))
            declare(amqp_url)


        def test_two(amqpd_broker):
            (first, first_port), = seen
            assert first is not amqpd_broker
            assert amqpd_broker.queues() == {}  # nothing of test_one's
            with socket.socket() as s:
                assert s.connect_ex(("127.0.0.1", first_port)) != 0  # test_one's broker has been stopped
        """,
    )
    run(pytester).assert_outcomes(passed=2)


SHARED_BROKER_SUITE = """
    import pika
    import pytest

    ports = []


    def test_one(amqpd_broker, amqp_url):
        ports.append(amqpd_broker.port)
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        channel = connection.channel()
        channel.queue_declare("shared")
        channel.basic_publish("", "shared", b"kept for test_two")
        connection.close()


    @pytest.mark.asyncio
    async def test_two(amqpd_broker, amqpd_broker_session):
        ports.append(amqpd_broker.port)
        assert ports[0] == ports[1]
        assert amqpd_broker is amqpd_broker_session  # one session broker, whichever fixture names it
        assert amqpd_broker.queue_depth("shared") == 1
"""


def test_session_scope_from_the_ini_file_shares_one_broker(pytester: pytest.Pytester) -> None:
    write_suite(pytester, SHARED_BROKER_SUITE, ini="amqpd_scope = session")
    run(pytester).assert_outcomes(passed=2)


def test_session_scope_from_the_command_line_shares_one_broker(pytester: pytest.Pytester) -> None:
    write_suite(pytester, SHARED_BROKER_SUITE)
    run(pytester, "--amqpd-scope", "session").assert_outcomes(passed=2)


def test_the_session_broker_fixture_lives_across_function_scoped_tests(pytester: pytest.Pytester) -> None:
    write_suite(
        pytester,
        """
        import pytest

        ports = []


        @pytest.fixture(scope="session")
        def session_url(amqpd_broker_session):
            return amqpd_broker_session.url  # a session fixture of the application may build on it


        @pytest.mark.parametrize("n", [1, 2])
        def test_session_broker(amqpd_broker_session, amqpd_broker, session_url, n):
            ports.append(amqpd_broker_session.port)
            assert amqpd_broker is not amqpd_broker_session  # amqpd_scope is function: a broker of its own
            assert session_url == amqpd_broker_session.url
            assert len(set(ports)) == 1
        """,
    )
    run(pytester).assert_outcomes(passed=2)


def test_the_embedded_store_and_the_log_level_are_options(pytester: pytest.Pytester) -> None:
    write_suite(
        pytester,
        """
        import logging
        import os


        def test_store(amqpd_broker):
            assert amqpd_broker.config.store == ""  # amqpd's embedded store, in a temporary data directory
            assert os.path.isdir(amqpd_broker.data_dir)
            assert logging.getLogger("amqpd").level == logging.INFO
        """,
        ini="amqpd_log_level = info",
    )
    run(pytester, "--amqpd-store=embedded").assert_outcomes(passed=1)


def test_the_defaults_are_memory_and_warning(pytester: pytest.Pytester) -> None:
    write_suite(
        pytester,
        """
        import logging


        def test_defaults(amqpd_broker):
            assert amqpd_broker.config.store == "memory://"
            assert logging.getLogger("amqpd").level == logging.WARNING
        """,
    )
    run(pytester).assert_outcomes(passed=1)


def test_amqpd_config_adds_broker_settings(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest


        @pytest.fixture(scope="session")
        def amqpd_config():
            return {"user": "app", "password": "secret", "vhost": "app", "heartbeat": 7}
        """
    )
    write_suite(
        pytester,
        """
        import pika


        def test_settings(amqpd_broker, amqp_url):
            assert amqp_url.startswith("amqp://app:secret@127.0.0.1:") and amqp_url.endswith("/app")
            assert amqpd_broker.config.heartbeat == 7
            connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
            connection.channel().queue_declare("q")
            connection.close()
            assert amqpd_broker.queues(vhost="app") == {"q": 0}
        """,
    )
    run(pytester).assert_outcomes(passed=1)


def test_a_conftest_fixture_of_the_same_name_wins_over_the_plugin(pytester: pytest.Pytester) -> None:
    # What keeps this repository's own tests/conftest.py (which has its own amqp_url) working unchanged.
    pytester.makeconftest(
        """
        import pytest


        @pytest.fixture
        def amqp_url():
            return "amqp://elsewhere/"
        """
    )
    write_suite(
        pytester,
        """
        def test_url(amqp_url):
            assert amqp_url == "amqp://elsewhere/"
        """,
    )
    run(pytester).assert_outcomes(passed=1)


def test_a_bad_option_value_stops_the_run_with_one_line(pytester: pytest.Pytester) -> None:
    write_suite(pytester, "def test_nothing(): pass\n", ini="amqpd_store = disk")
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*amqpd_store must be one of memory, embedded, got 'disk'*"])


# ------------------------------------------------------------------------------------------------ leak check

LEAKY_SUITE = """
    import contextlib

    import pika

    import amqpd.broker.testing.plugin

    amqpd.broker.testing.plugin.LEAK_DEADLINE = 0.2  # not the default 5 s: nothing will close it
    left_open = []


    def test_forgets_to_close(amqp_url):
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        connection.channel()
        left_open.append(connection)


    def teardown_module():
        # After the broker's teardown (and its check): close the socket, so that no ResourceWarning follows.
        for connection in left_open:
            with contextlib.suppress(Exception):
                connection.close()
"""


def test_the_leak_check_is_off_by_default(pytester: pytest.Pytester) -> None:
    write_suite(pytester, LEAKY_SUITE)
    run(pytester).assert_outcomes(passed=1)


def test_the_leak_check_reports_what_a_test_left_open(pytester: pytest.Pytester) -> None:
    write_suite(pytester, LEAKY_SUITE)
    result = run(pytester, "--amqpd-leak-check")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*amqpd leak check: still open on the broker after 0.2 s: {'connections': 1, *"])


def test_the_leak_check_passes_a_test_that_closes_what_it_opens(pytester: pytest.Pytester) -> None:
    write_suite(
        pytester,
        """
        import pika


        def test_tidy(amqp_url):
            pika.BlockingConnection(pika.URLParameters(amqp_url)).close()
        """,
        ini="amqpd_leak_check = true",
    )
    run(pytester).assert_outcomes(passed=1)
