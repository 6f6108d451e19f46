"""Fixtures of the clinic tests: a persistent Mosquitto, PostgreSQL schemas, a station runner."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import secrets
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from config.loader import load_settings
from config.settings import Settings
from feedback import app
from feedback.clinic.logger import ClinicLogger
from feedback.clinic.store import ClinicStore
from feedback.outputs.broker_access import BrokerAccess
from tests.conftest import (
    MosquittoProcess,
    missing_service,
    running_mosquitto,
)

PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"

# A short protocol so that a real-time session takes seconds: 3 reps of 2 s work, 1 s rest.
SHORT = {
    "protocol.ready_s": 0.5,
    "protocol.work_s": 2.0,
    "protocol.rest_s": 1.0,
    "protocol.hold_s": 1.0,
    "protocol.reps": 3,
    "simulator.first_rest_s": 0.6,
    "simulator.contract_s": 1.8,
    "simulator.relax_s": 1.2,
}


class ClinicBroker(MosquittoProcess):
    """Mosquitto as a clinic runs it: persistent sessions survive a restart, deep queues."""

    def __init__(self, binary: str, workdir: Path, conf: str = "") -> None:
        super().__init__(binary, workdir)
        self.store = workdir / "mosquitto-store"
        self.store.mkdir(exist_ok=True)
        # Run as whoever runs the tests: started as root, Mosquitto would switch to its own
        # account, which cannot write the persistent store under pytest's private tmp dirs.
        self.conf.write_text(
            conf
            or f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"persistence true\npersistence_location {self.store}/\n"
            "max_queued_messages 100000\nmessage_size_limit 262144\nset_tcp_nodelay true\n"
            f"user {getpass.getuser()}\n"
        )


@pytest.fixture
def clinic_broker(tmp_path: Path) -> Iterator[ClinicBroker]:
    with running_mosquitto(ClinicBroker, tmp_path) as broker:
        yield broker


def pg_url() -> str:
    return os.environ.get("VMF_TEST_POSTGRES_URL", PG_DEFAULT)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh schema per test on the local server; the URL puts it first in search_path."""
    try:
        import psycopg

        admin = psycopg.connect(pg_url(), autocommit=True, connect_timeout=3)
    except Exception as exc:
        missing_service(
            f"PostgreSQL not reachable at {pg_url()} ({exc}); start one with: "
            "pg_ctlcluster 15 main start, or docker run -p 5432:5432 "
            "-e POSTGRES_HOST_AUTH_METHOD=trust -e POSTGRES_DB=test postgres:15"
        )
        raise
    schema = "vmf_test_" + secrets.token_hex(4)
    admin.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in pg_url() else "?"
    try:
        yield f"{pg_url()}{sep}options=-csearch_path%3D{schema}"
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


def station_settings(station: str, **overrides: Any) -> Settings:
    return load_settings(environ={}, overrides={"session.station": station, **SHORT, **overrides})


async def run_station(
    settings: Settings, broker_url: str, tmp_path: Path, device: str = "sim"
) -> dict[str, Any]:
    options = app.RunOptions(
        device=device,
        duration_s=None,
        db=str(tmp_path / f"{settings.session.station}.db"),
        broker=broker_url,
        report=None,
        live_view=False,
    )
    with open(os.devnull, "w") as devnull:
        return await app.run(settings, options, console=Console(file=devnull))


@contextlib.asynccontextmanager
async def running_logger(
    broker: BrokerAccess, db_url: str, instance: str = "1", group: str = "g"
) -> AsyncIterator[ClinicLogger]:
    logger = ClinicLogger(broker, ClinicStore(db_url), group=group, instance=instance)
    task = asyncio.create_task(logger.run())
    try:
        await asyncio.wait_for(logger.connected.wait(), 10)
        yield logger
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        logger.store.close()


async def wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.1)


def sqlite_rows(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute(sql, params).fetchall()
