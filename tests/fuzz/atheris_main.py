"""The command line the atheris harnesses share (tests/fuzz/atheris_parsers.py, atheris_files.py):

    python -m tests.fuzz.<harness> TARGET [-atheris_runs=N] [libFuzzer options] [CORPUS_DIR]

Without a corpus directory the run starts from the harness's seeds, kept in .fuzz-corpus/TARGET
so that a second run goes on from what the first found. At the end it says how many inputs
the target ran on (libFuzzer's own count includes its calibration runs).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

Target = Callable[[bytes], None]


def fuzz_main(
    harness: str,
    targets: Mapping[str, Target],
    cases: Mapping[str, int],
    seeds: Callable[[str], Iterable[bytes]],
) -> None:
    import atheris  # the caller imported it first, to instrument the targets' modules

    if len(sys.argv) < 2 or sys.argv[1] not in targets:
        sys.exit(f"usage: python -m {harness} {{{','.join(targets)}}} ...")
    name = sys.argv.pop(1)
    if not any(not a.startswith("-") for a in sys.argv[1:]):  # no corpus given: the seeds
        corpus = Path(".fuzz-corpus") / name
        corpus.mkdir(parents=True, exist_ok=True)
        for i, seed in enumerate(seeds(name)):
            (corpus / f"seed-{i}").write_bytes(seed)
        sys.argv.append(str(corpus))
    # Parsers log their refusals (the recorder and pyxdf complain too): at 10^5 inputs a
    # second that is noise.
    logging.disable(logging.CRITICAL)
    atheris.Setup(sys.argv, targets[name])
    try:
        atheris.Fuzz()
    finally:
        print(f"fuzz cases: {name} {cases[name]}", file=sys.stderr)
