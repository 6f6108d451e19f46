"""What the clinic's long-running commands (the MQTT and the NATS logger) share: run until
SIGINT or SIGTERM, and a `main` that turns a configuration error into one line and status 2."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any


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
