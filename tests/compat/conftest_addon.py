"""Appended by run.py to the conftest.py of a client library's unpacked test tree (never used in place).

It points the suite at the broker under test and applies the reviewed skip list:
- ``AMQPD_COMPAT_URL``: the broker, e.g. ``amqp://guest:guest@127.0.0.1:5672/``.
- ``AMQPD_COMPAT_SKIPS``: a JSON list of ``[pattern, reason]`` pairs read from skiplist.txt for this suite.
  A pattern is an fnmatch glob on the test's node id, or ``fixture:NAME`` for a fixture whose tests need
  infrastructure only the library's own CI has (they are skipped when they ask for it, with that reason).

Being appended at the end of the suite's conftest, the definitions below replace the suite's own ones of the
same name: aio-pika's Docker check at configure time and its Docker-started RabbitMQ fixtures.
"""

import fnmatch as _amqpd_fnmatch
import json as _amqpd_json
import os as _amqpd_os
import urllib.parse as _amqpd_urlparse

import pytest as _amqpd_pytest

_AMQPD_SKIPS = [tuple(pair) for pair in _amqpd_json.loads(_amqpd_os.environ.get("AMQPD_COMPAT_SKIPS", "[]"))]


def _amqpd_fixture_skip(name):
    for pattern, reason in _AMQPD_SKIPS:
        if pattern == "fixture:" + name:
            _amqpd_pytest.skip(reason)
    # Not in the reviewed list: fail loudly rather than quietly run without the infrastructure.
    _amqpd_pytest.fail(f"fixture {name!r} needs the suite's own infrastructure and is not in skiplist.txt")


def pytest_configure(config):
    # Replaces aio-pika's check that Docker is available: the broker under test is already running.
    pass


def pytest_collection_modifyitems(session, config, items):
    for item in items:
        for pattern, reason in _AMQPD_SKIPS:
            if not pattern.startswith("fixture:") and _amqpd_fnmatch.fnmatchcase(item.nodeid, pattern):
                item.add_marker(_amqpd_pytest.mark.skip(reason=reason))
                break


@_amqpd_pytest.fixture(scope="session")
def docker():
    _amqpd_fixture_skip("docker")


@_amqpd_pytest.fixture(scope="session")
def rabbitmq_container():
    _amqpd_fixture_skip("rabbitmq_container")


@_amqpd_pytest.fixture(scope="session")
def amqp_direct_url():
    from yarl import URL

    parts = _amqpd_urlparse.urlsplit(_amqpd_os.environ["AMQPD_COMPAT_URL"])
    vhost = _amqpd_urlparse.unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    # aio-pika's own fixture spells the default vhost as path "//"; the URL path is "/" + vhost.
    return URL.build(
        scheme="amqp",
        user=_amqpd_urlparse.unquote(parts.username or "guest"),
        password=_amqpd_urlparse.unquote(parts.password or "guest"),
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5672,
        path="/" + vhost,
    )
