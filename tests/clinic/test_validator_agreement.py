"""The fast validator (jsonschema-rs, which decides) and the reference (jsonschema, which words a
refusal) give the same verdict on a corpus: every message of a real simulated session
(tests/fixtures/clinic/session_messages.jsonl, captured from `run_feedback.py --device sim`
through a broker) and systematic mutations of each (a field dropped, retyped, out of range, a
trailing newline, an unknown field), plus hypothesis-drawn replacements. Negative control: the
plain jsonschema validator, whose `pattern` lets "S-1\\n" through, disagrees on that corpus."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hypothesis
import hypothesis.strategies as st
import jsonschema
import pytest

from feedback.clinic.validation import (
    InvalidMessage,
    _schemas,
    check,
    fast_validators,
    validators,
)

CORPUS = Path(__file__).parents[1] / "fixtures" / "clinic" / "session_messages.jsonl"
ODD_VALUES: list[Any] = [
    None, True, 0, -1, 1.5, 2**53, 2**63, 1e308, -1e-300, "", "x", "S-1\n", "\n", "a" * 65,
    "é", [], [1], {}, {"a": 1},
]  # fmt: skip


def corpus() -> list[tuple[str, dict[str, Any]]]:
    rows = [json.loads(line) for line in CORPUS.read_text().splitlines()]
    return [(r["topic"], json.loads(r["payload"])) for r in rows]


def mutations(body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Each top-level field (and each field one level down) dropped, or replaced by each odd
    value; an unknown field added."""
    yield body
    for key, value in body.items():
        if key == "type":
            continue  # the type picks the schema: both see the same one
        dropped = dict(body)
        del dropped[key]
        yield dropped
        for odd in ODD_VALUES:
            yield {**body, key: odd}
        if isinstance(value, dict):
            for inner in value:
                for odd in (None, "S-1\n", -1, "x"):
                    changed = copy.deepcopy(body)
                    changed[key][inner] = odd
                    yield changed
    yield {**body, "unknown_field": 1}


Verdict = Callable[[str, dict[str, Any]], bool]


def fast(kind: str, body: dict[str, Any]) -> bool:
    return fast_validators()[kind].is_valid(body)


def reference(kind: str, body: dict[str, Any]) -> bool:
    return next(iter(validators()[kind].iter_errors(body)), None) is None


def plain_jsonschema() -> Verdict:
    from referencing import Registry, Resource

    loaded = _schemas()
    registry: Registry[Any] = Registry().with_resources(
        (d["$id"], Resource.from_contents(d)) for d in loaded.values()
    )
    plain = {k: jsonschema.Draft202012Validator(d, registry=registry) for k, d in loaded.items()}
    return lambda kind, body: next(iter(plain[kind].iter_errors(body)), None) is None


def disagreements(a: Verdict, b: Verdict) -> tuple[int, int, int, list[str]]:
    cases = valid = 0
    differ: list[str] = []
    for _topic, message in corpus():
        kind = message["type"]
        for body in mutations(message):
            cases += 1
            va, vb = a(kind, body), b(kind, body)
            valid += va
            if va != vb:
                differ.append(f"{kind}: {json.dumps(body)[:200]} fast={va} reference={vb}")
    return cases, valid, cases - valid, differ


def test_the_real_session_is_valid_for_both() -> None:
    messages = corpus()
    assert len(messages) >= 100 and {m["type"] for _, m in messages} >= {
        "status", "session_start", "live", "cue", "rep", "session_end",
    }  # fmt: skip
    for topic, body in messages:
        check(topic, json.dumps(body).encode())


def test_fast_and_reference_validators_agree_on_the_mutated_corpus() -> None:
    cases, valid, invalid, differ = disagreements(fast, reference)
    print(f"agreement corpus: {cases} cases, {valid} valid, {invalid} invalid")
    assert cases > 10_000 and valid > 1_000 and invalid > 5_000
    assert differ == []


def test_negative_control_plain_jsonschema_disagrees() -> None:
    """What the test above would catch: Python's `$` before a final newline."""
    *_, differ = disagreements(fast, plain_jsonschema())
    assert differ and all("\\n" in d for d in differ)


MESSAGES = corpus()
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)  # JSON carries neither
    | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=4), kids),
    max_leaves=6,
)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(
    st.sampled_from(range(len(MESSAGES))),
    st.dictionaries(st.sampled_from(["v", "session", "msg_id", "t", "phase", "reps", "index",
                                     "pct_mvc", "kind", "value", "period", "achieved", "patient",
                                     "state", "summary", "settings", "x"]),
                    json_values, max_size=3),
)  # fmt: skip
def test_agree_on_hypothesis_replacements(i: int, replace: dict[str, Any]) -> None:
    topic, message = MESSAGES[i]
    body = {**message, **replace}
    kind = body["type"]
    assert fast(kind, body) == reference(kind, body), body
    # and check() takes the fast verdict, wording refusals with the reference
    try:
        check(topic, json.dumps(body).encode())
        accepted = True
    except InvalidMessage as exc:
        accepted = False
        assert exc.reason
    if fast(kind, body):
        assert accepted


@pytest.mark.parametrize(
    "payload",
    [b'{"a": 123456789012345678901234567890}', b'"\\ud800"', '{"x": 1}'.encode("utf-16")],
)
def test_what_orjson_refuses_or_changes_the_standard_parser_takes(payload: bytes) -> None:
    from feedback.clinic.validation import parse_json

    assert parse_json(payload) == json.loads(payload)
