"""How counted contractions and reps read in the report, the session log and session messages.

One dict per contraction for every output (JSON report, `contraction` event, session log):
the fields of `Contraction`, plus `peak` / `mean` in `level_unit`: % MVC when a calibration is
in use, else the envelope in mV (a % of a placeholder MVC means nothing; `peak_pct` and
`mean_pct` stay for the v1 message contract, which requires them, and `calibrated` says
whether to trust them).

`reps` is None when no protocol with reps was followed (free practice, a replay): never 0.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from feedback.processing.metrics import Contraction

# Cue kinds the v1 message contract knows (feedback/clinic/schemas/cue.json); any other kind
# stays in the local session log and the station's own views.
CONTRACT_V1_CUE_KINDS = frozenset({"phase", "zone", "rep", "quality", "calibration"})


def contraction_metrics(c: Contraction) -> dict[str, Any]:
    out: dict[str, Any] = {
        k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(c).items()
    }
    pct = c.calibrated
    out["level_unit"] = "% MVC" if pct else "mV"
    out["peak"] = out["peak_pct"] if pct else out["peak_mv"]
    out["mean"] = out["mean_pct"] if pct else out["mean_mv"]
    return out
