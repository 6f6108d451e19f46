"""LSL: a real pylsl outlet to the real `lsl:` inlet device, and the processed-envelope outlet
to a real inlet, all in-process over liblsl."""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path

import numpy as np
import pylsl
import pytest
from rich.console import Console

from config.loader import load_settings
from devices.base import DeviceError, SampleBlock
from devices.registry import open_device
from feedback import app

RATE = 1000.0


def emg_outlet(name: str, labels: tuple[str, ...], unit: str) -> pylsl.StreamOutlet:
    info = pylsl.StreamInfo(name, "EMG", len(labels), RATE, "float32", name + "-src")
    chans = info.desc().append_child("channels")
    for label in labels:
        ch = chans.append_child("channel")
        ch.append_child_value("label", label)
        ch.append_child_value("unit", unit)
    return pylsl.StreamOutlet(info)


async def publish(outlet: pylsl.StreamOutlet, chunks: int, hole_after: int) -> None:
    """20-sample chunks of a ramp (µV = sample number) in real time; one 100-sample hole."""
    start = pylsl.local_clock()
    index = 0
    for c in range(chunks):
        if c == hole_after:
            index += 100  # these samples were never sent: the timestamps jump
        n = np.arange(index, index + 20)
        data = np.stack([n, -n, n * 0 + 7], axis=1).astype(np.float32)
        outlet.push_chunk(data, start + (index + 19) / RATE)
        index += 20
        await asyncio.sleep(0.02)


async def test_inlet_converts_units_names_roles_and_marks_gaps() -> None:
    name = "vmf-test-" + secrets.token_hex(4)
    outlet = emg_outlet(name, ("EMG 1", "EMG 2", "AUX"), "microvolts")
    settings = load_settings(environ={})
    device = open_device(f"lsl:{name}?channels=VM,VL", settings)
    blocks: list[SampleBlock] = []
    async with device:
        assert device.info.rate_hz == RATE and device.info.channels == ("VM", "VL")
        sender = asyncio.create_task(publish(outlet, 40, hole_after=20))
        async with asyncio.timeout(10):
            async for block in device.blocks():
                blocks.append(block)
                if sum(b.n_samples for b in blocks) >= 800:
                    break
        await sender
    data = np.concatenate([b.data for b in blocks], axis=1)
    assert data.shape[0] == 2  # the AUX column is not a role and was not asked for
    first = blocks[0].first_index
    indices = np.concatenate([np.arange(b.first_index, b.end_index) for b in blocks]) - first
    sent = np.concatenate([np.arange(0, 400), np.arange(500, 900)])  # the ramp value = index
    # µV → mV, and every sample sits at the index of its own timestamp, across the hole.
    np.testing.assert_allclose(data[0] * 1000, sent[: data.shape[1]], rtol=1e-5)
    np.testing.assert_array_equal(indices, sent[: data.shape[1]])
    np.testing.assert_allclose(data[1], -data[0])
    assert device.stats.gaps == 1 and device.stats.samples_lost == 100


async def test_missing_stream_lists_what_it_saw() -> None:
    outlet = emg_outlet("vmf-present-" + secrets.token_hex(3), ("VM",), "mV")
    device = open_device("lsl:no-such-stream?timeout=0.3", load_settings(environ={}))
    with pytest.raises(DeviceError, match=r"saw: .*vmf-present-"):
        async with device:
            pass
    del outlet


async def test_labels_that_are_not_roles_need_channels_option() -> None:
    name = "vmf-test-" + secrets.token_hex(4)
    outlet = emg_outlet(name, ("EXG Channel 0", "EXG Channel 1"), "microvolts")
    device = open_device(f"lsl:{name}", load_settings(environ={}))
    with pytest.raises(DeviceError, match=r"channels=VM,VL"):
        async with device:
            pass
    del outlet


@pytest.mark.parametrize(
    ("spec", "message"),
    [("lsl:x?rate=5", "allowed"), ("lsl:", "stream name"), ("lsl:x?unit=furlong", "unit")],
)
def test_bad_lsl_specs(spec: str, message: str) -> None:
    with pytest.raises(DeviceError, match=message):
        open_device(spec, load_settings(environ={}))


async def test_session_publishes_envelope_and_activation_to_lsl(tmp_path: Path) -> None:
    prefix = "vmf-" + secrets.token_hex(4)
    settings = load_settings(environ={}, overrides={"lsl.publish": True, "lsl.prefix": prefix})
    options = app.RunOptions(
        device="sim",
        duration_s=2.5,
        db=str(tmp_path / "s.db"),
        broker="embedded",
        report=None,
        live_view=False,
    )

    async def receive() -> tuple[list[str], np.ndarray]:
        found = await asyncio.to_thread(pylsl.resolve_byprop, "name", f"{prefix}-activation", 1, 10)
        inlet = pylsl.StreamInlet(found[0])
        desc = (await asyncio.to_thread(inlet.info, 5)).desc().child("channels").child("channel")
        labels = [desc.child_value("label"), desc.next_sibling().child_value("label")]
        chunks = []
        for _ in range(200):
            data, _ = inlet.pull_chunk(timeout=0.0, max_samples=8192)
            if len(data):
                chunks.append(np.asarray(data))
            await asyncio.sleep(0.01)
        return labels, np.concatenate(chunks)

    receiver = asyncio.create_task(receive())
    with open(os.devnull, "w") as devnull:
        report = await app.run(settings, options, console=Console(file=devnull))
    labels, activation = await receiver
    assert report["samples"] == 5000
    assert labels == ["VM", "VL"]
    assert activation.shape[1] == 2 and activation.shape[0] > 1000
    # The simulated patient contracts to 45 % MVC: the published activation reaches the band.
    assert 25.0 < float(activation[:, 0].max()) < 90.0
