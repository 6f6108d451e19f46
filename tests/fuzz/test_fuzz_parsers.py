"""Hypothesis fuzzing of every parser that takes bytes from outside and that issue 11 touched:
therapist commands, the clinic contract, the remote stream and the remote dashboard's model.

Short (a few hundred inputs per strategy and target) so that it runs in the normal suite; the
coverage-guided long run is `make fuzz` (atheris, tests/fuzz/atheris_parsers.py). Inputs are
raw bytes, JSON-shaped values (nested, odd types, huge numbers) and mutations of valid
messages, because random bytes alone rarely get past the first check."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.targets import SEEDS, TARGETS

FAST = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])  # fmt: skip

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=20) | st.sampled_from(["command", "emergency_stop", "T-01", "S1"]),
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.sampled_from(["type", "action", "issuer", "msg_id", "t", "session",
                                       "v", "role", "low_pct", "high_pct", "settings",
                                       "summary", "rep"]) | st.text(max_size=8), inner,
                      max_size=8),
    max_leaves=40,
)  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.integers(0, 2))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == 0 and data:
            data[at] = draw(st.integers(0, 255))
        elif op == 1:
            data[at:at] = draw(st.binary(max_size=16))
        else:
            del data[at : at + draw(st.integers(1, 16))]
    return bytes(data)


def prefixed(value: Any) -> bytes:
    return b"\x00" + json.dumps(value).encode()  # first byte: the leaf for multi-leaf targets


@pytest.mark.parametrize("target", sorted(TARGETS))
@FAST
@given(data=st.binary(max_size=2048))
def test_raw_bytes(target: str, data: bytes) -> None:
    TARGETS[target](data)


@pytest.mark.parametrize("target", sorted(TARGETS))
@FAST
@given(value=json_values, leaf=st.integers(0, 255))
def test_json_shaped_values(target: str, value: Any, leaf: int) -> None:
    TARGETS[target](bytes((leaf,)) + json.dumps(value).encode())


@pytest.mark.parametrize("target", sorted(TARGETS))
@FAST
@given(data=mutated(), leaf=st.integers(0, 255))
def test_mutated_valid_messages(target: str, data: bytes, leaf: int) -> None:
    TARGETS[target](data if target in ("command", "stream") else bytes((leaf,)) + data)


@pytest.mark.parametrize("target", sorted(TARGETS))
@FAST
@given(depth=st.integers(1, 3000), opener=st.sampled_from([b"[", b'{"a":', b'{"type":']))
def test_deep_nesting(target: str, depth: int, opener: bytes) -> None:
    closer = b"]" if opener == b"[" else b"}"
    TARGETS[target](b"\x04" + opener * depth + b"1" + closer * depth)


@st.composite
def replaced_bytes(draw: st.DrawFn) -> bytes:
    """Same length, a few bytes changed: gets past length checks into the fields."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@pytest.mark.parametrize("target", sorted(TARGETS))
@FAST
@given(data=replaced_bytes(), leaf=st.integers(0, 255))
def test_replaced_bytes_in_valid_messages(target: str, data: bytes, leaf: int) -> None:
    TARGETS[target](data if target in ("command", "stream") else bytes((leaf,)) + data)
