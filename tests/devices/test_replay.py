"""The replay device over real recordings (tests/fixtures/data) and files written on the spot."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from config import load_settings
from devices.base import DeviceError, SampleBlock
from devices.recording_formats import load_recording
from devices.registry import open_device
from devices.replay import ReplayDevice, parse_channel_map

DATA = Path(__file__).resolve().parents[1] / "fixtures" / "data"
SETTINGS = load_settings(environ={})


async def collect(spec: str) -> tuple[list[SampleBlock], ReplayDevice]:
    device = open_device(spec, SETTINGS)
    assert isinstance(device, ReplayDevice)
    async with device:
        blocks = [b async for b in device.blocks()]
    return blocks, device


async def test_uci_file_replays_every_emg_sample_in_order() -> None:
    blocks, device = await collect(f"replay:{DATA / '4Nsen.txt.gz'}?speed=max")
    rec = load_recording(DATA / "4Nsen.txt.gz")
    assert device.info.channels == ("RF", "BF", "VM", "ST")  # FX (deg) is not EMG
    assert device.info.rate_hz == 1000.0
    assert sum(b.n_samples for b in blocks) == rec.n_samples == 15601
    assert [b.first_index for b in blocks] == list(range(0, 15601, 10))
    joined = np.concatenate([b.data for b in blocks], axis=1)
    np.testing.assert_array_equal(joined, rec.data[:4])
    assert any("FX" in n for n in device.stats.notes)
    assert any("no FX value" in n for n in device.stats.notes)  # the reader's oddity warning


async def test_channel_map_keeps_what_exists_so_uci_gives_vm_only() -> None:
    blocks, device = await collect(f"replay:{DATA / '4Npie.txt.gz'}?speed=max&channels=VM=VM,VL=VL")
    assert device.info.channels == ("VM",)
    assert blocks[0].data.shape[0] == 1
    assert any("VL=VL" in n for n in device.stats.notes)


async def test_santuz_walking_csv_maps_vm_and_vl_in_millivolts() -> None:
    blocks, device = await collect(
        f"replay:{DATA / 'ID0012_TW_01_emg.csv.gz'}?speed=max&channels=VM=VM,VL=VL"
    )
    assert device.info.channels == ("VM", "VL")
    joined = np.concatenate([b.data for b in blocks], axis=1)
    assert joined.shape == (2, 7618)
    # README: VM RMS ≈ 20.97 µV-units, i.e. about 0.021 mV after conversion.
    assert float(np.sqrt(np.mean(joined[0].astype(float) ** 2))) == pytest.approx(0.021, rel=0.05)
    assert blocks[0].t_device == pytest.approx(0.014)


async def test_real_speed_takes_the_recording_time(tmp_path: Path) -> None:
    path = tmp_path / "short.csv"
    rows = "\n".join(f"{i / 1000:.3f},{np.sin(i / 5):.4f}" for i in range(300))
    path.write_text("time,VM\n" + rows + "\n")
    t0 = time.monotonic()
    blocks, _ = await collect(f"replay:{path}")
    assert sum(b.n_samples for b in blocks) == 300
    assert time.monotonic() - t0 >= 0.27  # paced at 1000 Hz, not dumped at once


def test_unreadable_file_gives_one_error_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("time,VM\n0.000,0.1\n0.001,0.2\n0.002,abc\n0.003,0.1\n")
    with pytest.raises(DeviceError, match=r"line 4") as info:
        open_device(f"replay:{path}", SETTINGS)
    assert "bad.csv" in str(info.value)


def test_bad_specs_are_refused_with_a_reason(tmp_path: Path) -> None:
    with pytest.raises(DeviceError, match="speed"):
        open_device(f"replay:{DATA / '4Nsen.txt.gz'}?speed=fast", SETTINGS)
    with pytest.raises(DeviceError, match="give a file"):
        open_device("replay:", SETTINGS)
    with pytest.raises(DeviceError, match="cannot open"):
        open_device(f"replay:{tmp_path / 'nope.csv'}", SETTINGS)
    with pytest.raises(DeviceError, match="none of the channels"):
        open_device(f"replay:{DATA / '4Nsen.txt.gz'}?channels=VL", SETTINGS)
    assert parse_channel_map("VM=VM, VL = EMG VL,RF") == {"VM": "VM", "VL": "EMG VL", "RF": "RF"}


async def test_position_survives_a_second_blocks_call() -> None:
    device = open_device(f"replay:{DATA / '7Nmar.txt.gz'}?speed=max", SETTINGS)
    assert isinstance(device, ReplayDevice)
    async with device:
        first = []
        async for b in device.blocks():
            first.append(b)
            if len(first) == 5:
                break
        rest = [b async for b in device.blocks()]
    assert rest[0].first_index == first[-1].end_index
    assert sum(b.n_samples for b in first + rest) == 8147
