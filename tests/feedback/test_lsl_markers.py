"""The LSL marker stream, recorded by real pylsl inlets beside the envelope stream while a real
recording (tests/fixtures/data/4Nsen.txt.gz, strong VM bursts) is replayed through a session."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Self

import numpy as np
import pylsl
import pytest
from rich.console import Console

from config.loader import load_settings
from config.settings import Settings
from devices.base import Device, SampleBlock
from devices.registry import open_device
from feedback import app
from feedback.outputs.lsl_markers import MarkerOutlet, SampleClock

DATA = Path(__file__).resolve().parents[1] / "fixtures" / "data"
TOLERANCE_S = 1e-6  # same clock, same stamping: only float rounding may differ


class GatedDevice:
    """The real replay device, holding its first block back until the test's inlets are
    subscribed: LSL gives a new inlet only what is pushed after it connects, and the test must
    know which sample index each received envelope sample has."""

    def __init__(self, inner: Device, gate: threading.Event) -> None:
        self.inner, self.gate = inner, gate
        self.info, self.stats = inner.info, inner.stats

    async def __aenter__(self) -> Self:
        await self.inner.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.inner.__aexit__(*exc)

    async def send(self, command: Any) -> None:
        await self.inner.send(command)

    def take_events(self) -> list[Any]:
        return self.inner.take_events()

    async def blocks(self) -> AsyncIterator[SampleBlock]:
        async with asyncio.timeout(20):
            while not self.gate.is_set():
                await asyncio.sleep(0.01)
        async for block in self.inner.blocks():
            yield block


class Recorder(threading.Thread):
    """What LabRecorder does: one inlet per stream, pulling until told to stop."""

    def __init__(self, prefix: str, gate: threading.Event) -> None:
        super().__init__(daemon=True)
        self.prefix, self.gate = prefix, gate
        self.done = threading.Event()
        self.markers: list[tuple[float, dict[str, Any]]] = []
        self.env_stamps: list[float] = []
        self.env_info: Any = None
        self.error: BaseException | None = None

    def _inlet(self, suffix: str) -> pylsl.StreamInlet:
        found = pylsl.resolve_byprop("name", f"{self.prefix}-{suffix}", 1, 15)
        assert found, f"no stream {self.prefix}-{suffix}"
        inlet = pylsl.StreamInlet(found[0], max_buflen=60)
        inlet.open_stream(10)
        return inlet

    def run(self) -> None:
        try:
            env, marks = self._inlet("envelope"), self._inlet("events")
            self.env_info = env.info(5)
            self.gate.set()
            while True:
                finished = self.done.is_set()
                _, stamps = env.pull_chunk(timeout=0.05, max_samples=100_000)
                self.env_stamps.extend(stamps)
                texts, mstamps = marks.pull_chunk(timeout=0.0)
                for (text,), t in zip(texts, mstamps, strict=True):
                    self.markers.append((t, json.loads(text)))
                if finished and not stamps and not texts:
                    return
        except BaseException as exc:  # surfaced by the test
            self.error = exc


def check(markers: list[tuple[float, dict[str, Any]]], env_stamps: np.ndarray, sent: int) -> None:
    """Every marker from the first received to the last sent arrived once, in order, each
    stamped with the time of the envelope sample it names."""
    ns = [m["n"] for _, m in markers]
    assert ns == list(range(ns[0], sent + 1)), f"markers lost or repeated: {ns}"
    for t, m in markers:
        if m["i"] is not None:
            error = abs(t - env_stamps[m["i"]])
            assert error < TOLERANCE_S, f"{m} stamped {error * 1e3:.3f} ms off its sample"


@pytest.fixture
def gated(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    gate = threading.Event()

    def open_gated(spec: str, settings: Settings) -> Device:
        return GatedDevice(open_device(spec, settings), gate)

    monkeypatch.setattr(app, "open_device", open_gated)
    return gate


async def test_markers_recorded_beside_the_envelope_carry_its_sample_times(
    tmp_path: Path, gated: threading.Event
) -> None:
    prefix = "vmf-" + secrets.token_hex(4)
    settings = load_settings(environ={}, overrides={"lsl.publish": True, "lsl.prefix": prefix})
    options = app.RunOptions(
        device=f"replay:{DATA / '4Nsen.txt.gz'}?speed=max&channels=VM",
        duration_s=None,
        db=str(tmp_path / "s.db"),
        broker="embedded",
        report=None,
        live_view=False,
    )
    recorder = Recorder(prefix, gated)
    recorder.start()
    with open(os.devnull, "w") as devnull:
        report = await app.run(settings, options, console=Console(file=devnull))
    await asyncio.sleep(0.3)  # the last markers cross the loopback
    recorder.done.set()
    await asyncio.to_thread(recorder.join, 10)
    assert recorder.error is None, recorder.error
    env = np.asarray(recorder.env_stamps)
    markers = recorder.markers
    assert len(env) == report["samples"] == 15601  # every envelope sample, from index 0

    kinds = [m["kind"] for _, m in markers]
    sent = markers[-1][1]["n"]
    check(markers, env, sent)
    assert kinds[-1] == "session_end"
    # Only session_start can precede the inlet's subscription (the outlet is made at start).
    assert markers[0][1]["n"] <= 2
    # Every contraction the session counted is one marker, with its duration, at its onset.
    contractions = [m for _, m in markers if m["kind"] == "contraction"]
    assert len(contractions) == report["contractions"] >= 3
    for c in contractions:
        assert c["i"] == c["onset_index"] and c["duration_s"] > 0
    assert {"onset", "offset", "cue", "rep"} <= set(kinds), set(kinds)  # clean file: no quality
    assert sum(m["kind"] == "cue" for _, m in markers) == report["cues"]
    about_samples = [m for _, m in markers if m["kind"] in ("contraction", "onset", "cue")]
    assert all(isinstance(m["i"], int) for m in about_samples)
    reps = [m for _, m in markers if m["kind"] == "rep"]
    assert all(m["i"] == m["at_index"] for m in reps)
    assert len(reps) == len({m["rep"] for m in reps})  # each rep once
    # The published marker names its sample: its time is that sample's, not the publish time.
    lags = [t_pub for t_pub, m in markers if m["kind"] == "contraction"]
    assert all(t < env[-1] for t in lags)

    # The numeric streams carry the channel metadata XDF readers expect.
    ch = recorder.env_info.desc().child("channels").child("channel")
    assert (ch.child_value("label"), ch.child_value("unit"), ch.child_value("type")) == (
        "VM",
        "millivolts",
        "EMG",
    )
    acq = recorder.env_info.desc().child("acquisition")
    assert acq.child_value("manufacturer") == "vm-feedback"

    # Negative controls: the same check fails on one marker dropped, and on a clock one
    # sample off (a marker stamped at publish time, or off by one sample, is caught).
    dropped = markers[:5] + markers[6:]
    with pytest.raises(AssertionError, match="lost"):
        check(dropped, env, sent)
    with pytest.raises(AssertionError, match="off its sample"):
        check(markers, env + 1e-3, sent)
    errors = [abs(t - env[m["i"]]) for t, m in markers if m["i"] is not None]
    print(f"markers {len(markers)}, with sample index {len(errors)}, max error {max(errors):.3g} s")


def test_sample_clock_maps_indices_through_each_chunk_stamp() -> None:
    clock = SampleClock(1000.0)
    assert clock.at(0) is None
    clock.add(0, 10, 5.009)  # liblsl stamps the chunk's last sample; the rest back at 1/rate
    clock.add(10, 10, 7.0)  # a late chunk: its own anchor, not the first one's line
    assert clock.at(0) == pytest.approx(5.0)
    assert clock.at(9) == pytest.approx(5.009)
    assert clock.at(10) == pytest.approx(6.991)
    assert clock.at(19) == pytest.approx(7.0)


def test_stim_burst_marker_has_its_duration_and_its_sample() -> None:
    clock = SampleClock(1000.0)
    clock.add(0, 1000, 100.999)
    out = MarkerOutlet("vmf-" + secrets.token_hex(4), "s1", clock)
    found = pylsl.resolve_byprop("source_id", "s1-events", 1, 10)
    inlet = pylsl.StreamInlet(found[0])
    inlet.open_stream(5)
    body = {
        "blank_from": 500,
        "blank_to": 900,
        "ramp_up_ms": 100,
        "hold_ms": 200,
        "ramp_down_ms": 50,
    }
    out.on_message("stim_burst", body)
    out.on_message("cue", {"kind": "zone"})  # from the tick, not twice
    out.on_message("band_set", {"low_pct": 40, "high_pct": 60, "kind": "x"})
    sample, t = inlet.pull_sample(timeout=5)
    burst = json.loads(sample[0])
    assert burst["duration_s"] == 0.35 and burst["i"] == 500 and burst["n"] == 1
    assert t == pytest.approx(100.5)
    sample, _ = inlet.pull_sample(timeout=5)
    band = json.loads(sample[0])
    assert band["n"] == 2 and band["i"] is None and band["body_kind"] == "x"


def test_quality_marker_on_each_change_of_a_channels_flags() -> None:
    clock = SampleClock(1000.0)
    clock.add(0, 20, 10.019)
    out = MarkerOutlet("vmf-" + secrets.token_hex(4), "s2", clock)
    inlet = pylsl.StreamInlet(pylsl.resolve_byprop("source_id", "s2-events", 1, 10)[0])
    inlet.open_stream(5)
    flags = np.zeros((2, 10), np.uint8)
    flags[1, 3:7] = 1 | 4  # VL flat and hum from sample 3 to 6
    out._quality(0, ("VM", "VL"), flags)
    out._quality(10, ("VM", "VL"), flags[:, -1:].repeat(10, axis=1))  # still clean: nothing
    got = []
    for _ in range(2):
        sample, t = inlet.pull_sample(timeout=5)
        got.append((json.loads(sample[0]), round(t, 6)))
    assert inlet.pull_sample(timeout=0.2)[0] is None
    assert [(m["i"], m["channel"], m["flags"], t) for m, t in got] == [
        (3, "VL", ["electrode off / flat line", "mains interference"], 10.003),
        (7, "VL", [], 10.007),
    ]
