"""What the clinic's long-running commands (the MQTT and the NATS logger) share: storing a batch
until the database takes it, running until SIGINT or SIGTERM, and a `main` that turns a
configuration error into one line and status 2."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from feedback.clinic.store import ClinicStore, Incoming, IngestResult, is_connection_fault

log = logging.getLogger("feedback.clinic.logger")


class FaultCounts(Protocol):
    db_errors: int
    ingest_failures: int


async def ingest_until_stored(
    store: ClinicStore, items: list[Incoming], counts: FaultCounts
) -> IngestResult:
    """Store a batch, retrying while the database is unreachable: unacked, nothing is lost.
    Only a connection fault is retried; the store quarantines whatever else a message
    causes, so no message can hold the batch (and every later one) forever."""
    backoff = 0.5
    while True:
        try:
            return await asyncio.to_thread(store.ingest, items)
        except Exception as exc:
            if not is_connection_fault(exc):
                # A fault of ours the store did not foresee: retrying would stick on it for
                # ever. Report it loudly, count the batch and go on.
                log.exception("batch of %d could not be stored", len(items))
                counts.ingest_failures += 1
                return IngestResult(unstorable=len(items), reasons=[repr(exc)[:300]])
            counts.db_errors += 1
            log.error("database write failed (%s); retrying in %.1f s", exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(10.0, backoff * 2)
            with contextlib.suppress(Exception):
                store.reconnect()


async def run_until_signalled(run: Coroutine[Any, Any, None]) -> None:
    """Runs `run` until it ends or the process is asked to stop; an error in it is raised here."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = asyncio.create_task(run)
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
    runner.cancel()
    stopper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await runner


def service_main(
    name: str,
    amain: Callable[[argparse.Namespace], Coroutine[Any, Any, None]],
    args: argparse.Namespace,
    refused: tuple[type[Exception], ...],
) -> int:
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(amain(args))
    except refused as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    return 0
