# hwnas: `make demo` runs the main job on the built-in digits data; `make test` runs the tests.
# Both set up .venv first (idempotent: reinstalls only when pyproject.toml changes).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: setup
	rm -rf runs/demo
	$(BIN)/hwnas search --space seed-cnn --dataset digits --relaxation gumbel --epochs 8 --out runs/demo
	$(BIN)/hwnas train runs/demo/arch.json --epochs 10

test: setup
	$(BIN)/pytest -q

bench: setup
	$(BIN)/python benchmarks/supernet_step.py

lint: setup
	$(BIN)/ruff check hwnas tests benchmarks

clean:
	rm -rf runs .pytest_cache
