"""The package stays sans-I/O: no transport or event-loop imports anywhere in it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "firmware_bridge"
FORBIDDEN = {
    "asyncio",
    "serial",
    "serial_asyncio",
    "serial_asyncio_fast",
    "bleak",
    "socket",
    "pty",
    "tty",
    "trio",
    "anyio",
    "threading",
    "select",
    "selectors",
    "termios",
    "fcntl",
    "signal",
}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_no_module_imports_io() -> None:
    for path in sorted(PACKAGE.glob("*.py")):
        assert not imported_roots(path) & FORBIDDEN, path.name


def test_importing_the_package_pulls_in_no_event_loop() -> None:
    code = (
        "import sys, firmware_bridge\n"
        "print(sorted({'asyncio', 'serial', 'bleak'} & {*sys.modules}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PACKAGE.parent
    )
    assert out.stdout.strip() == "[]"
