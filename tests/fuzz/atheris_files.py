"""Coverage-guided fuzzing (atheris) of the issue-16 parsers: `make fuzz`.

    python -m tests.fuzz.atheris_files TARGET [-atheris_runs=N] [libFuzzer options]

TARGET is one of tests/fuzz/file_targets.py: edf_header, brainflow, edf_writer (XDF runs in
tests/fuzz/atheris_replay.py with the other replay readers). Without a corpus directory it
starts from a few valid inputs (kept in .fuzz-corpus/TARGET, so a second run goes on from what
the first found). A finding is an AssertionError or any exception other than the parser's
typed refusal; libFuzzer stops and writes the input to crash-<hash> in the working directory.
"""

from __future__ import annotations

import logging
import struct
import sys
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from tests.fuzz import file_targets
    from tests.fuzz.file_targets import CASES, TARGETS


def seeds(name: str) -> list[bytes]:
    if name == "edf_header":
        spots = [(236, b"2       "), (244, b"1       "), (252, b"3   "), (256 + 3 * 104, b"-16384")]
        laid = [bytes([k & 1]) + struct.pack("<H", at) + v for k, (at, v) in enumerate(spots)]
        return [*laid, *file_targets.header_seeds()]
    if name == "brainflow":
        good = bytes([0]) + bytes(b for k in range(50) for b in (0, k % 256, 255 - k % 256))
        return [good, bytes([2]) + good[1:] + b"\x05\x01\x09\x06", bytes([0x80]) + bytes(8 * 32)]
    return [bytes([3]) + bytes(range(8)) + b"\x01\x01\x05ab\x02\x04\x03xyz", bytes([2, 1, 2, 3])]


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: python -m tests.fuzz.atheris_files {{{','.join(TARGETS)}}} ...")
    name = sys.argv.pop(1)
    if not any(not a.startswith("-") for a in sys.argv[1:]):  # no corpus given: the seeds
        corpus = Path(".fuzz-corpus") / name
        corpus.mkdir(parents=True, exist_ok=True)
        for i, seed in enumerate(seeds(name)):
            (corpus / f"seed-{i}").write_bytes(seed)
        sys.argv.append(str(corpus))
    logging.disable(logging.CRITICAL)  # the recorder's and pyxdf's complaints are noise here
    atheris.Setup(sys.argv, TARGETS[name])
    try:
        atheris.Fuzz()
    finally:
        print(f"fuzz cases: {name} {CASES[name]}", file=sys.stderr)


if __name__ == "__main__":
    main()
