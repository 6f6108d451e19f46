"""The guided calibration in the terminal (rich): instructions, a countdown and the live
envelope, driven by the device's blocks through the chain and `Calibration` (pure)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Coroutine
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from config.settings import CalibrationSettings, Settings
from devices.base import Device, DeviceError
from devices.simulator import SimulatedDevice
from feedback.calibration import Calibration, CalibrationResult, CalibrationStatus, Step
from feedback.processing.chain import EmgChain

EXIT_INTERRUPTED = 130  # the shell's code for "ended by Ctrl-C"; also used for SIGTERM here


class CalibrationInterrupted(Exception):
    """Ctrl-C or SIGTERM during the guided calibration: it was abandoned and nothing stored."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(
            f"calibration interrupted by {signal_name}; nothing was stored "
            "(the patient profile is unchanged)"
        )
        self.signal_name = signal_name


STYLE = {Step.REST: "bold cyan", Step.MVC: "bold red", Step.MVC_REST: "bold cyan"}


def render(status: CalibrationStatus, envelope_uv: dict[str, float], patient: str) -> Panel:
    table = Table.grid(padding=(0, 2))
    table.add_column(justify="right", style="bold")
    table.add_column()
    table.add_row("now", Text(status.instruction, style=STYLE.get(status.step, "bold green")))
    table.add_row("time left", f"{status.step_left_s:4.1f} s")
    table.add_row("trials", f"{status.trial} / {status.trials}")
    for ch, uv in envelope_uv.items():
        table.add_row(ch, f"{uv:8.1f} µV")
    return Panel(table, title=f"vm-feedback · calibration · {patient}")


async def run_calibration(
    settings: Settings, device: Device, console: Console, *, live_view: bool
) -> CalibrationResult:
    info = device.info
    # Calibrate the raw envelope: no previous calibration may leak into the new one.
    chain = EmgChain(
        settings.processing, CalibrationSettings(mvc_mv={}), info.rate_hz, info.channels
    )
    cal = Calibration(settings, info.rate_hz, info.channels, chain.group_delay_ms)
    status = cal.status()
    console.print(f"calibration: {status.instruction}")
    live = Live(console=console, auto_refresh=False) if live_view else None
    # The demo device's simulated patient follows the prompts (real patients read them).
    script = (
        device.following_calibration(settings.calibration)
        if isinstance(device, SimulatedDevice)
        else contextlib.nullcontext()
    )
    with live or contextlib.nullcontext(), script:
        async for block in device.blocks():
            processed = chain.process(block)
            status = cal.process(processed)
            env = {c: float(processed.envelope[i, -1]) * 1000 for i, c in enumerate(info.channels)}
            if live is not None:
                live.update(render(status, env, settings.session.patient), refresh=True)
            elif status.changed:
                console.print(f"calibration: {status.instruction}")
            if cal.done:
                break
    if not cal.done:
        raise DeviceError("the device stopped before the calibration was complete")
    return cal.result()


async def calibrated_settings(
    settings: Settings,
    device: Device,
    console: Console,
    *,
    calibrate: bool,
    live_view: bool,
    accept_failed: bool = False,
    calibrate_from: str | None = None,
) -> tuple[Settings, str]:
    """Calibrate when asked, from the guided prompts (`calibrate`) or from a reference
    recording (`calibrate_from`, feedback.calibration_recording), and store the result in the
    patient profile; otherwise reuse the profile's calibration when it fits the current chain.
    Also says, in one line for the console, which MVC the session uses.

    A new calibration that fails a check (MVC not clearly above rest) is neither stored nor
    used, unless `accept_failed` (--accept-calibration): the session then runs on the previous
    stored calibration, or on the configured one, and says so."""
    from feedback.profiles import load_calibration, profile_path, save_calibration

    path = profile_path(settings)
    rejected = ""
    result: CalibrationResult | None = None
    if calibrate_from is not None:
        from feedback.calibration_recording import calibrate_from as from_recording

        result = await from_recording(calibrate_from, settings)
    elif calibrate:
        result = await interruptible(
            run_calibration(settings, device, console, live_view=live_view)
        )
    if result is not None:
        for warning in result.warnings:
            console.print(f"[yellow]calibration: {warning}[/]")
        for note in result.left_out:
            console.print(f"calibration: left out (no maximal effort in the recording): {note}")
        mvc = describe_mvc(result.mvc_mv)
        origin = f" from {result.reference}" if result.reference else ""
        if not result.warnings or accept_failed:
            save_calibration(path, result)
            accepted = " despite failed checks (--accept-calibration)" if result.warnings else ""
            note = f"calibration: new{origin}, stored in {path}{accepted}: MVC {mvc}"
            return result.apply(settings), note
        rejected = f"new calibration{origin} (MVC {mvc}) failed its checks and was NOT stored; "
    found, note = load_calibration(path, settings)
    if found is not None:
        return found.apply(settings, "profile"), f"calibration: {rejected}using {note}"
    settings = without_stored_calibration(settings, device)
    return settings, f"calibration: {rejected}{mvc_in_use(settings)} ({note})"


def without_stored_calibration(settings: Settings, device: Device) -> Settings:
    """Name where the MVC in use comes from when no calibration is stored: the settings (a
    value someone configured), the simulated patient (whose MVC is known), or nobody (the
    shipped placeholder: the session then shows levels as uncalibrated)."""
    c = settings.calibration
    if c.source != "configured":  # set by hand: trust it
        return settings
    if c.mvc_mv != CalibrationSettings().mvc_mv:
        source = "configured"
    elif isinstance(device, SimulatedDevice):
        source = "simulator"
    else:
        source = "placeholder"
    return settings.model_copy(update={"calibration": c.model_copy(update={"source": source})})


def describe_mvc(mvc_mv: dict[str, float]) -> str:
    return ", ".join(f"{c} {v * 1000:.0f} µV" for c, v in mvc_mv.items())


def mvc_in_use(settings: Settings) -> str:
    """Which MVC the session uses, in words that do not read like an error."""
    c = settings.calibration
    mvc = describe_mvc(c.mvc_mv)
    if c.source == "simulator":
        return f"using the simulated patient's MVC ({mvc})"
    if c.source == "placeholder":
        return (
            "none stored yet, so levels show in mV (uncalibrated) and the target band starts "
            "after a calibration (--calibrate, or --calibrate-from FILE)"
        )
    return f"using the MVC from the settings ({mvc})"


async def interruptible(calibration: Coroutine[Any, Any, CalibrationResult]) -> CalibrationResult:
    """Run the calibration until it completes, or until SIGINT/SIGTERM cancels it (the device
    and the live view are closed by the cancellation on the way out); then raise
    `CalibrationInterrupted`. The session installs its own handlers afterwards."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(calibration)
    caught: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        caught.append(sig.name)
        task.cancel()

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
    try:
        return await task
    except asyncio.CancelledError:
        if caught:
            raise CalibrationInterrupted(caught[0]) from None
        raise
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
