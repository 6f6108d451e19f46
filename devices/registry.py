"""Open a device from a spec string.

`sim`, `sim?speed=max`; `serial:/dev/ttyACM0`, `serial:auto?vid=2341&pid=0043`,
`serial:PATH?format=csv&rate=1000&channels=VM,VL&baud=115200`; `ble:NAME`, `ble:uuid=SERVICE`,
`ble:AA:BB:CC:DD:EE:FF`; `lsl:NAME`; `replay:FILE?speed=max&channels=VM=VM,VL=VL&loop=1&rate=HZ`
and `&start=SECONDS`; `replay:FILE.xdf?stream=NAME` or `?type=EMG` (and `unit=uV`);
`brainflow:BOARD` (a BrainFlow board name or id, e.g. `brainflow:SYNTHETIC_BOARD`).
Unknown kinds and options raise `DeviceError` naming the allowed ones.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from config.settings import Settings
from devices.base import Device, DeviceError
from devices.formats.base import mv_factor

KINDS = ("sim", "serial", "ble", "lsl", "replay", "brainflow")


def split_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """`kind:target?k=v&k2=v2` → (kind, target, options)."""
    head, _, query = spec.partition("?")
    kind, _, target = head.partition(":")
    options = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    return kind.strip().lower(), target, options


def open_device(spec: str, settings: Settings) -> Device:
    kind, _target, options = split_spec(spec)
    if kind == "sim":
        if set(options) - {"speed"}:
            raise DeviceError(
                f"sim: unknown option(s) {sorted(set(options) - {'speed'})}; allowed: ['speed']"
            )
        from devices.simulator import SimulatedDevice

        speed = options.get("speed", "1")
        if speed not in ("1", "max"):
            raise DeviceError(f"sim: speed must be 1 or max, not {speed!r}")
        return SimulatedDevice(
            settings.simulator, block_ms=settings.device.block_ms, realtime=speed != "max"
        )
    if kind == "serial":
        from devices.serial_device import open_serial

        return open_serial(spec, _target, options)
    if kind == "ble":
        from devices.ble import open_ble

        return open_ble(spec, _target, options)
    if kind == "lsl":
        from devices.lsl import open_lsl

        return open_lsl(spec, _target, options, block_ms=settings.device.block_ms)
    if kind == "replay":
        return _open_replay(spec, _target, options, settings)
    if kind == "brainflow":
        from devices.brainflow_device import open_brainflow

        return open_brainflow(spec, _target, options, block_ms=settings.device.block_ms)
    raise DeviceError(f"unknown device kind {kind!r} in {spec!r}; known: {', '.join(KINDS)}")


def _open_replay(spec: str, path: str, options: dict[str, str], settings: Settings) -> Device:
    from devices.replay import ReplayDevice, parse_channel_map

    allowed = {"speed", "channels", "loop", "rate", "start", "stream", "type", "unit"}
    if unknown := sorted(set(options) - allowed):
        raise DeviceError(f"replay: unknown option(s) {unknown}; allowed: {sorted(allowed)}")
    speed = options.get("speed", "1")
    if speed not in ("1", "max"):
        raise DeviceError(f"replay: speed must be 1 or max, not {speed!r}")
    if not path:
        raise DeviceError("replay: give a file, e.g. replay:recording.edf?speed=max")
    channels = parse_channel_map(options["channels"]) if "channels" in options else None
    rate = _replay_rate(options.get("rate"))
    if "stream" in options and "type" in options:
        raise DeviceError("replay: choose the XDF stream by stream=NAME or by type=TYPE, not both")
    stream = next(
        ((k if k == "type" else "name", options[k]) for k in ("stream", "type") if k in options),
        None,
    )
    if stream is not None and not stream[1]:
        raise DeviceError("replay: stream= and type= need a value, e.g. type=EMG")
    unit = options.get("unit")
    if unit is not None and mv_factor(unit) is None:
        raise DeviceError(f"replay: unit must be V, mV, uV or nV, not {unit!r}")
    return ReplayDevice(
        path,
        block_ms=settings.device.block_ms,
        realtime=speed != "max",
        channels=channels,
        spec=spec,
        loop=options.get("loop", "0") in ("1", "true", "yes"),
        rate_hz=rate,
        start_s=_replay_start(options.get("start")),
        units=unit,
        stream=stream,
    )


def _replay_start(text: str | None) -> float:
    if text is None:
        return 0.0
    try:
        start = float(text)
    except ValueError:
        start = float("nan")
    if not 0.0 <= start < 1e7:  # also refuses nan and inf
        raise DeviceError(f"replay: start must be seconds from the file's start, not {text!r}")
    return start


def _replay_rate(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        rate = float(text)
    except ValueError:
        rate = float("nan")
    if not 1.0 <= rate <= 100_000.0:  # also refuses nan
        raise DeviceError(f"replay: rate must be a sample rate in Hz (1-100000), not {text!r}")
    return rate
