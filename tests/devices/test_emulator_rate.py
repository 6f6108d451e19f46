"""The emulated firmware's `--rate` is bounded as the simulator's own rate is (500–10000 Hz): a
slower rate is refused with a usage error that says why, never turned into a signal that grows
without bound (the muscle's spectral shape cannot be made below ~270 Hz)."""

from __future__ import annotations

from pathlib import Path

import pytest

from devices import firmware_pty


def refused_with_a_reason(argv: list[str], capsys: pytest.CaptureFixture[str]) -> bool:
    try:
        firmware_pty.main(argv)
    except SystemExit as exited:
        return exited.code == 2 and "--rate" in capsys.readouterr().err
    except ValueError:  # refused deep inside, not as the command line's own error
        return False
    return False


@pytest.mark.parametrize("variant", ["correct", "unbounded"])
@pytest.mark.parametrize("rate", ["200", "499", "20000", "fast"])
def test_a_rate_outside_the_simulator_range_is_a_usage_error(
    variant: str, rate: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    if variant == "unbounded":
        monkeypatch.setattr(firmware_pty, "sample_rate", float)
    argv = ["--rate", rate, "--seconds", "0.05", "-o", str(tmp_path / "out.bin")]
    ok = refused_with_a_reason(argv, capsys)
    # Unbounded, "fast" is still refused by float(): only the numbers tell the variants apart.
    assert ok is (variant == "correct" or rate == "fast")


def test_a_rate_inside_the_range_records(tmp_path: Path) -> None:
    out = tmp_path / "out.bin"
    assert firmware_pty.main(["--rate", "500", "--seconds", "0.1", "-o", str(out)]) == 0
    assert out.stat().st_size > 0
