# The commands of the README: `make run`, `make test` and `make bench`. Each sets up what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# apt-get through sudo only when not root and sudo is there
SUDO := $(shell [ "$$(id -u)" = 0 ] || ! command -v sudo >/dev/null || echo sudo)

.PHONY: run test bench lint clean

$(BIN)/portal-gateway: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

## run the gateway on the bundled gateway.yaml (dev certificates, dev secrets, demo data)
run: $(BIN)/portal-gateway
	$(BIN)/portal-gateway serve

## set up, lint, type-check and run the whole test suite
# (the browser tests drive Debian's chromium, installed here when missing: Playwright never downloads a browser;
# the probe tests put Debian's nginx in front of the gateway as the CDN; tests/e2e/test_wheel.py compiles with gcc;
# the PostgreSQL store's tests start a throwaway server from Debian's postgresql binaries, never its system service)
test: $(BIN)/portal-gateway
	$(BIN)/ruff check gateway routes tests bench setup.py
	$(BIN)/ruff format --check gateway routes tests bench setup.py
	$(BIN)/mypy
	[ -x /usr/bin/chromium ] || ($(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium)
	command -v gcc >/dev/null || ($(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gcc libc6-dev)
	[ -x /usr/sbin/nginx ] || ($(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx)
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ($(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql)
	$(BIN)/pytest

## the gateway beside nginx, nginx + auth_request and a minimal proxy, on loopback (installs nginx and wrk when missing)
bench: $(BIN)/portal-gateway
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache test-artifacts
