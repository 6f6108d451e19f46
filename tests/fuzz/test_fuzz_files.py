"""Hypothesis fuzzing of the parsers issue 16 added (tests/fuzz/file_targets.py): the BIDS
export's EDF/BDF header reader, BrainFlow's rows (package counter and samples) and the EDF+/BDF+
writer under hostile samples and annotations. XDF is in test_fuzz_replay.py. A few seconds in
the normal suite; `make fuzz` runs the same targets coverage-guided (tests/fuzz/atheris_files.py).

Each @example is an input that broke the code before its fix (the negative controls: with the
fix reverted the test fails on it with the raw exception or the broken property)."""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from feedback.clinic.edf_header import NotAnEdfFile, read_header
from feedback.outputs.edf_writer import SignalSpec, _number
from tests.fuzz.file_targets import (
    HOSTILE,
    NOTE_TIMES,
    VALUES,
    WORK,
    board_rows,
    brainflow,
    brainflow_device,
    check_header,
    check_split,
    check_writer,
    edf_header,
    edf_writer,
    header_seeds,
    write_edf,
)

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))

# (offset, width) of every number the reader parses: the fixed header's, then the first
# signal's (ns = 3 in the seeds: two signals and the annotations).
NS = 3
FIELDS = [(236, 8), (244, 8), (252, 4)] + [
    (256 + NS * off, width)
    for off, width in ((104, 8), (112, 8), (120, 8), (128, 8), (216, 8))  # phys, dig, samples
]
TOKENS = [b"0", b"-1", b"-5", b"1_0", b"nan", b"inf", b"-inf", b"1e999", b"1e308", b"-1e308",
          b"", b" ", b"+3", b"0.0", b"1e-300", b"32767", b"-32768", b"99999999", b"\xff",
          b"\x00", b"1,5", b"0x10", b"\xd9\xa3", b"9999", b"10000"]  # fmt: skip


def field(seed: int, at: int, width: int, token: bytes) -> bytes:
    data = bytearray(header_seeds()[seed])
    data[at : at + width] = token[:width].ljust(width)
    return bytes(data)


def check_bytes(data: bytes) -> None:
    path = WORK / "hyp.edf"
    path.write_bytes(data)
    check_header(path)


@FUZZ
@given(
    seed=st.integers(0, 1),
    spot=st.sampled_from(FIELDS),
    token=st.sampled_from(TOKENS),
    more=st.lists(st.tuples(st.sampled_from(FIELDS), st.sampled_from(TOKENS)), max_size=3),
)
@example(seed=0, spot=(252, 4), token=b"-1", more=[])  # raw ValueError from f.read(-256)
@example(seed=0, spot=(244, 8), token=b"0", more=[])  # ZeroDivisionError in rate_hz
@example(seed=0, spot=(244, 8), token=b"nan", more=[])  # a NaN rate for the BIDS sidecar
@example(seed=0, spot=(236, 8), token=b"-5", more=[])  # a negative duration
@example(seed=1, spot=(256 + NS * 120, 8), token=b"8388607", more=[])  # dmin == dmax: 1/0
@example(seed=0, spot=(256 + NS * 104, 8), token=b"-1e308", more=[((256 + NS * 112, 8), b"1e308")])
def test_edf_header_hostile_numbers(
    seed: int, spot: tuple[int, int], token: bytes, more: list[tuple[tuple[int, int], bytes]]
) -> None:
    data = field(seed, *spot, token)
    for (at, width), tok in more:
        data = data[:at] + tok[:width].ljust(width) + data[at + width :]
    check_bytes(data)


@FUZZ
@given(st.binary(max_size=1200))
def test_edf_header_any_bytes(data: bytes) -> None:
    edf_header(data)


@FUZZ
@given(
    bdf=st.booleans(),
    rate=st.integers(1, 2048),
    records=st.integers(0, 2),
    specs=st.lists(
        st.tuples(
            st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=16),
            st.sampled_from(["uV", "mV", "", "%"]),
            st.floats(-1e6, 1e6, allow_nan=False).filter(lambda v: abs(v) > 1e-3),
        ),
        min_size=1,
        max_size=4,
        unique_by=lambda s: s[0],
    ),
)
def test_edf_header_round_trips_what_the_writer_wrote(
    bdf: bool, rate: int, records: int, specs: list[tuple[str, str, float]]
) -> None:
    signals = [SignalSpec(label, unit, -abs(r), abs(r)) for label, unit, r in specs]
    path = WORK / f"rt.{'bdf' if bdf else 'edf'}"
    write_edf(path, signals, rate_hz=rate, records=records, bdf=bdf)
    h = read_header(path)
    assert h.bdf is bdf and h.records == records and h.record_s == 1
    assert h.start_date == "02.01.26" and h.start_time == "03.04.05"
    assert [s.label for s in h.signals] == [s.label for s in signals]
    assert [s.dimension for s in h.signals] == [s.dimension for s in signals]
    for got, want in zip(h.signals, signals, strict=True):
        assert h.rate_hz(got) == rate
        # as the writer put them in the header's 8 characters
        assert got.physical_max == float(_number(want.physical_max))
        assert got.physical_min == float(_number(want.physical_min))


def test_edf_header_refusals_name_the_file(tmp_path: Path) -> None:
    """The regressions one by one, each with what it says (the @examples above check only
    that no other exception comes out)."""
    cases = {
        (252, 4, b"-1"): "-1 signals",
        (244, 8, b"0"): "no rate",
        (244, 8, b"nan"): "not a finite number",
        (236, 8, b"-1"): "repair",
        (236, 8, b"1_0"): "not a whole number",
        (256 + NS * 120, 8, b"32767"): "digital range",
        (256 + NS * 216, 8, b"0"): "no rate",
        (244, 8, b"1e308"): "no duration",
    }
    for (at, width, token), says in cases.items():
        path = tmp_path / "bad.edf"
        path.write_bytes(field(0, at, width, token))
        with pytest.raises(NotAnEdfFile, match=says) as info:
            read_header(path)
        assert str(info.value).startswith(str(path))


# -- BrainFlow rows ----------------------------------------------------------------------------


@st.composite
def board_batches(draw: st.DrawFn) -> list[np.ndarray]:
    dev = brainflow_device()
    n = draw(st.integers(1, 300))
    steps = draw(st.lists(st.sampled_from([1, 1, 1, 1, 2, 5, 0, 255, 256, -3]), min_size=n,
                          max_size=n))  # fmt: skip
    rows = np.zeros((board_rows(), n))
    rows[dev._counter_row] = (draw(st.integers(0, 255)) + np.cumsum(steps)) % 256
    rows[dev._rows] = draw(st.integers(-1000, 1000)) + np.arange(2 * n).reshape(2, n)
    rows[dev._ts_row] = 1.8e9 + np.arange(n) / 250
    for _ in range(draw(st.integers(0, 4))):
        row = draw(st.sampled_from([dev._counter_row, *dev._rows, dev._ts_row]))
        rows[row, draw(st.integers(0, n - 1))] = draw(st.sampled_from(HOSTILE))
    cuts = sorted(draw(st.lists(st.integers(1, n - 1), max_size=3)) if n > 1 else [])
    return [rows[:, a:b] for a, b in zip([0, *cuts], [*cuts, n], strict=True) if b > a]


def _nan_at(column: int, row: str) -> list[np.ndarray]:
    dev = brainflow_device()
    rows = np.zeros((board_rows(), 10))
    rows[dev._counter_row] = np.arange(10)
    rows[dev._rows] = 1.0
    rows[getattr(dev, row) if row != "_rows" else dev._rows[0], column] = math.nan
    return [rows]


@FUZZ
@given(board_batches())
@example(_nan_at(4, "_rows"))  # a NaN sample went out to the filters
@example(_nan_at(4, "_counter_row"))  # a NaN counter: a jump of a random size
def test_brainflow_rows(batches: list[np.ndarray]) -> None:
    check_split(batches)


@FUZZ
@given(st.binary(max_size=1500))
def test_brainflow_any_bytes(data: bytes) -> None:
    brainflow(data)


def test_brainflow_drops_and_counts_bad_samples() -> None:
    dev = brainflow_device()
    rows = _nan_at(4, "_rows")[0]
    rows[dev._rows[1], 7] = 1e300
    blocks = dev.split(rows)
    assert [(b.first_index, b.n_samples) for b in blocks] == [(0, 4), (5, 2), (8, 2)]
    assert dev.stats.samples_lost == 2 == dev.invalid_samples and dev.stats.gaps == 0
    assert any("dropped" in note for note in dev.stats.notes)
    counter = brainflow_device()
    rows = _nan_at(4, "_counter_row")[0]
    assert [(b.first_index, b.n_samples) for b in counter.split(rows)] == [(0, 10)]


# -- the EDF+/BDF+ writer --------------------------------------------------------------------


@FUZZ
@given(
    bdf=st.booleans(),
    rate=st.integers(1, 8),
    samples=st.lists(st.sampled_from(VALUES) | st.floats(), min_size=0, max_size=20),
    notes=st.lists(
        st.tuples(
            st.sampled_from(NOTE_TIMES) | st.floats(),
            st.text(max_size=60),
            st.none() | st.sampled_from(NOTE_TIMES) | st.floats(),
        ),
        max_size=6,
    ),
)
@example(bdf=False, rate=2, samples=[math.nan, 1.0], notes=[])  # a cast NaN: any value at all
@example(bdf=False, rate=1, samples=[0.0], notes=[(1.0, "x", math.nan)])  # an unreadable file
@example(bdf=False, rate=1, samples=[0.0], notes=[(1.0, "x", -2.0)])  # an unreadable file
@example(bdf=True, rate=1, samples=[0.0, 0.0], notes=[(1e300, "big", None), (0.5, "after", None)])
def test_edf_writer_hostile_values(
    bdf: bool, rate: int, samples: list[float], notes: list[tuple[float, str, float | None]]
) -> None:
    data = np.vstack([np.array(samples, dtype=np.float64), np.zeros(len(samples))])
    check_writer(bdf, rate, data, notes)


@FUZZ
@given(st.binary(max_size=200))
def test_edf_writer_any_bytes(data: bytes) -> None:
    edf_writer(data)


def test_recorder_sanitises_event_spans(tmp_path: Path) -> None:
    """A NaN or infinite span (a stimulation message's timing) is an instant in the record,
    and the file stays readable: before, edflib refused the whole recording."""
    import pyedflib

    from feedback.outputs.recorder import Event, Recorder

    rec = Recorder(tmp_path / "r.edf", rate_hz=10, channels=("VM",), session_id="S1",
                   patient="P-1", group_delay_ms=0.0)  # fmt: skip
    writer = rec._writers[0]
    from feedback.outputs.recorder import Chunk

    z = np.zeros((1, 10))
    events = (Event(0, "stim", "", "nan span", math.nan), Event(1, "stim", "", "inf", math.inf))
    writer.write(Chunk(0, z, z, z, z, z, np.zeros(10), events), 0)
    writer.close(0)
    with pyedflib.EdfReader(str(tmp_path / "r.edf")) as r:
        _, durations, texts = r.readAnnotations()
    stims = [(t, d) for t, d in zip(texts, durations, strict=True) if "stim" in t]
    assert stims == [("stim nan span", 0.0), ("stim inf", 0.0)]


# -- the LSL marker stream ---------------------------------------------------------------------
# Its input is the session's own events (not bytes from outside), but their bodies carry
# numbers from devices and commands: every marker must still go out, as strict JSON.

_leaf = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=10)
    | st.builds(np.float32, st.floats(width=32))
    | st.builds(np.array, st.lists(st.floats(), max_size=3))
)
BODIES = st.dictionaries(
    st.sampled_from(["ramp_up_ms", "hold_ms", "ramp_down_ms", "blank_from", "at_index",
                     "onset_index", "from_index", "n", "kind", "i", "x"]) | st.text(max_size=5),
    st.recursive(_leaf, lambda inner: st.lists(inner, max_size=3)
                 | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=10),
    max_size=6,
)  # fmt: skip


class _Pushed:
    def __init__(self) -> None:
        self.samples: list[tuple[list[str], float]] = []

    def push_sample(self, sample: list[str], stamp: float) -> None:
        self.samples.append((sample, stamp))


@cache
def _marker_outlet() -> Any:
    from feedback.outputs.lsl_markers import MarkerOutlet, SampleClock

    outlet = MarkerOutlet("fuzz", "fuzz-1", SampleClock(2000.0))
    outlet.clock.add(0, 100, 5.0)
    return outlet


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


@FUZZ
@given(
    kind=st.sampled_from(["stim_burst", "rep", "contraction", "gap", "band_raised", "cue",
                          "session_start", "calibration", "x"]),
    body=BODIES,
)  # fmt: skip
@example(kind="stim_burst", body={"ramp_up_ms": "abc"})  # raw ValueError: the marker was lost
@example(kind="stim_burst", body={"hold_ms": math.nan, "blank_from": 3})  # "NaN" in the JSON
@example(kind="x", body={"v": np.array([1.0, 2.0])})  # raw ValueError from .item()
def test_lsl_markers_any_event_body(kind: str, body: dict[str, Any]) -> None:
    outlet = _marker_outlet()
    pushed = outlet.outlet = _Pushed()
    before = outlet.sent
    outlet.on_message(kind, body)
    if kind == "cue":  # sent from the tick, not from the message
        assert not pushed.samples
        return
    [(sample, stamp)] = pushed.samples
    marker = json.loads(sample[0], parse_constant=_refuse_constant)
    assert marker["n"] == before + 1 == outlet.sent and marker["kind"] == kind
    assert isinstance(stamp, float)
