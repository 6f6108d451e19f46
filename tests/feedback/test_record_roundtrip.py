"""EDF+ and BDF+ by the book (issue 16): the station's record read back with pyedflib and MNE
gives the recorded samples within one step of the file's resolution and the same annotations
(onset, duration, text); the headers say what the signals are. Each check has a negative
control: a writer with a wrong scale, a dropped annotation, durations left out, or a device gap
written back to back fails it."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyedflib
import pytest

from config.loader import load_settings
from config.settings import Settings
from devices.base import SampleBlock
from devices.registry import open_device
from feedback.clinic.edf_header import read_header
from feedback.outputs import edf_writer, recorder
from feedback.outputs.record_check import (
    Expected,
    ReaderResult,
    check_mne,
    check_pyedflib,
    record,
    ticks_of,
)
from feedback.outputs.recorder import choose_bdf, prefilter_text
from feedback.pipeline import Tick

ROOT = Path(__file__).resolve().parents[2]
UCI = ROOT / "tests" / "fixtures" / "data" / "7Nmar.txt.gz"
SETTINGS = load_settings(environ={})
GAP = frozenset({300, 301, 302})  # three 10 ms blocks the device never delivered
STIM = {
    "blank_from": 5000, "ramp_up_ms": 500, "hold_ms": 2000, "ramp_down_ms": 500, "burst": 1,
    "channel": 0, "amplitude_ma": 20.0, "pulse_width_us": 300, "frequency_hz": 50,
}  # fmt: skip
CHECKS = {"pyedflib": check_pyedflib, "mne": check_mne}


def blocks(spec: str, limit: int | None = None) -> list[SampleBlock]:
    async def go() -> list[SampleBlock]:
        out: list[SampleBlock] = []
        async with open_device(spec, SETTINGS) as device:
            async for b in device.blocks():
                out.append(b)
                if limit is not None and len(out) >= limit:
                    break
        return out

    return asyncio.run(go())


def fmt(settings: Settings, name: str, range_mv: float | None = None) -> Settings:
    update: dict[str, Any] = {"format": name}
    if range_mv is not None:
        update["range_mv"] = range_mv
    return settings.model_copy(update={"recording": settings.recording.model_copy(update=update)})


@pytest.fixture(scope="module")
def sim_ticks() -> list[Tick]:
    # 8 s: the first work period (1-6 s) closes, its rep, contractions, a gap, a burst.
    return ticks_of(blocks("sim?speed=max", 800), SETTINGS, GAP)


@pytest.fixture(scope="module")
def uci_ticks() -> list[Tick]:
    return ticks_of(blocks(f"replay:{UCI}?speed=max&channels=VM=VM,BF=BF"), SETTINGS)


@pytest.mark.parametrize("reader", list(CHECKS))
@pytest.mark.parametrize("format_", ["edf", "bdf"])
@pytest.mark.parametrize("source", ["sim", "uci"])
def test_round_trip_within_one_lsb_and_same_annotations(
    tmp_path: Path,
    sim_ticks: list[Tick],
    uci_ticks: list[Tick],
    source: str,
    format_: str,
    reader: str,
) -> None:
    ticks, stim = (sim_ticks, [STIM]) if source == "sim" else (uci_ticks, [])
    expected = record(ticks, tmp_path / "r.rec", fmt(SETTINGS, format_), stim=stim)
    assert expected.path.suffix == f".{format_}"
    result = CHECKS[reader](expected)
    assert result.max_lsb_error <= 1.0, result
    assert result.annotations_equal, (result.missing, result.unexpected)
    assert result.annotations_read == len(expected.annotations) >= 10
    assert result.samples_compared == expected.samples.size


def test_annotations_carry_real_durations(tmp_path: Path, sim_ticks: list[Tick]) -> None:
    expected = record(sim_ticks, tmp_path / "r.rec", SETTINGS, stim=[STIM])
    with pyedflib.EdfReader(str(expected.path)) as f:
        onsets, durations, texts = f.readAnnotations()
    by_kind: dict[str, list[tuple[float, float]]] = {}
    for o, d, t in zip(onsets, durations, texts, strict=True):
        by_kind.setdefault(str(t).split()[0], []).append((float(o), float(d)))
    assert min(durations) >= 0.0  # nothing reads back as -1 ("no duration")
    assert by_kind["work"] == [(1.0, 5.0)]  # ready 1 s, work 5 s (the demo protocol)
    ((rep_at, rep_s),) = by_kind["rep"]
    assert rep_at == 1.0 and 2.0 <= rep_s <= 5.0  # work cue to the hold (2 s) reached
    assert by_kind["stim"] == [(2.5, 3.0)]  # ramp 0.5 + hold 2 + ramp 0.5 s
    assert by_kind["gap"] == [(3.0, 0.03)]
    assert all(d > 0.5 for _, d in by_kind["contraction"])
    assert {d for _, d in by_kind["onset"]} == {0.0}  # an instant stays an instant
    assert {d for _, d in by_kind["cue"]} == {0.0}


def test_device_gap_is_filled_and_time_kept(tmp_path: Path, sim_ticks: list[Tick]) -> None:
    expected = record(sim_ticks, tmp_path / "r.rec", SETTINGS)
    with pyedflib.EdfReader(str(expected.path)) as f:
        vm = f.readSignal(0)
    half_step = 16384 / 65535  # 0 µV lies half a step from the nearest 16-bit code
    assert np.all(np.abs(vm[6000:6060]) <= half_step)  # the 60 missing samples (3 blocks)
    assert np.ptp(vm[5940:6000]) > 10 * half_step and np.ptp(vm[6060:6120]) > 10 * half_step
    assert expected.samples.shape[1] == 800 * 20  # every block's time kept, the gap included


# -- negative controls: a wrong writer must fail the checks ---------------------------------


@pytest.fixture
def short_ticks(sim_ticks: list[Tick]) -> list[Tick]:
    return sim_ticks[:700]


def failing(result: ReaderResult) -> bool:
    return not result.ok


@pytest.mark.parametrize("reader", list(CHECKS))
def test_wrong_scale_fails_the_sample_check(
    tmp_path: Path, short_ticks: list[Tick], reader: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = edf_writer.EdfPlusWriter.write_record

    def scaled(self: edf_writer.EdfPlusWriter, physical: np.ndarray) -> None:
        original(self, physical * 1.01)

    monkeypatch.setattr(edf_writer.EdfPlusWriter, "write_record", scaled)
    result = CHECKS[reader](record(short_ticks, tmp_path / "r.rec", SETTINGS))
    assert result.max_lsb_error > 1.0 and failing(result)
    assert result.annotations_equal  # only the samples are wrong


@pytest.mark.parametrize("reader", list(CHECKS))
def test_dropped_annotation_fails_the_annotation_check(
    tmp_path: Path, short_ticks: list[Tick], reader: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = edf_writer.EdfPlusWriter.annotate

    def dropping(self: edf_writer.EdfPlusWriter, onset: float, text: str, d: Any = None) -> None:
        if not text.startswith("stim"):
            original(self, onset, text, d)

    monkeypatch.setattr(edf_writer.EdfPlusWriter, "annotate", dropping)
    result = CHECKS[reader](record(short_ticks, tmp_path / "r.rec", SETTINGS, stim=[STIM]))
    assert failing(result) and not result.annotations_equal
    assert [m[2].split()[0] for m in result.missing] == ["stim"] and not result.unexpected


def test_durations_left_out_fail_the_annotation_check(
    tmp_path: Path, short_ticks: list[Tick], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer of issue 16's report: every annotation without a duration (−1 in pyedflib)."""
    original = edf_writer.EdfPlusWriter.annotate

    def no_duration(self: edf_writer.EdfPlusWriter, onset: float, text: str, d: Any = None) -> None:
        original(self, onset, text, None)

    monkeypatch.setattr(edf_writer.EdfPlusWriter, "annotate", no_duration)
    expected = record(short_ticks, tmp_path / "r.rec", SETTINGS, stim=[STIM])
    result = check_pyedflib(expected)
    assert failing(result) and any(m[2].startswith("work") for m in result.missing)


def test_gap_written_back_to_back_fails_the_sample_check(
    tmp_path: Path, short_ticks: list[Tick], monkeypatch: pytest.MonkeyPatch
) -> None:
    original = recorder._EdfWriter.write

    def no_fill(self: Any, chunk: recorder.Chunk, origin: int) -> None:
        original(self, dataclasses.replace(chunk, gap_before=0), origin)

    monkeypatch.setattr(recorder._EdfWriter, "write", no_fill)
    result = check_pyedflib(record(short_ticks, tmp_path / "r.rec", SETTINGS))
    assert result.max_lsb_error > 1.0 and failing(result)


# -- format choice and headers ----------------------------------------------------------------


def test_auto_writes_bdf_only_where_edf_would_clip() -> None:
    assert not choose_bdf("auto", 16.384) and choose_bdf("auto", 16.5)
    assert choose_bdf("bdf", 1.0) and not choose_bdf("edf", 100.0)


def spiked(ticks_blocks: list[SampleBlock], mv: float) -> Iterator[SampleBlock]:
    for k, b in enumerate(ticks_blocks):
        if k == 150:
            data = b.data.copy()
            data[0, 5] = mv
            b = dataclasses.replace(b, data=data)
        yield b


def test_a_30_mv_sample_survives_in_auto_bdf_and_is_clipped_in_edf(tmp_path: Path) -> None:
    raw = blocks("sim?speed=max", 200)
    wide = fmt(SETTINGS, "auto", range_mv=50.0)
    ticks = ticks_of(spiked(raw, 30.0), wide)
    bdf = record(ticks, tmp_path / "wide.rec", wide)
    assert bdf.path.suffix == ".bdf" and check_pyedflib(bdf).ok
    with pyedflib.EdfReader(str(bdf.path)) as f:
        assert f.readSignal(0)[3005] == pytest.approx(30_000.0, abs=0.01)
    edf = record(ticks, tmp_path / "narrow.rec", fmt(SETTINGS, "edf"))
    with pyedflib.EdfReader(str(edf.path)) as f:
        assert f.readSignal(0)[3005] == pytest.approx(16_384.0, abs=0.5)  # clipped


def test_headers_say_what_the_signals_are(tmp_path: Path, sim_ticks: list[Tick]) -> None:
    settings = SETTINGS.model_copy(
        update={"processing": SETTINGS.processing.model_copy(update={"notch_hz": 50})}
    )
    assert prefilter_text(settings) == "HP:20Hz LP:450Hz N:50Hz RMS:100ms"
    expected: Expected = record(sim_ticks[:200], tmp_path / "r.rec", settings)
    with pyedflib.EdfReader(str(expected.path)) as f:
        h = {f.getLabel(i): f.getSignalHeader(i) for i in range(f.signals_in_file)}
        additional = f.getRecordingAdditional()
    assert h["EMG VM"]["dimension"] == "uV" and h["EMG VM env"]["dimension"] == "uV"
    assert h["EMG VM"]["prefilter"] == ""  # raw: the service applied no filter
    assert h["EMG VM env"]["prefilter"] == "HP:20Hz LP:450Hz N:50Hz RMS:100ms"
    assert h["EMG VM"]["transducer"].startswith("AgAgCl surface electrode IED 20mm")
    assert "vastus medialis" in h["EMG VM"]["transducer"]
    assert "vastus lateralis" in h["EMG VL"]["transducer"]
    assert "SENIAM" in additional
    import mne  # type: ignore[import-untyped]

    raw = mne.io.read_raw_edf(str(expected.path), infer_types=True, verbose="error")
    types = dict(zip(raw.ch_names, raw.get_channel_types(), strict=True))
    assert types["VM"] == types["VL"] == types["VM env"] == "emg"
    assert raw.info["highpass"] == 20.0 and raw.info["lowpass"] == 450.0


LONGEST_ROLES = ("ABCD_L", "VMO")  # config.settings.CHANNEL_ROLE allows up to 6 characters


def edf_labels(tmp_path: Path, channels: tuple[str, ...]) -> list[str]:
    rec = recorder.Recorder(tmp_path / "labels.edf", rate_hz=1000.0, channels=channels,
                            session_id="S1", patient="P-0001", group_delay_ms=0.0)  # fmt: skip
    asyncio.run(rec.close())  # no data records: edflib refuses the file, the header is there
    return [s.label for s in read_header(tmp_path / "labels.edf").signals]


def test_labels_of_the_longest_roles_fit_edfs_16_characters_whole(tmp_path: Path) -> None:
    """The derived signals keep their words ("active", "quality"): the BIDS export describes a
    channel by them and replay names it by them. An EDF+ type prefix ("Event VMO quality", 17
    characters) would be cut at 16, which is why these signals carry none."""
    c1, c2 = LONGEST_ROLES
    assert edf_labels(tmp_path, LONGEST_ROLES) == [
        f"EMG {c1}", f"EMG {c2}", f"EMG {c1} env", f"EMG {c2} env",
        f"{c1} active", f"{c2} active", f"{c1} quality", f"{c2} quality", "zone",
    ]  # fmt: skip
    # Negative control: the prefixed labels, cut as the writer must cut them, lose the words.
    prefixed = [f"Event {c} {word}"[:16] for c in LONGEST_ROLES for word in ("active", "quality")]
    assert not all(label.endswith(("active", "quality")) for label in prefixed)


def test_bdf_suffix_and_format_agree(tmp_path: Path) -> None:
    rec = recorder.Recorder(
        tmp_path / "x.edf",
        rate_hz=1000.0,
        channels=("VM",),
        session_id="S1",
        patient="P-0001",
        group_delay_ms=0.0,
        options=recorder.RecordOptions(bdf=True),
    )
    assert rec.paths == {"edf": tmp_path / "x.bdf"}
    rec2 = recorder.Recorder(
        tmp_path / "y.bdf",
        rate_hz=1000.0,
        channels=("VM",),
        session_id="S1",
        patient="P-0001",
        group_delay_ms=0.0,
    )
    assert rec2.options.bdf and rec2.paths == {"edf": tmp_path / "y.bdf"}
    asyncio.run(rec.close())
    asyncio.run(rec2.close())
