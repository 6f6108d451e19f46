// The patient's word during a timed effort and the countdown's whole seconds: the same rule as
// feedback/outputs/effort.py (the station's own views), so every screen says the same thing.
// A held rep is done: below the band it reads RELAX, never PUSH again; so does the last moment
// of an effort, when a PUSH can no longer be acted on. Above the band is always EASE OFF.

export const LAST_MOMENT_S = 0.5;
export const NEW_EFFORT_RISE_S = 0.25; // work_s > 0.5: a new work period's time left jumps more
const FUZZ_S = 1e-6; // the time left is samples / rate: a hair above a second is not one more

// zone: "below" | "in_band" | "above"; leftS: null when untimed (free practice).
export function effortWord(zone, held, leftS) {
  if (zone === "in_band") return "hold";
  if (zone === "above") return "ease";
  if (held || (leftS !== null && leftS < LAST_MOMENT_S)) return "relax";
  return "push";
}

// The zone as the station's views judge it (zone_of there): `holding`, the exercise's own
// judgement with its hysteresis, counts as in the band; without a calibration the band rests on
// a made-up maximum, so holding or not is all there is. pct: null when no level is known yet.
export function zoneOf(pct, band, holding, calibrated) {
  if (holding) return "in_band";
  if (!calibrated || pct === null || !band) return "below";
  return pct < band[0] ? "below" : pct > band[1] ? "above" : "in_band";
}

// The seconds still begun: 0.4 s left reads 1, so 0 never shows while time is left.
export function wholeSeconds(leftS) {
  return Math.max(0, Math.ceil(leftS - FUZZ_S));
}

// Whether the running effort's rep is held, from updates of (phase, time left or null, reps).
// Within an effort the highest count seen stands: `live` and `stream` are separate latest-wins
// lanes, so an older, lower count can arrive after a newer one and must not un-hold the rep.
export class EffortTracker {
  constructor() {
    this.phase = null;
    this.left = Infinity;
    this.repsAtStart = null;
    this.repsSeen = null;
    this.held = false;
  }

  update(phase, leftS, repsDone) {
    const rose = leftS !== null && leftS > this.left + NEW_EFFORT_RISE_S;
    if (phase !== this.phase || rose) this.repsAtStart = this.repsSeen = repsDone;
    else if (repsDone !== null) {
      this.repsSeen = this.repsSeen === null ? repsDone : Math.max(this.repsSeen, repsDone);
    }
    this.phase = phase;
    if (leftS !== null) this.left = leftS;
    const start = this.repsAtStart, seen = this.repsSeen;
    this.held = phase === "work" && seen !== null && start !== null && seen > start;
    return this.held;
  }
}

// A countdown that never goes up within a phase, however its updates jitter on the way here:
// it keeps the lowest value shown until the phase changes or its time left clearly rises.
export class Countdown {
  constructor() {
    this.phase = null;
    this.shown = Infinity;
    this.raw = Infinity;
  }

  show(phase, leftS) {
    if (phase !== this.phase || leftS > this.raw + NEW_EFFORT_RISE_S) this.shown = Infinity;
    this.phase = phase;
    this.raw = leftS;
    this.shown = Math.min(this.shown, wholeSeconds(leftS));
    return this.shown;
  }
}
