"""End-to-end receipts: the clinic logger tells a station what it has stored, and what it misses.

On `vmf/v1/<clinic>/<station>/receipt` (written only by logger accounts, read only by that
station; docs/mqtt.md) the logger publishes, after each database commit:

- `receipt`: `through` (every msg_id from 1 to it is stored) and `stored` (ranges `[first,
  last]` stored above `through`, after a hole). The station deletes those from its outbox; the
  broker's PUBACK no longer does.
- `resend`: `missing` (ranges below the highest stored msg_id that are not stored). The station
  publishes them again from its outbox.

The station parses these with `decode`, which turns any bytes into a `Receipt`, a `Resend`, or a
`ReceiptError` (never anything else: a hostile or broken peer must not end the MQTT task).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from feedback.outputs.topics import SCHEMA_VERSION, encode

MAX_RECEIPT_BYTES = 16 * 1024
MAX_RANGES = 100  # per message; a longer list waits for the next one
MAX_MSG_ID = 2**53 - 1
_SESSION_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")

Range = tuple[int, int]


class ReceiptError(ValueError):
    """Bytes on the receipt topic that are not a receipt or a resend request of this contract."""


@dataclass(frozen=True, slots=True)
class Receipt:
    session: str
    through: int
    stored: tuple[Range, ...] = ()


@dataclass(frozen=True, slots=True)
class Resend:
    session: str
    missing: tuple[Range, ...]


def ranges(msg_ids: Iterable[int]) -> list[Range]:
    """[1, 2, 3, 7, 9, 10] → [(1, 3), (7, 7), (9, 10)]."""
    out: list[list[int]] = []
    for i in sorted(set(msg_ids)):
        if out and i == out[-1][1] + 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return [(a, b) for a, b in out]


def holes(through: int, above: Iterable[int]) -> list[Range]:
    """The msg_ids missing between `through` and the highest of `above` (all above it)."""
    out: list[Range] = []
    last = through
    for i in sorted(set(above)):
        if i > last + 1:
            out.append((last + 1, i - 1))
        last = max(last, i)
    return out


def members(rs: Iterable[Range]) -> Iterator[int]:
    for a, b in rs:
        yield from range(a, b + 1)


def encode_receipt(r: Receipt) -> bytes:
    return encode(
        {
            "v": SCHEMA_VERSION,
            "type": "receipt",
            "session": r.session,
            "t": round(time.time(), 6),
            "through": r.through,
            "stored": [list(x) for x in r.stored[:MAX_RANGES]],
        }
    )


def encode_resend(r: Resend) -> bytes:
    return encode(
        {
            "v": SCHEMA_VERSION,
            "type": "resend",
            "session": r.session,
            "t": round(time.time(), 6),
            "missing": [list(x) for x in r.missing[:MAX_RANGES]],
        }
    )


def decode(payload: bytes) -> Receipt | Resend:
    """Parse a message of the receipt topic; raises ReceiptError only."""
    if len(payload) > MAX_RECEIPT_BYTES:
        raise ReceiptError(f"{len(payload)} bytes, more than {MAX_RECEIPT_BYTES}")
    # No JSON of this contract nests deeper than 3 ([...[a, b]...] in an object): refuse deeper
    # before json.loads can recurse.
    depth = 0
    for byte in payload:
        if byte in b"[{":
            depth += 1
            if depth > 3:
                raise ReceiptError("nested deeper than 3")
        elif byte in b"]}":
            depth -= 1
    try:
        body = json.loads(payload)
    except Exception as exc:  # JSONDecodeError, UnicodeDecodeError, RecursionError, ...
        raise ReceiptError(f"not JSON: {type(exc).__name__}") from None
    if not isinstance(body, dict) or body.get("v") != SCHEMA_VERSION:
        raise ReceiptError("not a v1 JSON object")
    session = body.get("session")
    if not isinstance(session, str) or not 1 <= len(session) <= 64 or set(session) - _SESSION_CHARS:
        raise ReceiptError("no valid session id")
    kind = body.get("type")
    if kind == "receipt":
        through: Any = body.get("through")
        if not _is_msg_id(through, minimum=0):
            raise ReceiptError("receipt without a valid 'through'")
        return Receipt(session, through, _ranges(body.get("stored", [])))
    if kind == "resend":
        return Resend(session, _ranges(body.get("missing")))
    raise ReceiptError(f"unknown type {kind!r}")


def _is_msg_id(value: Any, *, minimum: int = 1) -> bool:
    return type(value) is int and minimum <= value <= MAX_MSG_ID


def _ranges(value: Any) -> tuple[Range, ...]:
    if not isinstance(value, list) or len(value) > MAX_RANGES:
        raise ReceiptError(f"ranges: a list of at most {MAX_RANGES} [first, last] pairs")
    out = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 2 and all(map(_is_msg_id, item))):
            raise ReceiptError(f"range {item!r} is not [first, last]")
        if item[0] > item[1]:
            raise ReceiptError(f"range {item!r} is backwards")
        out.append((item[0], item[1]))
    return tuple(out)
