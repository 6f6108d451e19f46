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
    # 56 messages: one instance may take them all in one batch, so no idle check here
    assert len(r["per_logger_stored"]) == args.loggers
    assert sum(r["per_logger_stored"]) == r["stored"]


@pytest.mark.parametrize("partitions", [4, 1])
def test_loadtest_through_nats_partitions_reports_each_logger(
    partitions: int, tmp_path: Path
) -> None:
    """Two loggers sharing the partitions by lease: each stores its own, and what each
    stored is in the result. Negative control: one partition for two loggers, so one of them
    holds no lease and stores nothing, and `idle_loggers` names it."""
    if nats_server_binary() is None:
        missing_service("nats-server is not installed: apt-get install -y nats-server")
    args = argparse.Namespace(
        stations=20, seconds=1, hz=10, store="sqlite", loggers=2, mode="drain", broker="nats",
        partitions=partitions, max_messages=10_000, timeout=60.0,
        out=str(tmp_path / "loadtest.json"),
    )  # fmt: skip
    r = loadtest.run(args)
    assert r["partitions"] == partitions and r["published"] == 20 * 14 == r["stored"]
    assert r["lost"] == 0 and r["duplicated"] == 0
    assert sum(r["per_logger_stored"]) == r["stored"]
    # The peer only reads: under load a batch it had not acked within ack_wait comes again,
    # so it may receive more (286 of 280 in one CI run), never fewer.
    assert r["partitions_peer"]["received"] >= r["published"]
    if partitions == 1:
        assert sorted(r["per_logger_stored"]) == [0, r["stored"]]
        assert len(r["idle_loggers"]) == 1
        return
    assert r["idle_loggers"] == [] and all(n > 0 for n in r["per_logger_stored"])


def test_a_logger_that_stored_nothing_is_flagged() -> None:
    stored = 'vmf_logger_messages_total{outcome="stored"}'
    assert loadtest.per_logger([{stored: 7.0}, {stored: 3.0}]) == ([7, 3], [])
    assert loadtest.per_logger([{stored: 7.0}, {}]) == ([7, 0], [2])  # the control


def test_partitions_are_for_nats_only(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        loadtest.main(["--partitions", "4"])
    assert "--partitions is for --broker nats" in capsys.readouterr().err


def test_loadtest_nats_is_drain_only() -> None:
    args = argparse.Namespace(broker="nats", mode="live")
    with pytest.raises(ValueError, match="drain only"):
        loadtest.run(args)
