"""Prints how many inputs each fuzz target ran on (issue 11 asks for the count per parser)."""

from __future__ import annotations

import pytest

from tests.fuzz import file_targets, targets


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    cases = targets.CASES + file_targets.CASES
    if cases:
        counts = ", ".join(f"{name} {n}" for name, n in sorted(cases.items()))
        terminalreporter.write_line(f"fuzz cases per parser: {counts}")
