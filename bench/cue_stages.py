"""Where a cue's time inside the station goes: a stamp at each stage of the block that made it.

Bench only: the stamps are wrappers put around the station's methods for the run and removed
after it, so the product carries no timing code. Per block, the first cue's path is stamped:

    arrival        the device's `t_arrival` (the bytes of the block's last sample came)
    pipeline_in    the runner hands the block to the pipeline
    cues_decided   the cue rules have spoken (the pipeline's cue-critical part is done)
    pipeline_out   the whole of `Pipeline.process` is done (only when that comes before the cue
                   is handed over: the block's later work no longer delays a cue once it is
                   split off)
    mqtt_offer     the MQTT output is offered the item that carries the cue
    publish_in     `MqttPublisher.publish` is called with the cue's message
    encoded        its body is JSON
    appended       it is in the outbox
    written        `publish` returned: the socket has it (when the in-flight window had room)

Each consecutive pair becomes a stage in the summary; a stage's wrappers cost about a
microsecond, the same before and after a change. The garbage collector's pauses are timed too
(`gc.callbacks`): those inside a cue's path, and all of them per generation, before, in and
after the session. The session is `Session.run`, not the span of `Pipeline` blocks: the
station's start-up runs blocks of its own through a throwaway pipeline to load numba's kernels
(`compile_kernels`), and on a cold cache that compile makes a dozen full collections of
100-750 ms, which counted as the session's when its first block was the warm-up's.
"""

from __future__ import annotations

import gc
import itertools
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from bench.stats import summary
from feedback.cues import CueRules
from feedback.outputs import mqtt_publisher
from feedback.outputs.mqtt_publisher import MqttPublisher
from feedback.outputs.mqtt_session import MqttSessionOutput
from feedback.pipeline import Pipeline
from feedback.session import Session

ORDER = (
    "arrival",
    "pipeline_in",
    "cues_decided",
    "pipeline_out",
    "mqtt_offer",
    "publish_in",
    "encoded",
    "appended",
    "written",
)


class CueStages:
    def __init__(self) -> None:
        self._block: dict[str, float] = {}  # this block's stamps, perf_counter seconds
        self._in_cue = False  # inside `publish` of the block's first cue
        self._cue_seen = False
        self.paths: list[dict[str, float]] = []  # one per block with a cue
        self._undo: list[Callable[[], None]] = []
        self._gc_start = 0.0
        self._gc_in_block = 0.0  # seconds of collection since this block's arrival
        # (end, generation, pause): placed before, in or after `Session.run` at the report
        # (before it the kernels load; after it the bench parses its subscriber's output)
        self.gc_pauses: list[tuple[float, int, float]] = []
        self._session_start = self._session_end = 0.0
        self.behind_paho = 0  # first cues that found paho's queue not empty

    def _stamp(self, name: str) -> None:
        self._block.setdefault(name, time.perf_counter())

    def _new_block(self, t_arrival: float) -> None:
        now_perf, now_wall = time.perf_counter(), time.time()
        self._block = {"arrival": now_perf - (now_wall - t_arrival), "pipeline_in": now_perf}
        self._cue_seen = False
        self._gc_in_block = 0.0

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
            return
        pause = time.perf_counter() - self._gc_start
        self.gc_pauses.append((time.perf_counter(), info["generation"], pause * 1e6))
        self._gc_in_block += pause

    def _patch(self, owner: Any, name: str, make: Callable[[Any], Any]) -> None:
        original = getattr(owner, name)
        setattr(owner, name, make(original))
        self._undo.append(lambda: setattr(owner, name, original))

    def install(self) -> None:
        # The pipeline's entry: its cue step when it has one, else `process` as a whole.
        split = hasattr(Pipeline, "cue_step")
        self._patch(Pipeline, "cue_step" if split else "process", self._entered(split))
        self._patch(CueRules, "update", self._decided)
        self._patch(MqttSessionOutput, "offer", self._offered)
        self._patch(MqttPublisher, "publish", self._published)
        self._patch(mqtt_publisher, "encode", self._encoding)
        self._patch(MqttPublisher, "_pump_here", self._pumping)
        self._patch(Session, "run", self._session)
        gc.callbacks.append(self._on_gc)
        self._undo.append(lambda: gc.callbacks.remove(self._on_gc))

    def _entered(self, split: bool) -> Callable[[Any], Any]:
        def make(original: Any) -> Any:
            def wrapper(pipeline: Pipeline, block: Any) -> Any:
                self._new_block(block.t_arrival)
                result = original(pipeline, block)
                if not split and not self._cue_seen:
                    self._stamp("pipeline_out")
                return result

            return wrapper

        return make

    def _session(self, original: Any) -> Any:
        async def wrapper(session: Session, *args: Any, **kw: Any) -> Any:
            self._session_start = time.perf_counter()
            try:
                return await original(session, *args, **kw)
            finally:
                self._session_end = time.perf_counter()

        return wrapper

    def _decided(self, original: Any) -> Any:
        def wrapper(rules: CueRules, *args: Any, **kw: Any) -> Any:
            cues = original(rules, *args, **kw)
            if cues:
                self._stamp("cues_decided")
            return cues

        return wrapper

    def _offered(self, original: Any) -> Any:
        def wrapper(output: MqttSessionOutput, item: Any) -> Any:
            carried = getattr(item, "cues", None)
            if carried is None and hasattr(item, "tick"):
                carried = item.tick.cues
            if carried:
                self._stamp("mqtt_offer")
            return original(output, item)

        return wrapper

    def _published(self, original: Any) -> Any:
        def wrapper(pub: MqttPublisher, topic: str, message: dict[str, Any], **kw: Any) -> Any:
            first = message.get("type") == "cue" and not self._cue_seen
            if first:
                self._cue_seen = self._in_cue = True
                self._stamp("publish_in")
                # paho has bytes of its own waiting (a live message, a PINGREQ): the cue queues
                # behind them until the write watch fires.
                client = pub._client
                self.behind_paho += client is not None and client.want_write()
            try:
                return original(pub, topic, message, **kw)
            finally:
                if first:
                    self._in_cue = False
                    self._stamp("written")
                    self.paths.append({**self._block, "gc": self._gc_in_block})

        return wrapper

    def _encoding(self, original: Any) -> Any:
        def wrapper(message: dict[str, Any]) -> bytes:
            out: bytes = original(message)
            if self._in_cue:
                self._stamp("encoded")
            return out

        return wrapper

    def _pumping(self, original: Any) -> Any:
        def wrapper(pub: MqttPublisher, *args: Any, **kw: Any) -> Any:
            if self._in_cue:
                self._stamp("appended")
            return original(pub, *args, **kw)

        return wrapper

    def span(self, t: float) -> str:
        """Where a moment (perf_counter) falls: before, in or after the session."""
        if not self._session_start or t < self._session_start:
            return "before the session"
        if not self._session_end or t <= self._session_end:
            return "in the session"
        return "after the session"

    def remove(self) -> None:
        while self._undo:
            self._undo.pop()()

    def report(self) -> dict[str, Any]:
        """Per stage (consecutive stamps present on a cue's path), its summary in µs."""
        per: dict[str, list[float]] = defaultdict(list)
        for path in self.paths:
            names = [n for n in ORDER if n in path]
            for a, b in itertools.pairwise(names):
                per[f"{a} -> {b}"].append((path[b] - path[a]) * 1e6)
            per["arrival -> written (total)"].append((path["written"] - path["arrival"]) * 1e6)
            per["of which garbage collection"].append(path["gc"] * 1e6)
        out: dict[str, Any] = {stage: summary(values, "us") for stage, values in per.items()}
        out["cues behind paho's own queued bytes"] = self.behind_paho
        when: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
        for end, generation, pause in self.gc_pauses:
            when[self.span(end)][generation].append(pause)
        for span, pauses in when.items():
            for generation, values in sorted(pauses.items()):
                out[f"gc pauses, generation {generation}, {span}"] = summary(values, "us")
        return out
