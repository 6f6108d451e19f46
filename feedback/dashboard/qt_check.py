"""A self-check of the Qt binding, run by the dashboard process before it draws anything.

PySide6-Essentials 6.12.0 on CPython 3.11 loses one reference to None on every call of a Qt
method that returns None (`setData`, `update`, `setText`, ...). A dashboard makes thousands of
such calls a second, so after about 8 s None's count reaches zero and the interpreter aborts
("none_dealloc: deallocating None"). From CPython 3.12 on, None is immortal (PEP 683) and the
same binding is harmless. The pin in pyproject.toml keeps such a build out of a normal install;
this check catches an install that bypassed it, with a message that says what to do, instead of
a crash mid-session.
"""

from __future__ import annotations

import ctypes
import sys

PROBE_CALLS = 200


def none_refs_lost(calls: int = PROBE_CALLS) -> int:
    """References to None the binding loses over `calls` calls of a method that returns None.

    What the probe took is given back, so a process that fails the check can still exit cleanly.
    """
    from PySide6.QtCore import QObject

    probe = QObject()
    before = sys.getrefcount(None)
    for _ in range(calls):
        probe.setObjectName("probe")
    lost = before - sys.getrefcount(None)
    for _ in range(max(0, lost)):
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(None))
    return lost


def binding_problem() -> str | None:
    """None when the binding keeps None's count; otherwise what is wrong and how to fix it."""
    lost = none_refs_lost()
    if lost < PROBE_CALLS // 2:
        return None
    import PySide6

    python = sys.version.split()[0]
    return (
        f"PySide6 {PySide6.__version__} on Python {python} loses a reference to None on every "
        f"Qt call ({lost} in {PROBE_CALLS}); the dashboard would abort within seconds. Install "
        "the tested versions: pip install -c constraints.txt -e '.[dashboard]' "
        "(PySide6-Essentials < 6.12 on Python 3.11), or use Python 3.12 or newer"
    )
