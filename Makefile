# One entry point per job. `make test` and `make demo` work on a fresh machine:
# both install what they need first (scripts/bootstrap.sh).
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup test lint unit demo bench lock clean

setup:
	@bash scripts/bootstrap.sh

lint: setup
	$(PY) -m ruff check src tests plugins
	$(PY) -m ruff format --check src tests plugins

unit: setup
	$(PY) -m pytest tests/unit -q

## The CI command: lint + every test suite.
test: setup
	bash scripts/run_tests.sh

demo: setup
	bash scripts/demo.sh

bench: setup
	$(PY) -m netmigrate.cli bench all --out reports/bench

## Re-pin requirements/dev.lock from requirements/dev.in (needs the network).
lock:
	rm -rf /tmp/nm-lock-venv && python3 -m venv /tmp/nm-lock-venv
	/tmp/nm-lock-venv/bin/pip install -q -r requirements/dev.in
	/tmp/nm-lock-venv/bin/pip freeze --exclude-editable | grep -v '^netmigrate' > requirements/dev.lock

clean:
	rm -rf $(VENV) build dist .pytest_cache .ruff_cache collections reports
