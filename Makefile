# The two commands a new user needs (see README.md). Both create the venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test bench

setup:
	bash scripts/setup_env.sh

# The main job end to end on the embedded default (local Ray, generated data).
demo: setup
	$(PY) -m jobs.train

# The whole test suite. pytest exits 5 when it collects nothing: that is a failure here too.
test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/bench_ple.py
