# hwnas: `make demo` runs the main job on the built-in digits data; `make test` runs the tests
# (`make test-fast`: the quick tier, no slow training runs and no Ray cluster).
# Both set up .venv first (idempotent: reinstalls only when pyproject.toml changes).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export RAY_USAGE_STATS_ENABLED = 0

.PHONY: setup demo test test-fast durations bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[all,dev]'
	touch $(STAMP)

# The main job: a latency table for this CPU (the shipped one when it matches; else profiled), a 2-shard
# Ray search of seed-cnn on the built-in digits data with two budgets, the best arch exported to ONNX,
# the Pareto table and the report.
demo: setup
	rm -rf runs/demo
	$(BIN)/hwnas profile --space seed-cnn --if-missing --runs 60 --trials 3
	$(BIN)/hwnas search --config configs/digits-demo.yaml --out runs/demo --no-report
	$(BIN)/hwnas export runs/demo --out runs/demo/export
	$(BIN)/hwnas report runs/demo

test: setup
	$(BIN)/pytest -q -n 2 --dist loadgroup

# The quick tier: no Ray cluster, and nothing slow: marked `slow`, or recorded slow in tests/durations.json
# (a call, or a fixture's setup, over 1.5 s; tests/_durations.py). `make durations` records a full run.
test-fast: setup
	$(BIN)/pytest -q -n 2 -m "not slow and not ray"

durations: setup
	$(BIN)/pytest -q -n 2 --dist loadgroup --record-durations

bench: setup
	$(BIN)/python benchmarks/supernet_step.py
	$(BIN)/python benchmarks/ray_scaling.py

lint: setup
	$(BIN)/ruff check hwnas tests benchmarks

clean:
	rm -rf runs .pytest_cache
