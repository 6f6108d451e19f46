"""Every replay reader fuzzed (issue 11): random bytes, and valid files of each format mutated
byte by byte, line by line and cut short, plain and gzipped. Each must give a Recording or a
RecordingFormatError naming the file; any other exception (or a crash of pyedflib's C reader)
fails the test. `pytest --hypothesis-show-statistics tests/fuzz` prints the cases run per
parser; tests/fuzz/atheris_replay.py runs the same readers coverage-guided for longer."""

from __future__ import annotations

import gzip
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from devices.recording_formats import load_recording
from tests.fuzz.replay_seeds import FORMAT_OF, SEEDS, read_or_refuse, xdf_built

TMP = Path(tempfile.mkdtemp(prefix="fuzz-replay-"))
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
SEED_BYTES = {name: make() for name, make in SEEDS.items()}
SUFFIX = {"uci": ".txt", "santuz": "_emg.csv", "csv": ".csv", "record_csv": ".csv", "edf": ".edf",
          "xdf": ".xdf"}  # fmt: skip
TOKENS = [b"nan", b"inf", b"-1e308", b"1e308", b"", b'"', b",", b"\t", b";", b"\r", b"\n",
          b"\x00", b"\xff", b"\xe9", b"0x1p3", b"1_0", b" ", b"-", b"9" * 400, b"+0", b"3e38",
          b"-7e6", b'"' + b"1" * 140_000 + b'"']  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "token", "cell", "dup_line", "cut"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif op == "token":
            data[at : at + draw(st.integers(0, 4))] = draw(st.sampled_from(TOKENS))
        elif op == "cell":  # a whole value between separators: how a broken export looks
            start = max(data.rfind(sep, 0, at) for sep in (b",", b"\t", b"\n")) + 1
            ends = [
                e for e in (data.find(sep, at) for sep in (b",", b"\t", b"\r", b"\n")) if e >= 0
            ]
            data[start : min(ends, default=len(data))] = draw(st.sampled_from(TOKENS))
        elif op == "dup_line":
            end = data.find(b"\n", at)
            data[at:at] = data[at : end + 1 if end >= 0 else len(data)]
        else:
            del data[at:]
    return bytes(data)


def check(name: str, data: bytes, *, forced: bool, zipped: bool = False) -> None:
    path = TMP / f"case{SUFFIX[name]}{'.gz' if zipped else ''}"
    path.write_bytes(gzip.compress(data, compresslevel=1) if zipped else data)
    read_or_refuse(path, FORMAT_OF[name] if forced else None)


@pytest.mark.parametrize("name", list(SEEDS))
def test_seed_files_are_valid(name: str) -> None:
    path = TMP / f"seed{SUFFIX[name]}"
    path.write_bytes(SEED_BYTES[name])
    read_or_refuse(path, None)


@FUZZ
@given(data=st.data())
def test_fuzz_uci(data: st.DataObject) -> None:
    check("uci", data.draw(mutated(SEED_BYTES["uci"])), forced=data.draw(st.booleans()))


@FUZZ
@given(data=st.data())
def test_fuzz_santuz(data: st.DataObject) -> None:
    check("santuz", data.draw(mutated(SEED_BYTES["santuz"])), forced=data.draw(st.booleans()))


@FUZZ
@given(data=st.data())
def test_fuzz_generic_csv(data: st.DataObject) -> None:
    check("csv", data.draw(mutated(SEED_BYTES["csv"])), forced=data.draw(st.booleans()))


@FUZZ
@given(data=st.data())
def test_fuzz_record_csv(data: st.DataObject) -> None:
    check("record_csv", data.draw(mutated(SEED_BYTES["record_csv"])), forced=False)


@FUZZ
@given(data=st.data())
def test_fuzz_edf(data: st.DataObject) -> None:
    check("edf", data.draw(mutated(SEED_BYTES["edf"])), forced=data.draw(st.booleans()))


@FUZZ
@given(data=st.data())
def test_fuzz_gzipped(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(list(SEEDS)))
    check(name, data.draw(mutated(SEED_BYTES[name])), forced=False, zipped=True)


@FUZZ
@given(st.binary(max_size=3000), st.sampled_from(list(SEEDS)), st.booleans())
def test_fuzz_random_bytes(raw: bytes, name: str, forced: bool) -> None:
    check(name, raw, forced=forced)


@FUZZ
@given(
    st.lists(
        st.lists(st.sampled_from([*TOKENS, b"0.001", b"1", b"-0.5", b"time", b"VM"]), max_size=5),
        max_size=12,
    )
)
@example([[b"-1e308", b"0.001"], [b"1e308", b"0.001"]])  # a span that overflows: 0 Hz
def test_fuzz_csv_from_tokens(rows: list[list[bytes]]) -> None:
    check("csv", b"time,VM\n" + b"\n".join(b",".join(r) for r in rows), forced=False)


XDF_TOKENS = [b"<channel_count>1000000000</channel_count>", b"<nominal_srate>nan</nominal_srate>",
              b"<nominal_srate>-5</nominal_srate>", b"<channel_format>string</channel_format>",
              b"<channel_format>int64</channel_format>", b"<name></name>", b"<desc/>",
              b"\x08" + b"\xff" * 8, b"\x08\x00\x00\x00\x40\x00\x00\x00\x00",
              b"\x04\xff\xff\xff\x7f", b"\x01\xff", b"\x00", b"<info>", b"</info>"]  # fmt: skip


@st.composite
def xdf_mutated(draw: st.DrawFn) -> bytes:
    """Varlen counts and header fields swapped for hostile ones: where pyxdf sizes memory."""
    data = bytearray(draw(mutated(SEED_BYTES["xdf"])) if draw(st.booleans()) else SEED_BYTES["xdf"])
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, max(0, len(data) - 1)))
        data[at : at + draw(st.integers(0, 9))] = draw(st.sampled_from(XDF_TOKENS))
    return bytes(data)


@FUZZ
@given(data=st.data())
def test_fuzz_xdf(data: st.DataObject) -> None:
    check("xdf", data.draw(mutated(SEED_BYTES["xdf"])), forced=data.draw(st.booleans()))


@FUZZ
@given(data=st.data())
def test_fuzz_xdf_counts_and_header_fields(data: st.DataObject) -> None:
    check("xdf", data.draw(xdf_mutated()), forced=data.draw(st.booleans()))


@FUZZ
@given(
    count=st.sampled_from(["2", "0", "1", "-1", "3", "100000000", "1000000000000", "x", ""]),
    rate=st.sampled_from(["100", "0", "-5", "nan", "inf", "-inf", "1e-300", "1e300", "x", ""]),
    fmt=st.sampled_from(["float32", "double64", "int8", "int16", "int32", "int64", "string", "x"]),
    rows=st.integers(0, 5),
    claimed=st.none() | st.sampled_from([0, 1, 6, 1000, 10**8, 2**40, 2**63]),
    marker_count=st.sampled_from(["1", "0", "2", "100000000"]),
)
@example(count="2", rate="inf", fmt="float32", rows=3, claimed=None, marker_count="1")  # raw error
@example(count="2", rate="100", fmt="float32", rows=3, claimed=None, marker_count="0")  # IndexError
@example(count="1", rate="100", fmt="string", rows=0, claimed=10**7, marker_count="1")  # 3 s, GB
@example(count="0", rate="100", fmt="float32", rows=3, claimed=None, marker_count="1")  # no channel
def test_fuzz_xdf_header_fields_and_counts(
    count: str, rate: str, fmt: str, rows: int, claimed: int | None, marker_count: str
) -> None:
    """Hostile header values and sample counts in a well-formed file: a typed refusal, at
    once and without gigabytes (a false count of 10^8 string samples took 33 s)."""
    started = time.perf_counter()
    check("xdf", xdf_built(count, rate, fmt, rows, claimed, marker_count), forced=False)
    assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize("bad_cell", [False, True])
def test_uci_row_with_trailing_tab(bad_cell: bool) -> None:
    """Found by `make fuzz` (atheris_replay): a UCI row ending in an empty tab kept its extra
    cell, and a batch holding it then raised IndexError (a bad cell to hold) or a raw ValueError
    from zip(strict=True) instead of being read."""
    lines = SEED_BYTES["uci"].split(b"\r\n")
    first = lines.index(b"") + 1  # the blank line ends the header
    lines[first] += b"\t"
    if bad_cell:
        lines[first + 1] = b"x\t" + lines[first + 1].split(b"\t", 1)[1]
    path = TMP / "trailing_tab.txt"
    path.write_bytes(b"\r\n".join(lines))
    read_or_refuse(path, "uci")
    rec = load_recording(path)
    assert rec.n_samples == len([ln for ln in lines[first:] if ln.strip()])
