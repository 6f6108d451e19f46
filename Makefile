# Two commands for a newcomer: `make run` (a live demo session) and `make test` (the whole suite).
# Each creates .venv from pyproject.toml when it is missing or out of date.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXTRAS := dev,dashboard,audio,ble,lsl,edf,postgres
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: run test lint typecheck unit bench clean

$(STAMP): pyproject.toml scripts/bootstrap.sh
	@bash scripts/bootstrap.sh "$(PYTHON)" "$(VENV)" "$(EXTRAS)"
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

clean:
	rm -rf $(VENV) bench/results
