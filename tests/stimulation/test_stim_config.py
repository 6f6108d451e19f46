"""Stimulation settings refused before a session starts (issue 11): a stimulation channel the
device does not have, and non-numbers, each with a message that says what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
from stim_rig import stim_settings

from config.loader import ConfigError, load_settings
from devices.simulator import SimulatedDevice
from feedback import cli
from feedback.stimulation.driver import StimChannelError, StimDriver


def test_a_channel_the_device_lacks_is_refused_when_the_driver_is_made() -> None:
    settings = stim_settings(**{"stim_burst.channel": 5})
    device = SimulatedDevice(settings.simulator)  # two channels: VM, VL
    with pytest.raises(StimChannelError, match="no channel 5") as info:
        StimDriver(settings, device, lambda kind, detail: None)
    assert "0 VM, 1 VL" in str(info.value)
    StimDriver(stim_settings(**{"stim_burst.channel": 1}), device, lambda k, d: None)  # fine
    off = load_settings(environ={}, overrides={"stim_burst.channel": 5})  # stimulation off
    StimDriver(off, device, lambda k, d: None)


def test_issue_11_the_cli_exits_2_on_a_missing_stimulation_channel(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: accepted at start, then every burst was refused as `no_contact`."""
    config = tmp_path / "stim.toml"
    config.write_text("[stimulation]\nenabled = true\n[stim_burst]\nchannel = 3\n")
    code = cli.main(["--config", str(config), "--headless", "--duration", "0.5",
                     "--db", str(tmp_path / "s.db")])  # fmt: skip
    assert code == cli.EXIT_CONFIG
    assert "stim_burst.channel = 3: this device has no channel 3" in capsys.readouterr().err


@pytest.mark.parametrize("key", ["stim_burst.amplitude_ma", "stimulation.max_amplitude_ma",
                                 "stim_burst.hold_s"])  # fmt: skip
@pytest.mark.parametrize("value", [float("nan"), "nan", "NaN"])
def test_issue_11_a_nan_is_refused_as_not_a_number(key: str, value: object) -> None:
    """Before: "Input should be less than or equal to 60", as if NaN were merely too large."""
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}, overrides={key: value})
    assert "is not a number (NaN)" in str(info.value) and key in str(info.value)
    assert "less than" not in str(info.value)
