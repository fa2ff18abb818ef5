# amqpd developer commands. `make run` starts a broker on :5672, `make test` runs the whole suite.
# The virtualenv lives in .venv and is (re)installed only when pyproject.toml is newer than its stamp file.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
# Stamps record what was installed into the venv; pyproject.toml changes make them stale.
RUN_STAMP      := $(VENV)/.amqpd-installed
DEV_STAMP      := $(VENV)/.amqpd-installed-dev
EXAMPLES_STAMP := $(VENV)/.amqpd-installed-examples

PORT       ?= 5672
DATA_DIR   ?= ./data
BENCH_ARGS ?= suite --quick
# make demo: where the topology diagram goes, and the e-commerce flow's flags (examples/amqp_client.py --help).
DEMO_DIR   ?= build/demo
DEMO_ARGS  ?= --orders 8 --users 3 --timeout 60
# test-reference: a rabbitmqctl command line for the reference broker; when set, the access tests' definitions
# (tests/fixtures/access) are imported into it first, e.g. REFERENCE_CTL="rabbitmqctl -n reference@localhost".
REFERENCE_CTL ?=

.DEFAULT_GOAL := help
.PHONY: help run test test-plugin-install lint test-reference require-amqp-url bench compat demo clean-venv

help:
	@echo "make run             start amqpd on port $(PORT) with data in $(DATA_DIR)"
	@echo "make test            run the whole test suite (in-process broker, both event loops)"
	@echo "make test-plugin-install  the pytest plugin end to end: fresh venv, pip install of this checkout, pytest on"
	@echo "                     README's example (about a minute; needs a package index; make test skips it)"
	@echo "make lint            ruff check + mypy --strict"
	@echo "make test-reference  run the integration tests against AMQP_URL (e.g. a real RabbitMQ); with"
	@echo "                     REFERENCE_CTL='rabbitmqctl -n NODE' it first loads tests/fixtures/access/definitions.json"
	@echo "make bench           run the benchmark scenarios (BENCH_ARGS='$(BENCH_ARGS)')"
	@echo "make compat          aio-pika's and pika's own test suites against amqpd (COMPAT_ARGS, PIKA_GIT_DIR)"
	@echo "make demo            the examples: a broker with the e-commerce topology, its message flow, and the"
	@echo "                     topology diagram in $(DEMO_DIR) (DEMO_ARGS='$(DEMO_ARGS)')"

$(PY):
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -e '.[dev]'
	touch $@ $(RUN_STAMP) $(EXAMPLES_STAMP)

# The dev extras include everything the examples need.
$(EXAMPLES_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -e '.[examples]'
	touch $@ $(RUN_STAMP)

run: $(RUN_STAMP)
	$(BIN)/amqpd --port $(PORT) --data-dir $(DATA_DIR)

test: $(DEV_STAMP)
	$(PY) -m pytest

# tests/test_testing_install.py skips itself unless AMQPD_TEST_PLUGIN_INSTALL=1.
test-plugin-install: $(DEV_STAMP)
	AMQPD_TEST_PLUGIN_INSTALL=1 $(PY) -m pytest tests/test_testing_install.py

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test-reference: require-amqp-url $(DEV_STAMP)
	@if [ -n "$(REFERENCE_CTL)" ]; then \
		REFERENCE_CTL="$(REFERENCE_CTL)" bash tests/fixtures/access/load-into-reference.sh; \
	fi
	$(PY) -m pytest -m integration

require-amqp-url:
	@if [ -z "$$AMQP_URL" ]; then \
		echo "make test-reference: set AMQP_URL, e.g. AMQP_URL=amqp://guest:guest@127.0.0.1:5672/ make test-reference" >&2; \
		exit 2; \
	fi

bench: $(DEV_STAMP)
	$(PY) -m amqpd.benchmarks $(BENCH_ARGS)

# aio-pika's and pika's own test suites against a fresh amqpd (see tests/compat/README.md); pika's part needs
# PIKA_GIT_DIR. COMPAT_ARGS e.g. '--url amqp://guest:guest@127.0.0.1:5682/' or '--suite pika --results DIR'.
compat: $(DEV_STAMP)
	$(PY) tests/compat/run.py $(COMPAT_ARGS)

# The example broker (in-process amqpd, nothing persisted) on a free port in the background; the e-commerce flow
# against it (bounded by DEMO_ARGS' counts and --timeout); the diagram; then Ctrl-C (SIGINT) to the broker.
demo: $(EXAMPLES_STAMP)
	@log=$$(mktemp); \
	$(PY) examples/amqp_broker.py --host 127.0.0.1 --port 0 --store memory:// >$$log 2>&1 & broker=$$!; \
	trap 'kill -INT $$broker 2>/dev/null; wait $$broker; sed -n "/SIGINT/,\$$p" $$log; rm -f $$log' EXIT; \
	until grep -q "Press Ctrl-C" $$log; do \
		if ! kill -0 $$broker 2>/dev/null; then cat $$log; exit 1; fi; sleep 0.1; \
	done; \
	cat $$log; echo; \
	url=$$(sed -n 's/.* is listening on \(amqp:[^ ]*\).*/\1/p' $$log); \
	AMQP_URL=$$url $(PY) examples/amqp_client.py $(DEMO_ARGS) && \
	echo && $(PY) examples/render_diagram.py --output-dir $(DEMO_DIR)

clean-venv:
	rm -rf $(VENV)
