// The therapist's view: every station of a clinic (or those named in ?station=), each with its
// live envelope curves in % MVC and the target band, the state of the exercise and of
// stimulation, the last repetitions, and the controls of the Qt remote view (emergency stop,
// set band, stop session) sent as therapist commands. Data: the station's binary `stream` and
// its `status`, `session`, `rep` and `event` messages, as feedback/dashboard/remote_model.py.

import { command } from "./lib/commands.js";
import { connect, json, loadConfig, signIn, topic } from "./lib/link.js";
import { decode } from "./lib/stream.js";

const LEAVES = [["stream", 0], ["status", 1], ["session", 1], ["rep", 1], ["event", 1]];
const WINDOW_S = 10;
const STALE_S = 1.5;
const COLOURS = ["#4fc3f7", "#ffb74d", "#ce93d8", "#a5d6a7"]; // distinct on the dark panel
const $ = (id) => document.getElementById(id);

const stations = new Map();
const metrics = { frames: 0, draws: 0, drawErrors: 0, delays: [], packets: 0, bad: 0, start: performance.now() };

// Text from the network goes into markup only through this: a hostile channel name or field
// must show as text, not become part of the page.
function esc(v) {
  return String(v).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
let cfg, client, issuer;
window.vmf = { stations, metrics };

class Station {
  constructor(name) {
    this.name = name;
    this.state = "unknown";
    this.session = null;
    this.packet = null;
    this.ring = null; // per channel Float32Array of % MVC (or mV without MVC), NaN in holes
    this.end = 0; // device index after the newest display sample
    this.dropped = 0;
    this.reps = [];
    this.note = "";
    this.alarm = false;
    this.estop = false;
    this.receivedAt = 0;
    this.dirty = true;
    this.el = makeCard(this);
  }

  onPacket(p) {
    if (p.session !== this.session || !this.ring || this.ring.length !== p.channels.length) {
      if (p.session !== this.session) {
        this.reps = [];
        this.note = "";
        this.estop = false;
      }
      this.session = p.session;
      this.size = Math.round(WINDOW_S * p.displayHz);
      this.ring = p.channels.map(() => new Float32Array(this.size).fill(NaN));
      this.blanked = new Float32Array(this.size); // 1: envelope held during a stimulation burst
      this.end = p.firstIndex;
      this.packet = null;
    }
    if (this.packet && p.counter > this.packet.counter + 1) this.dropped += p.counter - this.packet.counter - 1;
    const missing = Math.max(0, Math.round((p.firstIndex - this.end) / p.decimation));
    const calibrated = p.mvcMv.every((m) => m > 0);
    p.channels.forEach((_, c) => {
      const scale = calibrated ? 100 / p.mvcMv[c] : 1;
      const values = new Float32Array(missing + p.n).fill(NaN); // a hole shows as a gap
      for (let i = 0; i < p.n; i++) values[missing + i] = p.envelope[c][i] * scale;
      push(this.ring[c], values);
    });
    const held = new Float32Array(missing + p.n);
    for (let i = 0; i < p.n; i++) held[missing + i] = p.blanked[i];
    push(this.blanked, held);
    this.end = p.firstIndex + p.n * p.decimation;
    this.calibrated = calibrated;
    this.packet = p;
    this.receivedAt = performance.now() / 1000;
    this.state = p.phase === "done" ? this.state : "in_session";
    this.pendingSample = p.tSample;
    this.dirty = true;
  }

  onJson(m) {
    if (m.type === "status") this.state = m.state;
    else if (m.type === "session_end") this.say(`session ended (${(m.summary || {}).stopped_by || "?"})`);
    else if (m.session !== this.session) return; // of a session not seen in the stream yet
    else if (m.type === "rep" && m.achieved) {
      // QoS 1 may deliver a rep twice (a redelivery after a reconnect): one row per msg_id
      if (!this.reps.some((r) => r.msg_id === m.msg_id)) this.reps.push(m);
    }
    else if (m.type === "stim_estop") {
      this.estop = true;
      this.say("EMERGENCY STOP: stimulation latched off", true);
    } else if (m.type === "stim_rearm") this.estop = false;
    else if (m.type === "command_result") {
      const verdict = m.accepted ? "accepted" : `refused: ${m.reason}`;
      this.say(`${m.action} from ${m.issuer} ${verdict}`, !m.accepted);
    } else if (m.type === "band_set") this.say(`band set to ${m.low_pct}–${m.high_pct} % MVC`);
    else if (m.type === "band_refused") this.say(`band refused: ${m.reason}`, true);
    this.dirty = true;
  }

  say(text, alarm = false) {
    this.note = `${new Date().toLocaleTimeString()} ${text}`;
    this.alarm = alarm;
    this.dirty = true;
  }
}

function push(ring, values) {
  const n = Math.min(values.length, ring.length);
  ring.copyWithin(0, n);
  ring.set(values.subarray(values.length - n), ring.length - n);
}

function makeCard(st) {
  const node = $("card").content.firstElementChild.cloneNode(true);
  node.dataset.station = st.name;
  node.querySelector(".name").textContent = st.name;
  node.querySelector(".estop").addEventListener("click", () => send(st, "emergency_stop", { reason: "browser therapist view" }));
  node.querySelector(".stop").addEventListener("click", () => {
    if (confirm(`End the session on ${st.name}?`)) send(st, "stop", {});
  });
  node.querySelector(".bandform").addEventListener("input", (e) => { e.currentTarget.dataset.touched = "1"; });
  node.querySelector(".bandform").addEventListener("submit", (e) => {
    e.preventDefault();
    delete e.target.dataset.touched;
    const f = e.target.elements;
    send(st, "change_band", { low_pct: Number(f.low.value), high_pct: Number(f.high.value) });
  });
  $("empty").hidden = true;
  const all = [...$("stations").querySelectorAll(".card")];
  const after = all.find((c) => c.dataset.station > st.name);
  $("stations").insertBefore(node, after || null);
  return node;
}

function send(st, action, params) {
  if (!client || !client.connected) return st.say(`${action} not sent: no connection to the broker`, true);
  if (!issuer) return st.say(`${action} not sent: no therapist id (sign in with one)`, true);
  if (action !== "emergency_stop" && !st.session) return st.say(`${action} not sent: no session seen yet`, true);
  const body = command(action, { issuer, session: st.session, ...params });
  // The stop has its own topic: the station reads it on a connection no other command can delay.
  const leaf = action === "emergency_stop" ? "cmd/estop" : "cmd";
  client.publish(topic(cfg.clinic, st.name, leaf), body, { qos: 1 }, (err) => {
    st.say(err ? `${action} NOT sent: ${err.message}` : `${action} sent, waiting for the station`, Boolean(err));
  });
}

function onMessage(name, leaf, bytes) {
  let st = stations.get(name);
  if (!st) stations.set(name, (st = new Station(name)));
  if (leaf === "stream") {
    try {
      st.onPacket(decode(bytes));
      metrics.packets++;
    } catch (_) { metrics.bad++; }
    return;
  }
  const m = json(bytes);
  if (m) st.onJson(m);
}

// --- drawing -------------------------------------------------------------------------------

function fmt(v, digits = 0) { return v === null || v === undefined || Number.isNaN(v) ? "–" : Number(v).toFixed(digits); }

function drawCard(st, now) {
  const el = st.el, p = st.packet;
  const stale = p && now - st.receivedAt > STALE_S && st.state === "in_session";
  const chip = el.querySelector(".state");
  chip.textContent = stale ? "no data" : { in_session: "in session", idle: "idle", offline: "off line" }[st.state] || st.state;
  chip.className = `state chip ${stale ? "stale" : st.state}`;
  if (p) {
    el.querySelector(".who").textContent = `${p.patient} · ${p.protocol}`;
    const left = p.phase === "done" ? "" : ` (${fmt(p.phaseLeftS, 1)} s left)`;
    el.querySelector(".phase").textContent = `${p.phase}${left}${p.holding ? ", holding" : ""}`;
    el.querySelector(".reps").textContent = `${p.repsDone} of ${p.repsTotal}${p.sets > 1 ? ` (set ${p.setNo} of ${p.sets})` : ""}`;
    el.querySelector(".ratio").textContent = fmt(p.vmVlRatio, 2);
    const stim = st.estop ? "estop" : p.stimState;
    const stimEl = el.querySelector(".stim");
    stimEl.textContent = { off: "off", armed: "armed", stimulating: "STIMULATING", estop: "STOPPED (e-stop)" }[stim] + (p.stimBursts ? `, ${p.stimBursts} bursts` : "");
    stimEl.classList.toggle("alarm", stim === "estop" || stim === "stimulating");
    const sig = el.querySelector(".signal");
    sig.textContent = `${p.linkUp ? "link up" : "LINK DOWN"}, ${fmt(now - st.receivedAt, 1)} s ago, ${st.dropped} dropped`;
    sig.classList.toggle("alarm", !p.linkUp || stale);
    const form = el.querySelector(".bandform").elements;
    if (!el.querySelector(".bandform").dataset.touched) { // never overwrite what is being typed
      form.low.value = p.band[0];
      form.high.value = p.band[1];
    }
    plot(el.querySelector("canvas"), st, stale);
  }
  const note = el.querySelector(".note");
  note.textContent = st.note;
  note.classList.toggle("alarm", st.alarm);
  const body = el.querySelector("tbody");
  const rows = st.reps.slice(-5).reverse().map((r) => `<tr><td>${fmt(r.rep)}</td><td>${fmt(r.time_to_band_s, 2)}</td><td>${fmt(r.peak_pct_mvc)}</td><td>${fmt(r.hold_s, 1)}</td><td>${fmt(r.vm_vl_ratio, 2)}</td></tr>`).join("");
  const shown = rows || '<tr><td colspan="5" class="none">none achieved yet</td></tr>';
  if (body.innerHTML !== shown) body.innerHTML = shown;
}

function plot(canvas, st, stale) {
  const p = st.packet;
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * dpr)) { canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr); }
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const left = 48, right = 8, top = 8, bottom = 24;
  const pw = w - left - right, ph = h - top - bottom;
  let yMax = 100;
  if (!st.calibrated) {
    yMax = 0.1;
    for (const r of st.ring) for (const v of r) if (v > yMax) yMax = v;
    yMax = niceCeil(yMax);
  } else {
    yMax = Math.max(100, p.band[1] * 1.2);
  }
  const y = (v) => top + ph * (1 - Math.min(v, yMax) / yMax);
  // the band, in the unit of the curves (only with a calibration: the band is in % MVC)
  if (st.calibrated) {
    g.fillStyle = "rgba(105,240,174,0.18)";
    g.fillRect(left, y(p.band[1]), pw, y(p.band[0]) - y(p.band[1]));
    g.strokeStyle = "#69f0ae";
    g.setLineDash([6, 4]);
    for (const b of p.band) { g.beginPath(); g.moveTo(left, y(b)); g.lineTo(left + pw, y(b)); g.stroke(); }
    g.setLineDash([]);
  }
  // stimulation bursts: the envelope is held (blanked against the artefact), so say where
  const n0 = st.blanked.length;
  g.fillStyle = "rgba(206,147,216,0.30)";
  let anyHeld = false;
  for (let i = 0; i < n0; i++) {
    if (!st.blanked[i]) continue;
    let j = i;
    while (j < n0 && st.blanked[j]) j++;
    g.fillRect(left + (pw * i) / (n0 - 1), top, Math.max(1, (pw * (j - i)) / (n0 - 1)), ph);
    anyHeld = true;
    i = j;
  }
  // axes with a few round ticks
  g.fillStyle = "#c8ccd2";
  g.strokeStyle = "#3a3f46";
  g.font = "12px system-ui, sans-serif";
  g.textAlign = "right";
  const step = yMax / 4;
  for (let v = 0; v <= yMax + 1e-9; v += step) {
    g.beginPath(); g.moveTo(left, y(v)); g.lineTo(left + pw, y(v)); g.stroke();
    g.fillText(st.calibrated ? v.toFixed(0) : v.toPrecision(2), left - 4, y(v) + 4);
  }
  g.save();
  g.translate(12, top + ph / 2);
  g.rotate(-Math.PI / 2);
  g.textAlign = "center";
  g.fillText(st.calibrated ? "% MVC" : "mV", 0, 0);
  g.restore();
  g.textAlign = "center";
  for (let s = 0; s <= WINDOW_S; s += 2) {
    g.textAlign = s === 0 ? "right" : "center"; // "now" ends at the right edge, not past it
    g.fillText(s === 0 ? "now" : `−${s} s`, left + pw * (1 - s / WINDOW_S), h - 6);
  }
  // the curves
  st.ring.forEach((ring, c) => {
    g.strokeStyle = stale ? "#666" : COLOURS[c % COLOURS.length];
    g.lineWidth = c === p.target ? 2.2 : 1.5;
    g.beginPath();
    const n = ring.length, stride = Math.max(1, Math.floor(n / pw));
    let pen = false;
    for (let i = 0; i < n; i += stride) {
      const v = ring[i];
      if (Number.isNaN(v)) { pen = false; continue; }
      const x = left + (pw * i) / (n - 1);
      if (pen) g.lineTo(x, y(v)); else g.moveTo(x, y(v));
      pen = true;
    }
    g.stroke();
  });
  const legend = canvas.parentElement.querySelector(".legend");
  const text = p.channels.map((ch, c) => `<span><i class="c${c % COLOURS.length}"></i>${esc(ch)}${c === p.target ? " (target)" : ""}</span>`).join("")
    + (st.calibrated ? `<span><i class="bandkey"></i>target band ${p.band[0]}–${p.band[1]} % MVC</span>` : "<span>no calibration yet: mV, band not shown</span>")
    + (anyHeld ? `<span><i class="heldkey"></i>stimulation burst (signal held)</span>` : "");
  if (legend.dataset.text !== text) { legend.innerHTML = text; legend.dataset.text = text; }
}

function niceCeil(v) {
  const e = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * e >= v) return m * e;
  return 10 * e;
}

let lastTick = 0;
function loop() {
  const now = performance.now() / 1000;
  const tick = now - lastTick > 0.25; // ages and "no data" move even without new packets
  if (tick) lastTick = now;
  for (const st of stations.values()) {
    if (st.paintedSample !== undefined) {
      metrics.delays.push(Date.now() / 1000 - st.paintedSample);
      if (metrics.delays.length > 5000) metrics.delays.splice(0, 1000);
      st.paintedSample = undefined;
    }
    if (st.dirty || tick) {
      // one card's bad data must not stop the loop (and with it every other station's card)
      try { drawCard(st, now); } catch (err) { metrics.drawErrors++; console.warn(st.name, err); }
      metrics.draws++;
      if (st.pendingSample !== undefined) { st.paintedSample = st.pendingSample; st.pendingSample = undefined; }
      st.dirty = false;
    }
  }
  metrics.frames++;
  requestAnimationFrame(loop);
}

async function main() {
  cfg = await loadConfig();
  cfg.stations = new URLSearchParams(location.search).getAll("station");
  $("clinic").textContent = cfg.clinic || "?";
  const conn = $("conn");
  const setConn = (text, ok) => { conn.textContent = text; conn.classList.toggle("bad", !ok); };
  if (!cfg.clinic) return setConn("no clinic given (?clinic=…)", false);
  const who = await signIn(cfg);
  issuer = who.issuer || cfg.issuer;
  client = window.vmf.client = connect(cfg, { leaves: LEAVES, ...who, onMessage, onState: setConn });
  requestAnimationFrame(loop);
}

main();
