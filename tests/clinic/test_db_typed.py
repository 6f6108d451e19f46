"""The rows a relation copies: each int and real column made its Python type (COPY reads 3.0 as
no bigint), now column by column; the answer is the one the row-by-row conversion gave."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from feedback.clinic import db

COLUMNS = (("sid", "text"), ("msg_id", "int"), ("t", "real"), ("note", "text"))
Typed = Callable[[Sequence[Sequence[Any]], Sequence[tuple[str, str]]], Sequence[Sequence[Any]]]


def row_by_row(rows: Sequence[Sequence[Any]], columns: Sequence[tuple[str, str]]) -> list[Any]:
    """The reference: what `relation` did before, a row at a time."""
    to = {"int": int, "real": float}
    out = []
    for r in rows:
        row = list(r)
        for i, (_, t) in enumerate(columns):
            if t in to and row[i] is not None:
                row[i] = to[t](row[i])
        out.append(tuple(row))
    return out


def first_value_decides(
    rows: Sequence[Sequence[Any]], columns: Sequence[tuple[str, str]]
) -> Sequence[Sequence[Any]]:
    """A wrong shortcut: a column whose first value has the type is taken as all of it."""
    to = {"int": int, "real": float}
    for i, (_, t) in enumerate(columns):
        if t in to and rows and type(rows[0][i]) is not to[t]:
            return db._typed(rows, columns)
    return rows


CASES = [
    [("a", 1, 1.5, "x"), ("b", 2, 2.5, None)],  # already typed: left as they are
    [("a", 1, 1.5, "x"), ("b", 3.0, 7, "y"), ("c", None, None, None)],  # 3.0 and 7 later on
    [("a", True, 1, "x"), ("b", 2, 2, "y")],  # a bool in an int column, ints in a real one
    [],
]


@pytest.mark.parametrize("typed", ["correct", "first_value_decides"])
def test_columns_typed_as_row_by_row(typed: str) -> None:
    way: Typed = db._typed if typed == "correct" else first_value_decides
    same = True
    for rows in CASES:
        got, want = [tuple(r) for r in way(rows, COLUMNS)], row_by_row(rows, COLUMNS)
        types = [[type(v) for v in r] for r in got] == [[type(v) for v in r] for r in want]
        same = same and got == want and types
    assert same is (typed == "correct")


def test_text_only_columns_are_not_copied() -> None:
    rows = [("a",), ("b",)]
    assert db._typed(rows, (("sid", "text"),)) is rows
