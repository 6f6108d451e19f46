"""Export stored sessions for research tools.

    python -m feedback.clinic.export bids --db URL --out DIR [--recordings DIR ...]
                                          [--patient ID] [--line-freq HZ]

`bids`: a BIDS 1.11 EMG dataset (BEP042) of the sessions in the clinic database whose EDF+/BDF+
record is found under --recordings (matched by the session id in the file's header or name).
Sessions without a record are skipped and listed. Prints a JSON summary; exit status 0 when at
least one session was exported, 1 when none was, 2 on a usage or database error. Layout and
choices: docs/bids.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from feedback.clinic.bids import ExportError, export
from feedback.clinic.db import DatabaseMissing, connect

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m feedback.clinic.export",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="format", required=True)
    b = sub.add_parser("bids", help="a BIDS-EMG dataset")
    b.add_argument("--db", required=True, metavar="URL", help="postgresql://... or a SQLite path")
    b.add_argument("--out", type=Path, required=True, help="the dataset's root folder")
    b.add_argument(
        "--recordings",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="folder searched (recursively) for the sessions' .edf/.bdf records; "
        "may be given more than once",
    )
    b.add_argument("--patient", metavar="ID", help="only this pseudonymous patient")
    b.add_argument(
        "--line-freq",
        type=float,
        metavar="HZ",
        help="power line frequency (default: the station's setting, else 50)",
    )
    args = p.parse_args(argv)
    for folder in args.recordings:
        if not folder.is_dir():
            print(f"export: --recordings {folder} is not a folder", file=sys.stderr)
            return 2
    try:
        db = connect(args.db, must_exist=True)
    except (DatabaseMissing, ValueError) as exc:
        print(f"export: {exc}", file=sys.stderr)
        return 2
    try:
        summary = export(
            db, args.out, args.recordings, patient=args.patient, line_hz=args.line_freq
        )
    except LookupError as exc:
        print(f"export: {exc}", file=sys.stderr)
        return 1
    except ExportError as exc:
        print(f"export: {exc}", file=sys.stderr)
        return 2
    finally:
        db.close()
    for s in summary.skipped:
        log.warning("session %s not exported (%s): %s", s.session_id, s.reason, s.detail)
        print(f"export: skipped {s.session_id}: {s.reason} ({s.detail})", file=sys.stderr)
    print(json.dumps(summary.as_dict(), indent=2))
    return 0 if summary.exported else 1


if __name__ == "__main__":
    sys.exit(main())
