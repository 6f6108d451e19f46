// The one connection of a page: MQTT over WebSockets with the vendored mqtt.js (web/vendor/).
// Where the broker is comes from /config.json (written by `python -m feedback.web`) and the
// page's query (?broker=&clinic=&station=); a password is typed, never put in a URL.

import mqtt from "../vendor/mqtt.esm.js";

export const ROOT = "vmf/v1";

export async function loadConfig() {
  let cfg = {};
  try {
    const r = await fetch("config.json", { cache: "no-store" });
    if (r.ok) cfg = await r.json();
  } catch (_) { /* opened from a plain file server: the query must say it all */ }
  const q = new URLSearchParams(location.search);
  for (const key of ["broker", "clinic", "user", "issuer", "login"]) {
    if (q.has(key)) cfg[key] = q.get(key);
  }
  const stations = q.getAll("station");
  if (stations.length) cfg.stations = stations;
  else if (cfg.station && !cfg.stations) cfg.stations = [cfg.station];
  cfg.broker = absoluteBroker(cfg.broker || "/mqtt");
  return cfg;
}

// "/mqtt" (the relay of the page's own server) → ws(s)://this-host/mqtt
function absoluteBroker(url) {
  if (/^wss?:\/\//.test(url)) return url;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${url.startsWith("/") ? "" : "/"}${url}`;
}

export function topic(clinic, station, leaf) {
  return `${ROOT}/${clinic}/${station}/${leaf}`;
}

// Split vmf/v1/<clinic>/<station>/<leaf>; null for anything else.
export function parseTopic(t, clinic) {
  const p = t.split("/");
  if (p.length !== 5 || `${p[0]}/${p[1]}` !== ROOT || p[2] !== clinic) return null;
  return { station: p[3], leaf: p[4] };
}

// Connect and subscribe; `onMessage(station, leaf, bytes)`, `onState(text, ok)`.
export function connect(cfg, { leaves, username, password, onMessage, onState }) {
  const client = mqtt.connect(cfg.broker, {
    protocolVersion: 4, // MQTT 3.1.1: both the embedded amqtt broker and Mosquitto speak it
    clientId: `web-${Math.random().toString(16).slice(2, 10)}`,
    username: username || undefined,
    password: password || undefined,
    keepalive: 10,
    reconnectPeriod: 1000,
    connectTimeout: 5000,
    clean: true,
  });
  const filters = {};
  for (const station of cfg.stations && cfg.stations.length ? cfg.stations : ["+"]) {
    for (const [leaf, qos] of leaves) filters[topic(cfg.clinic, station, leaf)] = { qos };
  }
  client.on("connect", () => {
    onState("connected", true);
    client.subscribe(filters, (err, granted) => {
      // A broker's ACL answers a forbidden filter with 0x80 (MQTT 3.1.1) or just sends nothing.
      const refused = (granted || []).filter((g) => g.qos === 128).length;
      if (err) onState(`subscription failed: ${err.message}`, false);
      else if (refused) onState(`connected; ${refused} subscription(s) refused by the broker`, true);
    });
  });
  client.on("reconnect", () => onState("connecting…", false));
  client.on("offline", () => onState("no connection to the broker", false));
  client.on("error", (err) => {
    const refused = err && (err.code === 4 || err.code === 5 || err.code === 135);
    onState(refused ? "sign-in refused by the broker" : `broker error: ${err.message}`, false);
    if (refused) client.end(true); // retrying a wrong password helps nobody
  });
  client.on("message", (t, payload) => {
    const where = parseTopic(t, cfg.clinic);
    if (where) onMessage(where.station, where.leaf, payload);
  });
  return client;
}

export function json(bytes) {
  try {
    const body = JSON.parse(new TextDecoder().decode(bytes));
    return body && typeof body === "object" ? body : null;
  } catch (_) {
    return null;
  }
}

// The page's own sign-in form (#login): resolves with {username, password, issuer}.
export function signIn(cfg) {
  const form = document.getElementById("login");
  if (!cfg.login || !form) return Promise.resolve({});
  form.hidden = false;
  if (cfg.user) form.elements.username.value = cfg.user;
  if (cfg.issuer && form.elements.issuer) form.elements.issuer.value = cfg.issuer;
  return new Promise((resolve) => {
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      form.hidden = true;
      resolve({
        username: form.elements.username.value,
        password: form.elements.password.value,
        issuer: form.elements.issuer ? form.elements.issuer.value : undefined,
      });
    }, { once: true });
  });
}
