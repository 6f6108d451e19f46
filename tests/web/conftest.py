"""A real browser for the web views: Playwright (PyPI) driving Debian's Chromium.

`playwright install` downloads its own browsers, which is not possible everywhere (and not
needed): the tests launch the system Chromium by path. scripts/browser-deps.sh installs it.
Missing Playwright or Chromium skips locally and fails with VMF_REQUIRE_SERVICES set.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import hypothesis  # noqa: F401  (see below)
import pytest

from tests.conftest import missing_service

# Imported now, not at the end of the run: after a Playwright session in this process, CPython
# 3.11.7 once failed to compile hypothesis for its pytest plugin's late import ("AST constructor
# recursion depth mismatch"), after every test had passed.

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]  # fmt: skip


def chromium_path() -> str | None:
    for candidate in (os.environ.get("VMF_CHROMIUM"), "/usr/bin/chromium",
                      shutil.which("chromium"), shutil.which("chromium-browser")):  # fmt: skip
        if candidate and Path(candidate).exists():
            return candidate
    return None


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        missing_service("playwright is not installed: pip install -e '.[dev]'")
        raise
    path = chromium_path()
    if path is None:
        missing_service("Chromium is not installed: sudo bash scripts/browser-deps.sh")
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


async def open_page(browser: Any, url: str, width: int = 1280, height: int = 800) -> Any:
    """A page that fails the test on any script error (a broken view must not pass quietly)."""
    page = await browser.new_page(viewport={"width": width, "height": height})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.errors = errors
    await page.goto(url)
    return page


class Spawn:
    """Tasks a test starts (stations); cancelled at teardown even when the test fails, since a
    running station catches SIGTERM and would keep the test process alive."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[Any]] = []

    def __call__(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self.tasks.append(task)
        return task


@pytest.fixture
async def spawn() -> AsyncIterator[Spawn]:
    s = Spawn()
    yield s
    for task in s.tasks:
        task.cancel()
    await asyncio.gather(*s.tasks, return_exceptions=True)
