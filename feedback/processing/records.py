"""`record`: the dataclass of a value made once per block and never changed after (a Tick and
the blocks it carries).

Frozen for the type checker (mypy rejects an assignment to a field), a plain slotted dataclass
at run time: a frozen dataclass's `__init__` sets each field through `object.__setattr__`,
about ten times the cost of a plain store, and at 2 kHz in 20-sample blocks the records of one
block (27 fields in a Tick alone) cost more than the chain's arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar, dataclass_transform

T = TypeVar("T")


@dataclass_transform(frozen_default=True, eq_default=False)
def record(cls: type[T]) -> type[T]:
    """`@dataclass(frozen=True, slots=True, eq=False)` as the type checker sees it."""
    return dataclass(slots=True, eq=False)(cls)
