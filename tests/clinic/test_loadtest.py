"""`make loadtest` runs: a few stations for a second, live and drain, into SQLite, with two
loggers sharing the load; every message stored once, nothing lost. (The numbers themselves are
for bench/loadtest.py on an idle machine, not for a test.)"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bench import loadtest
from feedback.clinic.nats_cluster import nats_server_binary
from tests.conftest import missing_service, mosquitto_binary


@pytest.mark.parametrize("mode", ["live", "drain"])
def test_loadtest_stores_everything_once(mode: str, tmp_path: Path) -> None:
    if mosquitto_binary() is None:
        missing_service("mosquitto is not installed: apt-get install -y mosquitto")
    args = argparse.Namespace(
        stations=10, seconds=1, hz=10, store="sqlite", loggers=2, mode=mode,
        max_messages=10_000, timeout=30.0, out=str(tmp_path / "loadtest.json"),
    )  # fmt: skip
    r = loadtest.run(args)
    assert r["logged_published"] == 10 * (10 + 3 + 1) == r["stored"]
    assert r["lost"] == 0 and r["duplicated"] == 0
    assert r["ledger_lost"] == 0 and r["ledger_duplicates"] == 0
    assert all(n > 0 for n in r["per_logger_stored"])  # the shared subscription split it
    assert all(m > 0 for m in r["peak_rss_mb"])
    if mode == "live":  # a drain of 140 messages is too short to time
        assert r["rate"] > 0 and r["peer_rate"] > 0


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_loadtest_through_nats_stores_everything_once(store: str, tmp_path: Path) -> None:
    if nats_server_binary() is None:
        missing_service("nats-server is not installed: apt-get install -y nats-server")
    args = argparse.Namespace(
        stations=4, seconds=1, hz=10, store=store, loggers=2 if store == "sqlite" else 1,
        mode="drain", broker="nats", max_messages=10_000, timeout=60.0,
        out=str(tmp_path / "loadtest.json"),
    )  # fmt: skip
    r = loadtest.run(args)
    assert r["broker"] == "nats" and r["messages_per_station"] == 10 + 3 + 1
    assert r["published"] == 4 * 14 == r["stored"]
    assert r["lost"] == 0 and r["duplicated"] == 0
    assert all(m > 0 for m in r["peak_rss_mb"])


def test_loadtest_nats_is_drain_only() -> None:
    args = argparse.Namespace(broker="nats", mode="live")
    with pytest.raises(ValueError, match="drain only"):
        loadtest.run(args)
