"""Assembles a station: broker (embedded or external), session log, device, outputs; runs it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from config.settings import Settings
from devices.base import Device
from devices.registry import open_device, split_spec
from feedback.broker import EmbeddedBroker
from feedback.calibration_flow import calibrated_settings
from feedback.collector import collect_start_up, start_up_frozen
from feedback.control.bus import CommandBus
from feedback.control.commands import EmergencyStop
from feedback.control.gate import CommandGate
from feedback.outputs.broker_access import broker_access, describe
from feedback.outputs.outbox import MemoryOutbox, SqliteOutbox
from feedback.outputs.recorder import RecorderOutput
from feedback.outputs.session_store import SessionStore
from feedback.outputs.terminal import ViewState, run_terminal_view
from feedback.outputs.topics import Topics
from feedback.pipeline import compile_kernels
from feedback.processing import fused
from feedback.processing.chain import EmgChain
from feedback.session import Session, default_db_path
from feedback.station import station_outputs
from feedback.supervision import Supervisor, describe_exit

if TYPE_CHECKING:
    from feedback.dashboard.link import DashboardLink
    from feedback.outputs.mqtt_publisher import MqttPublisher

log = logging.getLogger(__name__)
# The supervisor's names for the outputs' tasks, as the report and the soak logs know them.
_TASK_NAMES = {"mqtt": "publisher"}
FLUSH_TIMEOUT_S = 5.0
NO_BROKER = "none"  # publish nothing (e.g. a headless replay at full speed): no broker, no outbox


@dataclass(frozen=True, slots=True)
class RunOptions:
    device: str
    duration_s: float | None
    db: str
    broker: str
    report: Path | None
    live_view: bool
    calibrate: bool = False
    accept_calibration: bool = False  # store a calibration even when it fails its checks
    calibrate_from: str | None = None  # a reference recording (file or replay: spec)
    record: Path | None = None
    dashboard: bool = False
    screenshot: Path | None = None  # with dashboard: the therapist view, saved at the end
    wait_for_start: bool = False  # begin only on a therapist's `start` command
    metrics_port: int | None = None  # Prometheus metrics on 127.0.0.1 (feedback/metrics.py)


def db_path_from(url: str) -> Path:
    if not url:
        return default_db_path()
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///"))
    if "://" in url:
        raise ValueError(
            f"this station logs to SQLite; use a file path or sqlite:///PATH, not {url!r}"
        )
    return Path(url)


def outbox_path_from(settings: Settings, db_path: Path) -> str:
    """Next to the session log unless configured; in memory along with an in-memory log."""
    if settings.mqtt.outbox:
        return settings.mqtt.outbox
    if str(db_path) == ":memory:":
        return ":memory:"
    return str(db_path.with_name(db_path.stem + "-outbox.sqlite3"))


async def run(
    settings: Settings, options: RunOptions, console: Console | None = None
) -> dict[str, Any]:
    console = console or Console(stderr=True, soft_wrap=True)
    async with contextlib.AsyncExitStack() as stack:
        offline = options.broker == NO_BROKER
        if options.broker == "embedded":
            broker = await stack.enter_async_context(EmbeddedBroker())
            broker_url = broker.url
        else:
            # Offline there is no publisher at all (nor aiomqtt and paho in the process): only
            # the session log keeps the messages.
            broker_url = "mqtt://127.0.0.1:1883" if offline else options.broker
        store = SessionStore(db_path_from(options.db))
        stack.callback(store.close)
        outbox: SqliteOutbox | MemoryOutbox = (
            MemoryOutbox() if offline else SqliteOutbox(outbox_path_from(settings, store.path))
        )
        stack.callback(outbox.close)
        s = settings.session
        topics = Topics(s.clinic, s.station)
        bus = CommandBus()
        running: list[Session] = []
        gate = CommandGate(
            topics,
            settings.mqtt.therapists,
            bus,
            current_session=lambda: running[0].session_id if running else None,
            max_age_s=settings.mqtt.command_max_age_s,
            on_verdict=lambda v: running[0].record_command(v) if running else None,
        )

        def restarted(task: str, error: str, restarts: int) -> None:  # logged by the supervisor
            if running:
                detail = {"task": task, "error": error, "restarts": restarts}
                running[0].log_event("task_restarted", detail)

        publisher = (
            None if offline else _publisher(settings, options, broker_url, outbox, gate, restarted)
        )
        if options.metrics_port is not None:
            from feedback import metrics

            stack.callback(metrics.serve(publisher, options.metrics_port))
        device = _kernels_then_device(options.device, settings, stack)
        await stack.enter_async_context(device)
        settings, calibration_note = await calibrated_settings(
            settings,
            device,
            console,
            calibrate=options.calibrate,
            live_view=options.live_view,
            accept_failed=options.accept_calibration,
            calibrate_from=options.calibrate_from,
        )
        view = ViewState()
        # Offline, nothing is published: no MQTT outputs at all, only the session log keeps it.
        outputs = station_outputs(settings, publisher, store, view=view, record=options.record)
        session = Session(
            settings,
            device,
            outputs,
            duration_s=options.duration_s,
            commands=bus,
            mqtt=publisher,
        )
        # Every helper is watched: one that dies is said at once (feedback/supervision.py).
        children = Supervisor(console=console, view=view, event=session.log_event)
        # A cancelled station (Ctrl-C twice, a test's teardown) must not leave its outputs'
        # tasks running after the store and the outbox they write to are closed: they would
        # fail, be restarted and keep a broker connection open in a loop nobody watches. The
        # stack closes in reverse, so this runs before the outbox and the store close.
        stack.push_async_callback(children.close)
        # Each output's own I/O task is watched. The publisher and the session log keep their
        # state outside the task (the outbox, the queue), so a restart loses nothing; the
        # recorder's files would not survive one (`restartable` says which is which).
        for out in outputs:
            children.task(_TASK_NAMES.get(out.name, out.name), out.run, restart=out.restartable)
        recorder = next((o for o in outputs if isinstance(o, RecorderOutput)), None)
        if options.live_view:
            children.task("terminal_view", lambda: run_terminal_view(view, console), restart=True)
        stop = asyncio.Event()
        dashboard = _start_dashboard(session, options, children)
        if dashboard is not None and dashboard.audio is not None and dashboard.audio.silent_reason:
            console.print("no audio device: running silent (tones need the 'audio' extra)")
        _install_signal_handlers(stop)
        if isinstance(outbox, SqliteOutbox) and outbox.recovered:
            console.print(f"outbox: {outbox.recovered} messages from an earlier run still to send")
        _say_start(console, session, options, None if offline else broker_url, store.path)
        console.print(calibration_note)
        if options.wait_for_start:
            console.print("waiting for a therapist's start command (Ctrl-C to give up)")
            await session.wait_for_start(stop)
        running.append(session)
        await _run_session(session, stop)
        report, shot = await _close(session, recorder, dashboard, children, publisher, store)
        report.update(broker=NO_BROKER if offline else broker_url, device=options.device)
        _dashboard_report(report, dashboard, shot, options, console)
        if publisher is not None and not report["mqtt_flushed"]:
            console.print(
                f"[yellow]MQTT: {publisher.backlog} session messages not delivered "
                f"({publisher.undelivered_reason()}); they stay in the outbox for the next "
                f"start, and are in the local session log.[/]"
            )
        if options.report is not None:
            options.report.write_text(json.dumps(report, indent=2) + "\n")
        _say_end(console, session, report)
        return report
    raise AssertionError("unreachable")  # pragma: no cover


async def _run_session(session: Session, stop: asyncio.Event) -> None:
    with start_up_frozen():  # a full collection in the session walks only its own objects
        await session.run(stop)


def _kernels_then_device(spec: str, settings: Settings, stack: contextlib.AsyncExitStack) -> Device:
    """Numba's kernels load before the device streams: loading them once a serial device was
    open left a gap in a session against the AVR firmware under simavr (its UART buffer
    overflowed while the first Pipeline warmed up).

    A file replayed at speed=max is the exception: nobody waits for its blocks, which are
    500 ms long, where the numpy path costs what the kernels cost, while loading the kernels
    (1-3 s on the development machine, `compile_kernels`) would be most of the run. It takes
    the numpy path, which gives the same bits (tests/feedback/test_kernels.py)."""
    kind, _target, options = split_spec(spec)
    if kind == "replay" and options.get("speed") == "max":
        stack.enter_context(fused.reference_path())
    else:
        compile_kernels(settings)
        collect_start_up()  # before the device streams: the pause costs no sample
    return open_device(spec, settings)


def _publisher(
    settings: Settings,
    options: RunOptions,
    broker_url: str,
    outbox: SqliteOutbox | MemoryOutbox,
    gate: CommandGate,
    on_fault: Callable[[str, str, int], None],
) -> MqttPublisher:
    # Imported here: aiomqtt and paho cost a headless replay's start-up and it never publishes.
    from feedback.outputs.mqtt_publisher import MqttPublisher

    s = settings.session
    embedded = options.broker == "embedded"
    return MqttPublisher(
        broker_url,
        Topics(s.clinic, s.station),
        client_id=f"vmf-{s.clinic}-{s.station}",
        keepalive_s=settings.mqtt.keepalive_s,
        outbox=outbox,
        access=broker_access(settings, broker_url),
        on_command=gate.handle,
        on_estop=gate.answer_estop,
        on_fault=on_fault,
        # MQTT 5 where the broker speaks it (the embedded amqtt broker does not; the publisher
        # also falls back by itself when a broker refuses version 5).
        mqtt5=not embedded,
        hold_without_subscriber=settings.mqtt.hold_without_subscriber,
        # The embedded broker serves this machine only: no clinic logger sends receipts.
        receipts=settings.mqtt.receipts and not embedded,
        receipt_timeout_s=settings.mqtt.receipt_timeout_s,
    )


async def _close(
    session: Session,
    recorder: RecorderOutput | None,
    dashboard: DashboardLink | None,
    children: Supervisor,
    publisher: MqttPublisher | None,
    store: SessionStore,
) -> tuple[dict[str, Any], str | None]:
    """Close the outputs (the recording and the window first, then each drains in list order:
    MQTT, the session log, ...), then report. A log that does not drain in time loses
    nothing: `SessionStore.close` writes what is still queued."""
    result = session.result
    if recorder is not None:
        result.record = await recorder.close()
    shot = None if dashboard is None else await _close_dashboard(dashboard, children)
    drained = {out.name: await out.drained(FLUSH_TIMEOUT_S) for out in session.outputs}
    await children.close()
    if publisher is not None:
        result.mqtt_published = publisher.stats.published
        result.mqtt_backlog = publisher.backlog
    report = result.report()
    report.update(db=str(store.path), mqtt_flushed=drained.get("mqtt", True))
    report["outputs_drained"] = drained
    report["children"] = children.report()
    return report, shot


def _dashboard_report(
    report: dict[str, Any],
    dashboard: DashboardLink | None,
    shot: str | None,
    options: RunOptions,
    console: Console,
) -> None:
    if dashboard is not None:
        report["dashboard"] = {
            "frames_drawn": dashboard.process.total_frames,
            "peak_rss_kb": dashboard.process.peak_rss_kb,
        }
    if shot is not None:
        report["dashboard_screenshot"] = shot
    elif options.screenshot is not None and dashboard is not None:
        problem = dashboard.process.close_problem or "not written"
        report["dashboard_screenshot_error"] = f"{options.screenshot} not written: {problem}"
        console.print(f"[bold red]screenshot {options.screenshot} not written: {problem}[/]")


def _say_start(
    console: Console, session: Session, options: RunOptions, broker_url: str | None, db: Path
) -> None:
    settings, info = session.settings, session.device.info
    mqtt = "off" if broker_url is None else describe(broker_access(settings, broker_url))
    delay = EmgChain(
        settings.processing, settings.calibration, info.rate_hz, info.channels
    ).group_delay_ms
    console.print(
        f"session {session.session_id}: device {options.device}, "
        f"MQTT {mqtt}, log {db}, "
        f"envelope delay {delay:.0f} ms",
        highlight=False,  # rich would colour the digits inside the id and the path
    )


def _say_end(console: Console, session: Session, report: dict[str, Any]) -> None:
    result = session.result
    reps = "no reps counted (free)" if result.reps is None else f"{result.reps} reps"
    in_target = (
        f"{result.time_in_target_s:.1f} s in target"
        if session.settings.calibration.calibrated
        else "no target band (uncalibrated)"
    )
    console.print(
        f"session {session.session_id} ended ({result.stopped_by}): "
        f"{reps}, {len(result.contractions)} contractions, {in_target}, "
        f"block p50 {report['block_compute_us_p50']} µs, "
        f"p99 {report['block_compute_us_p99']} µs",
        highlight=False,
    )


def _start_dashboard(
    session: Session, options: RunOptions, children: Supervisor
) -> DashboardLink | None:
    if not options.dashboard:
        return None
    from feedback.dashboard.link import DashboardLink
    from feedback.dashboard.process import DashboardProcess
    from feedback.outputs.audio import AudioCues

    settings, bus = session.settings, session.commands
    process = DashboardProcess(screenshot=options.screenshot)
    link = DashboardLink(settings, session.device.info, process, bus)
    link.process.start()
    link.audio = AudioCues(settings.target.channel)  # the patient's ears, beside the eyes
    link.audio.start()
    session.add_output(link)
    session.add_output(link.audio)
    children.task("dashboard_controls", link.run_controls, restart=True)
    children.task("dashboard_frames", link.run_frames, restart=True)

    async def died() -> None:
        # The therapist's emergency-stop button went with the window: stimulation stays stopped
        # (latched) until someone re-arms it, from the restarted dashboard or over MQTT.
        if settings.stimulation.enabled and session.stim_state != "estop":
            bus.submit(EmergencyStop(source="dashboard_died"))

    children.process("dashboard", link.process, on_death=died)
    return link


async def _close_dashboard(link: DashboardLink, children: Supervisor) -> str | None:
    link.final_frame()
    await asyncio.sleep(0.2)  # let the child draw the last frame before the screenshot
    link.process.stop_offers()
    if link.audio is not None:
        link.audio.close()
    written = await asyncio.to_thread(link.process.close)
    code = link.process.exitcode
    if code not in (0, None) and link.process.close_problem is None:  # died while closing
        children.died("dashboard", f"{describe_exit(code)} while closing", restarting=False)
    return str(link.process.screenshot) if written else None


def _install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
