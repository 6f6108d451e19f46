"""constraints.txt was resolved from the dependencies pyproject.toml declares now."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from deps_digest import deps_digest  # noqa: E402

HEADER = re.compile(r"^# pyproject\.toml dependencies digest: ([0-9a-f]{16})$", re.M)


def recorded() -> str:
    found = HEADER.search((ROOT / "constraints.txt").read_text(encoding="utf-8"))
    assert found, "constraints.txt has no dependencies digest: run make lock"
    return found.group(1)


def test_constraints_were_locked_from_the_current_dependencies() -> None:
    assert recorded() == deps_digest(ROOT / "pyproject.toml"), (
        "pyproject.toml's dependencies changed after constraints.txt was locked: run make lock"
    )


def test_a_changed_floor_changes_the_digest(tmp_path: Path) -> None:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    changed = tmp_path / "pyproject.toml"
    changed.write_text(text.replace("brainflow>=5.13", "brainflow>=5.12"), encoding="utf-8")
    assert "brainflow>=5.13" in text
    assert deps_digest(changed) != deps_digest(ROOT / "pyproject.toml")
