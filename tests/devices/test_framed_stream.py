"""FramedSampleStream on bytes from the emulated firmware: what comes before the hello."""

from __future__ import annotations

import logging

import pytest

from devices.base import LinkStats
from devices.firmware_pty import default_firmware
from devices.framed_stream import FramedSampleStream


def test_samples_before_device_info_are_counted_apart_from_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fw = default_firmware()
    stale = fw.advance(400, 0.2)
    fw.advance(200, 0.3)  # never read: a jump between stale frames is no gap
    stale += fw.advance(400, 0.5)
    stats = LinkStats()
    stream = FramedSampleStream(stats)
    with caplog.at_level(logging.INFO, logger="devices.framed_stream"):
        assert stream.feed(stale, 0.5) == []
        blocks = stream.feed(fw.hello() + fw.advance(100, 0.55), 0.55)
    assert stats.samples_before_info == 800
    assert stats.protocol_errors == 0 and stats.gaps == 0 and stats.samples_lost == 0
    assert sum(b.n_samples for b in blocks) == 100
    notes = [r for r in caplog.records if "identified itself" in r.getMessage()]
    assert len(notes) == 1 and notes[0].levelno == logging.INFO


def test_emulator_help_documents_both_modes(capsys: pytest.CaptureFixture[str]) -> None:
    from devices.firmware_pty import main

    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--pty", "--link", "--rate", "--seconds", "--output"):
        assert flag in out
