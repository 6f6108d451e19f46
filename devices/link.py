"""One device over one byte transport, with what every real link needs: connect, detect loss,
reconnect with backoff, keep the heartbeat going while the consumer is alive, and keep sample
indices monotonic across it all.

Serial and BLE differ only in how bytes are opened, read and written (`ByteTransport`); the
decoding (`SampleDecoder`: the framed protocol or a CSV text stream) is chosen by the spec. So a
cable pulled from a serial port and a BLE peripheral walking out of range look the same to the
session: the block stream pauses, the link state goes DOWN, and when bytes flow again the next
block's `first_index` jumps by the samples lost while the link was down (a gap the session marks).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Protocol, Self

from devices.backoff import Backoff as Backoff  # re-exported: devices.ble builds one
from devices.base import (
    DeviceError,
    DeviceInfo,
    HostCommand,
    LinkState,
    LinkStats,
    SampleBlock,
    StreamEvent,
)
from devices.framed_stream import StreamIdentity

log = logging.getLogger(__name__)


class LinkLost(Exception):
    """The transport went away (port closed, cable pulled, BLE disconnect)."""


class DeviceChanged(DeviceError):
    """After a reconnect the stream has another rate or other channels: the session cannot go on."""


class ByteTransport(Protocol):
    async def read(self) -> bytes:
        """The next bytes that arrived; raises `LinkLost` when the link is gone."""
        ...

    async def write(self, data: bytes) -> None:
        """Queue bytes for the device; raises `LinkLost` when the link is gone."""
        ...

    async def close(self) -> None: ...


TransportOpener = Callable[[], Awaitable[ByteTransport]]
"""Opens the transport; raises `DeviceError` or `OSError` when the device is not there (yet)."""


class SampleDecoder(Protocol):
    """Bytes → blocks for one connection; a fresh decoder is made for every (re)connect."""

    def feed(self, data: bytes, host_time: float) -> list[SampleBlock]: ...

    def identity(self) -> StreamIdentity | None:
        """None until the stream has said what it is (a DeviceInfo frame, for the protocol)."""
        ...

    def hello(self) -> bytes:
        """Bytes to send right after connecting (an InfoRequest), or b""."""
        ...

    def heartbeat(self) -> bytes:
        """Bytes that feed the device's watchdog, or b"" for streams without one."""
        ...

    def command(self, command: HostCommand) -> bytes:
        """The command as bytes; raises `DeviceError` if this stream cannot take commands."""
        ...

    def take_events(self) -> list[StreamEvent]: ...


class IndexContinuity:
    """Keeps `first_index` monotonic across reconnects and device restarts.

    After a reconnect the device's counter either carried on (same device, port reopened: the jump
    is the loss) or restarted (power cycle, a new emulator): then the loss is estimated from how
    long no samples arrived, and an offset keeps indices increasing.
    """

    def __init__(self, stats: LinkStats) -> None:
        self.stats = stats
        self._offset = 0
        self._last_end: int | None = None
        self._last_arrival = 0.0
        self._resync = False

    def link_lost(self) -> None:
        self._resync = True

    def adjust(self, block: SampleBlock) -> SampleBlock:
        first = block.first_index + self._offset
        last_end = self._last_end
        if last_end is not None and (self._resync or first < last_end):
            silent_s = block.t_arrival - block.n_samples / block.rate_hz - self._last_arrival
            silent = max(0, round(silent_s * block.rate_hz))
            # A device that carried on advanced its counter by about the silence; one that
            # restarted is behind its old count, or (when the host came back only after the new
            # device had run longer than the old one: a jittered reconnect) far short of it.
            if first < last_end or first - last_end < silent // 2:
                self._offset = last_end + silent - block.first_index
                first = last_end + silent
            lost = first - last_end
            if lost > 0:
                self.stats.gaps += 1
                self.stats.samples_lost += lost
        self._resync = False
        self._last_end = first + block.n_samples
        self._last_arrival = block.t_arrival
        return block if first == block.first_index else replace(block, first_index=first)


class LinkedDevice:
    """A `Device` over a reconnecting transport. Transports supply `opener`; specs the decoder."""

    def __init__(
        self,
        spec: str,
        kind: str,
        opener: TransportOpener,
        make_decoder: Callable[[LinkStats], SampleDecoder],
        *,
        backoff: Backoff | None = None,
        heartbeat_s: float = 0.1,
        consumer_stale_s: float = 0.15,
        hello_timeout_s: float = 3.0,
    ) -> None:
        self.spec, self.kind = spec, kind
        self.stats = LinkStats()
        self.info = DeviceInfo(spec=spec, kind=kind, rate_hz=0.0, channels=())
        self.backoff = backoff or Backoff()
        self.heartbeat_s = heartbeat_s
        self.consumer_stale_s = consumer_stale_s
        self.hello_timeout_s = hello_timeout_s
        self._opener = opener
        self._make_decoder = make_decoder
        self._transport: ByteTransport | None = None
        self._decoder: SampleDecoder | None = None
        self._continuity = IndexContinuity(self.stats)
        self._backlog: list[SampleBlock] = []
        self._events: list[StreamEvent] = []
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._heartbeats = 0
        self.heartbeats_withheld = 0  # beats not sent because the consumer stopped taking blocks
        self._consumers_waiting = 0
        self._last_taken_s = -float("inf")
        self._down_since: float | None = None

    async def __aenter__(self) -> Self:
        try:
            await self._connect()
        except (DeviceError, OSError, LinkLost, TimeoutError) as exc:
            self.stats.state = LinkState.CLOSED
            raise DeviceError(f"{self.spec}: {exc}") from exc
        self._heartbeat_task = asyncio.create_task(self._heartbeat_loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat_task
        await self._drop_transport()
        self.stats.state = LinkState.CLOSED

    async def send(self, command: HostCommand) -> None:
        """Raises `DeviceError` while the link is down: a command must never be queued for later."""
        if self._transport is None or self._decoder is None:
            raise DeviceError(f"{self.spec}: link is down, {type(command).__name__} not sent")
        try:
            await self._transport.write(self._decoder.command(command))
        except LinkLost as exc:
            raise DeviceError(f"{self.spec}: link lost while sending: {exc}") from exc

    def take_events(self) -> list[StreamEvent]:
        """Acks, refusals, status and device errors received since the last call."""
        if self._decoder is not None:
            self._events.extend(self._decoder.take_events())
        events, self._events = self._events, []
        return events

    def consumer_alive(self, now_s: float | None = None) -> bool:
        """True while someone waits in `blocks()` or took a block within `consumer_stale_s`:
        the processing loop is alive, so the device's watchdog may be fed."""
        if self._consumers_waiting > 0:
            return True
        now = time.monotonic() if now_s is None else now_s
        return now - self._last_taken_s <= self.consumer_stale_s

    async def blocks(self) -> AsyncIterator[SampleBlock]:
        """The block stream. Also the liveness signal for the heartbeat: when the consumer stops
        taking blocks (a hung or dead processing loop), the heartbeat stops with it."""
        inner = self._produce()
        self._consumers_waiting += 1
        waiting = True
        try:
            async for block in inner:
                self._consumers_waiting -= 1
                waiting = False
                self._last_taken_s = time.monotonic()
                yield block
                self._consumers_waiting += 1
                waiting = True
        finally:
            if waiting:
                self._consumers_waiting -= 1
            await inner.aclose()

    async def _produce(self) -> AsyncGenerator[SampleBlock]:
        while True:
            while self._backlog:
                yield self._backlog.pop(0)
            if self._transport is None or self._decoder is None:
                await self._reconnect()
                continue
            try:
                data = await self._transport.read()
            except LinkLost as exc:
                await self._lost(str(exc))
                continue
            for block in self._decoder.feed(data, time.time()):
                yield self._continuity.adjust(block)

    # -- connecting -----------------------------------------------------------------------------

    async def _connect(self) -> None:
        """Open, say hello, and wait until the stream identifies itself."""
        self.stats.state = LinkState.CONNECTING
        transport = await self._opener()
        decoder = self._make_decoder(self.stats)
        try:
            hello = decoder.hello()
            if hello:
                await transport.write(hello)
            async with asyncio.timeout(self.hello_timeout_s):
                while (identity := decoder.identity()) is None:
                    blocks = decoder.feed(await transport.read(), time.time())
                    self._backlog.extend(self._continuity.adjust(b) for b in blocks)
        except TimeoutError:
            await transport.close()
            raise DeviceError(f"no device info within {self.hello_timeout_s} s") from None
        except BaseException:
            await transport.close()
            raise
        self._check_identity(identity)
        self._transport, self._decoder = transport, decoder
        self.stats.state = LinkState.UP

    def _check_identity(self, ident: StreamIdentity) -> None:
        if self.info.rate_hz and (ident.rate_hz, ident.channels) != (
            self.info.rate_hz,
            self.info.channels,
        ):
            raise DeviceChanged(
                f"{self.spec}: a different device came back ({ident.rate_hz} Hz, "
                f"{ident.channels}; was {self.info.rate_hz} Hz, {self.info.channels})"
            )
        self.info = DeviceInfo(
            spec=self.spec,
            kind=self.kind,
            rate_hz=ident.rate_hz,
            channels=ident.channels,
            firmware_version=ident.firmware_version,
            serial=ident.serial,
        )

    async def _lost(self, why: str) -> None:
        log.warning("%s: link lost (%s); reconnecting", self.spec, why)
        self.stats.notes.append(f"link lost at {time.strftime('%H:%M:%S')}: {why}")
        await self._drop_transport()
        self._continuity.link_lost()
        self.stats.state = LinkState.DOWN
        self._down_since = time.monotonic()

    async def _reconnect(self) -> None:
        """Retry with backoff until the device is back; a different device is fatal."""
        while True:
            try:
                await self._connect()
            except DeviceChanged:
                raise
            except (DeviceError, OSError, LinkLost, TimeoutError) as exc:
                why = str(exc) or type(exc).__name__
            else:
                break
            self.stats.state = LinkState.DOWN
            delay = self.backoff.next()
            log.debug("%s: reconnect failed (%s); next try in %.2f s", self.spec, why, delay)
            await asyncio.sleep(delay)
        self.backoff.reset()
        self.stats.reconnects += 1
        if self._down_since is not None:
            down = time.monotonic() - self._down_since
            self.stats.down_s += down
            self.stats.notes.append(f"link back after {down:.2f} s down")
            log.warning("%s: link back after %.2f s", self.spec, down)
            self._down_since = None

    async def _drop_transport(self) -> None:
        transport, self._transport = self._transport, None
        if self._decoder is not None:
            self._events.extend(self._decoder.take_events())
        self._decoder = None
        if transport is not None:
            with contextlib.suppress(Exception):
                await transport.close()

    async def _heartbeat_loop(self) -> None:
        """Feeds the device's watchdog while the link is up AND the processing loop keeps taking
        blocks: the host's only heartbeat, so a dead or hung loop (or a dead process) lets the
        firmware's watchdog stop any stimulation. With `consumer_stale_s` 150 ms and the
        firmware's 250 ms watchdog, the output stops at most about 0.4 s after the last block
        was taken."""
        while True:
            await asyncio.sleep(self.heartbeat_s)
            transport, decoder = self._transport, self._decoder
            if transport is None or decoder is None:
                continue
            if not self.consumer_alive():
                self.heartbeats_withheld += 1
                continue
            beat = decoder.heartbeat()
            if not beat:
                return  # this stream has no watchdog
            self._heartbeats += 1
            with contextlib.suppress(LinkLost, OSError):
                await transport.write(beat)
