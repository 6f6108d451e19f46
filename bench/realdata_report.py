"""Agreement tables on real data: `python -m bench.realdata_report [--data ../shared/data]`.

Scores every distinct UCI subject (N_TXT without 2Nsen/2Npie, byte copies of 1Nsen/1Npie: the
development set on which the settings were chosen; A_TXT: held out, reported, never tuned on),
the walking trial, and the synthetic truth per envelope setting; writes
bench/results/realdata.json and bench/results/realdata.md. Per seated file it reports the
project, a naive look-ahead baseline, the old Hodges-Bui switch and the per-file oracle (the
best fixed threshold chosen with the truth), so the reader sees the floor and the ceiling.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from bench import realdata as R
from devices.recording_formats import load_recording

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DUPLICATES = {"2Nsen", "2Npie"}  # byte copies of 1Nsen / 1Npie (the dataset README)


def uci_tables(uci: Path, group: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    subjects = sorted(
        {f.name[: -len("sen.txt.gz")] for f in (uci / f"{group}_TXT").glob("*sen.txt.gz")},
        key=lambda s: int(s[:-1]),
    )
    for sub in subjects:
        if f"{sub}sen" in DUPLICATES:
            continue
        sen = load_recording(uci / f"{group}_TXT" / f"{sub}sen.txt.gz")
        out[f"{sub}sen"] = R.uci_seated(sen)
        first = R.first_contraction(sen)
        unsettled = R.first_contraction(sen, settle=False)["first_vs_others_onset_s"]
        out[f"{sub}sen"].update(first, first_vs_others_onset_s_unsettled=unsettled)
        pie = uci / f"{group}_TXT" / f"{sub}pie.txt.gz"
        if pie.exists():
            cal = R.seated_calibration(sen)
            row = R.uci_standing(load_recording(pie), cal)
            row["seated_calibrated_balanced_accuracy"] = R.uci_seated(sen, calibration=cal)[
                "balanced_accuracy"
            ]
            out[f"{sub}pie"] = row
    return out


def summary(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    sen = [r for r in rows.values() if r["task"] == "sen"]
    pie = [r for r in rows.values() if r["task"] == "pie"]

    def med(key: str, rs: list[dict[str, Any]]) -> float | None:
        # (a file whose first extension has no contraction has no first-contraction figures)
        known = [r[key] for r in rs if r[key] is not None]
        return round(float(np.median(known)), 3) if known else None

    def within(key: str) -> int:
        return sum(r[key] is not None and abs(r[key]) <= R.FIRST_ONSET_BOUND_S for r in sen)

    return {
        "sen_files": len(sen),
        "sen_median_balanced_accuracy": med("balanced_accuracy", sen),
        "sen_median_naive_balanced_accuracy": med("naive_balanced_accuracy", sen),
        "sen_median_hodges_bui_balanced_accuracy": med("hodges_bui_balanced_accuracy", sen),
        "sen_median_oracle_balanced_accuracy": med("oracle_balanced_accuracy", sen),
        "sen_files_count_exact": sum(r["count_exact"] for r in sen),
        "sen_median_spearman_envelope_extension": med("spearman_envelope_extension", sen),
        "sen_median_first_vs_others_onset_s": med("first_vs_others_onset_s", sen),
        "sen_median_first_vs_others_onset_s_unsettled": med(
            "first_vs_others_onset_s_unsettled", sen
        ),
        "sen_median_first_vs_others_duration_s": med("first_vs_others_duration_s", sen),
        "sen_files_first_onset_within_bound": within("first_vs_others_onset_s"),
        "sen_files_first_onset_within_bound_unsettled": within("first_vs_others_onset_s_unsettled"),
        # Settled at its end / could not be / nothing to settle (None: also no first contraction).
        "sen_files_first_settled": [
            sum(r["first_settled"] is v for r in sen) for v in (True, False, None)
        ],
        "pie_files": len(pie),
        "pie_median_vm_active_frac": med("vm_active_frac", pie),
        "pie_median_hodges_bui_vm_active_frac": med("hodges_bui_vm_active_frac", pie),
        "pie_files_vm_active_le_5pct": sum(r["vm_active_frac"] <= 0.05 for r in pie),
    }


SEN_COLS = (
    ("BA project", "balanced_accuracy"),
    ("BA naive", "naive_balanced_accuracy"),
    ("BA Hodges-Bui (old)", "hodges_bui_balanced_accuracy"),
    ("BA oracle", "oracle_balanced_accuracy"),
    ("extensions", "extensions"),
    ("contractions", "vm_contractions"),
    ("exact", "count_exact"),
    ("VM active frac", "active_frac"),
    ("Spearman env~ext", "spearman_envelope_extension"),
)
FIRST_COLS = (
    ("first onset err s", "first_onset_s"),
    ("others onset err s (median)", "others_onset_s"),
    ("first − others onset s", "first_vs_others_onset_s"),
    ("… unsettled (before)", "first_vs_others_onset_s_unsettled"),
    ("first duration err s", "first_duration_s"),
    ("settled", "first_settled"),
    ("first − others duration s", "first_vs_others_duration_s"),
)
PIE_COLS = (
    ("VM active frac (project)", "vm_active_frac"),
    ("VM active frac (Hodges-Bui, old)", "hodges_bui_vm_active_frac"),
    ("seated BA, calibrated", "seated_calibrated_balanced_accuracy"),
    ("flexions", "flexions"),
)
SYN_COLS = (
    ("group delay ms", "group_delay_ms"),
    ("switch latency p50 ms", "detection_latency_ms_p50"),
    ("switch latency p95 ms", "detection_latency_ms_p95"),
    ("onset mark err p50 ms", "marked_onset_error_ms_p50"),
    ("false per 10 min rest", "false_activations_per_10_min_at_rest"),
    ("VM-VL recovered ms (sim 30)", "vm_vl_recovered_ms_p50"),
    ("abs err p95 ms", "vm_vl_abs_error_ms_p95"),
)


def table(
    title: str, rows: dict[str, dict[str, Any]], cols: tuple[tuple[str, str], ...]
) -> list[str]:
    out = [f"### {title}", "", "| " + " | ".join(["file", *(c for c, _ in cols)]) + " |"]
    out.append("|" + "---|" * (len(cols) + 1))
    for name, r in rows.items():
        out.append("| " + " | ".join([name, *(str(r.get(k)) for _, k in cols)]) + " |")
    return [*out, ""]


def markdown(report: dict[str, Any]) -> str:
    lines = ["# Real-data agreement (generated by `python -m bench.realdata_report`)", ""]
    for group, title in (("N", "N_TXT: development set"), ("A", "A_TXT: held out")):
        rows = report.get(f"uci_{group}")
        if not rows:
            continue
        lines += [f"## {title}", ""]
        lines += table("Seated knee extension (sen), no calibration", _task(rows, "sen"), SEN_COLS)
        lines += table(
            "First contraction of the session (sen, uncalibrated, streamed in 20-sample blocks)",
            _task(rows, "sen"),
            FIRST_COLS,
        )
        lines += table(
            "Standing knee flexion (pie), calibrated from the subject's sen trial",
            _task(rows, "pie"),
            PIE_COLS,
        )
        summ = json.dumps(report[f"summary_{group}"], indent=2)
        lines += ["### Summary", "", "```", summ, "```", ""]
    walk = json.dumps(report["walking"], indent=2)
    lines += ["## Walking trial (Santuz ID0012_TW_01)", "", "```", walk, "```", ""]
    lines += table("Synthetic truth per envelope setting", report["synthetic"], SYN_COLS)
    return "\n".join(lines)


def _task(rows: dict[str, dict[str, Any]], task: str) -> dict[str, dict[str, Any]]:
    return {k: r for k, r in rows.items() if r["task"] == task}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.realdata_report")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = p.parse_args()
    fixtures = ROOT / "tests" / "fixtures" / "data"
    report: dict[str, Any] = {}
    uci = args.data / "uci-semg-lower-limb"
    if uci.exists():
        for group in ("N", "A"):
            report[f"uci_{group}"] = uci_tables(uci, group)
            report[f"summary_{group}"] = summary(report[f"uci_{group}"])
    else:
        report["uci_note"] = f"{uci} not found: UCI tables skipped (tests/realdata: fixtures)"
    rec = load_recording(fixtures / "ID0012_TW_01_emg.csv.gz")
    report["walking"] = R.walking(
        rec, [a.onset_s for a in rec.annotations if a.text == "touchdown"]
    )
    report["synthetic"] = {
        k: R.synthetic_truth(R.default_settings(**o), rest_minutes=10.0)
        for k, o in R.ENVELOPE_SETTINGS.items()
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "realdata.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "realdata.md").write_text(markdown(report))
    print(json.dumps({k: v for k, v in report.items() if k.startswith("summary")}, indent=2))


if __name__ == "__main__":
    main()
