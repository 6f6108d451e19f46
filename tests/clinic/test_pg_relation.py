"""PostgresBackend.relation: a batch's rows copied into a temporary table that the next statement
reads. Its rows must be exactly the ones given last, whatever the transaction did before: a
second fill in one transaction, a savepoint rolled back (the isolating path of the store), a
transaction rolled back, the next batch after a commit."""

from __future__ import annotations

from typing import Any

import pytest

from feedback.clinic.db import PostgresBackend

COLUMNS = (("k", "text"), ("n", "int"), ("x", "real"))


def read(db: PostgresBackend, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    rel, params = db.relation("r", COLUMNS, rows)
    return db.query(f"WITH {rel} SELECT k, n, x FROM r ORDER BY k", params)


def exercise(db: PostgresBackend) -> None:
    a, b, c = [("a", 1, 1.5)], [("b", 2, 2.5)], [("c", 3.0, 3)]  # c: int as float and back
    with db.transaction():
        assert read(db, a) == a
        assert read(db, b) == b  # the second fill in one transaction
        with pytest.raises(RuntimeError), db.savepoint():
            assert read(db, a) == a
            raise RuntimeError  # the savepoint's rollback brings b's rows back
        assert read(db, c) == [("c", 3, 3.0)]
    with db.transaction():
        assert read(db, a) == a  # after the commit
    with pytest.raises(RuntimeError, match="in the transaction"):
        read(db, a)  # outside one: autocommitted, the table would be empty at once
    with pytest.raises(RuntimeError), db.transaction():
        read(db, b)
        raise RuntimeError
    with db.transaction():
        assert read(db, c) == [("c", 3, 3.0)]


def test_a_relation_holds_exactly_its_rows(postgres_url: str) -> None:
    db = PostgresBackend(postgres_url)
    try:
        exercise(db)
    finally:
        db.close()


def test_negative_control_forgetting_the_fill_at_a_savepoint_rollback(postgres_url: str) -> None:
    """Forgetting at a savepoint's rollback that the table held rows (as if the rollback had
    emptied it) shows stale rows in the next relation, and the test above sees them."""

    class Forgetful(PostgresBackend):
        def _rolled_back(self) -> None:
            super()._rolled_back()
            self._filled.clear()

    db = Forgetful(postgres_url)
    try:
        with pytest.raises(AssertionError):
            exercise(db)
    finally:
        db.close()
