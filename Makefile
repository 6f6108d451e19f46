# Two commands for a newcomer: `make run` (a live demo session) and `make test` (the whole suite).
# Each creates .venv from pyproject.toml at the versions pinned in constraints.txt when it is
# missing or out of date (a changed pyproject.toml, constraints.txt or bootstrap re-installs).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXTRAS := dev,dashboard,audio,ble,lsl,edf,postgres
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: run test lint typecheck unit bench soak lock lowest clean

$(STAMP): pyproject.toml constraints.txt scripts/bootstrap.sh
	@bash scripts/bootstrap.sh "$(PYTHON)" "$(VENV)" "$(EXTRAS)" constraints.txt
	@touch $@

run: $(STAMP)
	$(BIN)/python run_feedback.py $(ARGS)

test: $(STAMP)
	@bash scripts/test-services.sh
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench

# Minutes, not part of `make test`: the dashboard, a 4-hour session and the clinic logger run for
# long; memory and frame rate at the end are checked against the start (bench/results/soak-*.json).
soak: $(STAMP)
	@bash scripts/test-services.sh
	$(BIN)/python -m pytest -p no:randomly -m soak tests $(PYTEST_ARGS)

# Re-resolve constraints.txt after a dependency changes in pyproject.toml (needs the network).
lock: $(STAMP)
	UV=$(BIN)/uv bash scripts/lock.sh

# The lowest versions pyproject.toml allows, in .venv-lowest, through the fast tests.
lowest: $(STAMP)
	UV=$(BIN)/uv bash scripts/lowest.sh "$(PYTHON)" .venv-lowest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .venv-lowest bench/results
