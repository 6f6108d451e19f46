"""Coverage-guided fuzzing (atheris) of the issue-16 parsers: `make fuzz`.

    python -m tests.fuzz.atheris_files TARGET [-atheris_runs=N] [libFuzzer options]

TARGET is one of tests/fuzz/file_targets.py: edf_header, brainflow, edf_writer (XDF runs in
tests/fuzz/atheris_replay.py with the other replay readers). Without a corpus directory it
starts from a few valid inputs (tests/fuzz/atheris_main.py). A finding is an AssertionError or
any exception other than the parser's typed refusal; libFuzzer stops and writes the input to
crash-<hash> in the working directory.
"""

from __future__ import annotations

import struct

import atheris

from tests.fuzz.atheris_main import fuzz_main

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
    fuzz_main("tests.fuzz.atheris_files", TARGETS, CASES, seeds)


if __name__ == "__main__":
    main()
