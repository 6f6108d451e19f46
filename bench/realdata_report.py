"""Agreement tables on real data: `python -m bench.realdata_report [--data ../shared/data]`.

Runs every UCI file (66: 22 subjects × sen/pie/mar) when the shared data folder is there, the
walking trial, and the synthetic-truth sweep over envelope settings; writes
bench/results/realdata.json and bench/results/realdata.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from bench import realdata as R
from devices.recording_formats import RecordingFormatError, load_recording

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def uci_tables(uci: Path) -> dict[str, Any]:
    files = sorted(uci.glob("*_TXT/*.txt.gz"))
    seated: dict[str, dict[str, Any]] = {}
    out: dict[str, Any] = {}
    for f in files:
        name = f.name.removesuffix(".txt.gz")
        try:
            rec = load_recording(f)
        except RecordingFormatError as exc:
            out[name] = {"error": str(exc)}
            continue
        if name.endswith("sen"):
            seated[name[:-3]] = out[name] = R.uci_seated(rec)
        elif name.endswith("mar"):
            out[name] = {"task": "mar", "note": "gait, no reference labels: not scored"}
    for f in files:
        name = f.name.removesuffix(".txt.gz")
        if name.endswith("pie"):
            mvc = seated.get(name[:-3], {}).get("vm_mvc_mv")
            out[name] = R.uci_standing(load_recording(f), mvc)
    return out


def summary(rows: dict[str, Any]) -> dict[str, Any]:
    sen = [r for r in rows.values() if r.get("task") == "sen"]
    pie = [r for r in rows.values() if r.get("task") == "pie"]

    def med(key: str, rs: list[dict[str, Any]]) -> float | None:
        v = [r[key] for r in rs if r.get(key) is not None]
        return round(float(np.median(v)), 3) if v else None

    return {
        "sen_files": len(sen),
        "sen_median_envelope_angle_r": med("envelope_angle_r", sen),
        "sen_median_f1": med("f1", sen),
        "sen_files_f1_ge_0.8": sum(r["f1"] >= 0.8 for r in sen),
        "pie_files": len(pie),
        "pie_median_vm_below_threshold_frac": med("vm_below_threshold_frac", pie),
        "pie_median_hamstring_burst_frac": med("hamstring_burst_frac", pie),
        "pie_files_vm_below_ge_0.9": sum((r["vm_below_threshold_frac"] or 0) >= 0.9 for r in pie),
    }


SEN_COLS = (
    ("r(env, angle)", "envelope_angle_r"),
    ("lag ms", "angle_lag_ms"),
    ("extensions", "extensions"),
    ("VM contractions", "vm_contractions"),
    ("sens", "sensitivity"),
    ("prec", "precision"),
    ("F1", "f1"),
)
PIE_COLS = (
    ("MVC from", "mvc_source"),
    ("flexions", "flexions"),
    ("VM < 30 % MVC (frac)", "vm_below_threshold_frac"),
    ("VM median % MVC", "vm_median_pct_mvc_in_flexion"),
    ("hamstring bursts", "flexions_with_hamstring_burst"),
    ("ham env move/still", "hamstring_envelope_ratio_move_vs_still"),
)
SYN_COLS = (
    ("group delay ms", "group_delay_ms"),
    ("latency p50 ms", "detection_latency_ms_p50"),
    ("latency p95 ms", "detection_latency_ms_p95"),
    ("onset mark err p50 ms", "marked_onset_error_ms_p50"),
    ("false/min at rest", "false_activations_per_min_at_rest"),
    ("VM-VL recovered ms (sim 30)", "vm_vl_recovered_ms_p50"),
    ("abs err p95 ms", "vm_vl_abs_error_ms_p95"),
)


def table(
    title: str, rows: dict[str, dict[str, Any]], cols: tuple[tuple[str, str], ...]
) -> list[str]:
    out = [f"## {title}", "", "| " + " | ".join(["file", *(c for c, _ in cols)]) + " |"]
    out.append("|" + "---|" * (len(cols) + 1))
    for name, r in rows.items():
        out.append("| " + " | ".join([name, *(str(r.get(k)) for _, k in cols)]) + " |")
    return [*out, ""]


def markdown(report: dict[str, Any]) -> str:
    uci = report.get("uci", {})
    lines = ["# Real-data agreement", ""]
    lines += table(
        "UCI seated knee extension (sen)",
        {k: r for k, r in uci.items() if r.get("task") == "sen"},
        SEN_COLS,
    )
    lines += table(
        "UCI standing knee flexion (pie)",
        {k: r for k, r in uci.items() if r.get("task") == "pie"},
        PIE_COLS,
    )
    lines += ["## Summary", "", "```", json.dumps(report.get("summary", {}), indent=2), "```", ""]
    lines += [
        "## Walking trial (Santuz ID0012_TW_01)",
        "",
        "```",
        json.dumps(report["walking"], indent=2),
        "```",
        "",
    ]
    lines += table("Synthetic truth per envelope setting", report["synthetic"], SYN_COLS)
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.realdata_report")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = p.parse_args()
    fixtures = ROOT / "tests" / "fixtures" / "data"
    report: dict[str, Any] = {}
    uci = args.data / "uci-semg-lower-limb"
    if uci.exists():
        report["uci"] = uci_tables(uci)
        report["summary"] = summary(report["uci"])
    else:
        report["uci_note"] = (
            f"{uci} not found: UCI table skipped (tests/realdata covers the fixtures)"
        )
    rec = load_recording(fixtures / "ID0012_TW_01_emg.csv.gz")
    report["walking"] = R.walking(
        rec, [a.onset_s for a in rec.annotations if a.text == "touchdown"]
    )
    report["synthetic"] = {
        k: R.synthetic_truth(R.default_settings(**o)) for k, o in R.ENVELOPE_SETTINGS.items()
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "realdata.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "realdata.md").write_text(markdown(report))
    print(json.dumps(report.get("summary", {}), indent=2))


if __name__ == "__main__":
    main()
