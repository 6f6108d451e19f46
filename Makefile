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

# Coverage-guided fuzzing (atheris) of the parsers of outside bytes, FUZZ_RUNS inputs each; the
# short hypothesis run of the same targets is part of `make test` (tests/fuzz).
FUZZ_RUNS ?= 200000
.PHONY: fuzz
fuzz: $(STAMP)
	$(BIN)/python -c "import atheris" 2>/dev/null || $(BIN)/pip install "atheris>=2.3"
	for t in command contract stream remote; do \
		$(BIN)/python -m tests.fuzz.atheris_parsers $$t -atheris_runs=$(FUZZ_RUNS) || exit 1; done
