"""A dying child is never silent (issue 9): the dashboard process killed with SIGKILL, a helper
task that raises, a binding that fails its check, a screenshot that could not be taken.

Real child processes, real signals; the station's own CLI end to end.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import asyncio
import io
import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from feedback.dashboard.process import EXIT_BAD_BINDING, ChildFailed, DashboardProcess, rss_kb
from feedback.outputs.terminal import ViewState, render
from feedback.supervision import Supervisor, describe_exit

ROOT = Path(__file__).resolve().parents[2]


class Witness:
    """Everything the station can say: console text, live view, session events."""

    def __init__(self, restart_limit: int = 3) -> None:
        self.out = io.StringIO()
        self.view = ViewState()
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.sup = Supervisor(
            console=Console(file=self.out, width=200),
            view=self.view,
            event=lambda kind, detail: self.events.append((kind, detail)),
            restart_limit=restart_limit,
        )

    def kinds(self) -> list[str]:
        return [k for k, _ in self.events]


async def until(check: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_describe_exit_names_the_signal() -> None:
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(-6) == "killed by SIGABRT"
    assert describe_exit(3) == "exit code 3"


async def test_sigkilled_dashboard_is_said_everywhere_and_restarted_up_to_the_limit() -> None:
    w = Witness(restart_limit=2)
    proc = DashboardProcess(patient_view=False)
    proc.start()
    watcher = w.sup.process("dashboard", proc)
    pids = []
    for n in (1, 2, 3):
        await until(lambda: proc.alive)
        assert proc.pid is not None
        pids.append(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        t0 = time.monotonic()
        await until(lambda n=n: w.sup.children["dashboard"].died == n)
        assert time.monotonic() - t0 < 2.0  # at once, not at the end of the session
    state = w.sup.report()["dashboard"]
    assert state == {"died": 3, "restarts": 2, "last_exit": "killed by SIGKILL"}
    text = w.out.getvalue()
    assert text.count("dashboard died (killed by SIGKILL); restarting it") == 2
    assert "dashboard died (killed by SIGKILL); not restarted" in text
    assert "dashboard restarted (restart 2 of 2)" in text
    assert w.kinds().count("child_died") == 3 and w.kinds().count("child_restarted") == 2
    assert w.view.children["dashboard"] == "dashboard died (killed by SIGKILL); not restarted"
    panel = io.StringIO()
    Console(file=panel, width=120).print(render(w.view))
    assert "not restarted" in panel.getvalue()  # the live terminal view shows it too
    assert len(set(pids)) == 3  # each restart was a new process
    await watcher  # it gave up after the limit
    assert not proc.alive


async def test_a_restarted_dashboard_draws_again() -> None:
    from tests.dashboard.test_dashboard import Recording

    w = Witness()
    proc = DashboardProcess(patient_view=False, fps=100)
    proc.start()
    w.sup.process("dashboard", proc)
    frame = Recording().run(1.0)
    await until(lambda: proc.alive)
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGKILL)
    await until(lambda: w.sup.children["dashboard"].restarts == 1)

    def drawn() -> bool:
        proc.offer(frame)
        proc.controls()
        return proc.frames_drawn > 0

    await until(drawn, timeout_s=30.0)
    await asyncio.to_thread(proc.close)
    await w.sup.close()
    assert proc.exitcode == 0 and w.sup.children["dashboard"].died == 1  # closing is no death


def failing_child(frames: Any, controls: Any, *args: Any) -> None:
    controls.put(ChildFailed("the Qt binding failed its check (test)"))
    controls.close()
    controls.join_thread()
    os._exit(EXIT_BAD_BINDING)


async def test_a_permanent_failure_is_said_with_its_reason_and_not_restarted() -> None:
    w = Witness()
    proc = DashboardProcess(entry=failing_child)
    proc.start()
    await asyncio.wait_for(w.sup.process("dashboard", proc), 20.0)
    state = w.sup.report()["dashboard"]
    assert state["died"] == 1 and state["restarts"] == 0
    assert state["last_exit"] == "exit code 3: the Qt binding failed its check (test)"
    assert "not restarted" in w.out.getvalue()


async def test_a_task_that_raises_is_said_and_restarted_when_safe() -> None:
    w = Witness(restart_limit=1)
    runs = 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.01)
        raise OSError("display went away")

    async def writer() -> None:
        await asyncio.sleep(0.01)
        raise RuntimeError("disk full")

    async def steady() -> None:
        await asyncio.sleep(3600)

    w.sup.task("terminal_view", flaky, restart=True)
    w.sup.task("session_log", writer)
    w.sup.task("publisher", steady)
    await until(lambda: w.sup.children["terminal_view"].died == 2)
    await until(lambda: w.sup.children["session_log"].died == 1)
    await w.sup.close()  # the steady one is cancelled at the end: no death
    assert runs == 2
    report = w.sup.report()
    assert report["terminal_view"] == {
        "died": 2,
        "restarts": 1,
        "last_exit": "OSError: display went away",
    }
    assert report["session_log"]["restarts"] == 0  # a writer is not restarted
    assert report["publisher"] == {"died": 0, "restarts": 0, "last_exit": None}
    assert "session_log died (RuntimeError: disk full); not restarted" in w.out.getvalue()


async def test_negative_control_an_unwatched_child_dies_unseen() -> None:
    """Without the supervisor the same SIGKILL leaves nothing said: the checks above are not
    satisfied by something else."""
    w = Witness()
    proc = DashboardProcess(patient_view=False)
    proc.start()
    await until(lambda: proc.alive)
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGKILL)
    await until(lambda: not proc.alive)
    await asyncio.sleep(0.5)
    assert w.out.getvalue() == "" and w.events == [] and w.sup.report() == {}


# -- the station, end to end --------------------------------------------------------------------


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(pid)], capture_output=True,
                         text=True, check=False).stdout  # fmt: skip
    return [int(line.split()[0]) for line in out.splitlines()
            if "multiprocessing.spawn" in line and "resource_tracker" not in line]  # fmt: skip


def station(tmp_path: Path, *args: str, **extra_env: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.update(extra_env)
    return subprocess.Popen(
        [sys.executable, str(ROOT / "run_feedback.py"), "--dashboard", "--db", "s.db",
         "--report", "r.json", "--device", "sim", *args],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


@pytest.mark.slow
def test_station_says_the_dashboard_died_restarts_it_and_still_screenshots(tmp_path: Path) -> None:
    run = station(
        tmp_path, "--duration", "30", "--screenshot", "view.png", VMF_STIMULATION__ENABLED="true"
    )
    deadline = time.monotonic() + 60
    kids: list[int] = []
    while time.monotonic() < deadline:  # until the dashboard has Qt loaded and draws
        kids = children_of(run.pid)
        if kids and rss_kb(kids[0]) > 100_000:
            break
        time.sleep(0.2)
    assert kids, "no dashboard process appeared"
    time.sleep(1.0)
    os.kill(kids[0], signal.SIGKILL)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    assert "dashboard died (killed by SIGKILL); restarting it" in err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["children"]["dashboard"] == {
        "died": 1,
        "restarts": 1,
        "last_exit": "killed by SIGKILL",
    }
    assert report["dashboard_screenshot"] == "view.png"  # the restarted dashboard took it
    assert report["dashboard"]["frames_drawn"] > 0
    with sqlite3.connect(tmp_path / "s.db") as db:
        events = list(db.execute("SELECT kind, detail_json FROM events"))
    kinds = [k for k, _ in events]
    assert "child_died" in kinds and "child_restarted" in kinds
    # The therapist's stop button went with the window: stimulation latched until re-armed.
    estops = [json.loads(d)["source"] for k, d in events if k == "stim_estop"]
    assert estops == ["dashboard_died"]


@pytest.mark.slow
def test_a_screenshot_that_could_not_be_taken_is_an_error(tmp_path: Path) -> None:
    run = station(tmp_path, "--duration", "3", "--screenshot", "no/such/dir/view.png")
    _, err = run.communicate(timeout=120)
    assert run.returncode == 1, err
    assert "no/such/dir/view.png not written" in err
    report = json.loads((tmp_path / "r.json").read_text())
    assert "not written" in report["dashboard_screenshot_error"]
    assert "dashboard_screenshot" not in report
