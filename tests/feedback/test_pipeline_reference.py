"""Every field of every Tick equals the reference implementation's, to the bit.

The per-block cost work (issue 12, item 4) rewrites how the onset baseline, the activation
frames and the per-block numeric steps are computed; none of it may change a result. The
reference digests in tests/fixtures/pipeline_reference.json were written by the code before
that work (commit c01d4dc) with `python tests/feedback/test_pipeline_reference.py --write`:
one SHA-256 per Tick field over a whole run, per scenario (synthetic contractions with a
session that opens mid-contraction, flat and clipping stretches, calibrated and uncalibrated,
the TKEO detector, a real recording), each fed in blocks of 20, 7, 333, 500 and 1000 samples
and in random sizes with gaps. `compute_s` (a timing) is left out.

A change that is meant to change results regenerates the file in the same commit and says
why; a digest that changes by accident fails here, naming the scenario and the field.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from config.loader import load_settings
from config.settings import CalibrationSettings, Settings
from devices.base import SampleBlock
from devices.formats import load_recording
from feedback.pipeline import Pipeline, Tick
from feedback.processing.quality import Flag

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
REFERENCE = FIXTURES / "pipeline_reference.json"
RECORDING = FIXTURES / "data" / "4Nsen.txt.gz"
RATE = 2000.0
CHANNELS = ("VM", "VL", "RF", "BF")
SIZES = ("20", "7", "333", "500", "1000", "random+gaps")


def feed(h: Any, obj: object) -> None:
    """A canonical byte form of a Tick's contents into the hash (types, shapes, exact floats);
    anything not foreseen is refused rather than hashed by its address."""
    if obj is None or isinstance(obj, bool | int | str):
        h.update(f"{type(obj).__name__}:{obj!r};".encode())
    elif isinstance(obj, enum.Enum):
        h.update(f"{type(obj).__name__}.{obj.name};".encode())
    elif isinstance(obj, float):
        h.update(f"f:{obj.hex()};".encode())
    elif isinstance(obj, np.ndarray):
        h.update(f"a:{obj.dtype.str}:{obj.shape};".encode())
        h.update(np.ascontiguousarray(obj).tobytes())
    elif isinstance(obj, np.generic):
        feed(h, obj.item())
    elif isinstance(obj, list | tuple):
        h.update(f"{type(obj).__name__}[{len(obj)}](".encode())
        for item in obj:
            feed(h, item)
        h.update(b")")
    elif isinstance(obj, dict):
        h.update(f"dict[{len(obj)}](".encode())
        for k, v in obj.items():
            feed(h, k)
            feed(h, v)
        h.update(b")")
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        h.update(f"{type(obj).__name__}(".encode())
        for f in dataclasses.fields(obj):
            h.update(f"{f.name}=".encode())
            feed(h, getattr(obj, f.name))
        h.update(b")")
    else:
        raise TypeError(f"no canonical form for {type(obj).__name__}")


TICK_FIELDS = tuple(f.name for f in dataclasses.fields(Tick) if f.name != "compute_s")


def digests(
    ticks: Iterator[Tick], extra: Callable[[], object], inner: Callable[[], object]
) -> dict[str, str]:
    """One digest per Tick field over the run, plus `extra` (what `finish` returns) and
    `inner` after each block: the onset rest baseline, which a Tick shows only through the
    samples it puts above threshold (a slightly wrong SD would hide there)."""
    hashes = {name: hashlib.sha256() for name in (*TICK_FIELDS, "onset_baseline")}
    count = 0
    for tick in ticks:
        count += 1
        for name in TICK_FIELDS:
            feed(hashes[name], getattr(tick, name))
        feed(hashes["onset_baseline"], inner())
    out = {name: h.hexdigest()[:24] for name, h in hashes.items()}
    fin = hashlib.sha256()
    feed(fin, extra())
    out["finish"] = fin.hexdigest()[:24]
    out["blocks"] = str(count)
    return out


def synthetic(seconds: float = 24.0, seed: int = 3) -> np.ndarray:
    """Rest noise with contractions: VM and VL from the first sample (a session opened
    mid-contraction, so the learnt baseline is relearnt), then efforts at several levels with
    VL a little late; RF flat for a while (electrode off) and BF clipping once."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    gain = np.full((len(CHANNELS), n), 0.01)
    for start, stop, level in [(0.0, 1.6, 0.4), (5.0, 8.5, 0.3), (11.0, 13.0, 0.9), (16, 20, 0.2)]:
        on = (t >= start) & (t < stop)
        gain[0, on] += level
        gain[1, on & (t >= start + 0.03)] += 0.7 * level
    gain[2, (t >= 3.0) & (t < 6.0)] += 0.15
    x = rng.standard_normal(gain.shape) * gain
    x[2, int(9 * RATE) : int(10.5 * RATE)] = 0.0  # flat: quality FLAT
    x[3, int(14 * RATE) : int(14 * RATE) + 40] = 16.0  # past the clip level (15 mV)
    hum = (t >= 17.0) & (t < 18.5)  # mains hum on RF, a movement artefact on BF
    x[2, hum] += 0.5 * np.sin(2 * np.pi * 50.0 * t[hum])
    moving = (t >= 21.0) & (t < 22.0)
    x[3, moving] += 3.0 * np.sin(2 * np.pi * 5.0 * t[moving])
    out: np.ndarray = x.astype(np.float32)
    return out


def splits(kind: str, n: int, rng: np.random.Generator) -> Iterator[tuple[int, int, int]]:
    """(first_index, start, stop) per block; `first_index` jumps past lost samples in gaps."""
    if kind != "random+gaps":
        size = int(kind)
        for start in range(0, n, size):
            yield start, start, min(n, start + size)
        return
    start, lost = 0, 0
    while start < n:
        size = int(rng.choice([1, 3, 20, 20, 20, 57, 100, 160, 401]))
        if rng.random() < 0.01:
            lost += int(rng.integers(1, 800))  # a lost link: the device counter moves on
        yield start + lost, start, min(n, start + size)
        start += size


def settings_for(name: str) -> Settings:
    s = load_settings(environ={})
    if name == "uncalibrated":
        return s.model_copy(
            update={"calibration": CalibrationSettings(mvc_mv={}, source="placeholder")}
        )
    if name == "tkeo":
        return s.model_copy(update={"processing": s.processing.model_copy(update={"tkeo": True})})
    if name == "measured-rest":  # the onset thresholds from a calibrated rest, not learnt
        cal = CalibrationSettings(
            mvc_mv={"VM": 0.6, "VL": 0.5},
            rest_mv={c: 0.01 for c in CHANNELS},
            rest_sd_mv={c: 0.003 for c in CHANNELS},
        )
        return s.model_copy(update={"calibration": cal})
    return s


SCENARIOS = {
    "band": ("band", None),
    "uncalibrated": ("uncalibrated", None),
    "tkeo": ("tkeo", None),
    "measured-rest": ("measured-rest", None),
    "real-4Nsen": ("band", RECORDING),
}


def run(scenario: str, kind: str) -> dict[str, str]:
    settings_name, recording = SCENARIOS[scenario]
    settings = settings_for(settings_name)
    channels: tuple[str, ...] = CHANNELS
    if recording is None:
        data, rate = synthetic(), RATE
    else:
        rec = load_recording(recording)
        keep = [i for i, u in enumerate(rec.units) if u == "mV"]  # not the goniometer
        data, rate = rec.data[keep], rec.rate_hz
        channels = tuple(rec.channels[i] for i in keep)
    pipe = Pipeline(settings, rate, channels)
    rng = np.random.default_rng(7)

    def ticks() -> Iterator[Tick]:
        for first, start, stop in splits(kind, data.shape[1], rng):
            part = data[:, start:stop]
            yield pipe.process(SampleBlock(first, first / rate, rate, channels, part))

    def baseline() -> object:
        return pipe.onset.baseline

    return digests(ticks(), pipe.finish, baseline)


def reference() -> dict[str, dict[str, str]]:
    loaded: dict[str, dict[str, str]] = json.loads(REFERENCE.read_text())
    return loaded


CASES = [(scenario, kind) for scenario in SCENARIOS for kind in SIZES]


@pytest.mark.parametrize(("scenario", "kind"), CASES)
def test_every_tick_field_equals_the_reference(scenario: str, kind: str) -> None:
    want = reference()[f"{scenario}/{kind}"]
    got = run(scenario, kind)
    assert got["blocks"] == want["blocks"]
    differ = [name for name in want if got[name] != want[name]]
    assert not differ, f"{scenario} in blocks of {kind}: fields differ: {differ}"


def test_the_scenarios_exercise_what_they_should() -> None:
    """The runs go through the paths the work touched: baseline windows that end inside a
    block and relearn, frames closing inside and across blocks, onsets, flags, gaps."""
    settings = settings_for("band")
    pipe = Pipeline(settings, RATE, CHANNELS)
    data = synthetic()
    rng = np.random.default_rng(7)
    events, gaps, relearnt = 0, 0, 0
    flagged: set[Flag] = set()
    last_end, first_baseline = 0, None
    for first, start, stop in splits("random+gaps", data.shape[1], rng):
        gaps += first != last_end
        last_end = first + stop - start
        tick = pipe.process(SampleBlock(first, 0.0, RATE, CHANNELS, data[:, start:stop]))
        assert tick.activation is not None and tick.quality is not None
        events += len(tick.activation.events)
        flagged |= {f for f in Flag if f and (tick.quality.flags & f).any()}
        if pipe.onset.baseline is not None:
            if first_baseline is None:
                first_baseline = pipe.onset.baseline[0].copy()
            relearnt += bool((pipe.onset.baseline[0] != first_baseline).any())
    assert events >= 8 and gaps >= 2 and relearnt
    assert flagged == {Flag.FLAT, Flag.CLIP, Flag.MAINS, Flag.MOTION}


def test_a_wrong_result_in_one_field_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Negative control: a rest SD off by one part in 10¹² in the onset baseline (a plausible
    slip of an incremental median/MAD) changes the thresholds and fails the comparison."""
    from feedback.processing import onset

    real = onset.OnsetDetector._set_baseline

    def off(self: onset.OnsetDetector, mean: np.ndarray, sd: np.ndarray) -> None:
        real(self, mean, sd * (1 + 1e-12))

    monkeypatch.setattr(onset.OnsetDetector, "_set_baseline", off)
    with pytest.raises(AssertionError, match="fields differ"):
        test_every_tick_field_equals_the_reference("band", "20")


def test_a_refused_type_is_not_hashed_by_address() -> None:
    with pytest.raises(TypeError, match="no canonical form"):
        feed(hashlib.sha256(), object())


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    table = {f"{s}/{k}": run(s, k) for s, k in CASES}
    REFERENCE.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(table)} scenarios to {REFERENCE}")
