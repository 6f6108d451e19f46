"""The page's stream decoder (web/lib/stream.js) against the Python one, on outside bytes.

The documented hex example and packets of every shape decode to the same values in the browser
as in feedback.outputs.stream; truncated, extended or corrupted packets raise the decoder's own
StreamError in the page (a typed error the page counts), never anything else.
"""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np

from feedback.outputs.stream import StreamError, StreamPacket, decode, encode
from feedback.web.server import WebServer
from tests.dashboard.test_remote import doc_example
from tests.web.conftest import open_page

DECODE = """async (hexes) => {
  const { decode } = await import('./lib/stream.js');
  return hexes.map((hex) => {
    const bytes = new Uint8Array(hex.match(/../g).map((h) => parseInt(h, 16)));
    try {
      const p = decode(bytes);
      return { ok: true, counter: p.counter, first: p.firstIndex, session: p.session,
               channels: p.channels, phase: p.phase, stim: p.stimState, reps: p.repsDone,
               left: p.phaseLeftS, band: p.band, ratio: p.vmVlRatio, pct: p.pctMvc,
               env: p.envelope.map((c) => Array.from(c)), blanked: Array.from(p.blanked),
               holding: p.holding, tSample: p.tSample };
    } catch (e) {
      return { ok: false, error: e.constructor.name };
    }
  });
}"""


def random_packet(rng: random.Random) -> StreamPacket:
    c, n = rng.randint(1, 4), rng.randint(0, 40)
    return StreamPacket(
        counter=rng.randint(1, 2**32 - 1), first_index=rng.randint(0, 2**40),
        rate_hz=2000.0, decimation=10, t_sample=1.79e9 + rng.random(),
        session=f"S-{rng.randint(0, 999)}", channels=tuple(f"C{i}" for i in range(c)),
        target=rng.randrange(c), protocol="demo", patient="P-0001",
        band=(float(rng.randint(0, 50)), float(rng.randint(51, 100))),
        phase=rng.choice(["ready", "work", "rest", "done", "calibrating"]),
        holding=rng.random() < 0.5, link_up=True, hold_progress=rng.random(), set_no=1,
        sets=1, reps_done=rng.randint(0, 60), reps_total=60, phase_left_s=rng.random() * 30,
        gaps=0, protocol_errors=0, stim_state=rng.choice(["off", "armed", "stimulating", "estop"]),
        stim_bursts=0, vm_vl_ratio=None if rng.random() < 0.3 else rng.random() * 2,
        pct_mvc=tuple(rng.random() * 120 for _ in range(c)), mvc_mv=(0.5,) * c,
        envelope=np.asarray([[rng.random() for _ in range(n)] for _ in range(c)], np.float16),
        raw=np.zeros((c, n), np.float16),
        blanked=np.asarray([rng.random() < 0.2 for _ in range(n)]),
    )  # fmt: skip


def same(js: dict[str, Any], data: bytes) -> None:
    p = decode(data)
    assert js["ok"], js
    assert (js["counter"], js["first"], js["session"], tuple(js["channels"])) == (
        p.counter, p.first_index, p.session, p.channels)  # fmt: skip
    assert (js["phase"], js["stim"], js["reps"], js["holding"]) == (
        p.phase, p.stim_state, p.reps_done, p.holding)  # fmt: skip
    assert math.isclose(js["left"], p.phase_left_s) and js["tSample"] == p.t_sample
    assert tuple(js["band"]) == p.band
    assert (js["ratio"] is None) == (p.vm_vl_ratio is None)
    if p.vm_vl_ratio is not None:
        assert math.isclose(js["ratio"], p.vm_vl_ratio, rel_tol=1e-6)
    assert np.allclose(js["pct"], p.pct_mvc) and np.allclose(np.asarray(js["env"]).reshape(
        p.envelope.shape), p.envelope.astype(float))  # fmt: skip
    assert [bool(b) for b in js["blanked"]] == p.blanked.tolist()


async def test_page_decoder_agrees_with_python_and_refuses_bad_bytes(browser: Any) -> None:
    rng = random.Random(14)
    good = [doc_example()] + [encode(random_packet(rng)) for _ in range(60)]
    bad: list[bytes] = []
    for data in good[:30]:
        cut = rng.randrange(len(data))
        bad += [data[:cut], data + b"\x00", bytearray(data)]
        flipped = bad[-1]
        assert isinstance(flipped, bytearray)
        flipped[rng.choice([0, 4, 5, 6, 26, 44, 45, 64])] ^= 0xFF  # magic, version, sizes, codes
    async with WebServer() as web:
        page = await open_page(browser, f"{web.url}/index.html")
        decoded = await page.evaluate(DECODE, [d.hex() for d in good])
        for js, data in zip(decoded, good, strict=True):
            same(js, data)
        refused = await page.evaluate(DECODE, [bytes(d).hex() or "00" for d in bad])
    for js, data in zip(refused, bad, strict=True):
        try:
            decode(bytes(data))
        except (StreamError, UnicodeDecodeError, ValueError):
            assert js == {"ok": False, "error": "StreamError"} or not js["ok"], js
            continue
        assert js["ok"], js  # a corruption Python accepts (e.g. a flipped value) the page does too
    assert sum(not js["ok"] for js in refused) >= 60
    assert all(js.get("error") in (None, "StreamError") for js in refused), refused
