# Two entry points for people: `make demo` and `make test`. Both build .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint unit sim e2e bench soak model clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/cellctl demo

lint: $(STAMP)
	$(BIN)/ruff check controller drivers simulators tests
	$(BIN)/ruff format --check controller drivers simulators tests
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit -q

sim: $(STAMP)
	$(BIN)/python -m pytest tests/sim -q

e2e: $(STAMP)
	$(BIN)/python -m pytest tests/e2e -q

test: lint
	$(BIN)/python -m pytest tests -q --ignore=tests/benchmarks

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m pytest tests/benchmarks -q -s -p no:cacheprovider

# Soak (not in CI): the service on the simulated line for SOAK_MINUTES (10) with periodic faults;
# writes .bench/soak.json. SOAK_FAULT_EVERY_S, SOAK_SAMPLE_S, SOAK_PARTS_PER_MIN, SOAK_DIR: see the module.
soak: $(STAMP)
	$(BIN)/python -m tests.benchmarks.soak

# Retrain the demo model from the simulator's synthetic images (needs the `train` extra: PyTorch CPU).
model: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[train]'
	$(BIN)/python -m simulators.training.train_demo_model --out recipes/models

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
