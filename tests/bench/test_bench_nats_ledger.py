"""bench_nats counts distinct (session, msg_id): lost and duplicated say what they mean, and
copies a station's resend left in the stream are neither.

Negative controls: a ledger missing one published message reports lost=1; one holding a message
twice (a store without the ledger's unique key) reports duplicated=1; a quarantined replay
counts as duplicated too."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bench.bench_nats import Key, ledger_counts, ledger_outcome

PUBLISHED: frozenset[Key] = frozenset({("S-a", 1), ("S-a", 2), ("S-b", 1)})


def test_everything_once() -> None:
    r = ledger_outcome(PUBLISHED, sorted(PUBLISHED), quarantined=0)
    assert r == {"stored": 3, "lost": 0, "duplicated": 0, "unexpected": 0}


def test_a_dropped_message_is_lost() -> None:
    r = ledger_outcome(PUBLISHED, [("S-a", 1), ("S-b", 1)], quarantined=0)
    assert (r["lost"], r["duplicated"], r["stored"]) == (1, 0, 2)


def test_a_message_stored_twice_is_duplicated() -> None:
    r = ledger_outcome(PUBLISHED, [*sorted(PUBLISHED), ("S-a", 2)], quarantined=0)
    assert (r["lost"], r["duplicated"], r["stored"]) == (0, 1, 3)


def test_a_quarantined_replay_is_duplicated() -> None:
    assert ledger_outcome(PUBLISHED, sorted(PUBLISHED), quarantined=1)["duplicated"] == 1


def test_a_loss_is_not_hidden_by_a_duplicate_of_another() -> None:
    # A count of rows against the count published would read 3 == 3: nothing lost.
    r = ledger_outcome(PUBLISHED, [("S-a", 1), ("S-a", 1), ("S-b", 1)], quarantined=0)
    assert (r["lost"], r["duplicated"]) == (1, 1)


def test_a_stored_key_nobody_published_is_unexpected() -> None:
    r = ledger_outcome(PUBLISHED, [*sorted(PUBLISHED), ("S-c", 9)], quarantined=0)
    assert (r["unexpected"], r["lost"], r["stored"]) == (1, 0, 4)


def _ledger(path: Path, rows: list[Key], quarantined: int = 0, step_s: float = 1.0) -> str:
    """A ledger without the unique key, so that a store that writes twice shows; its rows
    committed step_s apart (0: all in one batch)."""
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE messages (session_id TEXT, msg_id INTEGER, received_at REAL)")
    db.execute("CREATE TABLE quarantine (id INTEGER)")
    db.executemany(
        "INSERT INTO messages VALUES (?, ?, ?)",
        [(s, m, 100.0 + i * step_s) for i, (s, m) in enumerate(rows)],
    )
    db.executemany("INSERT INTO quarantine VALUES (?)", [(i,) for i in range(quarantined)])
    db.commit()
    db.close()
    return str(path)


def test_ledger_counts_reads_the_database(tmp_path: Path) -> None:
    ok = ledger_counts(_ledger(tmp_path / "ok.db", sorted(PUBLISHED)), PUBLISHED)
    assert (ok["stored"], ok["lost"], ok["duplicated"]) == (3, 0, 0)
    dropped = ledger_counts(_ledger(tmp_path / "dropped.db", sorted(PUBLISHED)[1:]), PUBLISHED)
    assert (dropped["lost"], dropped["duplicated"]) == (1, 0)
    twice = [*sorted(PUBLISHED), ("S-b", 1)]
    doubled = ledger_counts(_ledger(tmp_path / "twice.db", twice, quarantined=1), PUBLISHED)
    assert (doubled["lost"], doubled["duplicated"]) == (0, 2)


def test_a_drain_in_one_batch_has_no_rate(tmp_path: Path) -> None:
    # It had 1,000,000 msg/s (the rows over a span floored at 1 ms); the control, rows a
    # second apart, has its rate.
    one = ledger_counts(_ledger(tmp_path / "one.db", sorted(PUBLISHED), step_s=0.0), PUBLISHED)
    assert one["rate"] is None and one["stored"] == 3
    spread = ledger_counts(_ledger(tmp_path / "spread.db", sorted(PUBLISHED)), PUBLISHED)
    assert spread["rate"] == round(3 / 2.0)
