# `make run` and `make test` set up everything they need from the lock files, then run.
# The lock holds every extra: the tools' (psutil, matplotlib) and dev's, which the tests need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RESTATE_SERVER := node_modules/@restatedev/restate-server/package.json
# pip.conf on some machines adds local wheel folders whose builds do not match the locked hashes.
PIP := $(BIN)/python -m pip --isolated --disable-pip-version-check --cert /etc/ssl/certs/ca-certificates.crt

.PHONY: run run-cluster check unit test bench bench-quick wrk chromium setup lock clean

run: setup
	$(BIN)/payments up

# Three restate-server nodes on loopback (ingress 8080-8082), with data of their own: docs/deployment.md.
run-cluster: setup
	$(BIN)/payments up --nodes 3 --data-dir .restate-cluster

# Fast feedback: the linters and the type checker, then the unit tests (no server); seconds each.
check: setup
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest tests/unit

# The full gate, which .ci/run calls: with the storms, minutes (`pytest -m "not slow"` leaves them out).
test: check chromium
	$(BIN)/pytest

# Benchmarks are not tests: they print numbers and write results/bench.json and results/bench.png.
bench: setup wrk
	$(BIN)/payments bench

bench-quick: setup wrk
	$(BIN)/payments bench --quick

# wrk, the load generator, comes from Debian's packages.
wrk:
	@command -v wrk >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk)

# Chromium, which the console's browser tests drive through Playwright, comes from Debian's packages:
# not pinned to a version, because Debian's security archive keeps only the newest build of it.
chromium:
	@test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

setup: $(VENV)/.installed $(RESTATE_SERVER)

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --require-hashes --no-deps -r requirements.lock
	$(PIP) install --quiet --no-deps --no-build-isolation --editable .
	touch $@

$(RESTATE_SERVER): package-lock.json
	npm ci --no-audit --no-fund --ignore-scripts
	touch $@

# Regenerate requirements.lock after changing the dependencies in pyproject.toml.
lock: $(VENV)/.installed
	$(PIP) install --quiet uv
	$(BIN)/uv pip compile pyproject.toml requirements-build.in --extra dev --extra tools --generate-hashes \
		--python-version 3.11 --no-header -o requirements.lock

clean:
	rm -rf $(VENV) node_modules .restate-data .restate-cluster
