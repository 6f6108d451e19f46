"""The station's children: helper processes and tasks that must never die silently.

Every background task the station starts (publisher, session log writer, recorder, terminal view,
the dashboard's frame and control loops) and the dashboard process are watched. When one ends
before the station closes, the station says so at once: an error in the log, a red line on the
terminal and in the live view, a `child_died` session event, and a `children` entry in the report
(`{"dashboard": {"died": 1, "restarts": 1, "last_exit": "killed by SIGKILL"}}`).

What is safe to restart is restarted, up to a limit: the views (dashboard process, its frame and
control loops, the terminal view) hold no data of their own. The writers (MQTT publisher, session
log, recorder) are reported but not restarted: a writer that failed mid-write is a fault to see,
not to paper over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from rich.console import Console

from feedback.outputs.terminal import ViewState

log = logging.getLogger(__name__)
RESTART_LIMIT = 3


class ChildProcess(Protocol):
    """What the supervisor needs of a child process (DashboardProcess has it)."""

    @property
    def sentinel(self) -> int: ...
    @property
    def exitcode(self) -> int | None: ...
    @property
    def failure(self) -> str | None: ...
    @property
    def permanent_failure(self) -> bool: ...
    @property
    def closing(self) -> bool: ...
    def collect(self) -> None: ...
    def restart(self) -> None: ...


@dataclass(slots=True)
class ChildState:
    died: int = 0
    restarts: int = 0
    last_exit: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"died": self.died, "restarts": self.restarts, "last_exit": self.last_exit}


def describe_exit(code: int | None) -> str:
    """'exit code 3', 'killed by SIGKILL', ... for a process's exit code."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class Supervisor:
    def __init__(
        self,
        *,
        console: Console | None = None,
        view: ViewState | None = None,
        event: Callable[[str, dict[str, Any]], None] | None = None,
        restart_limit: int = RESTART_LIMIT,
    ) -> None:
        self.console = console
        self.view = view
        self.event = event  # the session's event log, once there is a session
        self.restart_limit = restart_limit
        self.children: dict[str, ChildState] = {}
        self.tasks: set[asyncio.Task[Any]] = set()  # every task it runs, for the station's end
        self.closing = False  # set before the station cancels its tasks: that is no death

    # -- watching ---------------------------------------------------------------------------

    def task(
        self,
        name: str,
        start: Callable[[], Coroutine[Any, Any, Any]],
        *,
        restart: bool = False,
    ) -> asyncio.Task[Any]:
        """Run `start()` as a task; when it ends on its own, say so (and restart it if asked)."""
        self.children.setdefault(name, ChildState())
        task = asyncio.create_task(start(), name=f"vmf-{name}")
        self.tasks.add(task)
        task.add_done_callback(lambda t: self._task_done(name, t, start, restart))
        return task

    def _task_done(
        self,
        name: str,
        task: asyncio.Task[Any],
        start: Callable[[], Coroutine[Any, Any, Any]],
        restart: bool,
    ) -> None:
        self.tasks.discard(task)
        if self.closing or task.cancelled():
            return
        exc = task.exception()
        how = "returned" if exc is None else f"{type(exc).__name__}: {exc}"
        if exc is not None:
            log.error("%s failed", name, exc_info=exc)
        again = restart and self.children[name].restarts < self.restart_limit
        self.died(name, how, again)
        if again:
            self.children[name].restarts += 1
            self.task(name, start, restart=restart)
            self._said(name, f"{name} restarted ({self._count(name)})", "child_restarted")

    def process(
        self,
        name: str,
        child: ChildProcess,
        on_death: Callable[[], Awaitable[None]] | None = None,
    ) -> asyncio.Task[None]:
        """Watch a child process; restart it (up to the limit) unless its failure is permanent."""
        self.children.setdefault(name, ChildState())
        task = asyncio.create_task(self._watch_process(name, child, on_death), name=f"vmf-{name}")
        self.tasks.add(task)
        return task

    async def _watch_process(
        self,
        name: str,
        child: ChildProcess,
        on_death: Callable[[], Awaitable[None]] | None,
    ) -> None:
        while True:
            await _readable(child.sentinel)
            if self.closing or child.closing:  # asked to end: that is no death
                return
            for _ in range(200):  # the pipe closes a moment before the exit status is ready
                if child.exitcode is not None:
                    break
                await asyncio.sleep(0.01)
            child.collect()  # the child's last words, if it had any
            how = describe_exit(child.exitcode)
            if child.failure:
                how += f": {child.failure}"
            state = self.children[name]
            again = not child.permanent_failure and state.restarts < self.restart_limit
            self.died(name, how, again)
            if on_death is not None:
                await on_death()
            if not again:
                return
            child.restart()
            state.restarts += 1
            self._said(name, f"{name} restarted ({self._count(name)})", "child_restarted")

    # -- saying so --------------------------------------------------------------------------

    def died(self, name: str, how: str, restarting: bool) -> None:
        state = self.children.setdefault(name, ChildState())
        state.died += 1
        state.last_exit = how
        then = "restarting it" if restarting else "not restarted"
        log.error("%s died (%s); %s", name, how, then)
        self._said(name, f"{name} died ({how}); {then}", "child_died", exit=how)

    def _count(self, name: str) -> str:
        return f"restart {self.children[name].restarts} of {self.restart_limit}"

    def _said(self, name: str, message: str, kind: str, **detail: Any) -> None:
        state = self.children[name]
        if self.console is not None:
            self.console.print(f"[bold red]{message}[/]", highlight=False)
        if self.view is not None:
            self.view.children[name] = message
        if self.event is not None:
            with contextlib.suppress(Exception):  # the log itself may be what died
                self.event(kind, {"child": name, **state.as_dict(), **detail})

    def report(self) -> dict[str, dict[str, Any]]:
        return {name: state.as_dict() for name, state in sorted(self.children.items())}

    async def close(self) -> None:
        """The station is ending: what ends now is no death. Cancels what it still runs."""
        self.closing = True
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()


async def _readable(fd: int) -> None:
    """Until `fd` is readable (a process sentinel: when the process has ended)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    try:
        loop.add_reader(fd, wake)
    except (NotImplementedError, ValueError, OSError):  # no add_reader here: poll
        import select

        while not select.select([fd], [], [], 0)[0]:
            await asyncio.sleep(0.1)
        return
    try:
        await ready
    finally:
        loop.remove_reader(fd)
