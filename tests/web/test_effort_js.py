"""The web page's effort rule (web/lib/effort.js) says what the station's views say
(feedback.outputs.effort), run in Node on the same cases: no PUSH after a held rep, whole
seconds begun, and a countdown that never goes up when its updates jitter on the way."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from feedback.outputs.effort import (
    EffortTracker,
    ZoneName,
    effort_word,
    whole_seconds,
    zone_of,
)

LIB = Path(__file__).resolve().parents[2] / "web" / "lib" / "effort.js"
NODE = shutil.which("node")

# (zone, held, left or None) → the Python rule's word, to compare with the page's.
ZONES: tuple[ZoneName, ...] = ("below", "in_band", "above")
WORD_CASES = [
    (zone, held, left)
    for zone in ZONES
    for held in (False, True)
    for left in (None, 0.0, 0.3, 0.5, 2.0)
]
LEFTS = [0.0, 0.01, 0.4, 0.5, 0.99, 1.0, 1.3, 2.0000000001, 4.99]
# An effort, then work straight after work: (phase, left or None, reps).
UPDATES = [
    ("ready", 1.0, 0), ("work", 5.0, 0), ("work", 2.4, 1), ("work", None, 1), ("work", 0.2, 1),
    ("work", 4.98, 1), ("work", 1.0, 2), ("rest", 4.0, 2), ("work", 5.0, 2),
]  # fmt: skip
# A `live` from before the rep (no time left, count 0) landing after a stream packet from after it.
CROSSED = [("work", 5.0, 0), ("work", 2.4, 1), ("work", None, 0), ("work", 2.2, 1)]
# (pct or None, holding, calibrated): the zone the page judges, as the station's views do.
ZONE_CASES = [
    (pct, holding, calibrated)
    for pct in (None, 10.0, 30.0, 45.0, 60.0, 80.0)
    for holding in (False, True)
    for calibrated in (False, True)
]
BAND = (30.0, 60.0)
# Local countdowns as the page computes them between jittery packets: up 30 ms at a packet.
JITTER = [1.3, 1.02, 0.99, 1.01, 0.97, 0.6, 0.2, 0.02]

SCRIPT = """
const m = await import(process.argv[1]);
const c = JSON.parse(process.argv[2]);
const words = c.words.map(([z, h, l]) => m.effortWord(z, h, l));
const old = c.words.map(([z]) => ({ below: "push", in_band: "hold", above: "ease" })[z]);
const seconds = c.lefts.map((l) => m.wholeSeconds(l));
const t = new m.EffortTracker();
const held = c.updates.map(([p, l, r]) => t.update(p, l, r));
const tc = new m.EffortTracker();
const crossed = c.crossed.map(([p, l, r]) => tc.update(p, l, r));
// The page's tracker before: the newest update's count alone, however old its message.
const crossedOld = (() => {
  let start = null, phase = null;
  return c.crossed.map(([p, l, r]) => {
    if (p !== phase) start = r;
    phase = p;
    return p === "work" && r !== null && start !== null && r > start;
  });
})();
const zones = c.zones.map(([pct, h, cal]) => m.zoneOf(pct, c.band, h, cal));
// The page's zone before: the band alone, holding and calibration ignored.
const zonesOld = c.zones.map(([pct]) => pct === null ? "below"
  : pct < c.band[0] ? "below" : pct > c.band[1] ? "above" : "in_band");
const cd = new m.Countdown();
const counted = c.jitter.map((l) => cd.show("work", l));
const plain = c.jitter.map((l) => Math.ceil(l));
console.log(JSON.stringify(
  { words, old, seconds, held, counted, plain, crossed, crossedOld, zones, zonesOld }));
"""


def run_page_rule() -> dict[str, list[Any]]:
    if NODE is None:
        pytest.skip("no node to run the page's JS")
    cases = {
        "words": WORD_CASES, "lefts": LEFTS, "updates": UPDATES, "jitter": JITTER,
        "crossed": CROSSED, "zones": ZONE_CASES, "band": BAND,
    }  # fmt: skip
    out = subprocess.run(
        [NODE, "--input-type=module", "-e", SCRIPT, LIB.as_uri(), json.dumps(cases)],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    result: dict[str, list[Any]] = json.loads(out.stdout)
    return result


@pytest.mark.parametrize("variant", ["correct", "old_rule"])
def test_the_page_and_the_station_share_one_rule(variant: str) -> None:
    page = run_page_rule()
    words = page["words" if variant == "correct" else "old"]
    ok = words == [effort_word(z, held=h, left_s=lf) for z, h, lf in WORD_CASES]
    assert ok is (variant == "correct")
    assert page["seconds"] == [whole_seconds(x) for x in LEFTS]
    tracker = EffortTracker()
    assert page["held"] == [tracker.update(p, lf, r) for p, lf, r in UPDATES]
    assert page["held"] == [False, False, True, True, True, False, True, False, False]


@pytest.mark.parametrize("variant", ["correct", "plain_ceil"])
def test_the_page_countdown_never_goes_up_within_a_phase(variant: str) -> None:
    shown = run_page_rule()["counted" if variant == "correct" else "plain"]
    assert all(isinstance(n, int) for n in shown)
    ok = all(b <= a for a, b in itertools.pairwise(shown))
    assert ok is (variant == "correct"), shown


@pytest.mark.parametrize("variant", ["correct", "latest_count"])
def test_a_stale_lower_count_from_the_other_lane_keeps_the_rep_held(variant: str) -> None:
    held = run_page_rule()["crossed" if variant == "correct" else "crossedOld"]
    tracker = EffortTracker()
    station = [tracker.update(p, lf, r) for p, lf, r in CROSSED]
    assert station == [False, True, True, True]
    ok = held == station
    assert ok is (variant == "correct"), held


@pytest.mark.parametrize("variant", ["correct", "band_only"])
def test_the_page_judges_the_zone_as_the_station_views_do(variant: str) -> None:
    """`holding` counts as in the band; uncalibrated, it is all there is (the Qt patient view's
    rule: the band rests on a made-up maximum)."""
    zones = run_page_rule()["zones" if variant == "correct" else "zonesOld"]
    station = [
        zone_of(pct, BAND, h, calibrated=cal) if pct is not None else zone_of(0.0, BAND, h)
        for pct, h, cal in ZONE_CASES
    ]
    ok = zones == station
    assert ok is (variant == "correct"), list(zip(ZONE_CASES, zones, station, strict=True))
