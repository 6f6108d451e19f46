"""Long-running station tasks that must not silently vanish: a task that ends by an exception
is logged, reported (a `task_restarted` session event, through `report`) and started again
after a jittered backoff. Cancellation (the station shutting down) ends it as usual.

A task that returns by itself is a bug for these tasks (they run until cancelled), so it is
reported and restarted the same way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from devices.backoff import Backoff

log = logging.getLogger(__name__)

Report = Callable[[str, str, int], None]  # (task name, error, restarts so far)


async def supervise(
    name: str,
    run: Callable[[], Awaitable[None]],
    report: Report,
    backoff: Backoff | None = None,
) -> None:
    """Run `run()` until cancelled, restarting it whenever it ends."""
    backoff = backoff or Backoff(initial_s=0.1, max_s=5.0)
    restarts = 0
    while True:
        try:
            await run()
            error = "ended by itself"
            log.error("%s ended by itself; restarting", name)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
            log.error("%s failed (%s); restarting", name, error, exc_info=exc)
        restarts += 1
        try:
            report(name, error, restarts)
        except Exception:
            log.exception("reporting the restart of %s failed", name)
        await asyncio.sleep(backoff.next())
