"""Prints how many inputs each fuzz target ran on (issue 11 asks for the count per parser)."""

from __future__ import annotations

import pytest

from tests.fuzz.targets import CASES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if CASES:
        counts = ", ".join(f"{name} {n}" for name, n in sorted(CASES.items()))
        terminalreporter.write_line(f"fuzz cases per parser: {counts}")
