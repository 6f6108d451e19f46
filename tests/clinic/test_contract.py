"""The v1 contract: every message a real session publishes validates; bad ones are named."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from feedback.clinic.validation import InvalidMessage, check
from feedback.control.commands import Stop
from feedback.control.gate import CommandBus, CommandGate, Verdict, make_command
from feedback.outputs.topics import MessageNumberer, Topics, encode

T = Topics("clinic-a", "st-1")


def rep_body() -> dict[str, Any]:
    return MessageNumberer("S1").envelope(
        "rep",
        {"period": 1, "achieved": True, "rep": 1, "peak_pct_mvc": 50.0, "hold_s": 2.0,
         "time_in_band_s": 2.5},
    )  # fmt: skip


def test_a_valid_rep_passes() -> None:
    msg = check(T.rep, encode(rep_body()))
    assert (msg.clinic, msg.station, msg.type) == ("clinic-a", "st-1", "rep")


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        (T.rep, b"{not json", "not JSON"),
        (T.rep, b"[1, 2]", "not a JSON object"),
        (T.rep, b'{"type": "selfie"}', "unknown message type"),
        (T.cue, encode(rep_body()), "belongs on .../rep"),
        ("vmf/v1/clinic a/st/rep", encode(rep_body()), "is not vmf/v1"),
        # `$` would match before a final newline: a station id stored with "\n" on its end
        (T.rep + "\n", encode(rep_body()), "is not vmf/v1"),
        (T.rep, json.dumps({**rep_body(), "peak_pct_mvc": "high"}).encode(), "peak_pct_mvc"),
        (T.rep, json.dumps({**rep_body(), "msg_id": 0}).encode(), "msg_id"),
        (T.rep, json.dumps({**rep_body(), "hold_s": math.nan}).encode(), "NaN"),
        (T.rep, json.dumps({**rep_body(), "pad": "x" * 70_000}).encode(), "exceeds the limit"),
    ],
)
def test_bad_messages_are_named(topic: str, payload: bytes, reason: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        check(topic, payload)
    assert reason in info.value.reason


def test_session_start_refuses_a_name_as_patient() -> None:
    body = MessageNumberer("S1").envelope(
        "session_start",
        {"patient": "Jane Doe", "side": "left", "protocol": "p",
         "device": {"spec": "sim", "kind": "sim", "rate_hz": 2000, "channels": ["VM"]},
         "settings": {"session": {}, "target": {}, "protocol": {}}},
    )  # fmt: skip
    with pytest.raises(InvalidMessage, match="patient"):
        check(T.session, encode(body))
    body["patient"] = "JaneDoe"  # no digit: a plain name, not a pseudonym
    with pytest.raises(InvalidMessage, match="patient"):
        check(T.session, encode(body))


def test_last_will_is_valid_and_only_offline_may_use_msg_id_0() -> None:
    will = {"v": 1, "type": "status", "session": None, "msg_id": 0, "t": 1.7e9, "state": "offline"}
    check(T.status, encode(will))
    with pytest.raises(InvalidMessage):
        check(T.status, encode({**will, "state": "idle"}))


class Station:
    def __init__(self, session: str | None = "S1") -> None:
        self.session = session
        self.verdicts: list[Verdict] = []
        self.bus = CommandBus()
        self.stops: list[Stop] = []
        self.bus.on(Stop, self.stops.append)
        self.gate = CommandGate(
            T,
            ["T-01"],
            self.bus,
            current_session=lambda: self.session,
            on_verdict=self.verdicts.append,
        )


def test_commands_are_validated_authorised_and_not_replayed() -> None:
    st = Station()
    ok = make_command("stop", issuer="T-01", session="S1", msg_id=10, pain_after=2)
    assert st.gate.handle(ok).accepted and st.stops[0].pain_after == 2
    refusals = {
        "replay": st.gate.handle(ok),
        "stranger": st.gate.handle(make_command("stop", issuer="T-99", session="S1", msg_id=11)),
        "stale": st.gate.handle(
            make_command("stop", issuer="T-01", session="S1", msg_id=12, t=1.7e9)
        ),
        "other session": st.gate.handle(
            make_command("stop", issuer="T-01", session="S2", msg_id=13)
        ),
        "malformed": st.gate.handle(b'{"action": "stop"'),
        "unknown field": st.gate.handle(
            make_command("stop", issuer="T-01", session="S1", msg_id=14, amps=90)
        ),
        "bad band": st.gate.handle(
            make_command("change_band", issuer="T-01", session="S1", low_pct=50, high_pct=40)
        ),
        "patient": st.gate.handle(
            json.dumps(
                {**json.loads(make_command("stop", issuer="T-01", session="S1")), "role": "patient"}
            ).encode()
        ),
    }
    assert all(not v.accepted for v in refusals.values()), refusals
    assert "replayed" in refusals["replay"].reason
    assert "therapist list" in refusals["stranger"].reason
    assert len(st.stops) == 1 and st.gate.refused == len(refusals)
    assert len(st.verdicts) == 1 + len(refusals)  # every verdict is reported, for the log


def test_emergency_stop_fails_safe_but_still_needs_authorisation() -> None:
    st = Station(session=None)
    stranger = make_command("emergency_stop", issuer="T-99", session=None)
    assert not st.gate.handle(stranger).accepted and not st.bus.emergency_stop.is_set()
    old = make_command("emergency_stop", issuer="T-01", session="gone", msg_id=1, t=1.7e9)
    assert st.gate.handle(old).accepted and st.bus.emergency_stop.is_set()


# -- hostile payloads: bounded before parsing, refused with a type, never raised ---------------

NESTED = b'{"a":' * 1000 + b"1" + b"}" * 1000  # 6 KB; json.loads raises RecursionError on it


def test_issue_11_nested_payload_is_refused_not_a_recursion_error() -> None:
    with pytest.raises(InvalidMessage, match="nested deeper"):  # before: RecursionError
        check("vmf/v1/c/s/event", NESTED)


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (NESTED, "depth"),
        (b"[" * 100_000, "size"),
        (b"[" * 40 + b"]" * 40, "depth"),
        (b'{"type": "gap", "x": ' + b"[" * 33 + b"]" * 33 + b"}", "depth"),
        (b'{"t": 1e999}', "json"),  # overflows a float: not a number of the contract
        (b'{"n": ' + b"9" * 5000 + b"}", "json"),  # Python refuses ints of > 4300 digits
        (b"\xff\xfe\x00", "json"),
    ],
)
def test_hostile_payloads_are_typed_refusals(payload: bytes, kind: str) -> None:
    from feedback.clinic.validation import refusals

    before = refusals[kind]
    with pytest.raises(InvalidMessage) as info:
        check("vmf/v1/c/s/event", payload)
    assert info.value.kind == kind and refusals[kind] == before + 1


def test_depth_inside_strings_does_not_count() -> None:
    text = "[" * 500 + '\\"{' * 100  # brackets and escaped quotes inside a string value
    body = {**rep_body(), "note": text}
    assert check(T.rep, json.dumps(body).encode()).body["note"] == text


def test_a_bug_while_checking_is_a_refusal_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    from feedback.clinic import validation

    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("surprise")

    monkeypatch.setattr(validation, "fast_validators", broken)
    with pytest.raises(InvalidMessage) as info:
        check(T.rep, encode(rep_body()))
    assert info.value.kind == "internal" and "KeyError" in info.value.reason


def test_issue_11_a_huge_msg_id_does_not_make_later_commands_replays() -> None:
    """Before: an emergency_stop with msg_id 9e15 raised the issuer's last id, and every later
    command of that therapist was refused as "replayed" for the rest of the run."""
    st = Station()
    poison = make_command("emergency_stop", issuer="T-01", session=None, msg_id=9 * 10**15)
    assert st.gate.handle(poison).accepted
    later = make_command("stop", issuer="T-01", session="S1", msg_id=1_700_000_000_000)
    verdict = st.gate.handle(later)
    assert verdict.accepted, verdict.reason
    # the same with an ordinary command carrying the huge id
    st = Station()
    band = make_command("change_band", issuer="T-01", session="S1", msg_id=9 * 10**15,
                        low_pct=20, high_pct=50)  # fmt: skip
    assert st.gate.handle(band).accepted
    assert st.gate.handle(later).accepted


def test_replay_window_refuses_repeats_within_freshness_and_forgets_after() -> None:
    now = [1.8e9]
    st = Station()
    st.gate.clock = lambda: now[0]
    st.gate.replays.max_age_s = st.gate.max_age_s = 30.0
    cmd = make_command("pain", issuer="T-01", session="S1", msg_id=5, t=now[0], pain_after=1)
    assert st.gate.handle(cmd).accepted
    now[0] += 20
    assert "replayed" in st.gate.handle(cmd).reason  # same id, still fresh
    older = make_command("pain", issuer="T-01", session="S1", msg_id=4, t=now[0], pain_after=1)
    assert st.gate.handle(older).accepted  # ids need not increase, only be new
    now[0] += 20
    assert "stale" in st.gate.handle(cmd).reason  # too old now: freshness refuses it
    new = make_command("pain", issuer="T-01", session="S1", msg_id=6, t=now[0], pain_after=1)
    assert st.gate.handle(new).accepted
    assert st.gate.replays._seen["T-01"].keys() == {4, 6}  # the window forgot id 5


def test_emergency_stop_is_never_a_replay() -> None:
    st = Station()
    estop = make_command("emergency_stop", issuer="T-01", session=None, msg_id=7)
    assert all(st.gate.handle(estop).accepted for _ in range(3))
    assert st.gate.handle_estop(estop).accepted


def test_estop_topic_takes_only_emergency_stop() -> None:
    st = Station()
    stop = make_command("stop", issuer="T-01", session="S1")
    verdict = st.gate.handle_estop(stop)
    assert not verdict.accepted and "takes only emergency_stop" in verdict.reason
    assert not st.stops


def test_a_failing_handler_or_log_refuses_one_command_and_the_gate_goes_on() -> None:
    st = Station()

    def broken_log(verdict: Verdict) -> None:
        raise RuntimeError("disk full")

    st.gate.on_verdict = broken_log
    st.gate.current_session = lambda: 1 / 0  # type: ignore[assignment, return-value]
    verdict = st.gate.handle(make_command("stop", issuer="T-01", session="S1"))
    assert not verdict.accepted and "ZeroDivisionError" in verdict.reason
    st.gate.current_session = lambda: "S1"
    assert st.gate.handle(make_command("stop", issuer="T-01", session="S1")).accepted
    assert st.gate.errors == 3  # one failed decision, two failed reports


def test_a_flood_of_refusals_is_counted_and_summarised_not_logged_one_by_one() -> None:
    now = [1.8e9]
    st = Station()
    st.gate.clock = lambda: now[0]
    for _ in range(1000):
        st.gate.handle(b"{garbage")
    assert st.gate.refused == 1000 and len(st.verdicts) == 10
    now[0] += 1
    st.gate.handle(b"{garbage")
    assert "990 more commands refused" in st.verdicts[10].reason
    assert len(st.verdicts) == 12
