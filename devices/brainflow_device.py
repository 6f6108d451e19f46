"""Any BrainFlow board as a device: `brainflow:BOARD?channels=VM,VL[&emg=1,2][&serial_port=...]`.

BOARD is a `BoardIds` name (`SYNTHETIC_BOARD`, `synthetic`, `cyton`) or its number. The board's
own connection parameters (`serial_port`, `mac_address`, `ip_address`, `ip_port`,
`ip_protocol`, `other_info`, `timeout`, `serial_number`, `file`, `master_board`) pass through
to `BrainFlowInputParams`, so every board BrainFlow supports works without a driver of ours;
the playback board replays a file that BrainFlow wrote (`brainflow:PLAYBACK_FILE_BOARD?file=
rec.csv&master_board=SYNTHETIC_BOARD`, `loop=1` to repeat it). `channels=` names the roles of
the board's EMG channels (`BoardShim.get_emg_channels`) in order, or of the ones `emg=` picks
(1-based positions in that list). BrainFlow gives ExG in µV; `unit=` overrides.

Opening, starting and stopping a board can block for seconds (serial, Bluetooth), so they run in
a thread; reading is `get_board_data()`, a copy out of BrainFlow's ring buffer that never waits.
Gaps: where the board has a package counter (mod 256, +1 a sample) a jump moves the sample index
on, counted in the link statistics; `counter=0` ignores a counter that steps otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import itertools
import os
import re
import sys
import time
import types
from collections.abc import AsyncIterator, Iterator
from typing import Any, Self

import numpy as np

from devices.base import (
    DeviceError,
    DeviceInfo,
    HostCommand,
    LinkState,
    LinkStats,
    SampleBlock,
    StreamEvent,
)
from devices.formats.base import MAX_ABS_VALUE, mv_factor

BOARD_PARAMS = (
    "serial_port",
    "mac_address",
    "ip_address",
    "ip_port",
    "ip_protocol",
    "other_info",
    "timeout",
    "serial_number",
    "file",
    "master_board",
)
OPTIONS = ("channels", "emg", "unit", "loop", "counter", *BOARD_PARAMS)
_INT_PARAMS = ("ip_port", "ip_protocol", "timeout", "master_board")
COUNTER_WRAP = 256
_ROLE = re.compile(r"^[A-Z]{2,4}(_[LR])?$")  # muscle roles, as the LSL inlet takes them
SILENCE_S = 1.0  # no sample for this long: the link is reported DOWN until data flows again


@contextlib.contextmanager
def _pkg_resources_shim() -> Iterator[None]:
    """brainflow 5 finds its shared libraries with `pkg_resources` on Python 3.11, which
    setuptools 81+ no longer ships. For the moment the libraries load, lend it the one function
    it calls; nothing else ever sees the stand-in."""
    if importlib.util.find_spec("pkg_resources") is not None:
        yield
        return
    shim = types.ModuleType("pkg_resources")

    def resource_filename(package: str, path: str) -> str:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise ModuleNotFoundError(package)
        return os.path.join(os.path.dirname(spec.origin), path)

    shim.resource_filename = resource_filename  # type: ignore[attr-defined]
    sys.modules["pkg_resources"] = shim
    try:
        yield
    finally:
        if sys.modules.get("pkg_resources") is shim:
            del sys.modules["pkg_resources"]


@functools.cache
def load_brainflow() -> Any:
    """`brainflow.board_shim` with its (and DataFilter's) shared library loaded."""
    try:
        with _pkg_resources_shim():
            from brainflow import board_shim  # type: ignore[import-untyped]
            from brainflow.data_filter import DataFilter  # type: ignore[import-untyped]

            board_shim.BoardShim.get_version()  # both libraries load on their first call
            DataFilter.get_version()
    except ImportError as exc:
        raise DeviceError(
            "brainflow: install the 'research' extra (pip install brainflow)"
        ) from exc
    return board_shim


@functools.cache
def owned_shim_class() -> Any:
    """`BoardShim` whose finaliser releases only the session it opened.

    `BoardShim.__del__` releases whatever session is prepared under its board and parameters.
    Once a device has released its own, that is the *next* device's with the same file or port
    (a reopen, a reconnect). The last reference to a closed shim can die late, in the worker
    thread that ran its `release_session`, and so killed the new session between its
    `prepare_session` and its next call (`BOARD_NOT_CREATED_ERROR`)."""
    bf = load_brainflow()

    class OwnedBoardShim(bf.BoardShim):  # type: ignore[misc,name-defined]
        owns_session = False

        def prepare_session(self) -> None:
            super().prepare_session()
            self.owns_session = True

        def release_session(self) -> None:
            self.owns_session = False
            super().release_session()

        def __del__(self) -> None:
            if self.owns_session:
                super().__del__()

    return OwnedBoardShim


def board_id(text: str) -> int:
    bf = load_brainflow()
    ids = {b.name: int(b.value) for b in bf.BoardIds}
    try:
        number = int(text.strip())
    except ValueError:
        name = text.strip().upper().replace("-", "_")
        number = ids.get(name, ids.get(f"{name}_BOARD", -999))
    if number not in ids.values():
        raise DeviceError(
            f"brainflow: unknown board {text!r}; give a name or number of BrainFlow's BoardIds "
            f"({len(ids)} boards, e.g. SYNTHETIC_BOARD, PLAYBACK_FILE_BOARD, CYTON_BOARD)"
        )
    return number


class BrainflowDevice:
    def __init__(
        self,
        spec: str,
        board: int,
        params: dict[str, str],
        roles: tuple[str, ...],
        emg: tuple[int, ...] | None,
        *,
        unit_mv: float,
        loop: bool,
        use_counter: bool,
        block_ms: float,
    ) -> None:
        bf = load_brainflow()
        self._bf = bf
        self.board = board
        self.params = params
        self.loop = loop
        self.block_s = block_ms / 1000.0
        self.stats = LinkStats()
        # Playback and streaming boards stand for the board that made the data.
        described = int(params.get("master_board", board)) if board < 0 else board
        try:
            rate = float(bf.BoardShim.get_sampling_rate(described))
            emg_rows = list(bf.BoardShim.get_emg_channels(described))
            self._ts_row = int(bf.BoardShim.get_timestamp_channel(described))
        except bf.BrainFlowError as exc:
            raise DeviceError(
                f"brainflow: board {board} gives no EMG channels ({exc}); "
                "a playback board needs master_board="
            ) from None
        picks = emg or tuple(range(1, len(roles) + 1))
        if len(picks) != len(roles) or not all(1 <= p <= len(emg_rows) for p in picks):
            raise DeviceError(
                f"brainflow: the board has {len(emg_rows)} EMG channels; give one role per "
                f"channel picked (channels={','.join(roles)}, emg={','.join(map(str, picks))})"
            )
        self._rows = [emg_rows[p - 1] for p in picks]
        self._counter_row: int | None = None
        if use_counter:
            with contextlib.suppress(bf.BrainFlowError):
                self._counter_row = int(bf.BoardShim.get_package_num_channel(described))
        self._scale = unit_mv
        self.info = DeviceInfo(spec, "brainflow", rate, roles, serial=str(board))
        self._shim: Any = None
        self._next_index = 0
        self._last_counter: int | None = None
        self.invalid_samples = 0  # dropped: not finite, or beyond MAX_ABS_VALUE

    async def __aenter__(self) -> Self:
        bf = self._bf
        params = bf.BrainFlowInputParams()
        for key, value in self.params.items():
            setattr(params, key, int(value) if key in _INT_PARAMS else value)
        shim = owned_shim_class()(self.board, params)
        try:
            await asyncio.to_thread(shim.prepare_session)
            if self.board == int(bf.BoardIds.PLAYBACK_FILE_BOARD):
                shim.config_board("loopback_true" if self.loop else "loopback_false")
            await asyncio.to_thread(shim.start_stream)
        except bf.BrainFlowError as exc:
            with contextlib.suppress(bf.BrainFlowError):
                shim.release_session()
            raise DeviceError(f"brainflow: cannot open board {self.board}: {exc}") from None
        self._shim = shim
        self.stats.state = LinkState.UP
        return self

    async def __aexit__(self, *exc: object) -> None:
        shim, self._shim = self._shim, None
        if shim is not None:
            with contextlib.suppress(self._bf.BrainFlowError):
                await asyncio.to_thread(shim.stop_stream)
            with contextlib.suppress(self._bf.BrainFlowError):
                await asyncio.to_thread(shim.release_session)
        self.stats.state = LinkState.CLOSED

    async def send(self, command: HostCommand) -> None:
        raise DeviceError("brainflow: a BrainFlow board takes no stimulation commands")

    def take_events(self) -> list[StreamEvent]:
        return []

    async def blocks(self) -> AsyncIterator[SampleBlock]:
        last_data = time.monotonic()
        while True:
            await asyncio.sleep(self.block_s)
            rows = self._shim.get_board_data()  # copies what arrived; never waits
            now = time.monotonic()
            if not rows.shape[1]:
                if now - last_data > SILENCE_S and self.stats.state is LinkState.UP:
                    self.stats.state = LinkState.DOWN
                    self.stats.notes.append(f"brainflow: no samples for {SILENCE_S} s")
                continue
            if self.stats.state is LinkState.DOWN:
                self.stats.state = LinkState.UP
                self.stats.reconnects += 1
                self.stats.down_s += now - last_data
            last_data = now
            for block in self.split(rows):
                yield block

    def split(self, rows: np.ndarray) -> list[SampleBlock]:
        """Board rows (all of BrainFlow's channels × samples) → blocks of consecutive samples;
        a jump in the package counter starts a new block further on. A sample whose EMG value
        is not finite or beyond ±MAX_ABS_VALUE mV (a broken packet: a NaN would stay in the
        filters for the rest of the session) is dropped and counted as lost, like a jump."""
        n = rows.shape[1]
        if n == 0:
            return []
        lost_at = {} if self._counter_row is None else self._counter_jumps(rows[self._counter_row])
        values = rows[self._rows] * self._scale
        bad = np.asarray(~(np.abs(values) <= MAX_ABS_VALUE).all(axis=0))  # NaN: bad too
        if bad.any():
            if not self.invalid_samples:
                self.stats.notes.append(
                    f"brainflow: samples not finite or beyond ±{MAX_ABS_VALUE:g} mV are "
                    "dropped and counted as lost"
                )
            self.invalid_samples += int(np.count_nonzero(bad))
        data = np.where(bad, 0.0, values).astype(np.float32)  # the bad ones are never sent
        stamps = rows[self._ts_row]
        out: list[SampleBlock] = []
        turns = (np.flatnonzero(np.diff(bad)) + 1).tolist()
        edges = sorted({0, n, *lost_at, *turns})
        for a, b in itertools.pairwise(edges):
            if a in lost_at:
                self.stats.gaps += 1
                self.stats.samples_lost += lost_at[a]
                self._next_index += lost_at[a]
            if bad[a]:
                self.stats.samples_lost += b - a
                self._next_index += b - a
            elif b > a:
                out.append(self._block(data[:, a:b], float(stamps[a])))
        return out

    def _counter_jumps(self, raw: np.ndarray) -> dict[int, int]:
        """Column -> samples lost before it, from the package counter (mod 256, +1 a sample).
        A counter that is not a number says nothing: no jump to or from that sample (cast to
        an integer it was -2^63, a jump of a random size)."""
        ok = np.isfinite(raw)
        counter = np.mod(np.rint(np.where(ok, raw, 0.0)), COUNTER_WRAP).astype(np.int64)
        before = counter[0] - 1 if self._last_counter is None else self._last_counter
        lost = (np.diff(counter, prepend=before) - 1) % COUNTER_WRAP
        lost[~(ok & np.concatenate([[True], ok[:-1]]))] = 0
        self._last_counter = int(counter[-1]) if ok[-1] else None
        return {int(k): int(lost[k]) for k in np.flatnonzero(lost)}

    def _block(self, data: np.ndarray, t_first: float) -> SampleBlock:
        block = SampleBlock(
            first_index=self._next_index,
            t_device=t_first,
            rate_hz=self.info.rate_hz,
            channels=self.info.channels,
            data=np.ascontiguousarray(data),
            t_arrival=time.time(),
        )
        self._next_index += block.n_samples
        self.stats.blocks += 1
        self.stats.samples += block.n_samples
        return block


def open_brainflow(
    spec: str, target: str, options: dict[str, str], *, block_ms: float
) -> BrainflowDevice:
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise DeviceError(f"brainflow: unknown option(s) {unknown}; allowed: {list(OPTIONS)}")
    if not target:
        raise DeviceError("brainflow: name a board, e.g. brainflow:SYNTHETIC_BOARD?channels=VM")
    roles = tuple(r.strip() for r in options.get("channels", "").split(",") if r.strip())
    if not roles or not all(_ROLE.match(r) for r in roles):
        raise DeviceError(
            "brainflow: name the roles of the board's EMG channels, e.g. "
            f"brainflow:{target}?channels=VM,VL"
        )
    try:
        emg = tuple(int(p) for p in options["emg"].split(",")) if "emg" in options else None
        params = {k: options[k] for k in BOARD_PARAMS if k in options}
        for key in _INT_PARAMS:
            if key in params and key != "master_board":
                int(params[key])
    except ValueError:
        raise DeviceError(
            f"brainflow: emg= and {', '.join(_INT_PARAMS[:3])} take whole numbers"
        ) from None
    if "master_board" in params:
        params["master_board"] = str(board_id(params["master_board"]))
    unit = options.get("unit", "uV")
    factor = mv_factor(unit)
    if factor is None:
        raise DeviceError(f"brainflow: unit must be V, mV, uV or nV, not {unit!r}")
    return BrainflowDevice(
        spec,
        board_id(target),
        params,
        roles,
        emg,
        unit_mv=factor,
        loop=options.get("loop", "0") in ("1", "true", "yes"),
        use_counter=options.get("counter", "1") not in ("0", "false", "no"),
        block_ms=block_ms,
    )
