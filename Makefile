# The two commands in the README: `make demo` and `make test`.
# Both create .venv and install the project into it on first use.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench

$(BIN)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/keel demo

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/mypy

# The suite runs on PYTEST_WORKERS processes (pytest-xdist; 0 runs it in one
# process), then the PostgreSQL restart test on its own: it restarts the shared
# server, so no other PostgreSQL test may run meanwhile (it refuses to run on
# several xdist workers). --maxschedchunk hands out a few tests at a time, so
# the slow subprocess tests at the front of the suite spread over the workers.
PYTEST_WORKERS ?= 3
ALONE := tests/acceptance/test_pg_restart.py

test: lint
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --maxschedchunk 4 --ignore=$(ALONE)
	$(BIN)/python -m pytest $(ALONE)

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_sqlite.py
