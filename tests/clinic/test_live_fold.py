"""The live fold's fast loop (live_seconds.Second.add, _merge) folds as the plain one did:
the same rows and the same refusals for random batches with copies, out of order, across
batches and against rows already stored."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

from feedback.clinic import live_seconds
from feedback.clinic.live_seconds import Second, Stat

Merge = Callable[[str, Sequence[Mapping[str, Any]], list[Second], dict[tuple[str, int], Second]],
                 list[str | None]]  # fmt: skip


def plain_add(row: Second, body: Mapping[str, Any]) -> None:
    """Second.add as it was written first: min()/max() and Stat.add."""
    msg_id, t = int(body["msg_id"]), float(body["t"])
    if row.count == 0:
        row.msg_id_min = row.msg_id_max = msg_id
    elif max(row.msg_id_max, msg_id) - min(row.msg_id_min, msg_id) >= live_seconds.MAX_SPAN:
        raise live_seconds.LiveSpanError("span")
    if msg_id < row.msg_id_min:
        row.mask <<= row.msg_id_min - msg_id
        row.msg_id_min = msg_id
    row.mask |= 1 << (msg_id - row.msg_id_min)
    if msg_id >= row.msg_id_max:
        row.msg_id_max = msg_id
        row.phase, row.reps = body.get("phase"), body.get("reps")
    row.count += 1
    row.t_first, row.t_last = min(row.t_first, t), max(row.t_last, t)
    if (index := body.get("index")) is not None:
        row.index_min = index if row.index_min is None else min(row.index_min, index)
        row.index_max = index if row.index_max is None else max(row.index_max, index)
    if (ratio := body.get("vm_vl_ratio")) is not None:
        row.ratio.add(float(ratio))
    for channel, value in body["pct_mvc"].items():
        row.pct.setdefault(channel, Stat()).add(float(value))
    row.dirty = True


def plain_merge(
    session: str,
    bodies: Sequence[Mapping[str, Any]],
    known: list[Second],
    rows: dict[tuple[str, int], Second],
    *,
    copies_in_batch: bool = True,
) -> list[str | None]:
    """_merge as it was written first: every known row asked about every msg_id."""
    ids = [int(b["msg_id"]) for b in bodies]
    outcome: list[str | None] = [None] * len(bodies)
    for i in sorted(range(len(bodies)), key=ids.__getitem__):
        if any(r.has(ids[i]) for r in known):
            outcome[i] = f"duplicate live ({session}, {ids[i]})"
            continue
        s = live_seconds.second_of(float(bodies[i]["t"]))
        row = rows.get((session, s)) or Second(session, s)
        try:
            plain_add(row, bodies[i])
        except live_seconds.LiveSpanError as exc:
            outcome[i] = str(exc).replace("span", "") or "span"
            continue
        if (session, s) not in rows:
            rows[(session, s)] = row
            if copies_in_batch:
                known.append(row)
    return outcome


def forgetting_copies_in_batch(*args: Any) -> list[str | None]:
    """The mistake the comparison must catch: a copy within the batch not recognised."""
    return plain_merge(*args, copies_in_batch=False)


def body(msg_id: int, t: float, rng: random.Random) -> dict[str, Any]:
    pct = {ch: rng.uniform(0, 100) for ch in rng.sample(["VM", "VL", "RF"], 2)}
    return {"msg_id": msg_id, "t": t, "index": msg_id * 100 + rng.randrange(3),
            "vm_vl_ratio": rng.choice([None, rng.uniform(0.5, 2)]),
            "phase": rng.choice(["work", "rest"]), "reps": msg_id // 30,
            "pct_mvc": pct}  # fmt: skip


def fold_all(merge: Merge, seed: int) -> tuple[list[tuple[Any, ...]], list[str | None]]:
    rng = random.Random(seed)
    t0 = 1_800_000_000.0
    sent = [body(i, t0 + i * 0.1 + rng.uniform(-0.05, 0.05), rng) for i in range(1, 120)]
    sent += [dict(rng.choice(sent)) for _ in range(25)]  # copies, some later
    rng.shuffle(sent)
    sent.append(body(200 + live_seconds.MAX_SPAN, t0 + 1.0, rng))  # too far for its second
    rows: dict[tuple[str, int], Second] = {}
    outcomes: list[str | None] = []
    cut = 0
    while cut < len(sent):
        batch = sent[cut : cut + rng.randrange(1, 30)]
        cut += len(batch)
        # what fold() reads from the database: the session's rows, as stored
        stored = {k: Second.from_row(r.row()) for k, r in rows.items()}
        known = list(stored.values())
        outcomes += [o if o is None or o.startswith("duplicate") else "span"
                     for o in merge("S", batch, known, stored)]  # fmt: skip
        rows = stored
    return sorted(r.row() for r in rows.values()), outcomes


def same_rows(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> bool:
    return len(a) == len(b) and all(
        len(x) == len(y) and all(
            math.isclose(u, v, rel_tol=1e-12) if isinstance(u, float) and isinstance(v, float)
            else u == v for u, v in zip(x, y, strict=True))
        for x, y in zip(a, b, strict=True)
    )  # fmt: skip


@pytest.mark.parametrize("seed", range(20))
def test_fast_fold_equals_the_plain_one(seed: int) -> None:
    fast_rows, fast_out = fold_all(live_seconds._merge, seed)
    plain_rows, plain_out = fold_all(plain_merge, seed)
    assert fast_out == plain_out
    assert same_rows(fast_rows, plain_rows)
    assert sum(o is None for o in fast_out) == 119  # every msg_id once, the far one refused
    assert fast_out.count("span") == 1


def test_negative_control_missing_a_copy_in_the_batch_is_seen() -> None:
    differs = [fold_all(forgetting_copies_in_batch, seed) != fold_all(plain_merge, seed)
               for seed in range(20)]  # fmt: skip
    assert any(differs)


def batch_first(session: str, bodies: Sequence[Mapping[str, Any]], known: list[Second],
                rows: dict[tuple[str, int], Second]) -> list[str | None]:  # fmt: skip
    """What fold() does: the batch folded among itself before the lock, then into the rows."""
    return live_seconds.Batch(session, bodies).fold_into(known, rows)


class BlindBatch(live_seconds.Batch):
    """The mistake the comparison must catch: stored rows never checked for copies."""

    def _clashes(self, known: list[Second], rows: dict[tuple[str, int], Second]) -> bool:
        return False


def close_rows(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> bool:
    """same_rows, the means (merged from partial means) to rounding, the JSON ones too."""

    def unpacked(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        return [(*r[:-1], *(v for _, stat in sorted(json.loads(r[-1]).items()) for v in stat))
                for r in rows]  # fmt: skip

    return len(a) == len(b) and all(
        len(x) == len(y) and all(
            math.isclose(u, v, rel_tol=1e-12) if isinstance(u, float) or isinstance(v, float)
            else u == v for u, v in zip(x, y, strict=True))
        for x, y in zip(unpacked(a), unpacked(b), strict=True)
    )  # fmt: skip


@pytest.mark.parametrize("seed", range(20))
def test_batch_folded_first_equals_the_plain_fold(seed: int) -> None:
    rows, out = fold_all(batch_first, seed)
    plain_rows, plain_out = fold_all(plain_merge, seed)
    assert out == plain_out
    assert close_rows(rows, plain_rows)


def test_the_comparison_runs_both_paths(monkeypatch: Any) -> None:
    """Rows merged whole into stored ones, and message by message after a stored copy."""
    paths = {"merged": 0, "one by one": 0}
    merge, one_by_one = live_seconds.Second.merge, live_seconds._merge

    def counted_merge(self: Second, other: Second) -> None:
        paths["merged"] += 1
        merge(self, other)

    def counted_one_by_one(session: str, bodies: Any, known: list[Second], rows: Any) -> Any:
        paths["one by one"] += bool(known)  # the fallback: with the stored rows
        return one_by_one(session, bodies, known, rows)

    monkeypatch.setattr(live_seconds.Second, "merge", counted_merge)
    monkeypatch.setattr(live_seconds, "_merge", counted_one_by_one)
    for seed in range(20):
        fold_all(batch_first, seed)
    assert paths["merged"] > 20 and paths["one by one"] > 20, paths


def test_negative_control_a_batch_blind_to_stored_copies_is_seen() -> None:
    def blind(session: str, bodies: Sequence[Mapping[str, Any]], known: list[Second],
              rows: dict[tuple[str, int], Second]) -> list[str | None]:  # fmt: skip
        return BlindBatch(session, bodies).fold_into(known, rows)

    differs = [fold_all(blind, seed)[1] != fold_all(plain_merge, seed)[1] for seed in range(20)]
    assert any(differs)
