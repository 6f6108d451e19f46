from __future__ import annotations

from pathlib import Path

import pytest

from config.loader import ConfigError, load_settings


def test_defaults_load_and_match_the_documented_file() -> None:
    s = load_settings(environ={})
    assert s.target.channel == "VM"
    assert s.simulator.rate_hz == 2000.0
    assert s.protocol.hold_s <= s.protocol.work_s


def test_file_then_environment_then_overrides(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[target]\nlow_pct = 25\nhigh_pct = 50\n[session]\nstation = 'bay-2'\n")
    s = load_settings(f, environ={"VMF_TARGET__LOW_PCT": "35", "VMF_SESSION__CLINIC": "north"})
    assert (s.target.low_pct, s.target.high_pct) == (35.0, 50.0)
    assert (s.session.clinic, s.session.station) == ("north", "bay-2")
    s = load_settings(f, environ={}, overrides={"target.high_pct": 70})
    assert s.target.high_pct == 70


def test_out_of_range_names_field_value_and_range() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(environ={"VMF_STIMULATION__MAX_AMPLITUDE_MA": "95"})
    text = str(err.value)
    assert "stimulation.max_amplitude_ma" in text
    assert "95" in text
    assert "60" in text


def test_patient_name_with_space_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"session\.patient"):
        load_settings(environ={"VMF_SESSION__PATIENT": "Jane Doe"})


@pytest.mark.parametrize("name", ["JaneDoe", "jane_doe", "Smith-Jones", "P" * 32 + "1"])
def test_patient_id_without_a_digit_or_too_long_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match=r"session\.patient"):
        load_settings(environ={"VMF_SESSION__PATIENT": name})


@pytest.mark.parametrize("pid", ["P-0001", "p7", "ab12_x", "P" * 31 + "2"])
def test_pseudonymous_patient_ids_pass(pid: str) -> None:
    assert load_settings(environ={"VMF_SESSION__PATIENT": pid}).session.patient == pid


def test_therapist_ids_are_pseudonyms_too() -> None:
    with pytest.raises(ConfigError, match=r"mqtt\.therapists\.0"):
        load_settings(environ={}, overrides={"mqtt.therapists": ["Dr Jane Smith"]})
    ok = load_settings(environ={}, overrides={"mqtt.therapists": ["therapist-1", "T-02"]})
    assert ok.mqtt.therapists == ("therapist-1", "T-02")


def test_unknown_key_and_bad_toml_are_errors(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[target]\nlow_pcnt = 3\n")
    with pytest.raises(ConfigError, match="low_pcnt"):
        load_settings(f, environ={})
    f.write_text("[target\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(f, environ={})
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_band_must_be_ordered() -> None:
    with pytest.raises(ConfigError, match="high_pct"):
        load_settings(environ={}, overrides={"target.low_pct": 50, "target.high_pct": 40})


@pytest.mark.parametrize("role", ["VM\n", "vm", "VMOOO", "VM_X"])
def test_a_channel_role_with_a_trailing_newline_or_a_wrong_shape_is_refused(role: str) -> None:
    # "VM\n" passes re.match with a `$` pattern: the roles are checked whole (re.fullmatch).
    with pytest.raises(ConfigError, match="channel roles"):
        load_settings(environ={}, overrides={"simulator.channels": [role, "VL"]})
