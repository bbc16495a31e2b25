# Two commands set up everything: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config.example.toml

.PHONY: run test test-sqlite test-postgresql check lint types bench install install-test browser dovecot clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[bench]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

var/demo.xml:
	mkdir -p var
	cp examples/feeds/demo.xml $@

run: install var/demo.xml
	$(BIN)/tidings serve --config $(CONFIG)

# Debian's Chromium drives the browser tests; a test tool's own download does not work here.
browser:
	@command -v chromium >/dev/null || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# Dovecot is the real IMAP server the mailbox tests start on loopback (never as a service).
dovecot:
	@command -v dovecot >/dev/null || { \
	  echo "installing Debian's dovecot-imapd for the mailbox tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dovecot-imapd >/dev/null; }

# Every test runs twice, both passes at once (most of a pass waits on servers):
# on SQLite (the embedded default) and on the machine's PostgreSQL (in fresh
# databases it drops; tests/stores.py). Without a PostgreSQL server the second
# pass is skipped with the reason, except in CI (TIDINGS_REQUIRE_SERVERS).
test: install-test browser dovecot
	@$(MAKE) --no-print-directory -j2 --output-sync=target test-sqlite test-postgresql

PYTEST := TIDINGS_DISABLE_PLUGINS=1 $(BIN)/pytest -q -p no:cacheprovider

test-sqlite: install-test
	@echo "--- every test on SQLite"
	$(PYTEST)

test-postgresql: install-test
	@if $(BIN)/python -m tests.stores; then \
	  echo "--- every test on PostgreSQL"; \
	  TIDINGS_TEST_STORE=postgresql $(PYTEST); \
	elif [ -n "$$TIDINGS_REQUIRE_SERVERS" ]; then exit 1; \
	else echo "skipped the PostgreSQL pass: no server (see above; TIDINGS_TEST_PG names one)"; fi

lint: install-test
	$(BIN)/ruff check aggregator connectors web tests bench
	$(BIN)/ruff format --check aggregator connectors web tests bench

types: install-test
	$(BIN)/mypy

check: lint types test

# Each bench prints its figures with a ratio to its peer or floor; see docs/benchmarks.md.
# The feed benches take about 15 minutes: bench.feeds 5, its 10,000-source round 7,
# bench.hostile 1.5 (its drip lasts 10 minutes but costs the round [http] total_timeout, 60 s);
# bench.jsonapi and bench.hooks about a minute each.
bench: $(VENV)/.installed-bench dovecot
	$(BIN)/python -m bench.feeds
	$(BIN)/python -m bench.feeds --feeds 10000 --items 3-5 --sides tidings,reader --runs 1
	$(BIN)/python -m bench.hostile
	$(BIN)/python -m bench.jsonapi
	$(BIN)/python -m bench.hooks
	$(BIN)/python -m bench.history
	$(BIN)/python -m bench.unread
	$(BIN)/python -m bench.live
	$(BIN)/python -m bench.imap

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
