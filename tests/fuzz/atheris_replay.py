"""Coverage-guided fuzzing of the replay readers with atheris (libFuzzer), for longer runs than
the hypothesis tests in test_fuzz_replay.py:

    python tests/fuzz/atheris_replay.py -max_total_time=300      # or -runs=100000
    python tests/fuzz/atheris_replay.py CORPUS_DIR -max_total_time=300

The first input byte picks the reader (uci, santuz, csv, the station's record CSV, edf, or
auto-detect) and whether the file is gzipped; the rest is the file. Without a corpus directory
the run starts from one valid file per format (tests/fuzz/replay_seeds.py). A crash is any
outcome other than a Recording with finite, in-range samples or a RecordingFormatError naming the
file; libFuzzer saves the input as crash-* in the working directory.
"""

from __future__ import annotations

import gzip
import logging
import sys
import tempfile
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

with atheris.instrument_imports():
    from devices import formats  # noqa: F401  (instrumented for coverage)
    from tests.fuzz.replay_seeds import FORMAT_OF, SEEDS, read_or_refuse

NAMES = [*SEEDS, "auto"]
SUFFIX = {"uci": ".txt", "santuz": "_emg.csv", "csv": ".csv", "record_csv": ".csv", "edf": ".edf",
          "xdf": ".xdf"}  # fmt: skip
WORK = Path(tempfile.mkdtemp(prefix="atheris-replay-"))


def test_one_input(data: bytes) -> None:
    if not data:
        return
    name = NAMES[data[0] % len(NAMES)]
    zipped = bool(data[0] & 0x80)
    body = data[1:]
    suffix = SUFFIX.get(name, ".csv")
    path = WORK / f"case{suffix}{'.gz' if zipped else ''}"
    path.write_bytes(gzip.compress(body, compresslevel=1) if zipped else body)
    forced = None if name in ("auto", "record_csv") else FORMAT_OF[name]
    read_or_refuse(path, forced)


def main() -> None:
    argv = list(sys.argv)
    if not any(Path(a).is_dir() for a in argv[1:] if not a.startswith("-")):
        corpus = WORK / "corpus"
        corpus.mkdir()
        for i, (name, make) in enumerate(SEEDS.items()):
            (corpus / f"seed-{name}").write_bytes(bytes([NAMES.index(name)]) + make())
            (corpus / f"seed-{name}-gz").write_bytes(bytes([0x80 | NAMES.index(name)]) + make())
            del i
        argv.append(str(corpus))
    logging.disable(logging.CRITICAL)  # pyxdf logs every corrupt chunk: noise at this rate
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
