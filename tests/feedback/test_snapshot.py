"""What the clinic sees of a station's settings: an allow-list without paths or credentials."""

from __future__ import annotations

import json

import pytest

from config.loader import load_settings
from feedback.snapshot import local_settings, public_spec, published_settings


def test_published_settings_leave_out_paths_account_and_tls() -> None:
    s = load_settings(
        environ={"VMF_MQTT__PASSWORD": "pw-secret"},
        overrides={
            "mqtt.username": "acct-x",
            "mqtt.tls_ca": "/home/jane/ca.pem",
            "mqtt.tls_cert": "/home/jane/c.pem",
            "mqtt.tls_key": "/home/jane/k.pem",
            "storage.db": "/home/jane/s.db",
            "device.spec": "replay:/home/jane/rec.txt?speed=max",
        },
    )
    text = json.dumps(published_settings(s))
    for hidden in ("jane", "acct-x", "pw-secret", "tls", "outbox", "profile_dir", "rec.txt"):
        assert hidden not in text, hidden
    published = set(published_settings(s))
    assert published >= {"processing", "calibration", "target", "protocol", "contractions"}
    assert published_settings(s)["calibration"]["source"] == "configured"  # is the MVC real?
    local = local_settings(s)
    assert local["mqtt"]["tls_ca"] == "/home/jane/ca.pem"
    assert "password" not in local["mqtt"] and "pw-secret" not in json.dumps(local)


@pytest.mark.parametrize(
    ("spec", "public"),
    [
        ("replay:/home/jane/rec.txt?speed=max", "replay?speed=max"),
        ("serial:/home/jane/ttyEMG", "serial"),
        ("serial:auto?vid=2341", "serial?vid=2341"),
        ("sim?speed=max", "sim?speed=max"),
        ("lsl:type=EMG", "lsl:type=EMG"),
    ],
)
def test_public_spec_drops_the_path(spec: str, public: str) -> None:
    assert public_spec(spec) == public
