"""Coverage-guided fuzzing (atheris) of the parsers of outside bytes: `make fuzz`.

    python -m tests.fuzz.atheris_parsers TARGET [-atheris_runs=N] [libFuzzer options]

TARGET is one of tests/fuzz/targets.py: command, contract, stream, remote. Without a corpus
directory it starts from the valid seed messages (tests/fuzz/atheris_main.py). A finding is any
exception other than the parser's typed refusal; libFuzzer stops and writes the input to
crash-<hash> in the working directory. The hypothesis tests beside this file are the short
run that CI does; this is the long one, for a developer's machine or a nightly job.
"""

from __future__ import annotations

import atheris

from tests.fuzz.atheris_main import fuzz_main
from tests.fuzz.targets import CASES, SEEDS, TARGETS

atheris.instrument_all()  # coverage of everything loaded, the parsers and their libraries


def seeds(name: str) -> list[bytes]:
    # The contract and remote targets take their first byte as the topic leaf.
    return [seed if name in ("command", "stream") else b"\x04" + seed for seed in SEEDS]


def main() -> None:
    fuzz_main("tests.fuzz.atheris_parsers", TARGETS, CASES, seeds)


if __name__ == "__main__":
    main()
