"""Coverage-guided fuzzing (atheris) of the parsers of outside bytes: `make fuzz`.

    python -m tests.fuzz.atheris_parsers TARGET [-atheris_runs=N] [libFuzzer options]

TARGET is one of tests/fuzz/targets.py: command, contract, stream, remote. Without a corpus
directory it starts from the valid seed messages (kept in .fuzz-corpus/TARGET, so a second run
goes on from what the first found). A finding is any
exception other than the parser's typed refusal; libFuzzer stops and writes the input to
crash-<hash> in the working directory. The hypothesis tests beside this file are the short
run that CI does; this is the long one, for a developer's machine or a nightly job.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import atheris

from tests.fuzz.targets import CASES, SEEDS, TARGETS

atheris.instrument_all()  # coverage of everything loaded, the parsers and their libraries


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: python -m tests.fuzz.atheris_parsers {{{','.join(TARGETS)}}} ...")
    name = sys.argv.pop(1)
    target = TARGETS[name]
    if not any(not a.startswith("-") for a in sys.argv[1:]):  # no corpus given: the seeds
        corpus = Path(".fuzz-corpus") / name
        corpus.mkdir(parents=True, exist_ok=True)
        for i, seed in enumerate(SEEDS):
            (corpus / f"seed-{i}").write_bytes(seed if name in ("command", "stream") else
                                               b"\x04" + seed)  # fmt: skip
        sys.argv.append(str(corpus))
    logging.disable(logging.CRITICAL)  # refusals are logged; at 10^5 a second that is noise
    atheris.Setup(sys.argv, target)
    try:
        atheris.Fuzz()
    finally:
        print(f"fuzz cases: {name} {CASES[name]}", file=sys.stderr)


if __name__ == "__main__":
    main()
