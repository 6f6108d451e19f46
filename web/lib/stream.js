// Decoder of the binary live stream (`vmf/v1/<clinic>/<station>/stream`), the byte layout of
// docs/mqtt.md; the Python twin is feedback/outputs/stream.py. Little-endian throughout.

export const PHASES = ["ready", "work", "rest", "done", "calibrating"];
export const STIM_STATES = ["off", "armed", "stimulating", "estop"];
const FIXED = 64;

export class StreamError extends Error {}

// IEEE 754 half precision; DataView.getFloat16 is too new for the tablets in use.
export function half(bits) {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >> 10) & 0x1f;
  const frac = bits & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

function halves(view, at, count) {
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = half(view.getUint16(at + 2 * i, true));
  return out;
}

export function decode(bytes) {
  const u8 = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  const v = new DataView(u8.buffer, u8.byteOffset, u8.byteLength);
  if (u8.length < FIXED + 1) throw new StreamError(`${u8.length} bytes: shorter than a header`);
  const magic = String.fromCharCode(u8[0], u8[1], u8[2], u8[3]);
  if (magic !== "VMFS" || u8[4] !== 1) throw new StreamError("not a v1 stream packet");
  const c = u8[5], target = u8[6], flags = u8[7];
  const n = v.getUint16(26, true);
  const textLen = u8[FIXED];
  const endText = FIXED + 1 + textLen;
  const want = endText + 4 * c + 4 * c * n + Math.ceil(n / 8);
  const phase = u8[44], stim = u8[45];
  if (u8.length !== want || phase >= PHASES.length || stim >= STIM_STATES.length || target >= c) {
    throw new StreamError(`${u8.length} bytes where the header implies ${want}, or a bad code`);
  }
  const text = new TextDecoder("ascii").decode(u8.subarray(FIXED + 1, endText)).split("|");
  if (text.length !== 4) throw new StreamError("bad text field");
  const [session, roles, protocol, patient] = text;
  const channels = roles ? roles.split(",") : [];
  const perChannel = halves(v, endText, 2 * c);
  let at = endText + 4 * c;
  const envelope = [], raw = [];
  for (let ch = 0; ch < c; ch++) envelope.push(halves(v, at + 2 * ch * n, n));
  at += 2 * c * n;
  for (let ch = 0; ch < c; ch++) raw.push(halves(v, at + 2 * ch * n, n));
  at += 2 * c * n;
  const blanked = new Uint8Array(n);
  for (let i = 0; i < n; i++) blanked[i] = (u8[at + (i >> 3)] >> (i & 7)) & 1;
  const ratio = half(v.getUint16(62, true));
  const rate = v.getFloat32(20, true);
  const decimation = v.getUint16(24, true);
  return {
    counter: v.getUint32(8, true),
    firstIndex: Number(v.getBigUint64(12, true)),
    rateHz: rate,
    decimation,
    displayHz: rate / decimation,
    n,
    tSample: v.getFloat64(28, true),
    band: [v.getFloat32(36, true), v.getFloat32(40, true)],
    phase: PHASES[phase],
    stimState: STIM_STATES[stim],
    holdProgress: u8[46] / 200,
    setNo: u8[47],
    sets: u8[48],
    repsDone: v.getUint16(50, true),
    repsTotal: v.getUint16(52, true),
    phaseLeftS: v.getUint16(54, true) / 10,
    gaps: v.getUint16(56, true),
    protocolErrors: v.getUint16(58, true),
    stimBursts: v.getUint16(60, true),
    vmVlRatio: Number.isNaN(ratio) ? null : ratio,
    holding: Boolean(flags & 1),
    linkUp: Boolean(flags & 2),
    session, channels, target, protocol, patient,
    pctMvc: Array.from(perChannel.subarray(0, c)),
    mvcMv: Array.from(perChannel.subarray(c, 2 * c)),
    envelope, raw, blanked,
  };
}
