// The patient's view: the target bar and band with a scale, one plain word, a countdown that
// says what it counts, the repetitions, sound. Everything comes from the station's own MQTT
// messages (docs/mqtt.md): `stream` (or `live`) for the bar, `cue` for the words and sounds.

import { Countdown, EffortTracker, effortWord, zoneOf } from "./lib/effort.js";
import { connect, json, loadConfig, signIn } from "./lib/link.js";
import { Sound } from "./lib/sound.js";
import { decode } from "./lib/stream.js";

const STALE_S = 1.0; // no bar value for this long during a session: say so, grey the bar
const LEAVES = [["status", 1], ["session", 1], ["cue", 1], ["live", 0], ["stream", 0]];
const $ = (id) => document.getElementById(id);

const WORDS = {
  push: ["PUSH", "Tighten your thigh until the bar is in the green band", "push"],
  hold: ["HOLD", "Keep the bar in the green band", "hold"],
  ease: ["EASE OFF", "A little less: back into the green band", "ease"],
  relax: ["RELAX", "Let your leg go loose", "relax"],
  held: ["RELAX", "That one counts. Let your leg go loose", "relax"],
  ready: ["GET READY", "The exercise starts soon", "relax"],
  done: ["WELL DONE", "The session is over. Relax.", "hold"],
  calibrating: ["CALIBRATION", "Follow your therapist's instructions", "relax"],
  electrodes: ["CHECK SENSORS", "Ask your therapist to check the sensors", "alarm"],
  stale: ["PAUSE", "No signal from the station. Wait, or ask your therapist.", "alarm"],
  offline: ["PAUSE", "The exercise station is off line", "alarm"],
  waiting: ["WAIT", "Waiting for the exercise to start", "relax"],
};
const COUNTS = {
  ready: "Starts in",
  work: "Work time left",
  rest: "Rest time left",
  calibrating: "Calibration time left",
};

export const state = {
  station: null, session: null, status: "unknown", phase: null, zone: null, quality: "ok",
  repsDone: 0, repsTotal: 0, band: null, phaseLeftS: 0, phaseAt: 0, pct: null, target: null,
  holdProgress: 0, holding: false, dataAt: 0, tSample: null, cueId: 0, ended: false,
  calibrated: false, // from the stream's MVCs (0: unknown); until then only `holding` judges
};
const metrics = { delays: [], frames: 0, pending: null, painted: null, messages: 0, bad: 0 };
const sound = new Sound();
// Fed from both latest-wins lanes, `stream` (with the time left) and `live` (without): their
// messages may cross, so the tracker keeps the highest reps count within an effort.
let effort = new EffortTracker();
let countdown = new Countdown();
window.vmf = { state, metrics, sound };

const now = () => performance.now() / 1000;

function newSession(id) {
  Object.assign(state, {
    session: id, phase: "ready", zone: null, quality: "ok", repsDone: 0, repsTotal: 0,
    holdProgress: 0, holding: false, cueId: 0, ended: false, freePractice: false,
  });
  effort = new EffortTracker();
  countdown = new Countdown();
}

function onMessage(station, leaf, bytes) {
  if (station !== state.station) return;
  metrics.messages++;
  if (leaf === "stream") {
    let p;
    try { p = decode(bytes); } catch (_) { metrics.bad++; return; }
    if (p.session !== state.session) newSession(p.session);
    state.target = p.channels[p.target];
    // The station sends MVC 0 without a calibration: % MVC then rests on a made-up maximum.
    state.calibrated = p.mvcMv.length > 0 && p.mvcMv.every((m) => m > 0);
    Object.assign(state, {
      phase: p.phase, phaseLeftS: p.phaseLeftS, phaseAt: now(), band: p.band,
      repsDone: p.repsDone, repsTotal: p.repsTotal, holding: p.holding,
      holdProgress: p.holdProgress,
    });
    effort.update(p.phase, p.phaseLeftS, state.freePractice ? null : p.repsDone);
    bar(p.pctMvc[p.target], p.tSample);
    return;
  }
  const m = json(bytes);
  if (!m) { metrics.bad++; return; }
  if (m.type === "status") state.status = m.state;
  else if (m.type === "session_start") {
    newSession(m.session);
    state.repsTotal = m.reps_prescribed || 0;
    state.freePractice = m.reps_prescribed === null; // no reps prescribed: contractions only
    state.status = "in_session";
  } else if (m.type === "session_end" && m.session === state.session) {
    state.ended = true;
    state.phase = "done";
  } else if (m.type === "cue") cue(m);
  else if (m.type === "live" && m.session === state.session) {
    const ch = state.target && state.target in m.pct_mvc ? state.target
      : "VM" in m.pct_mvc ? "VM" : Object.keys(m.pct_mvc)[0];
    state.phase = m.phase;
    state.holding = Boolean(m.holding);
    if (Number.isInteger(m.reps)) state.repsDone = Math.max(state.repsDone, m.reps);
    effort.update(m.phase, null, Number.isInteger(m.reps) ? m.reps : null);
    if (ch !== undefined) bar(m.pct_mvc[ch], m.t_sample);
  }
}

function cue(m) {
  if (m.session !== state.session) newSession(m.session);
  else if (m.msg_id <= state.cueId) return; // a second copy (QoS 1)
  state.cueId = m.msg_id;
  if ("phase" in m) {
    Object.assign(state, {
      phase: m.phase, phaseLeftS: m.phase_left_s, phaseAt: now(), repsDone: m.reps_done,
      repsTotal: m.reps_total, band: m.band,
    });
  }
  if (m.kind === "phase") {
    state.phase = m.value;
    state.zone = null;
  } else if (m.kind === "zone") state.zone = m.value;
  else if (m.kind === "rep") state.repsDone = Math.max(state.repsDone, Number(m.value));
  else if (m.kind === "quality") {
    state.quality = m.value;
    state.zone = null;
  }
  sound.cue(m.kind, m.value);
}

function bar(pct, tSample) {
  state.pct = pct;
  state.dataAt = now();
  state.tSample = tSample;
  metrics.pending = tSample;
}

// The station's own zone cue (sent only with a calibration) when there is one, else the level
// against the band, as the station's views judge it.
function zone() {
  if (state.zone && !state.holding) return state.zone;
  return zoneOf(state.pct, state.band, state.holding, state.calibrated);
}

function wordKey(stale) {
  if (state.status === "offline") return "offline";
  if (state.phase === "done" || state.ended) return "done";
  if (!state.session) return "waiting";
  if (stale) return "stale";
  if (state.quality !== "ok") return "electrodes";
  if (state.phase === "work") {
    const timed = !state.freePractice && state.repsTotal > 0;
    const leftS = timed ? phaseLeft() : null;
    const word = effortWord(zone(), timed && effort.held, leftS);
    return word === "relax" && effort.held ? "held" : word;
  }
  if (state.phase === "rest") return "relax";
  return state.phase === "calibrating" ? "calibrating" : "ready";
}

function phaseLeft() {
  return Math.max(0, state.phaseLeftS - (now() - state.phaseAt));
}

function drawScale() {
  const scale = $("scale");
  for (let v = 0; v <= 100; v += 20) {
    const d = document.createElement("div");
    d.style.bottom = `${v}%`;
    d.textContent = `${v}`;
    scale.append(d);
  }
}

function render() {
  const stale = state.session !== null && !state.ended && state.status !== "offline"
    && now() - state.dataAt > STALE_S;
  const key = wordKey(stale);
  const [word, advice, colour] = WORDS[key];
  const w = $("word");
  if (w.textContent !== word) w.textContent = word;
  w.className = `word ${colour}`;
  $("advice").textContent = key === "electrodes" ? `${advice} (${state.quality})` : advice;
  const fill = $("fill");
  const pct = state.pct;
  fill.style.height = pct === null ? "0" : `${Math.max(0, Math.min(100, pct))}%`;
  fill.className = `fill ${stale ? "stale" : state.phase === "work" ? zone() : "idle"}`;
  $("effort").textContent = pct === null || stale ? "–" : `${Math.round(pct)} %`;
  window.vmf.shownSample = state.tSample; // the sample whose value is on screen now
  const band = $("band");
  if (state.band && state.calibrated) { // a band against a made-up maximum would mislead
    band.hidden = false;
    band.style.bottom = `${state.band[0]}%`;
    band.style.height = `${state.band[1] - state.band[0]}%`;
    band.title = `target ${state.band[0]}–${state.band[1]} % of your maximum`;
    $("band-label").hidden = false;
    $("band-label").style.bottom = `${(state.band[0] + state.band[1]) / 2}%`;
  } else band.hidden = $("band-label").hidden = true;
  const label = COUNTS[state.phase];
  $("count-label").textContent = label && !state.ended ? label : "Time left";
  $("count").textContent = label && state.session && !state.ended && !stale
    ? `${countdown.show(state.phase, phaseLeft())} s` : "–";
  $("reps").textContent = !state.session ? "–"
    : state.freePractice ? "free practice" : `${state.repsDone} of ${state.repsTotal}`;
  // A held rep stays full until the rest, however the level falls after it.
  const hold = effort.held && state.phase === "work" ? 1
    : state.holding ? Math.max(state.holdProgress, 0.02) : state.holdProgress;
  $("hold").style.width = `${Math.round(100 * hold)}%`;
}

function loop() {
  // The value written in the previous frame has been painted by the time this frame starts,
  // so "sample → pixel" is measured conservatively (up to one frame late, never early).
  if (metrics.painted !== null) {
    metrics.delays.push(Date.now() / 1000 - metrics.painted);
    if (metrics.delays.length > 5000) metrics.delays.splice(0, 1000);
    metrics.painted = null;
  }
  if (metrics.pending !== null) {
    metrics.painted = metrics.pending;
    metrics.pending = null;
  }
  render();
  metrics.frames++;
  requestAnimationFrame(loop);
}

async function main() {
  drawScale();
  const cfg = await loadConfig();
  state.station = (cfg.stations || [])[0] || null;
  const conn = $("conn");
  const setConn = (text, ok) => {
    conn.textContent = `${state.station || "no station"}: ${text}`;
    conn.classList.toggle("bad", !ok);
  };
  if (!state.station || !cfg.clinic) {
    setConn("no clinic/station given (?clinic=…&station=…)", false);
    return;
  }
  $("sound").addEventListener("click", async (e) => {
    const on = await sound.toggle();
    e.target.setAttribute("aria-pressed", String(on));
    e.target.textContent = on ? "Sound: on" : "Sound: off (tap to turn on)";
  });
  const who = await signIn(cfg);
  window.vmf.client = connect(cfg, { leaves: LEAVES, ...who, onMessage, onState: setConn });
  requestAnimationFrame(loop);
}

main();
