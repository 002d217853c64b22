# The commands a new user needs (see README.md and CONTRIBUTING.md). Each creates the venv on
# first use; it is set up again only when pyproject.toml or scripts/setup_env.sh change.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast lint format bench

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup_env.sh
	VENV=$(VENV) bash scripts/setup_env.sh
	touch $(STAMP)

# The main job end to end on the embedded default (local Ray, generated data).
demo: setup
	$(PY) -m jobs.train

# The whole test suite. pytest exits 5 when it collects nothing: that is a failure here too.
# Two pytest processes, each test file on one of them (module fixtures and the ordered
# retraining days stay together): the suite is CPU-bound (Ray's worker processes, imports,
# training), and two processes keep both cores busy through each other's waits. The files go
# out heaviest first (tests/helpers/suite_order.py), not in xdist's most-tests-first order.
test: setup
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

# Unit tests only: one process, no Ray, no subprocess (tests/unit).
test-fast: setup
	$(PY) -m pytest -q tests/unit

# Style, formatting and types, as CI checks them (.ci/run).
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Apply the formatter and the linter's safe fixes.
format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: setup
	$(PY) benchmarks/bench_ple.py
