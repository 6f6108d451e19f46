# Two commands for a newcomer: `make run` (a live demo session) and `make test` (the whole suite).
# Each creates .venv from pyproject.toml at the versions pinned in constraints.txt when it is
# missing or out of date (a changed pyproject.toml, constraints.txt or bootstrap re-installs).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXTRAS := dev,dashboard,audio,ble,lsl,edf,postgres,report,nats,research
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: run test lint typecheck unit bench soak lock lowest clean firmware fuzz-firmware firmware-soak loadtest

$(STAMP): pyproject.toml constraints.txt scripts/bootstrap.sh
	@bash scripts/bootstrap.sh "$(PYTHON)" "$(VENV)" "$(EXTRAS)" constraints.txt
	@touch $@

run: $(STAMP)
	$(BIN)/python run_feedback.py $(ARGS)

test: $(STAMP)
	@bash scripts/test-services.sh
	@bash scripts/browser-deps.sh
	@bash scripts/firmware-deps.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	@# the kernels' cache is stale after feedback/processing/kernels/ changed: refill it before the timed tests
	$(BIN)/python -c 'from feedback.pipeline import compile_kernels; compile_kernels()'
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The benchmarks' peers (NeuroKit2) on top of the test install, at the locked versions.
$(VENV)/.installed-bench: $(STAMP)
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[$(EXTRAS),bench]"
	@touch $@

bench: $(VENV)/.installed-bench
	$(BIN)/python -m bench

# The clinic logger under N simulated stations (bench/loadtest.py; loopback, bounded; JSON in
# bench/results/loadtest.json), e.g. make loadtest ARGS="--mode drain --store postgres --loggers 2".
# --broker nats --mode drain: through the three-node NATS JetStream cluster (bench/loadtest_nats.py),
# --partitions N: the stream split by station, the loggers sharing the partitions by lease.
loadtest: $(STAMP)
	$(BIN)/python -m bench.loadtest $(ARGS)

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
	rm -rf $(VENV) .venv-lowest bench/results firmware/build

# The reference firmware (firmware/README.md): cross-builds with their flash/RAM use, a long
# libFuzzer run of the C core, and a 60 s session against the AVR binary under simavr.
firmware:
	@bash scripts/firmware-deps.sh
	$(MAKE) -C firmware all size

fuzz-firmware:
	@bash scripts/firmware-deps.sh
	$(MAKE) -C firmware fuzz-run FUZZ_SECONDS=$${FUZZ_SECONDS:-300}

firmware-soak: $(STAMP)
	@bash scripts/firmware-deps.sh
	VMF_FIRMWARE_SOAK_S=60 $(BIN)/python -m pytest tests/firmware_c/test_avr_sim.py -k session -s

# Coverage-guided fuzzing (atheris) of the parsers of outside bytes (commands, the clinic
# contract, the remote stream, the replay formats with XDF, the BIDS export's EDF header reader,
# BrainFlow's rows and the EDF+ writer), FUZZ_RUNS inputs each; the short
# hypothesis run of the same targets is part of `make test` (tests/fuzz).
FUZZ_RUNS ?= 200000
.PHONY: fuzz
fuzz: $(STAMP)
	$(BIN)/python -c "import atheris" 2>/dev/null || $(BIN)/pip install "atheris>=2.3"
	for t in command contract stream remote; do \
		$(BIN)/python -m tests.fuzz.atheris_parsers $$t -atheris_runs=$(FUZZ_RUNS) || exit 1; done
	$(BIN)/python tests/fuzz/atheris_replay.py -runs=$(FUZZ_RUNS)
	for t in edf_header brainflow edf_writer; do \
		$(BIN)/python -m tests.fuzz.atheris_files $$t -atheris_runs=$(FUZZ_RUNS) || exit 1; done
