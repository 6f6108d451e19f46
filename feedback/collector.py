"""The garbage collector around a station's session: start-up's objects frozen out of it.

Start-up leaves about 175,000 tracked objects alive for the whole process (modules; numba's,
scipy's and paho's tables; settings). A full (generation 2) collection walks every one of them
with the event loop stopped: 50-100 ms on an idle machine, 250 ms and more on a loaded one, and
a cue due meanwhile waits. CPython 3.11 makes one once ten generation-1 collections have passed
and the objects promoted since the last full one outnumber a quarter of those it kept. Start-up's
last full collection came in the middle of loading the kernels, and what was built after it
(the rest of numba's loading, the publisher, the device, the outputs: about 35,000 objects) is
already that quarter when the session begins: the first full collection of the whole heap came
minutes into a session, at about the tenth generation-1 collection.

The session itself makes almost no cyclic garbage (tests/feedback/test_session_garbage.py) and
few lasting objects, so with start-up frozen a full collection walks only what the session made.
Start-up's garbage is collected first, after the kernels load and before a device streams, when
a pause costs no sample and no cue.
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
