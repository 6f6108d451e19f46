// Therapist commands as docs/mqtt.md defines them (the Python twin: feedback/clinic/commands.py).
// msg_id is Unix milliseconds, bumped when two fall in one millisecond, so it keeps increasing
// across page reloads: the station refuses a msg_id it has seen from this issuer.

let last = 0;

export function command(action, { issuer, session, ...params }) {
  const t = Date.now();
  last = Math.max(t, last + 1);
  return JSON.stringify({
    v: 1, type: "command", session: session ?? null, msg_id: last, t: t / 1000,
    issuer, role: "therapist", action, ...params,
  });
}
