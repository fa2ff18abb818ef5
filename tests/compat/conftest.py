"""tests/compat holds a runner for the client libraries' own suites, not tests of this project: the project's
pytest run (``make test``, ``python -m pytest``) collects nothing here. Run it with ``make compat``."""

collect_ignore_glob = ["*"]
