"""Assembles a station: broker (embedded or external), session log, device, outputs; runs it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from config.settings import Settings
from devices.registry import open_device
from feedback.broker import EmbeddedBroker
from feedback.calibration_flow import calibrated_settings
from feedback.clinic.commands import CommandBus, CommandGate
from feedback.outputs.broker_access import BrokerAccess, describe
from feedback.outputs.mqtt_publisher import MqttPublisher
from feedback.outputs.outbox import SqliteOutbox
from feedback.outputs.session_store import SessionStore
from feedback.outputs.terminal import ViewState, run_terminal_view
from feedback.outputs.topics import Topics
from feedback.processing.chain import EmgChain
from feedback.session import Session, default_db_path
from feedback.supervision import Supervisor, describe_exit

if TYPE_CHECKING:
    from feedback.dashboard.link import DashboardLink

log = logging.getLogger(__name__)
FLUSH_TIMEOUT_S = 5.0


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


def broker_access(settings: Settings, url: str) -> BrokerAccess:
    m = settings.mqtt
    return BrokerAccess.from_url(
        url,
        username=m.username,
        password=m.password.get_secret_value(),
        ca_file=m.tls_ca,
        cert_file=m.tls_cert,
        key_file=m.tls_key,
    )


async def run(
    settings: Settings, options: RunOptions, console: Console | None = None
) -> dict[str, Any]:
    console = console or Console(stderr=True, soft_wrap=True)
    async with contextlib.AsyncExitStack() as stack:
        if options.broker == "embedded":
            broker = await stack.enter_async_context(EmbeddedBroker())
            broker_url = broker.url
        else:
            broker_url = options.broker
        store = SessionStore(db_path_from(options.db))
        stack.callback(store.close)
        outbox = SqliteOutbox(outbox_path_from(settings, store.path))
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
        access = broker_access(settings, broker_url)

        def restarted(task: str, error: str, restarts: int) -> None:  # logged by the supervisor
            if running:
                detail = {"task": task, "error": error, "restarts": restarts}
                running[0].log_event("task_restarted", detail)

        publisher = MqttPublisher(
            broker_url,
            topics,
            client_id=f"vmf-{s.clinic}-{s.station}",
            keepalive_s=settings.mqtt.keepalive_s,
            outbox=outbox,
            access=access,
            on_command=gate.handle,
            on_estop=gate.answer_estop,
            on_fault=restarted,
            # MQTT 5 where the broker speaks it (the embedded amqtt broker does not; the publisher
            # also falls back by itself when a broker refuses version 5).
            mqtt5=options.broker != "embedded",
            hold_without_subscriber=settings.mqtt.hold_without_subscriber,
            # The embedded broker serves this machine only: no clinic logger sends receipts.
            receipts=settings.mqtt.receipts and options.broker != "embedded",
            receipt_timeout_s=settings.mqtt.receipt_timeout_s,
        )
        if options.metrics_port is not None:
            from feedback import metrics

            stack.callback(metrics.serve(publisher, options.metrics_port))
        device = open_device(options.device, settings)
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
        session = Session(
            settings,
            device,
            publisher,
            store,
            duration_s=options.duration_s,
            view=view,
            commands=bus,
        )
        # Every helper is watched: one that dies is said at once (feedback/supervision.py).
        children = Supervisor(console=console, view=view, event=session.log_event)
        # The publisher and the session log keep their state outside the task (the outbox,
        # the queue), so a restart loses nothing; the recorder's file would not survive one.
        children.task("publisher", publisher.run, restart=True)
        children.task("session_log", store.run, restart=True)
        if options.record is not None:
            session.recorder = recorder = session.make_recorder(options.record)
            children.task("recorder", recorder.run)
        if options.live_view:
            children.task("terminal_view", lambda: run_terminal_view(view, console), restart=True)
        stop = asyncio.Event()
        dashboard = _start_dashboard(session, options, stop, children)
        if dashboard is not None and dashboard.audio is not None and dashboard.audio.silent_reason:
            console.print("no audio device: running silent (tones need the 'audio' extra)")
        _install_signal_handlers(stop)
        if outbox.recovered:
            console.print(f"outbox: {outbox.recovered} messages from an earlier run still to send")
        delay = EmgChain(
            settings.processing, settings.calibration, device.info.rate_hz, device.info.channels
        ).group_delay_ms
        console.print(
            f"session {session.session_id}: device {options.device}, "
            f"MQTT {describe(access)}, log {store.path}, envelope delay {delay:.0f} ms",
            highlight=False,  # rich would colour the digits inside the id and the path
        )
        console.print(calibration_note)
        if options.wait_for_start:
            await _wait_for_start(bus, session, stop, console)
        running.append(session)
        result = await session.run(stop)
        if session.recorder is not None:
            result.record = await session.recorder.close()
        shot = None if dashboard is None else await _close_dashboard(dashboard, children)
        flushed = await publisher.flush(FLUSH_TIMEOUT_S)
        await store.flush()
        await children.close()
        result.mqtt_published = publisher.stats.published
        result.mqtt_backlog = publisher.backlog
        report = result.report()
        report.update(
            broker=broker_url, db=str(store.path), device=options.device, mqtt_flushed=flushed
        )
        report["children"] = children.report()
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
        if not flushed:
            console.print(
                f"[yellow]MQTT: {publisher.backlog} session messages not delivered "
                f"({publisher.undelivered_reason()}); they stay in the outbox for the next "
                f"start, and are in the local session log.[/]"
            )
        if options.report is not None:
            options.report.write_text(json.dumps(report, indent=2) + "\n")
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
        return report
    raise AssertionError("unreachable")  # pragma: no cover


def _start_dashboard(
    session: Session, options: RunOptions, stop: asyncio.Event, children: Supervisor
) -> DashboardLink | None:
    if not options.dashboard:
        return None
    from feedback.dashboard.link import DashboardLink
    from feedback.dashboard.process import DashboardProcess
    from feedback.outputs.audio import AudioCues

    link = DashboardLink(session, DashboardProcess(screenshot=options.screenshot))
    link.process.start()
    link.audio = AudioCues(session.settings.target.channel)  # the patient's ears, beside the eyes
    link.audio.start()
    session.tick_listeners.append(link.audio.on_tick)
    children.task("dashboard_controls", lambda: link.run_controls(stop), restart=True)
    children.task("dashboard_frames", link.run_frames, restart=True)

    async def died() -> None:
        # The therapist's emergency-stop button went with the window: stimulation stays stopped
        # (latched) until someone re-arms it, from the restarted dashboard or over MQTT.
        if session.settings.stimulation.enabled and session.stim.state != "estop":
            await session.stim.emergency_stop("dashboard_died")

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


async def _wait_for_start(
    bus: CommandBus, session: Session, stop: asyncio.Event, console: Console
) -> None:
    started = asyncio.Event()

    def start(cmd: dict[str, Any]) -> None:
        if cmd.get("pain_before") is not None:
            session.pain_before = int(cmd["pain_before"])
        started.set()

    bus.on("start", start)
    console.print("waiting for a therapist's start command (Ctrl-C to give up)")
    waits = {asyncio.create_task(started.wait()), asyncio.create_task(stop.wait())}
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in waits:
        task.cancel()


def _install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
