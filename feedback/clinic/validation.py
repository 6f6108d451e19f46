"""Checks a received MQTT message against the v1 contract: topic, size, JSON and JSON Schema.

The schemas live in `schemas/` (one file per message type, documented in docs/mqtt.md). Two
validators read the same files (Draft 2020-12): `jsonschema-rs` (Rust) decides, in about 1 µs a
message, and the `jsonschema` package only words a refusal (its `best_match` names the fault, at
some 200 µs a message, which the logger cannot pay for every message). tests/clinic/
test_validator_agreement.py holds them to the same verdict on a corpus of valid and mutated
messages. Payloads are parsed with orjson; what orjson refuses is parsed again by the standard
library, which words the reason or takes what orjson does not (UTF-16, lone surrogates).
`check` either returns the decoded message or raises `InvalidMessage` whose reason says exactly
what was wrong, for the quarantine.

Bytes from the network are bounded before they are parsed: size first, then nesting depth (a
cheap scan; Python's JSON parser recurses, and 1,000 nested objects raise RecursionError, which
is not a ValueError). Whatever else goes wrong while checking becomes an `InvalidMessage` too:
a message can be refused, never crash the task that received it. Every refusal is counted in
`refusals` by kind.
"""

from __future__ import annotations

import collections
import functools
import itertools
import json
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import jsonschema_rs
import orjson

from feedback.outputs.topics import TOPIC_ROOT

log = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 64 * 1024
# The deepest message of the contract nests 4 levels (session_start.settings.<section>.<key>);
# 32 leaves room for fields added within v1 and stays far below the parser's recursion limit.
MAX_DEPTH = 32
ESTOP_LEAF = "cmd/estop"  # the emergency stop's own topic: nothing else queues on it

# Message type → the topic leaf it must arrive on.
TOPIC_OF_TYPE: dict[str, str] = {
    "status": "status",
    "session_start": "session",
    "session_end": "session",
    "cue": "cue",
    "rep": "rep",
    "live": "live",
    "gap": "event",
    "calibration": "event",
    "stim_burst": "event",
    "stim_refused": "event",
    "stim_abort": "event",
    "stim_end": "event",
    "stim_estop": "event",
    "stim_rearm": "event",
    "stim_estop_ack": "event",
    "stim_estop_no_ack": "event",
    "stim_send_failed": "event",
    "stim_estop_not_sent": "event",
    "control_failed": "event",
    "stim_driver_error": "event",
    "band_raised": "event",
    "band_set": "event",
    "band_refused": "event",
    "calibrate_requested": "event",
    "protocol_picked": "event",
    "protocol_changed": "event",
    "calibration_rejected": "event",
    "contraction": "event",
    "stim_ack": "event",
    "estop_ack": "event",
    "device_error": "event",
    "quality": "event",
    "command_result": "event",
    "task_restarted": "event",
    "child_died": "event",
    "child_restarted": "event",
    "command": "cmd",
    "command_ack": "ack",
}
# A type may also arrive on these leaves (an emergency_stop command on its own topic).
EXTRA_LEAVES: dict[str, tuple[str, ...]] = {"command": (ESTOP_LEAF,)}
ALL_LEAVES = frozenset(TOPIC_OF_TYPE.values()) | {x for v in EXTRA_LEAVES.values() for x in v}
# What the clinic logger stores: `ack` repeats a command_result event (which is logged) at once,
# with a msg_id of its own counter, like `live`; it is for the therapist who sent the stop.
LOGGED_LEAVES = ALL_LEAVES - {"ack"}
EVENT_TYPES = frozenset(t for t, leaf in TOPIC_OF_TYPE.items() if leaf == "event")
_TOPIC = re.compile(
    rf"^{re.escape(TOPIC_ROOT)}/([A-Za-z0-9_-]{{1,32}})/([A-Za-z0-9_-]{{1,32}})/"
    r"([a-z]+(?:/[a-z]+)?)\Z"  # \Z, not $: $ also matches before a final newline
)
# A JSON string (escapes included, unrolled so that an unterminated one cannot backtrack), or
# a bracket: what the depth scan steps through.
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)
# orjson reads an integer past 64 bits as a float (a changed value); the standard parser keeps
# it. A run of 20 digits anywhere (in a string too: rare, and only slower) sends a payload there;
# found by translating digits to "0" and a substring search, 5 times faster than a regex.
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_TWENTY_DIGITS = b"0" * 20
MAX_SCHEMA_ERRORS = 20  # the best of the first 20 errors names the fault; all would be slow

refusals: collections.Counter[str] = collections.Counter()  # kind of refusal → how many
TOPICS_KEPT = 50_000  # topics whose (clinic, station, leaf) is kept: _topic_parts
_BYTES = (bytes, bytearray)  # not `bytes | bytearray`: that makes a union at each call


class InvalidMessage(Exception):
    """A message that breaks the contract; `reason` goes into the quarantine table, `kind`
    (size, topic, depth, json, type, schema, internal) into the `refusals` counter."""

    def __init__(self, reason: str, kind: str = "schema") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


# Not frozen: a frozen dataclass sets each field through object.__setattr__ (1.9 against
# 0.23 us to make one here), and the logger makes one for every message it receives.
@dataclass(slots=True)
class Message:
    clinic: str
    station: str
    leaf: str  # status, session, cue, rep, event, live, cmd
    body: dict[str, Any]
    type: str  # body["type"], read once


def _schemas() -> dict[str, dict[str, Any]]:
    files = resources.files("feedback.clinic") / "schemas"
    return {
        f.name.removesuffix(".json"): json.loads(f.read_text())
        for f in files.iterdir()
        if f.name.endswith(".json")
    }


def _ecma_pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Any:
    """`pattern` as JSON Schema means it (ECMA 262): `$` is the end of the string. Python's `$`
    also matches before a final newline, so "S-1\\n" passed as a session id here while
    jsonschema-rs refused it."""
    if validator.is_type(instance, "string") and not re.search(_ecma(pattern), instance):
        import jsonschema

        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


@functools.cache
def _ecma(pattern: str) -> str:
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        return pattern[:-1] + r"\Z"
    return pattern


@functools.cache
def validators() -> dict[str, Any]:
    """The reference validators (`jsonschema`): they word a refusal. Imported here, on the
    first refusal: a station that refuses nothing does not pay ~80 ms to import them."""
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    reference = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
        jsonschema.Draft202012Validator, {"pattern": _ecma_pattern}
    )
    loaded = _schemas()
    for doc in loaded.values():
        jsonschema.Draft202012Validator.check_schema(doc)
        # Following a $ref, jsonschema picks the class its `$schema` names (the plain one):
        # without it, it keeps ours.
        del doc["$schema"]
    registry: Registry[Any] = Registry().with_resources(
        (doc["$id"], Resource.from_contents(doc, default_specification=DRAFT202012))
        for doc in loaded.values()
    )
    return {name: reference(doc, registry=registry) for name, doc in loaded.items()}


@functools.cache
def fast_validators() -> dict[str, jsonschema_rs.Draft202012Validator]:
    """The deciding validators (`jsonschema-rs`), from the same files. Formats are not
    asserted, as `jsonschema` does not by default: the two must agree."""
    loaded = _schemas()
    registry = jsonschema_rs.Registry([(doc["$id"], doc) for doc in loaded.values()])
    return {
        name: jsonschema_rs.Draft202012Validator(doc, registry=registry, validate_formats=False)
        for name, doc in loaded.items()
    }


def nesting_depth(payload: bytes, limit: int = MAX_DEPTH) -> int:
    """How deep `[` and `{` nest outside strings (exact up to `limit`, then at least limit+1).
    Linear in the payload, no recursion; too few brackets to reach the limit skip the scan."""
    if payload.count(b"[") + payload.count(b"{") <= limit:
        return 0 if b"[" not in payload and b"{" not in payload else 1
    depth = deepest = 0
    for m in _TOKEN.finditer(payload):
        token = m.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break  # a hostile payload costs only its first levels
        elif token in (b"]", b"}"):
            depth -= 1
    return deepest


def parse_json(
    payload: bytes, max_bytes: int = MAX_PAYLOAD_BYTES, max_depth: int = MAX_DEPTH
) -> Any:
    """JSON from outside bytes, bounded before parsing: size, then nesting depth; no NaN,
    Infinity or numbers that overflow a float. Raises InvalidMessage, never anything else."""
    if len(payload) > max_bytes:
        raise InvalidMessage(
            f"payload of {len(payload)} bytes exceeds the limit of {max_bytes}", "size"
        )
    # nesting_depth's own first test, here: the call costs as much (every message)
    if (payload.count(b"[") + payload.count(b"{") > max_depth
            and nesting_depth(payload, max_depth) > max_depth):  # fmt: skip
        raise InvalidMessage(f"JSON nested deeper than {max_depth} levels", "depth")
    if _TWENTY_DIGITS not in payload.translate(_DIGITS_TO_ZERO):
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError:
            pass  # the standard parser below words the reason, or takes what orjson refuses
    try:
        return json.loads(payload, parse_constant=_refuse_constant, parse_float=_finite)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, ...
        raise InvalidMessage(f"not JSON: {exc}"[:300], "json") from None


def check(topic: str, payload: bytes, max_bytes: int = MAX_PAYLOAD_BYTES) -> Message:
    """The message, or InvalidMessage (counted in `refusals`); never any other exception.
    Both halves in one `try`: the logger checks every message, and decode(conform()) with a
    closure and a `try` each cost ~1 us of ~10 (15 interleaved runs of 15k live, cue and rep
    messages: median 15.3 -> 13.8 us, min 9.0 -> 8.0, on a loaded machine)."""
    try:
        return _conform(_decode(topic, payload, max_bytes))
    except InvalidMessage as exc:
        refusals[exc.kind] += 1
        raise
    except Exception as exc:  # a bug or a library surprise: still a refusal, and loud
        raise _internal(topic, exc) from None


def decode(topic: str, payload: bytes, max_bytes: int = MAX_PAYLOAD_BYTES) -> Message:
    """The cheap half of `check`: size, topic, depth, JSON, type and its topic; no schema yet
    (a receiver may refuse on a field first, e.g. a stranger's command, before paying for it)."""
    return _counted(topic, lambda: _decode(topic, payload, max_bytes))


def conform(msg: Message) -> Message:
    """The other half of `check`: the message's JSON Schema."""
    return _counted(msg.leaf, lambda: _conform(msg))


def _counted(topic: str, step: Callable[[], Message]) -> Message:
    try:
        return step()
    except InvalidMessage as exc:
        refusals[exc.kind] += 1
        raise
    except Exception as exc:  # a bug or a library surprise: still a refusal, and loud
        raise _internal(topic, exc) from None


def _internal(topic: str, exc: Exception) -> InvalidMessage:
    refusals["internal"] += 1
    log.exception("checking a message on %r failed", topic[:200])
    return InvalidMessage(f"could not be checked: {type(exc).__name__}: {exc}"[:300], "internal")


def _decode(topic: str, payload: bytes, max_bytes: int) -> Message:
    if not isinstance(payload, _BYTES):
        raise InvalidMessage(f"payload is {type(payload).__name__}, not bytes", "json")
    if len(payload) > max_bytes:
        raise InvalidMessage(
            f"payload of {len(payload)} bytes exceeds the limit of {max_bytes}", "size"
        )
    clinic, station, leaf = _topic_parts(topic)
    body = parse_json(bytes(payload), max_bytes)
    if not isinstance(body, dict):
        raise InvalidMessage(f"not a JSON object but {type(body).__name__}", "type")
    kind = body.get("type")
    if not isinstance(kind, str) or kind not in TOPIC_OF_TYPE:
        raise InvalidMessage(f"unknown message type {str(kind)[:64]!r}", "type")
    if leaf != TOPIC_OF_TYPE[kind] and leaf not in EXTRA_LEAVES.get(kind, ()):
        raise InvalidMessage(f"a {kind!r} message belongs on .../{TOPIC_OF_TYPE[kind]}, not {leaf}",
                             "topic")  # fmt: skip
    return Message(clinic, station, leaf, body, kind)


# Kept as matched before: a clinic's few thousand topics come again and again, and the match is
# a tenth of the check's cost. Bounded: strangers' topics could be endless. A refused topic is
# not kept (lru_cache keeps no exception): it is matched, and counted, each time.
@functools.lru_cache(maxsize=TOPICS_KEPT)
def _topic_parts(topic: str) -> tuple[str, ...]:
    m = _TOPIC.match(topic)
    if m is None:
        raise InvalidMessage(f"topic {topic[:200]!r} is not vmf/v1/<clinic>/<station>/<kind>",
                             "topic")  # fmt: skip
    return m.groups()


def _conform(msg: Message) -> Message:
    body, kind, leaf = msg.body, msg.type, msg.leaf
    if not fast_validators()[kind].is_valid(body):
        raise InvalidMessage(_schema_reason(kind, body)[:500])
    if leaf == ESTOP_LEAF and body.get("action") != "emergency_stop":
        raise InvalidMessage(f".../{ESTOP_LEAF} takes only emergency_stop, not "
                             f"{body.get('action')!r}", "topic")  # fmt: skip
    return msg


def _schema_reason(kind: str, body: dict[str, Any]) -> str:
    import jsonschema

    errors = itertools.islice(validators()[kind].iter_errors(body), MAX_SCHEMA_ERRORS)
    error = jsonschema.exceptions.best_match(errors)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(message)"
        return f"schema {kind}: {where}: {error.message}"
    # The validators disagree (the agreement test should have caught it): the fast one decides.
    refusals["disagreement"] += 1
    log.error("jsonschema-rs refused a %s message that jsonschema accepts", kind)
    fast = next(iter(fast_validators()[kind].iter_errors(body)), None)
    return f"schema {kind} (jsonschema-rs): {fast.message if fast else 'invalid'}"


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number in this contract")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} does not fit a 64-bit float")
    return value
