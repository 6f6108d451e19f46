"""A station's resend leaves a copy in the stream: bench_nats reports it as a stream copy, the
peer reads it, and the logger's counts stay lost=0, duplicated=0 (the copy is the broker's
at-least-once, which the logger drops). The counts' own negative controls (a message dropped,
a message stored twice) are in test_bench_nats_ledger.py; here the control is the copy itself:
stream.copies is 1 only because the test published one."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.bench_nats import (
    bare_peer,
    cluster_with_stream,
    logger_run,
    publish_all,
    stream_of,
    stream_report,
)
from feedback.clinic import nats_connect
from feedback.clinic.nats_cluster import nats_server_binary
from tests.conftest import missing_service


@pytest.mark.slow
async def test_a_copy_in_the_stream_is_neither_lost_nor_duplicated(tmp_path: Path) -> None:
    binary = nats_server_binary()
    if binary is None:
        missing_service("nats-server is not installed: apt-get install -y nats-server")
        return
    async with cluster_with_stream(binary, tmp_path, partitions=0) as cluster:
        publish, keys = await publish_all(cluster, per_station=4, stations=2)
        # What a resend after a lost PUBACK leaves: the first message stored again.
        nc = await nats_connect.connect(cluster.logger_urls)
        try:
            js = nc.jetstream(timeout=10.0)
            first = await js.get_msg(stream_of(cluster), 1)
            assert first.subject is not None and first.data is not None
            await js.publish(first.subject, first.data, headers=first.headers)
        finally:
            await nc.close()
        stream = await stream_report(cluster, len(keys))
        peer = await bare_peer(cluster, stream["messages"])
        logged = await logger_run(cluster, str(tmp_path / "clinic.db"), "copies", 1, keys)
    assert publish["published"] == len(keys) == 8 and publish["sends"] >= 8
    # A resend inside publish_all (a PUBACK late under load) may have left another.
    assert 1 <= stream["copies"] <= 1 + publish["sends"] - 8
    assert stream["messages"] == 8 + stream["copies"]
    assert peer["received"] == stream["messages"]
    assert (logged["stored"], logged["lost"], logged["duplicated"]) == (8, 0, 0)
