"""The replay device over real recordings (tests/fixtures/data) and files written on the spot."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from config.loader import load_settings
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
    # At speed=max the replay reads 500 ms blocks (devices.registry.MAX_SPEED_BLOCK_MS).
    assert [b.first_index for b in blocks] == list(range(0, 15601, 500))
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
    path.write_text("time,VM\n0.000,0.1\n0.001,0.2\nabc,0.3\n0.003,0.1\n")  # a bad time
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


# -- issue 11, defect 7: the station's own records, streaming, hostile files --------------------

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def own_record(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real session replaying 4Nsen and recording it as EDF+ and CSV (`--record` stem)."""
    tmp = tmp_path_factory.mktemp("own")
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "run_feedback.py"),
            "--headless",
            "--db",
            str(tmp / "s.db"),
            "--device",
            f"replay:{DATA / '4Nsen.txt.gz'}?speed=max&channels=VM=VM,BF=BF",
            "--record",
            str(tmp / "rec"),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return tmp / "rec"


@pytest.mark.parametrize("suffix", [".csv", ".edf"])
async def test_own_record_replays_the_same_samples(own_record: Path, suffix: str) -> None:
    """record → replay → the samples that were recorded (to the file's resolution)."""
    source = load_recording(DATA / "4Nsen.txt.gz")
    want = np.stack([source.data[source.channels.index(c)] for c in ("VM", "BF")])
    blocks, device = await collect(f"replay:{own_record.with_suffix(suffix)}?speed=max")
    assert device.info.channels == ("VM", "BF")  # raw EMG only: not envelopes, flags, zone
    assert device.info.rate_hz == 1000.0
    got = np.concatenate([b.data for b in blocks], axis=1)
    assert got.shape == want.shape  # the EDF's padded last record is cut at "recording ends"
    atol = 1e-6 if suffix == ".csv" else 2 * 16.384 / 65535
    np.testing.assert_allclose(got, want, atol=atol, rtol=1e-5)
    if suffix == ".edf":
        assert any(n.startswith("not replayed") and "VM env" in n for n in device.stats.notes)


async def test_own_edf_cut_mid_record_is_refused_then_repaired(
    own_record: Path, tmp_path: Path
) -> None:
    """A record cut short (a copy that stopped, a full disk): a typed error that says how to
    repair it; after `repair`, its whole records replay."""
    from feedback.outputs.repair import repair

    data = own_record.with_suffix(".edf").read_bytes()
    cut = tmp_path / "cut.edf"
    cut.write_bytes(data[: len(data) - 1000])  # into the last (padded) record
    with pytest.raises(
        DeviceError, match=r"cut\.edf: not a readable EDF.*feedback\.outputs\.repair"
    ):
        open_device(f"replay:{cut}?speed=max", SETTINGS)
    assert "record count set to 15 (was 16)" in repair(cut)
    blocks, device = await collect(f"replay:{cut}?speed=max")
    assert sum(b.n_samples for b in blocks) == 15 * 1000  # 15 whole 1 s records of 16
    assert device.info.channels == ("VM", "BF")


def test_corrupt_edf_header_is_a_typed_error(own_record: Path, tmp_path: Path) -> None:
    data = bytearray(own_record.with_suffix(".edf").read_bytes())
    data[236:244] = b"lots    "  # the record count
    bad = tmp_path / "bad.edf"
    bad.write_bytes(bytes(data))
    with pytest.raises(DeviceError, match=r"bad\.edf: not a readable EDF/BDF file"):
        open_device(f"replay:{bad}", SETTINGS)


def test_csv_without_time_column_takes_rate_from_the_spec(tmp_path: Path) -> None:
    path = tmp_path / "counts.csv"
    path.write_text("VM,VL\n" + "0.1,0.2\n" * 50)
    with pytest.raises(DeviceError, match=r"\?rate=HZ"):
        open_device(f"replay:{path}", SETTINGS)  # the hint names the spec's own option...
    device = open_device(f"replay:{path}?rate=500", SETTINGS)  # ...which is then accepted
    assert device.info.rate_hz == 500.0
    for bad in ("abc", "0", "nan", "1e9"):
        with pytest.raises(DeviceError, match="rate must be"):
            open_device(f"replay:{path}?rate={bad}", SETTINGS)


async def test_error_deep_in_a_long_file_ends_the_replay_after_every_good_sample(
    tmp_path: Path,
) -> None:
    """Past the first chunk, a broken row is found while playing: every sample before it is
    handed out, then the stream ends as at the end of the file (the session ends cleanly), with
    the error counted, logged and kept, naming the line."""
    path = tmp_path / "long.csv"
    n = 200_000
    values = [f"{i / 1000:.3f},{(i % 7) / 10}" for i in range(n)]
    values[150_000] = "150.000,1e308"
    path.write_text("time,VM\n" + "\n".join(values) + "\n")
    blocks, device = await collect(f"replay:{path}?speed=max")
    got = np.concatenate([b.data for b in blocks], axis=1)
    assert got.shape == (1, 150_000)
    np.testing.assert_allclose(got[0], (np.arange(150_000) % 7) / 10, atol=1e-7)
    assert device.stats.protocol_errors == 1 and device.stopped_by is not None
    assert device.stopped_by.line == 150_002
    assert any("line 150002: VM value '1e308' is out of range" in n for n in device.stats.notes)


async def test_time_break_deep_in_a_file_keeps_the_rows_before_it(tmp_path: Path) -> None:
    path = tmp_path / "jump.csv"
    values = [f"{i / 1000:.3f},{(i % 7) / 10}" for i in range(120_000)]
    del values[100_000]
    path.write_text("time,VM\n" + "\n".join(values) + "\n")
    blocks, device = await collect(f"replay:{path}?speed=max")
    assert sum(b.n_samples for b in blocks) == 100_000
    assert device.stopped_by is not None and "time step breaks" in device.stopped_by.reason


def test_replay_reads_in_chunks_with_bounded_memory(tmp_path: Path) -> None:
    """A 40 MB CSV replays in a child process whose peak RSS grows by far less than the file
    (the old reader held the text, the rows and the array: several times the file). The 2 GB
    measurement is bench/bench_replay_memory.py."""
    path = tmp_path / "big.csv"
    rng = np.random.default_rng(0)
    with path.open("w") as f:
        f.write("time,VM,VL\n")
        for k in range(30):
            t = (np.arange(k * 50_000, (k + 1) * 50_000) / 2000.0)[:, None]
            block = np.hstack([t, rng.normal(0, 0.05, (50_000, 2))])
            np.savetxt(f, block, fmt=["%.4f", "%.6f", "%.6f"], delimiter=",")
    size_mb = path.stat().st_size / 1e6
    assert size_mb > 40
    script = f"""
import asyncio, resource
from devices.replay import ReplayDevice
async def main():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    n = 0
    async with ReplayDevice({str(path)!r}, realtime=False, block_ms=500) as d:
        async for b in d.blocks():
            n += b.n_samples
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(n, (after - before) / 1024)
asyncio.run(main())
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout.split()
    assert int(out[0]) == 1_500_000
    assert float(out[1]) < 0.5 * size_mb, f"peak RSS grew {out[1]} MB on a {size_mb:.0f} MB file"


async def test_loop_reopens_the_file_and_the_counter_keeps_rising(tmp_path: Path) -> None:
    path = tmp_path / "short.csv"
    path.write_text("time,VM\n" + "\n".join(f"{i / 1000:.3f},{i}" for i in range(95)) + "\n")
    device = open_device(f"replay:{path}?speed=max&loop=1", SETTINGS)
    assert isinstance(device, ReplayDevice)
    blocks: list[SampleBlock] = []
    async with device:
        async for b in device.blocks():
            blocks.append(b)
            if sum(x.n_samples for x in blocks) >= 250:
                break
    assert [b.first_index for b in blocks[1:]] == [b.end_index for b in blocks[:-1]]
    joined = np.concatenate([b.data for b in blocks], axis=1)[0]
    np.testing.assert_array_equal(joined[:250], np.arange(250) % 95)
    assert not device.finished
