"""Command line: argv → settings → `asyncio.run(app.run(...))`. Exit 2 on a bad configuration."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from pathlib import Path

from config.names import ConfigError, available_protocols, check_patient_id

EXIT_CONFIG = 2
EXIT_INCOMPLETE = 1  # the session ran, but something asked for was not done (e.g. a screenshot)
MAX_DURATION_S = 4 * 3600.0  # a training session is minutes long; hours is a typing mistake


def _duration(text: str) -> float:
    """argparse type for --duration: finite, > 0 and at most MAX_DURATION_S (else exit 2)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or not 0.0 < value <= MAX_DURATION_S:
        raise argparse.ArgumentTypeError(
            f"{text!r} must be a number of seconds > 0 and ≤ {MAX_DURATION_S:.0f}"
        )
    return value


def _patient(text: str) -> str:
    try:
        return check_patient_id(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _pain(text: str) -> int:
    """argparse type for --pain-before: a whole number 0–10 (the numeric rating scale)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number 0–10") from None
    if not 0 <= value <= 10:
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number 0–10")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vm-feedback",
        description="Real-time surface-EMG biofeedback for vastus medialis retraining.",
        epilog="Settings come from config/default.toml, then --config, then VMF_<SECTION>__<KEY> "
        "environment variables, then these flags.",
    )
    p.add_argument(
        "--config",
        type=Path,
        metavar="FILE.toml",
        help="settings file (TOML) layered over the defaults",
    )
    p.add_argument(
        "--protocol",
        metavar="NAME",
        help=f"exercise protocol from config/protocols/ ({', '.join(available_protocols())}); "
        "'free' counts contractions without timing or reps; default: the [protocol] section "
        "of the settings (demo), or 'free' when replaying a recording",
    )
    p.add_argument(
        "--device",
        metavar="SPEC",
        help="sample source: sim (default), sim?speed=max, serial:/dev/ttyACM0, "
        "serial:auto[?vid=2341&pid=0043], serial:PATH?format=csv&rate=1000&channels=VM,VL, "
        "ble:NAME, ble:uuid=SERVICE, ble:ADDRESS, lsl:NAME, lsl:type=EMG, "
        "brainflow:BOARD?channels=VM,VL, "
        "replay:FILE[?speed=max][&channels=VM=VM,VL=VL] (UCI .txt, CSV, EDF+/BDF, XDF; "
        "see README)",
    )
    p.add_argument(
        "--duration",
        type=_duration,
        metavar="SECONDS",
        help="stop after this much signal time (default: when the protocol ends)",
    )
    view = p.add_mutually_exclusive_group()
    view.add_argument(
        "--headless",
        action="store_true",
        help="no dashboard window and no live terminal view: only the start and end lines "
        "(for scripts and services)",
    )
    view.add_argument(
        "--dashboard",
        action="store_true",
        help="open the therapist dashboard (needs the 'dashboard' extra)",
    )
    p.add_argument(
        "--web",
        action="store_true",
        help="also serve the browser views (patient and therapist) and print their URLs",
    )
    p.add_argument(
        "--broker",
        metavar="URL",
        help="publish to this MQTT broker (mqtt://host:port) instead of the embedded one; "
        "'none' publishes nothing, which is the default of a --headless replay at speed=max "
        "(give --broker embedded or a URL to publish it)",
    )
    p.add_argument(
        "--db",
        metavar="URL",
        help="session log: a SQLite file path or sqlite:///PATH "
        "(default: sessions.sqlite3 in the user data directory)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics (outbox backlog, reconnects, published, dropped) on "
        "http://127.0.0.1:PORT/metrics (docs/operations.md)",
    )
    p.add_argument(
        "--report",
        type=Path,
        metavar="PATH.json",
        help="write a JSON summary of the session here at the end",
    )
    p.add_argument(
        "--calibrate",
        action="store_true",
        help="run the guided rest + MVC calibration first and store it in the patient profile",
    )
    p.add_argument(
        "--accept-calibration",
        action="store_true",
        help="with --calibrate or --calibrate-from: store and use the new calibration even if "
        "it fails its checks "
        "(default: it is not stored and the previous calibration is used)",
    )
    p.add_argument(
        "--calibrate-from",
        metavar="PATH",
        help="calibrate from a reference recording (an MVC trial, or any recording of maximal "
        "efforts): rest and MVC per channel, checked and stored in the patient profile as "
        "--calibrate does; PATH is a file or a replay: spec (replay:FILE?channels=VM=VM,VL=VL)",
    )
    p.add_argument(
        "--record",
        type=Path,
        metavar="PATH",
        help="write the processed record: PATH.edf (EDF+), PATH.csv, or both for a bare stem",
    )
    p.add_argument(
        "--screenshot",
        type=Path,
        metavar="PATH.png",
        help="with --dashboard: save the therapist view here at the end (and the patient view "
        "as PATH-patient.png); works without a display",
    )
    p.add_argument(
        "--patient",
        type=_patient,
        metavar="ID",
        help="pseudonymous patient id (letters, digits, - and _, at least one digit; never a "
        "name), e.g. P-0042; also [session] patient or VMF_SESSION__PATIENT",
    )
    p.add_argument(
        "--pain-before",
        type=_pain,
        metavar="0-10",
        help="pain the patient reports before the session (0 none … 10 worst)",
    )
    p.add_argument(
        "--wait-start",
        action="store_true",
        help="start only when a therapist sends a start command over MQTT",
    )
    p.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log debug messages of vm-feedback; -vv also those of the libraries it uses",
    )
    return p


def _broker(args: argparse.Namespace, configured: str, device: str) -> str:
    """A headless replay at full speed is an offline analysis: nobody watches it live, and an
    embedded broker would only cost start-up time. It publishes only when asked (--broker, or
    a broker other than the embedded one in the settings)."""
    offline = (
        args.headless
        and not (args.broker or args.web or args.dashboard or args.wait_start)
        and configured == "embedded"
        and device.startswith("replay:")
        and "speed=max" in device.partition("?")[2].split("&")
    )
    return "none" if offline else configured


OWN_LOGGERS = ("feedback", "devices", "firmware_bridge", "config")


def _configure_logging(verbose: int) -> None:
    """-v: this project's debug lines; third-party chatter (amqtt, transitions, ...) stays at
    WARNING unless -vv."""
    logging.basicConfig(
        level=logging.DEBUG if verbose >= 2 else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if verbose == 1:
        for name in OWN_LOGGERS:
            logging.getLogger(name).setLevel(logging.DEBUG)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Imported only now, so that `--help` and a bad option answer without pydantic, numpy,
    # scipy or asyncio (tests/test_startup_imports.py).
    import asyncio

    from config.loader import load_settings
    from devices.base import DeviceError
    from feedback import app
    from feedback.calibration_flow import EXIT_INTERRUPTED, CalibrationInterrupted

    _configure_logging(args.verbose)
    overrides: dict[str, object] = {}
    if args.device:
        overrides["device.spec"] = args.device
    if args.broker:
        overrides["mqtt.broker"] = args.broker
    if args.db:
        overrides["storage.db"] = args.db
    if args.pain_before is not None:
        overrides["session.pain_before"] = args.pain_before
    if args.patient is not None:
        overrides["session.patient"] = args.patient
    protocol = args.protocol
    if protocol is None and (args.device or "").startswith("replay:"):
        protocol = "free"  # a recording followed no protocol of ours: count its contractions
    if args.calibrate and args.calibrate_from:
        print("vm-feedback: use --calibrate or --calibrate-from, not both", file=sys.stderr)
        return EXIT_CONFIG
    try:
        settings = load_settings(args.config, overrides=overrides, protocol=protocol)
    except ConfigError as exc:
        print(f"vm-feedback: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.screenshot is not None and not args.dashboard:
        print("vm-feedback: --screenshot needs --dashboard", file=sys.stderr)
        return EXIT_CONFIG
    options = app.RunOptions(
        device=settings.device.spec,
        duration_s=args.duration,
        db=settings.storage.db,
        broker=_broker(args, settings.mqtt.broker, settings.device.spec),
        report=args.report,
        live_view=not args.headless and sys.stderr.isatty() and os.environ.get("TERM") != "dumb",
        calibrate=args.calibrate,
        accept_calibration=args.accept_calibration,
        calibrate_from=args.calibrate_from,
        record=args.record,
        dashboard=args.dashboard,
        screenshot=args.screenshot,
        wait_for_start=args.wait_start,
        metrics_port=args.metrics_port,
    )
    try:
        if args.web:
            from feedback.web.demo import run_with_web

            report = asyncio.run(run_with_web(settings, options))
        else:
            report = asyncio.run(app.run(settings, options))
    except (DeviceError, ValueError) as exc:
        print(f"vm-feedback: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except CalibrationInterrupted as exc:
        print(f"vm-feedback: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if report.get("dashboard_screenshot_error"):
        print(f"vm-feedback: {report['dashboard_screenshot_error']}", file=sys.stderr)
        return EXIT_INCOMPLETE
    return 0
