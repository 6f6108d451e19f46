"""The import rules drawn in docs/architecture.md hold in the code (issue 12: the river one way).

Every module of the project is parsed with `ast` (nothing is imported); each import between two
units must be an edge listed in the document, and each listed edge must be used, so the drawing
and the code cannot drift apart in either direction.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
PACKAGES = ("config", "devices", "firmware_bridge", "feedback")

# Module prefix → unit; the longest matching prefix wins.
UNITS = {
    "config": "config",
    "firmware_bridge": "firmware_bridge",
    "devices": "devices",
    "feedback": "composition",  # `from feedback import app`
    "feedback.processing": "core",
    "feedback.pipeline": "core",
    "feedback.exercise": "core",
    "feedback.cues": "core",
    "feedback.calibration": "core",
    "feedback.calibration_recording": "core",
    "feedback.calibration_flow": "composition",
    "feedback.profiles": "core",
    "feedback.progression": "core",
    "feedback.prescription": "core",
    "feedback.calibration_live": "core",
    "feedback.rep_metrics": "core",
    "feedback.contraction_report": "core",
    "feedback.snapshot": "core",
    "feedback.placement": "core",
    "feedback.block_timing": "core",
    "feedback.stimulation": "stimulation",
    "feedback.control": "control",
    "feedback.outputs": "outputs",
    "feedback.supervision": "supervision",
    "feedback.session": "session",
    "feedback.session_result": "session",
    "feedback.session_commands": "session",
    "feedback.session_tally": "session",
    "feedback.station": "station",
    "feedback.clinic": "clinic",
    "feedback.clinic.validation": "contract",
    "feedback.dashboard": "dashboard",
    "feedback.app": "composition",
    "feedback.collector": "composition",
    "feedback.metrics": "composition",
    "feedback.cli": "composition",
    "feedback.broker": "broker",
    "feedback.web": "composition",
}


def unit_of(module: str) -> str | None:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        unit = UNITS.get(".".join(parts[:n]))
        if unit is not None:
            return unit
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool) -> set[str]:
    """Absolute names of the project modules imported (relative imports resolved)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                name = ".".join([*base, *([node.module] if node.module else [])])
            else:
                name = node.module or ""
            # `from feedback.outputs import base` imports feedback.outputs.base
            out |= {f"{name}.{a.name}" for a in node.names} if name else set()
            out.add(name)
    return {m for m in out if m.split(".")[0] in PACKAGES}


def edges_of(files: dict[str, tuple[str, bool]]) -> dict[tuple[str, str], list[str]]:
    """(from unit, to unit) → where, for every import between two different units."""
    found: dict[tuple[str, str], list[str]] = defaultdict(list)
    for module, (source, is_package) in files.items():
        src = unit_of(module)
        for target in imported_modules(source, module, is_package):
            dst = unit_of(target)
            if src and dst and dst != src:
                found[(src, dst)].append(f"{module} imports {target}")
    return found


def project_files() -> dict[str, tuple[str, bool]]:
    files = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            files[module_name(path)] = (path.read_text(), path.name == "__init__.py")
    return files


def documented_rules(text: str) -> dict[str, set[str]]:
    section = text.split("## Who may import whom", 1)[1]
    rules: dict[str, set[str]] = {}
    for line in section.splitlines():
        m = re.match(r"- `([a-z_]+)` → (.*)$", line)
        if m:
            targets = set(re.findall(r"`([a-z_]+)`", m.group(2)))
            rules[m.group(1)] = targets
    return rules


def violations(edges: dict[tuple[str, str], list[str]], rules: dict[str, set[str]]) -> list[str]:
    return [
        f"{src} → {dst} is not in docs/architecture.md: {where[0]}"
        for (src, dst), where in sorted(edges.items())
        if dst not in rules.get(src, set())
    ]


@pytest.fixture(scope="module")
def rules() -> dict[str, set[str]]:
    return documented_rules(DOC.read_text())


@pytest.fixture(scope="module")
def edges() -> dict[tuple[str, str], list[str]]:
    return edges_of(project_files())


def test_every_module_belongs_to_a_documented_unit(rules: dict[str, set[str]]) -> None:
    units = {unit_of(m) for m in project_files()}
    assert None not in units
    assert units == set(rules), units ^ set(rules)


def unmapped(modules: list[str]) -> list[str]:
    """Modules that get a unit only from the bare `feedback` fallback: a new module must be
    placed in UNITS, or it would pass as `composition`, which may import almost anything."""
    return [m for m in modules if m != "feedback" and unit_of(m) == "composition"
            and not any(m == p or m.startswith(p + ".") for p, u in UNITS.items()
                        if u == "composition" and p != "feedback")]  # fmt: skip


def test_every_feedback_module_is_placed_explicitly() -> None:
    assert unmapped(list(project_files())) == []
    # Negative control: a module nobody placed is reported.
    assert unmapped(["feedback.session_helpers", "feedback.app", "feedback.web.demo"]) == [
        "feedback.session_helpers"
    ]


def test_every_import_follows_the_drawing(
    edges: dict[tuple[str, str], list[str]], rules: dict[str, set[str]]
) -> None:
    assert violations(edges, rules) == []


def test_every_drawn_edge_exists(
    edges: dict[tuple[str, str], list[str]], rules: dict[str, set[str]]
) -> None:
    drawn = {(src, dst) for src, targets in rules.items() for dst in targets}
    assert sorted(drawn - set(edges)) == []


def test_the_knots_of_issue_12_stay_untied(edges: dict[tuple[str, str], list[str]]) -> None:
    backwards = [("clinic", "composition"), ("dashboard", "composition"),
                 ("outputs", "dashboard"), ("session", "dashboard"), ("session", "clinic"),
                 ("firmware_bridge", "devices"), ("control", "clinic")]  # fmt: skip
    assert [e for e in backwards if e in edges] == []


def test_the_checker_catches_a_backward_import(rules: dict[str, set[str]]) -> None:
    # Negative control: the old arrows, as source text, are each reported.
    files = {
        "feedback.clinic.logger": ("from feedback.app import broker_access\n", False),
        "feedback.outputs.stream_source": ("from feedback.dashboard.feed import decimate\n", False),
        "firmware_bridge.emulator": ("from . import pty_service\nimport devices.base\n", False),
        "feedback.session": ("from .dashboard import link\n", False),
    }
    found = violations(edges_of(files), rules)
    assert [v.split(" is not")[0] for v in found] == [
        "clinic → composition",
        "firmware_bridge → devices",
        "outputs → dashboard",
        "session → dashboard",
    ]
