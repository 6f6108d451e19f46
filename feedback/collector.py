"""The garbage collector around a station's session: start-up's objects frozen out of it.

Start-up leaves about 184,000 tracked objects alive for the whole process (modules; numba's,
scipy's and paho's tables; settings). A full (generation 2) collection walks every one of them
with the event loop stopped (50-120 ms measured on the 2-core development machine, more under
load), and a cue due meanwhile waits. CPython 3.11 makes one at the eleventh generation-1
collection after the last full one, once the objects promoted since then reach a quarter of
those it kept. The session grows by a few objects a second and makes almost no cyclic garbage
(tests/feedback/test_session_garbage.py), so generation-1 collections are rare in it (one in 1-8
minutes measured); but start-up's last full collection comes in the middle of loading the
kernels, and what is built after it (22,000-35,000 objects measured) leaves the count at or near
the quarter when the session begins. Sessions of 2-9 minutes measured none; a longer one can
meet one, and with start-up frozen that collection walks only the session's objects (about 600
at its start).

Start-up's garbage is collected first, after the kernels load and before a device streams,
when a pause costs no sample and no cue; what is frozen with start-up is then little more
than live objects.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

_sessions = 0  # sessions running in this process with start-up frozen


def collect_start_up() -> None:
    """The heavy part of start-up is done (the kernels): collect its garbage now."""
    gc.collect()


@contextlib.contextmanager
def start_up_frozen() -> Iterator[None]:
    """For a session: what exists now is left out of garbage collection until it ends (the
    last of them, where a process runs several)."""
    global _sessions
    gc.freeze()
    _sessions += 1
    try:
        yield
    finally:
        _sessions -= 1
        if not _sessions:
            gc.unfreeze()
