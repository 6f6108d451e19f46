"""`brainflow:` over BrainFlow's real synthetic board, and its playback board replaying a file
that BrainFlow's own DataFilter.write_file wrote."""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from config.loader import load_settings
from devices import brainflow_device
from devices.base import DeviceError, SampleBlock
from devices.brainflow_device import BrainflowDevice, load_brainflow
from devices.registry import open_device

SETTINGS = load_settings(environ={})


def brainflow() -> Any:
    return load_brainflow()


async def collect(spec: str, n: int, timeout_s: float = 15.0) -> tuple[list[SampleBlock], Any]:
    device = open_device(spec, SETTINGS)
    assert isinstance(device, BrainflowDevice)
    blocks: list[SampleBlock] = []
    async with device:
        async with asyncio.timeout(timeout_s):
            async for block in device.blocks():
                blocks.append(block)
                if sum(b.n_samples for b in blocks) >= n:
                    break
    return blocks, device


def record_synthetic(path: Path, seconds: float, drop: slice | None = None) -> np.ndarray:
    """What BrainFlow's synthetic board sends, written with BrainFlow's DataFilter; read back
    (the file holds 6 decimals), so the reference is the file as BrainFlow reads it."""
    bf = brainflow()
    from brainflow.data_filter import DataFilter  # loaded by load_brainflow

    board = bf.BoardShim(int(bf.BoardIds.SYNTHETIC_BOARD), bf.BrainFlowInputParams())
    board.prepare_session()
    board.start_stream()
    time.sleep(seconds)
    rows = board.get_board_data()
    board.stop_stream()
    board.release_session()
    if drop is not None:  # the samples a lossy link never delivered
        rows = np.ascontiguousarray(np.delete(rows, np.arange(rows.shape[1])[drop], axis=1))
    DataFilter.write_file(rows, str(path), "w")
    return np.asarray(DataFilter.read_file(str(path)))


def test_brainflow_loads_without_leaving_a_pkg_resources_behind() -> None:
    bf = brainflow()
    assert bf.BoardShim.get_sampling_rate(int(bf.BoardIds.SYNTHETIC_BOARD)) == 250
    if importlib.util.find_spec("pkg_resources") is None:  # setuptools 81+: the shim was lent
        assert "pkg_resources" not in sys.modules


async def test_synthetic_board_streams_emg_channels_in_millivolts() -> None:
    lags: list[float] = []

    async def ticker() -> None:  # the session loop's other work: it must keep its pace
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append(time.perf_counter() - t - 0.005)

    tick = asyncio.create_task(ticker())
    blocks, device = await collect("brainflow:synthetic?channels=VM,VL&emg=1,2", 300)
    tick.cancel()
    assert len(lags) > 50 and max(lags) < 0.05, f"the loop stalled {max(lags) * 1e3:.1f} ms"
    assert device.info.rate_hz == 250.0 and device.info.channels == ("VM", "VL")
    assert [b.first_index for b in blocks[1:]] == [b.end_index for b in blocks[:-1]]
    data = np.concatenate([b.data for b in blocks], axis=1)
    assert data.dtype == np.float32 and np.isfinite(data).all()
    # The synthetic ExG is some hundreds of µV: in mV it is below 1, and not flat.
    assert 0.001 < float(np.abs(data).max()) < 1.0
    assert device.stats.gaps == 0 and device.stats.state.value == "closed"


async def test_playback_board_replays_a_brainflow_file_sample_exact(tmp_path: Path) -> None:
    path = tmp_path / "synthetic.csv"
    ref = record_synthetic(path, 1.2)
    bf = brainflow()
    emg = bf.BoardShim.get_emg_channels(int(bf.BoardIds.SYNTHETIC_BOARD))
    spec = (
        f"brainflow:PLAYBACK_FILE_BOARD?file={path}&master_board=SYNTHETIC_BOARD"
        "&channels=VM,VL&emg=3,5"
    )
    blocks, device = await collect(spec, ref.shape[1])
    data = np.concatenate([b.data for b in blocks], axis=1)
    expected = (ref[[emg[2], emg[4]]] * 1e-3).astype(np.float32)
    assert data.shape == expected.shape
    assert data.tobytes() == expected.tobytes()  # every sample, bit for bit
    assert [b.first_index for b in blocks[1:]] == [b.end_index for b in blocks[:-1]]
    assert device.stats.gaps == 0 and device.stats.samples_lost == 0


async def test_a_hole_in_the_package_counter_is_a_gap_of_the_right_size(tmp_path: Path) -> None:
    path = tmp_path / "lossy.csv"
    ref = record_synthetic(path, 1.2, drop=slice(100, 110))  # 10 samples lost at 100
    spec = f"brainflow:PLAYBACK_FILE_BOARD?file={path}&master_board=-1&channels=VM"
    blocks, device = await collect(spec, ref.shape[1])
    assert device.stats.gaps == 1 and device.stats.samples_lost == 10
    indices = np.concatenate([np.arange(b.first_index, b.end_index) for b in blocks])
    np.testing.assert_array_equal(indices[98:102], [98, 99, 110, 111])
    # counter=0 ignores the counter: the same file then plays as if nothing were lost
    blocks, device = await collect(spec + "&counter=0", ref.shape[1])
    assert device.stats.gaps == 0 and blocks[-1].end_index == ref.shape[1]


@pytest.mark.parametrize("owned", [True, False], ids=["owned-shim", "control-plain-BoardShim"])
async def test_a_closed_board_dropped_late_leaves_the_next_session_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, owned: bool
) -> None:
    """The flake this guards: the last reference to a closed device's shim died in the worker
    thread after the next device (same file) had prepared its session, and BrainFlow's
    `BoardShim.__del__` released that one. Here the first shim is kept and dropped on purpose
    while the second device is open. The control builds plain BoardShims: its second session
    must die, or this test could not see the fault."""
    path = tmp_path / "rec.csv"
    ref = record_synthetic(path, 0.5)
    spec = f"brainflow:PLAYBACK_FILE_BOARD?file={path}&master_board=-1&channels=VM"
    made: list[Any] = []
    shim_class = brainflow_device.owned_shim_class() if owned else brainflow().BoardShim

    def keep(*args: Any) -> Any:
        made.append(shim_class(*args))
        return made[-1]

    monkeypatch.setattr(brainflow_device, "owned_shim_class", lambda: keep)
    await collect(spec, ref.shape[1])
    device = open_device(spec, SETTINGS)
    async with device:
        assert made[1].is_prepared()
        del made[0]
        gc.collect()
        assert made[0].is_prepared() is owned


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("brainflow:NO_SUCH_BOARD?channels=VM", "unknown board"),
        ("brainflow:synthetic", "name the roles"),
        ("brainflow:synthetic?channels=vm", "name the roles"),
        ("brainflow:synthetic?channels=VM&baud=9", "unknown option"),
        ("brainflow:synthetic?channels=VM&emg=17", "16 EMG channels"),
        ("brainflow:synthetic?channels=VM&unit=furlong", "unit must be"),
        ("brainflow:PLAYBACK_FILE_BOARD?channels=VM", "master_board"),
        ("brainflow:", "name a board"),
    ],
)
def test_bad_brainflow_specs(spec: str, message: str) -> None:
    with pytest.raises(DeviceError, match=message):
        open_device(spec, SETTINGS)


async def test_missing_playback_file_is_a_device_error(tmp_path: Path) -> None:
    spec = f"brainflow:PLAYBACK_FILE_BOARD?file={tmp_path / 'none.csv'}&master_board=-1&channels=VM"
    device = open_device(spec, SETTINGS)
    with pytest.raises(DeviceError, match="cannot open board"):
        async with device:
            pass
