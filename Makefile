# Two commands do all the set-up on a fresh machine (Java 17, Maven, Python 3.11, make):
#   make demo   - local Kafka broker + worker + demo feed, verdicts printed as they arrive
#   make test   - lint, types, unit tests and end-to-end tests against a real Kafka broker
# Both create .venv and install the project into it on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO_ARGS ?=

.PHONY: demo test lint tools unit integration install clean bench bench-quick fuzz

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("Python >= 3.11 is required, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/ccc-guard demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Prometheus's promtool checks and unit-tests deploy/prometheus/alerts.yml, and the integration
# tier runs a real Prometheus against real workers (tests/integration/test_prometheus.py).
tools:
	command -v promtool >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null)

unit: $(STAMP)
	$(BIN)/pytest tests/unit

integration: $(STAMP) tools
	$(BIN)/python -m localkafka --fetch-only
	$(BIN)/pytest tests/integration

test: lint tools
	promtool check rules deploy/prometheus/alerts.yml
	promtool test rules deploy/prometheus/alerts_test.yml
	$(BIN)/python -m localkafka --fetch-only
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# Performance: the benchmark suite on the real local broker (not part of `make test`).
bench: $(STAMP)
	$(BIN)/python -m localkafka --fetch-only
	$(BIN)/python -m bench

bench-quick: $(STAMP)
	$(BIN)/python -m localkafka --fetch-only
	$(BIN)/python -m bench --quick

# A long property-based fuzz run of the codecs, validation, rules and replay (20,000 examples
# per property; about half an hour). `make test` runs the same properties with a small budget.
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest tests/unit/test_properties.py
