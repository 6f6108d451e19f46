"""Electrode placement (issue 16, item 3): SENIAM-style settings, per patient profile, the
montage dict in session_start (schema-checked) and in the record headers."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from pydantic import ValidationError

from config.loader import load_settings
from config.settings import SENIAM_VM, PlacementSettings, Settings
from feedback.clinic.validation import InvalidMessage, check
from feedback.outputs.topics import MessageNumberer, Topics, encode
from feedback.placement import (
    PlacementError,
    montage,
    profile_placement,
    session_montage,
    transducer,
)


def settings_with_profiles(tmp_path: Path) -> Settings:
    return load_settings(environ={}, overrides={"calibration.profile_dir": str(tmp_path)})


def test_default_montage_is_seniam_for_vm_and_vl() -> None:
    m = montage(PlacementSettings(), ("VM", "VL"), "right")
    assert m["scheme"] == "SENIAM"
    vm, vl = m["electrodes"]["VM"], m["electrodes"]["VL"]
    assert vm["muscle"] == "vastus medialis" and vm["location"] == SENIAM_VM
    assert "80 %" in vm["location"] and "medial ligament" in vm["location"]
    assert vl["muscle"] == "vastus lateralis" and "lateral side of the patella" in vl["location"]
    assert vm["inter_electrode_mm"] == 20.0 and vm["electrode_size_mm"] == 10.0
    assert vm["side"] == vl["side"] == "right"
    assert m["reference"] and m["skin_preparation"]


def test_bilateral_channel_names_find_their_role_and_side() -> None:
    m = montage(PlacementSettings(), ("VM_L", "VM_R", "BF"), "right")
    assert m["electrodes"]["VM_L"]["side"] == "left"
    assert m["electrodes"]["VM_R"]["side"] == "right"
    assert m["electrodes"]["VM_L"]["muscle"] == "vastus medialis"
    # Nothing configured for BF: listed, with the gap visible rather than invented.
    assert m["electrodes"]["BF"]["muscle"] is None


def test_config_file_sets_the_placement(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text(
        "[placement]\nreference = 'patella'\n"
        "[placement.electrodes.VM]\nmuscle = 'vastus medialis obliquus'\n"
        "inter_electrode_mm = 15\n"
    )
    s = load_settings(toml, environ={})
    assert s.placement.reference == "patella"
    assert s.placement.electrodes["VM"].inter_electrode_mm == 15.0
    assert "VL" not in s.placement.electrodes  # a configured table replaces the default


@pytest.mark.parametrize(
    "bad",
    [
        {"electrodes": {"vastus": {"muscle": "x"}}},  # not a channel role
        {"electrodes": {"VM": {"muscle": "x", "inter_electrode_mm": 0}}},
        {"electrodes": {"VM": {"muscle": ""}}},
        {"colour": "blue"},  # unknown field
    ],
)
def test_bad_placement_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        PlacementSettings.model_validate(bad)


def test_profile_placement_overrides_the_config(tmp_path: Path) -> None:
    s = settings_with_profiles(tmp_path)
    (tmp_path / "P-0001.json").write_text(
        json.dumps(
            {
                "patient": "P-0001",
                "placement": {
                    "electrodes": {"VM": {"muscle": "vastus medialis", "inter_electrode_mm": 22}}
                },
            }
        )
    )
    m = session_montage(s, ("VM",))
    assert m["electrodes"]["VM"]["inter_electrode_mm"] == 22.0
    # Another patient without a placement in the profile: the configured one.
    other = load_settings(
        environ={},
        overrides={"calibration.profile_dir": str(tmp_path), "session.patient": "P-0002"},
    )
    assert session_montage(other, ("VM",))["electrodes"]["VM"]["inter_electrode_mm"] == 20.0


def test_a_malformed_profile_placement_falls_back_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = settings_with_profiles(tmp_path)
    path = tmp_path / "P-0001.json"
    path.write_text(json.dumps({"placement": {"electrodes": {"VM": {"muscle": 5}}}}))
    with pytest.raises(PlacementError, match="invalid"):
        profile_placement(path, s.placement)
    with caplog.at_level(logging.WARNING):
        m = session_montage(s, ("VM",))
    assert m["electrodes"]["VM"]["inter_electrode_mm"] == 20.0
    assert "using the configured placement" in caplog.text


def test_transducer_field_is_ascii_and_fits() -> None:
    m = montage(PlacementSettings(), ("VM",), "left")
    text = transducer(m["electrodes"]["VM"], m["scheme"])
    assert text == "AgAgCl surface electrode IED 20mm 10mm SENIAM vastus medialis"
    assert len(text) <= 80 and text.isascii()
    assert transducer({"muscle": None}, "SENIAM") == ""


def start_body(extra: dict[str, object]) -> bytes:
    body = MessageNumberer("S1").envelope(
        "session_start",
        {"patient": "P-0001", "side": "left", "protocol": "p",
         "device": {"spec": "sim", "kind": "sim", "rate_hz": 2000, "channels": ["VM"]},
         "settings": {"session": {}, "target": {}, "protocol": {}}, **extra},
    )  # fmt: skip
    return encode(body)


def test_session_start_schema_accepts_the_montage_and_checks_it() -> None:
    topic = Topics("clinic-demo", "station-1").session
    check(topic, start_body({}))  # optional: older stations send none
    good = montage(PlacementSettings(), ("VM", "VL"), "left")
    check(topic, start_body({"montage": good}))
    bad = json.loads(json.dumps(good))
    bad["electrodes"]["VM"]["inter_electrode_mm"] = -3  # negative control
    with pytest.raises(InvalidMessage, match="inter_electrode_mm"):
        check(topic, start_body({"montage": bad}))
