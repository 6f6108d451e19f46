"""The Arduino/MyoWare text format: real malformed lines, over a real pty and split anywhere."""

from __future__ import annotations

import asyncio
import os
import tty

import numpy as np
import pytest

from config.loader import load_settings
from devices.base import DeviceError, LinkStats, SampleBlock
from devices.csv_stream import CsvSampleStream, CsvSettings
from devices.registry import open_device
from firmware_bridge import StimCommand

# What a sketch printing millis(),VM,VL really produces when the port is opened mid-stream at
# 1 kHz: half a line first, a header after a reset, a baud-mismatch burst, a dropped column,
# Serial Plotter labels, CRLF endings, and a 20 ms hole in the timestamps (a USB hiccup).
LINES = [
    b"12,0.031\r\n",  # the tail of a line cut when the port opened: always dropped
    b"1000,0.10,0.20\r\n",
    b"1001,0.11,0.21\r\n",
    b"time,VM,VL\r\n",  # header printed by setup() after an auto-reset
    b"1002,0.12,0.22\r\n",
    b"\xf8\x80\x00\xfe\xff\r\n",  # line noise
    b"1003,0.13\r\n",  # a column lost
    b"1004,VM:0.14,VL:0.24\r\n",  # Serial Plotter labels: accepted
    b"1005\t0.15\t0.25\r\n",  # tab-separated: accepted
    b"1006,nan,0.26\r\n",  # NaN is not a sample
    b"1026,0.36,0.46\r\n",  # 20 ms later: 19 samples lost
    b"1027,0.37,0.47\n",
]
GOOD = 7  # lines that are samples
BAD = 4


def settings(**extra: str) -> CsvSettings:
    return CsvSettings.from_options({"rate": "1000", "channels": "VM,VL", **extra})


def decode(chunks: list[bytes]) -> tuple[list[SampleBlock], LinkStats]:
    stats = LinkStats()
    stream = CsvSampleStream(settings(), stats)
    blocks = [b for c in chunks for b in stream.feed(c, 100.0)]
    return blocks, stats


def test_malformed_lines_are_counted_and_skipped() -> None:
    blocks, stats = decode([b"".join(LINES)])
    assert stats.protocol_errors == BAD
    assert sum(b.n_samples for b in blocks) == GOOD == stats.samples
    first, second = blocks
    assert (first.first_index, first.n_samples) == (0, 5)
    np.testing.assert_allclose(first.data[0], [0.10, 0.11, 0.12, 0.14, 0.15], rtol=1e-6)
    np.testing.assert_allclose(first.data[1], [0.20, 0.21, 0.22, 0.24, 0.25], rtol=1e-6)
    # The timestamp hole moves the index: 1026 ms is sample 26 since 1000 ms.
    assert second.first_index == 26 and stats.gaps == 1 and stats.samples_lost == 21


def test_same_result_for_any_split() -> None:
    whole = b"".join(LINES)
    reference, ref_stats = decode([whole])
    for cut in range(1, len(whole)):
        blocks, stats = decode([whole[:cut], whole[cut:]])
        assert stats.protocol_errors == ref_stats.protocol_errors, cut
        got = np.concatenate([b.data for b in blocks], axis=1)
        want = np.concatenate([b.data for b in reference], axis=1)
        np.testing.assert_array_equal(got, want)
        assert blocks[-1].end_index == reference[-1].end_index


def test_no_timestamp_column_and_scale() -> None:
    stats = LinkStats()
    stream = CsvSampleStream(settings(ts="none", scale="0.5"), stats)
    blocks = stream.feed(b"2\n512,500\n1,2,3\n514,502\n", 1.0)
    assert stats.protocol_errors == 1
    assert [b.first_index for b in blocks] == [0]
    np.testing.assert_allclose(blocks[0].data, [[256, 257], [250, 251]])


def test_endless_garbage_without_newline_is_dropped() -> None:
    stats = LinkStats()
    stream = CsvSampleStream(settings(ts="ms"), stats)
    stream.feed(b"cut line\n", 1.0)
    assert stream.feed(b"x" * 5000, 1.0) == []
    assert stats.protocol_errors == 1
    assert stream.feed(b"\n1000,1,2\n", 1.0)[0].n_samples == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "needs rate"),
        ({"rate": "fast"}, "numbers"),
        ({"rate": "0"}, "1–20000"),
        ({"rate": "1000", "channels": "vm,left"}, "roles"),
        ({"rate": "1000", "ts": "ns"}, "ts must be"),
    ],
)
def test_bad_csv_options(options: dict[str, str], message: str) -> None:
    with pytest.raises(DeviceError, match=message):
        CsvSettings.from_options(options)


async def test_csv_over_a_real_pty() -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    spec = f"serial:{path}?format=csv&rate=1000&channels=VM,VL&baud=115200"
    device = open_device(spec, load_settings(environ={}))
    try:
        async with device:
            assert device.info.rate_hz == 1000.0 and device.info.channels == ("VM", "VL")
            for line in LINES:  # as the sketch prints them, one write per line
                os.write(master, line)
            blocks: list[SampleBlock] = []
            async with asyncio.timeout(5):
                async for block in device.blocks():
                    blocks.append(block)
                    if sum(b.n_samples for b in blocks) >= GOOD:
                        break
            with pytest.raises(DeviceError, match="no stimulation"):
                await device.send(StimCommand(1, 0, 1, 100, 50, 0, 100, 0))
    finally:
        os.close(master)
        os.close(slave)
    assert device.stats.protocol_errors == BAD
    assert blocks[-1].end_index == 28
    assert device.stats.samples_lost == 21
