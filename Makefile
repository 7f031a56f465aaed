# Two commands do all the set-up on a fresh machine (Java 17, Maven, Python 3.11, make):
#   make demo   - local Kafka broker + worker + demo feed, verdicts printed as they arrive
#   make test   - lint, types, unit tests and end-to-end tests against a real Kafka broker
# Both create .venv and install the project into it on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Two layers: what the worker runs on (the image installs it) and, with the same versions of
# those, the dev tools on top (.venv installs it).
LOCK     := requirements.lock
DEV_LOCK := requirements-dev.lock
# Locking and auditing tools live in a venv of their own: they are not the project's dependencies.
TOOLS_VENV := .venv-tools
TOOLS_BIN  := $(TOOLS_VENV)/bin
PIP_TOOLS_VERSION := 7.6.2
PIP_AUDIT_VERSION := 2.10.1
DEMO_ARGS ?=
SOAK_RUNS ?= 20
SOAK_TESTS ?= tests/integration/test_faults.py

.PHONY: demo test lint tools unit integration install clean bench bench-quick fuzz soak chaos lock audit

# Every install takes exactly the versions and hashes in $(DEV_LOCK), so CI tests what was
# locked; `pip check` then fails if pyproject.toml asks for something the lock lacks.
$(STAMP): pyproject.toml $(DEV_LOCK)
	@$(PYTHON) -c 'import sys; sys.exit("Python >= 3.11 is required, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes -r $(DEV_LOCK)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	$(BIN)/python -m pip check || (echo "pyproject.toml needs what the locks lack: run make lock" >&2; exit 1)
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
	rm -rf $(VENV) $(TOOLS_VENV) .mypy_cache .ruff_cache .pytest_cache

$(TOOLS_BIN)/pip-audit:
	$(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_BIN)/python -m pip install --quiet --disable-pip-version-check \
		pip-tools==$(PIP_TOOLS_VERSION) pip-audit==$(PIP_AUDIT_VERSION)

# Pin every dependency with its hashes, at the newest versions pyproject.toml allows.
PIP_COMPILE := CUSTOM_COMPILE_COMMAND="make lock" $(TOOLS_BIN)/pip-compile --quiet \
	--upgrade --generate-hashes --allow-unsafe --strip-extras --no-emit-find-links
lock: $(TOOLS_BIN)/pip-audit
	$(PIP_COMPILE) --output-file $(LOCK) pyproject.toml
	$(PIP_COMPILE) --extra dev --constraint $(LOCK) --output-file $(DEV_LOCK) pyproject.toml

# Known vulnerabilities in the locked dependencies. Needs a vulnerability service (PyPI's JSON
# API or OSV); --strict fails when a package could not be checked rather than passing it.
audit: $(TOOLS_BIN)/pip-audit
	$(TOOLS_BIN)/pip-audit --strict --disable-pip --require-hashes -r $(DEV_LOCK)

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

# The fault tests (kill, broker restart, rebalance, ...) SOAK_RUNS times, each on a new broker;
# stops at the first failure. Every run's worker logs stay in .soak/run-N/.
soak: $(STAMP)
	$(BIN)/python -m localkafka --fetch-only
	rm -rf .soak && mkdir .soak
	for run in $$(seq 1 $(SOAK_RUNS)); do \
		echo "soak run $$run of $(SOAK_RUNS)"; \
		$(BIN)/pytest -q -p no:cacheprovider --basetemp=.soak/run-$$run $(SOAK_TESTS) \
			|| { echo "soak: run $$run failed; its worker logs are in .soak/run-$$run" >&2; exit 1; }; \
	done

# Chaos under load (tests/integration/test_chaos.py) for CHAOS_MINUTES minutes: kills mid
# fan-out, a worker joining and leaving, broker restarts and wiped stores at random moments,
# judged by the pure rules. The seed is printed; CHAOS_SEED=<seed> repeats a run. `make test`
# runs a 1.5-minute variant. Worker logs stay in .chaos/.
CHAOS_MINUTES ?= 30
CHAOS_SEED ?=
chaos: $(STAMP)
	$(BIN)/python -m localkafka --fetch-only
	rm -rf .chaos && mkdir .chaos
	CHAOS_MINUTES=$(CHAOS_MINUTES) CHAOS_SEED=$(CHAOS_SEED) $(BIN)/pytest -q -s -p no:cacheprovider \
		--basetemp=.chaos tests/integration/test_chaos.py
