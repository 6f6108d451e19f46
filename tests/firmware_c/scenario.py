"""Runs the stimulation scenarios of firmware/vectors/frames.json against any firmware.

A firmware is anything with the `Firmware` methods below: the emulated firmware (Python) and
the C core (ctypes) both get one, and both must give the replies and states the file states.
The host side is a real `firmware_bridge.Connection`, so every byte goes through the codec.
"""

from __future__ import annotations

from typing import Any, Protocol

from firmware_bridge import Connection, ProtocolErrorEvent, Role, SampleFrame, Status, StimState
from firmware_bridge.examples import message_from_json


class Firmware(Protocol):
    def receive(self, data: bytes, now_ms: int) -> bytes: ...
    def poll(self, now_ms: int) -> bytes: ...
    def set_contact(self, channel: int, ok: bool) -> None: ...
    def state(self) -> StimState: ...
    def output(self) -> dict[str, float]: ...


def _matches(got: object, want: dict[str, Any]) -> bool:
    if type(got).__name__ != want["type"]:
        return False
    expected = message_from_json(want) if "fields" in want else None
    if expected is None:
        return True
    return all(getattr(got, k) == getattr(expected, k) for k in want["fields"])


def run(fw: Firmware, scenario: dict[str, Any]) -> None:
    host = Connection(Role.HOST)
    for i, step in enumerate(scenario["steps"]):
        where = f"{scenario['name']!r} step {i} at {step['at_ms']} ms"
        t = step["at_ms"]
        if "send" in step:
            out = fw.receive(host.send(message_from_json(step["send"])), t)
        elif "bytes" in step:
            out = fw.receive(bytes.fromhex(step["bytes"]), t)
        else:
            if "contact" in step:
                fw.set_contact(*step["contact"])
            out = fw.poll(t)
        host.receive_data(out)
        events = list(host.events())
        assert not [e for e in events if isinstance(e, ProtocolErrorEvent)], where
        replies = [e for e in events if not isinstance(e, Status | SampleFrame)]
        want = step["expect"]
        assert len(replies) == len(want) and all(
            _matches(g, w) for g, w in zip(replies, want, strict=True)
        ), f"{where}: sent {replies}, expected {want}"
        if "status" in step:
            states = [e.stim_state.name for e in events if isinstance(e, Status)]
            assert step["status"] in states, f"{where}: Status frames {states}"
        if "state" in step:
            assert fw.state().name == step["state"], f"{where}: state {fw.state().name}"
        for key, value in step.get("output", {}).items():
            got = fw.output().get(key)
            if got is not None:
                assert abs(got - value) <= 0.1, f"{where}: {key} {got}, expected {value}"
