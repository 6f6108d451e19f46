"""`replay:` over XDF (the real LabRecorder example in tests/fixtures/xdf, and larger files written
here), the start offset on every format, and a loop that cannot spin."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest
import pyxdf

from config.loader import load_settings
from devices.base import DeviceError, SampleBlock
from devices.recording_formats import load_recording
from devices.registry import open_device
from devices.replay import ReplayDevice
from tests.devices.xdf_writer import XdfStream, write_xdf

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MINIMAL = FIXTURES / "xdf" / "minimal.xdf"
UCI = FIXTURES / "data" / "4Nsen.txt.gz"
SETTINGS = load_settings(environ={})
# minimal.xdf's int16 stream as its README lists it (xdf-modules/example-files).
MINIMAL_ROWS = np.array(
    [[192, 255, 238], *([[12, 22, 32], [13, 23, 33], [14, 24, 34], [15, 25, 35]] * 2)]
)


async def collect(spec: str) -> tuple[list[SampleBlock], ReplayDevice]:
    device = open_device(spec, SETTINGS)
    assert isinstance(device, ReplayDevice)
    async with device:
        blocks = [b async for b in device.blocks()]
    return blocks, device


def joined(blocks: list[SampleBlock]) -> np.ndarray:
    return np.concatenate([b.data for b in blocks], axis=1)


@pytest.mark.parametrize("choose", ["", "stream=SendDataC&", "type=eeg&"])
async def test_real_labrecorder_file_replays_bit_exact(choose: str) -> None:
    blocks, device = await collect(f"replay:{MINIMAL}?{choose}unit=mV&speed=max")
    assert device.info.channels == ("ch1", "ch2", "ch3") and device.info.rate_hz == 10.0
    data = joined(blocks)
    np.testing.assert_array_equal(data, MINIMAL_ROWS.T.astype(np.float32))
    # and the same as pyxdf reads it itself
    streams, _ = pyxdf.load_xdf(str(MINIMAL), verbose=False)
    (eeg,) = [s for s in streams if s["info"]["name"] == ["SendDataC"]]
    np.testing.assert_array_equal(data, eeg["time_series"].T.astype(np.float32))


async def test_channels_without_unit_are_microvolts_and_markers_are_annotations() -> None:
    blocks, device = await collect(f"replay:{MINIMAL}?speed=max&channels=VM=ch1")
    expected = (MINIMAL_ROWS[:, 0].astype(np.float64) * 1e-3).astype(np.float32)
    np.testing.assert_array_equal(joined(blocks)[0], expected)
    assert any("taken as µV" in n for n in device.stats.notes)
    texts = [a.text for a in device.recording.annotations]
    assert texts[-4:] == ["Hello", "World", "from", "LSL"]


async def test_start_offset_on_xdf_skips_whole_samples() -> None:
    blocks, _ = await collect(f"replay:{MINIMAL}?unit=mV&speed=max&start=0.3")
    np.testing.assert_array_equal(joined(blocks), MINIMAL_ROWS[3:].T.astype(np.float32))
    rec = load_recording(MINIMAL, units="mV")
    assert blocks[0].t_device == pytest.approx(rec.t0_s + 0.3)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("stream=SendDataString", "not numeric"),
        ("type=EMG", r"no stream with type 'EMG'.*SendDataC"),
        ("stream=a&type=b", "not both"),
        ("stream=", "need a value"),
        ("unit=furlong", "unit must be"),
        ("start=-1", "start must be"),
        ("start=nan", "start must be"),
        ("start=5", "past the end"),
    ],
)
def test_bad_xdf_choices_are_refused_naming_the_streams(query: str, message: str) -> None:
    with pytest.raises(DeviceError, match=message):
        open_device(f"replay:{MINIMAL}?{query}", SETTINGS)


def test_stream_choice_on_a_file_that_is_not_xdf_is_refused() -> None:
    with pytest.raises(DeviceError, match="XDF file only"):
        open_device(f"replay:{UCI}?type=EMG", SETTINGS)


def lab_file(path: Path, seconds: float = 10.0) -> np.ndarray:
    """An EMG stream (2 kHz, µV, labelled VM and VL), an accelerometer and a marker stream."""
    rng = np.random.default_rng(16)
    n = round(seconds * 2000)
    emg = (rng.standard_normal((n, 2)) * 200).astype(np.float32)
    t = 1000.0 + np.arange(n) / 2000
    write_xdf(
        path,
        [
            XdfStream("Delsys", "EMG", 2000.0, ("VM", "VL"), ("microvolts",) * 2, emg, stamps=t),
            XdfStream("IMU", "Accel", 100.0, ("ax",), ("g",), emg[::20, :1], stamps=t[::20]),
            XdfStream("Cues", "Markers", 0.0, markers=["go", "stop"], stamps=t[[2000, 9000]]),
        ],
    )
    return emg


async def test_xdf_with_several_streams_needs_a_choice_and_replays_exactly(
    tmp_path: Path,
) -> None:
    path = tmp_path / "lab.xdf"
    emg = lab_file(path)
    with pytest.raises(DeviceError, match=r"2 numeric streams.*'Delsys'.*'IMU'"):
        open_device(f"replay:{path}", SETTINGS)
    blocks, device = await collect(f"replay:{path}?type=EMG&speed=max&start=2.5")
    assert device.info.channels == ("VM", "VL") and device.info.rate_hz == 2000.0
    expected = (emg[5000:].T.astype(np.float64) * 1e-3).astype(np.float32)  # µV → mV
    data = joined(blocks)
    assert data.shape == expected.shape and data.tobytes() == expected.tobytes()
    assert [(a.onset_s, a.text) for a in device.recording.annotations] == [
        (1001.0, "go"),
        (1004.5, "stop"),
    ]
    assert blocks[0].t_device == pytest.approx(1002.5)
    assert not any("break" in n for n in device.stats.notes)


async def test_a_break_in_xdf_timestamps_is_named(tmp_path: Path) -> None:
    path = tmp_path / "gap.xdf"
    x = np.ones((400, 1), np.float32)
    t = np.arange(400) / 100.0
    t[200:] += 1.5  # LabRecorder lost 1.5 s of this stream
    write_xdf(path, [XdfStream("EMG", "EMG", 100.0, ("VM",), ("mV",), x, stamps=t)])
    _, device = await collect(f"replay:{path}?speed=max")
    assert any(
        "break 1 time(s) (largest +1.510 s after sample 199)" in n for n in device.stats.notes
    )


async def test_start_offset_on_a_real_uci_recording() -> None:
    blocks, _ = await collect(f"replay:{UCI}?speed=max&start=12.5")
    rec = load_recording(UCI)
    np.testing.assert_array_equal(joined(blocks), rec.data[:4, 12500:])
    assert blocks[0].first_index == 0 and blocks[0].t_device == pytest.approx(rec.t0_s + 12.5)


async def test_loop_with_start_comes_back_to_the_start(tmp_path: Path) -> None:
    path = tmp_path / "short.csv"
    path.write_text("time,VM\n" + "\n".join(f"{i / 1000:.3f},{i}" for i in range(95)) + "\n")
    device = open_device(f"replay:{path}?speed=max&loop=1&start=0.05", SETTINGS)
    assert isinstance(device, ReplayDevice)
    got: list[SampleBlock] = []
    async with device:
        async for b in device.blocks():
            got.append(b)
            if sum(x.n_samples for x in got) >= 100:
                break
    np.testing.assert_array_equal(joined(got)[0, :100], 50 + np.arange(100) % 45)
    assert device.laps == 2


def test_loop_ends_instead_of_spinning_when_a_rewind_finds_nothing(tmp_path: Path) -> None:
    """The file shrinks below the start offset between laps: every rewind finds no sample. The
    old loop rewound again at once, never awaiting: the event loop hung. Run in a thread so a
    spinning replay fails this test instead of hanging it."""
    path = tmp_path / "shrinks.csv"
    path.write_text("time,VM\n" + "\n".join(f"{i / 1000:.3f},{i}" for i in range(95)) + "\n")
    result: list[object] = []

    async def play() -> None:
        device = open_device(f"replay:{path}?speed=max&loop=1&start=0.05", SETTINGS)
        assert isinstance(device, ReplayDevice)
        n = 0
        async with device:
            async for b in device.blocks():
                n += b.n_samples
                path.write_text("time,VM\n0.000,1\n0.001,2\n")  # now shorter than the offset
        result.append((n, device.stats.notes[-1]))

    worker = threading.Thread(target=lambda: asyncio.run(play()), daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "the replay loop spun at the end of the file"
    assert result == [(45, "replay loop stopped: no samples to play")]
