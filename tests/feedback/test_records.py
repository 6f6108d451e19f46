"""The per-block records (feedback.processing.records) are frozen where it is checked, in the
type checker, and plain slotted dataclasses at run time (a frozen __init__ costs ~20 µs a block).

The type check runs mypy on a small module (negative control: the same assignment to a field of
a plain dataclass passes, so the test sees the decorator, not mypy rejecting everything)."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from feedback.pipeline import CueStep, Tick
from feedback.processing.activation import ActivationBlock, OnsetBlock
from feedback.processing.chain import ProcessedBlock
from feedback.processing.contraction_counter import CounterInput
from feedback.processing.quality import QualityBlock
from feedback.processing.records import record

RECORDS = (Tick, CueStep, ProcessedBlock, QualityBlock, OnsetBlock, ActivationBlock, CounterInput)

SNIPPET = """
from dataclasses import dataclass
from feedback.processing.records import record

@{decorator}
class Block:
    n: int

b = Block(1)
b.n = 2
"""


@pytest.mark.parametrize("cls", RECORDS, ids=lambda c: c.__name__)
def test_records_are_slotted_dataclasses_compared_by_identity(cls: type) -> None:
    assert dataclasses.is_dataclass(cls)
    assert "__slots__" in vars(cls)
    assert cls.__eq__ is object.__eq__


def test_a_record_keeps_its_fields_and_order() -> None:
    @record
    class Pair:
        a: int
        b: str = "x"

    p = Pair(1)
    assert (p.a, p.b) == (1, "x")
    assert [f.name for f in dataclasses.fields(Pair)] == ["a", "b"]
    assert Pair(1) != Pair(1)  # identity, as eq=False


def _mypy(tmp_path: Path, decorator: str) -> tuple[str, int]:
    """mypy (the project's settings, run from the root) on the snippet: (report, status)."""
    api = pytest.importorskip("mypy.api")
    path = tmp_path / "snippet.py"
    path.write_text(textwrap.dedent(SNIPPET.format(decorator=decorator)))
    out, _, status = api.run(["--no-incremental", "--follow-imports=silent", str(path)])
    return out, status


def test_the_type_checker_rejects_an_assignment_to_a_record_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    out, status = _mypy(tmp_path, "record")
    assert status == 1 and "read-only" in out, out
    # Negative control: a plain dataclass's field may be assigned, and mypy says nothing.
    out, status = _mypy(tmp_path, "dataclass")
    assert status == 0, out
