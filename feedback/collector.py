"""The garbage collector during a session: start-up's objects frozen out of it.

A full (generation 2) collection walks every tracked object, and start-up leaves about 100,000
of them alive for the whole process (modules, numba's and scipy's tables, settings). bench_latency
timed such collections at 57-75 ms on an idle machine and hundreds of milliseconds on a loaded
one, with the event loop stopped: a cue due meanwhile waits the whole pause, and with one or two
cues a second that pause is the p99. Frozen (`gc.freeze`), those objects are never walked; a
collection walks only what the session made. The younger generations are left at Python's
thresholds: their pauses walk only young objects and measured no cue's delay.

Afterwards the process collects as before (the objects are unfrozen).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def startup_frozen() -> Iterator[None]:
    """For a session: what exists now is left out of garbage collection, until it ends."""
    gc.collect()  # the garbage start-up left is collected once, not frozen with the rest
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
