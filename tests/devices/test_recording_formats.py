"""Readers for the real EMG recordings (devices/recording_formats.py).

The fixtures in tests/fixtures/data are gzipped copies of real files (see its README.md); the
expected numbers come from the datasets' own READMEs (shared/data/*/README.md).
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.recording_formats import (
    Annotation,
    Recording,
    RecordingFormatError,
    load_recording,
    select_channels,
)

DATA = Path(__file__).resolve().parents[1] / "fixtures" / "data"
UCI_CHANNELS = ("RF", "BF", "VM", "ST", "FX")
UCI_UNITS = ("mV", "mV", "mV", "mV", "deg")
SANTUZ_MUSCLES = ("ME", "MA", "FL", "RF", "VM", "VL", "ST", "BF", "TA", "PL", "GM", "GL", "SO")

# file -> header variant, EMG samples, FX min..max (deg), RMS RF/BF/VM/ST (mV, mean removed):
# all from the table in uci-semg-lower-limb/README.md.
UCI_TABLE = {
    "4Nsen": ("A", 15601, (-84.3, -3.2), (0.0663, 0.0072, 0.0876, 0.0231)),
    "4Npie": ("A", 13820, (-130.0, -2.9), (0.0093, 0.0858, 0.0125, 0.0337)),
    "7Nmar": ("B", 8147, (0.9, 61.5), (0.0764, 0.0268, 0.0918, 0.0928)),
    "11Asen": ("B", 25302, (0.4, 80.8), (0.0309, 0.0319, 0.0975, 0.0130)),
    "1Nmar": ("A", 5681, (1.3, 62.6), (0.0168, 0.0086, 0.0264, 0.0112)),
    "7Npie": ("A", 15941, (-83.9, -1.1), (0.0060, 0.0212, 0.0118, 0.0462)),
}


def uci(name: str) -> Recording:
    return load_recording(DATA / f"{name}.txt.gz")


def uci_text(name: str, n_rows: int) -> str:
    """The first 7 header lines and n_rows data rows of a real UCI file, CRLF kept."""
    with gzip.open(DATA / f"{name}.txt.gz", "rb") as fh:
        lines = fh.read().decode("latin-1").split("\r\n")
    return "\r\n".join(lines[: 7 + n_rows]) + "\r\n\t\t\t\t\r\n"


def raises_at(path: Path, line: int | None, *words: str, **kwargs: object) -> RecordingFormatError:
    with pytest.raises(RecordingFormatError) as info:
        load_recording(path, **kwargs)  # type: ignore[arg-type]
    err = info.value
    assert err.line == line, str(err)
    assert err.path == str(path)
    for w in words:
        assert w in err.reason, str(err)
    where = f"{path}, line {line}: " if line is not None else f"{path}: "
    assert str(err).startswith(where)
    assert "Traceback" not in str(err) and "numpy" not in str(err)
    return err


# ------------------------------------------------------------------------------- UCI


@pytest.mark.parametrize("name", list(UCI_TABLE))
def test_uci_fixture_matches_dataset_readme(name: str) -> None:
    variant, n_emg, (fx_lo, fx_hi), rms = UCI_TABLE[name]
    rec = uci(name)
    assert rec.rate_hz == 1000.0
    assert rec.channels == UCI_CHANNELS
    assert rec.units == UCI_UNITS
    assert rec.data.dtype == np.float32 and rec.data.shape == (5, n_emg)
    assert rec.n_samples == n_emg and rec.duration_s == pytest.approx(n_emg / 1000)
    assert rec.t0_s == 0.0 and rec.annotations == ()
    assert np.isfinite(rec.data).all()
    assert f"header variant {variant}" in rec.source and str(DATA / name) in rec.source
    emg = rec.data[:4].astype(np.float64)
    np.testing.assert_allclose(emg.std(axis=1), rms, atol=6e-5)
    assert float(rec.data[4].min()) == pytest.approx(fx_lo, abs=0.051)
    assert float(rec.data[4].max()) == pytest.approx(fx_hi, abs=0.051)
    assert np.abs(emg).max() < 2.0  # README: largest |EMG| in the whole set is 1.97 mV
    assert "dropped 1 trailing empty row(s)" in rec.warnings  # oddity 1: every file
    assert not rec.data.flags.writeable


def test_uci_1nmar_trailing_fx_only_rows_and_stray_volt_sign() -> None:
    rec = uci("1Nmar")  # oddities 2 and 4
    assert rec.n_samples == 5681
    assert any(w.startswith("dropped 19 trailing FX-only rows") for w in rec.warnings)
    assert "line 5690: non-numeric FX cell '7.5V' in a trailing FX-only row, ignored" in (
        rec.warnings
    )


@pytest.mark.parametrize(("name", "line", "fx"), [("4Nsen", 15608, -80.6), ("7Npie", 15948, -1.1)])
def test_uci_last_emg_row_without_fx_is_kept(name: str, line: int, fx: float) -> None:
    rec = uci(name)  # oddity 3: the row is kept, FX repeats the previous value
    assert f"line {line}: last EMG row has no FX value; repeated the previous one ({fx})" in (
        rec.warnings
    )
    assert rec.data[4, -1] == rec.data[4, -2] == pytest.approx(fx)
    assert rec.data[2, -1] == pytest.approx({"4Nsen": 0.0067, "7Npie": 0.0052}[name])


def test_uci_7npie_vm_dc_offset_is_kept() -> None:
    # oddity 8: the reader does not filter; the ~-0.016 mV VM offset is the processing's job.
    assert float(uci("7Npie").data[2].mean()) == pytest.approx(-0.016, abs=0.002)


def test_uci_spanish_header_with_digital_column() -> None:
    rec = uci("11Asen")  # 8 header lines, 'Recto femoral' ... 'Flexo' + "Digitals combined"
    assert "header variant B, with digital-event column" in rec.source
    assert any("'Digitals combined' event column" in w and "31" in w for w in rec.warnings)
    assert rec.data[:, 0] == pytest.approx([-0.0008, -0.0015, -0.0008, -0.0015, 78.7], abs=1e-6)


def test_uci_variant_b_file_name_is_logged() -> None:
    assert "File Name: 7Nmar.log" in uci("7Nmar").source


def test_uci_plain_and_gzip_give_the_same_recording(tmp_path: Path) -> None:
    plain = tmp_path / "4Npie.txt"
    plain.write_bytes(gzip.decompress((DATA / "4Npie.txt.gz").read_bytes()))
    a, b = load_recording(plain), uci("4Npie")
    np.testing.assert_array_equal(a.data, b.data)
    assert a.warnings == b.warnings


def held(text: list[str], tmp_path: Path) -> Recording:
    bad = tmp_path / "bad.txt"
    bad.write_bytes("\r\n".join(text).encode("latin-1"))
    return load_recording(bad)


def test_uci_bad_emg_cell_is_held_and_the_rows_around_it_kept(tmp_path: Path) -> None:
    """A typo in one cell costs that cell, not the file (issue 16): the rows before and after
    are read as written, the bad cell holds its column's previous value, and the warning
    names the line, the column and the cell."""
    text = uci_text("4Nsen", 30).split("\r\n")
    good = held(text, tmp_path)
    cells = text[19].split("\t")
    cells[2] = "0.0O45"  # letter O typed for a zero, in VM (line 20 = data row 12)
    text[19] = "\t".join(cells)
    rec = held(text, tmp_path)
    assert rec.n_samples == good.n_samples == 30
    row = 20 - 8  # header lines 1-6, blank line 7: line 8 is row 0
    np.testing.assert_array_equal(np.delete(rec.data, row, axis=1), np.delete(good.data, row, 1))
    vm = rec.channels.index("VM")
    assert rec.data[vm, row] == good.data[vm, row - 1]  # held
    assert rec.data[vm, row] != good.data[vm, row]  # negative control: the value really changed
    (warning,) = [w for w in rec.warnings if "bad row" in w]
    assert "1 bad row" in warning and "line 20" in warning and "'0.0O45'" in warning


@pytest.mark.parametrize(
    ("edit", "lines", "words"),
    [
        (lambda t: [*t[:15], "\t\t\t\t", *t[15:]], [16], ("RF value empty",)),
        (lambda t: [*t[:15], "\t\t\t\t12.5", *t[15:]], [16], ("RF value empty",)),
        (lambda t: [*t[:12], "0.1\t\t0.2\t0.3\t5.0", *t[13:]], [13], ("BF value empty",)),
        (lambda t: [*t[:12], "0.1\t0.1\t0.2\t0.3\t", *t[13:]], [13], ("FX value empty",)),
        (lambda t: [*t[:10], "\t\t\t\t", "\t\t\t\t", *t[10:]], [11, 12], ("RF value empty",)),
    ],
)  # fmt: skip
def test_uci_bad_rows_inside_the_data_are_held_and_counted(
    tmp_path: Path, edit: object, lines: list[int], words: tuple[str, ...]
) -> None:
    text = uci_text("4Npie", 20).split("\r\n")
    edited = edit(text)  # type: ignore[operator]
    rec = held(edited, tmp_path)
    assert rec.n_samples == 20 + len(edited) - len(text)  # every row kept: no time shift
    (warning,) = [w for w in rec.warnings if "bad row" in w]
    assert f"{len(lines)} bad row" in warning
    assert all(f"line {n}:" in warning for n in lines) and all(w in warning for w in words)


def test_csv_bad_signal_cells_are_held_and_the_rows_after_kept(tmp_path: Path) -> None:
    """A typo deep in a long CSV (past the first batch) costs that cell: every row after it is
    read, the cell holds the previous value, and the warning names the line (issue 16)."""
    rows = [f"{i / 1000:.3f},{i % 5},{i % 3}" for i in range(20_000)]
    rows[15_000] = "15.000,x,"  # VM a typo, VL empty
    f = tmp_path / "typo.csv"
    f.write_text("time,VM,VL\n" + "\n".join(rows) + "\n")
    rec = load_recording(f)
    assert rec.n_samples == 20_000  # negative control of the old reader: it stopped at 15000
    want = np.stack([np.arange(20_000) % 5, np.arange(20_000) % 3]).astype(np.float32)
    want[:, 15_000] = want[:, 14_999]
    np.testing.assert_array_equal(rec.data, want)
    (warning,) = [w for w in rec.warnings if "bad row" in w]
    assert "1 bad row" in warning and "line 15002: VM value 'x' is not a number" in warning


def test_uci_too_many_bad_rows_refuse_the_file(tmp_path: Path) -> None:
    """Negative control for the holding: a file that is mostly broken is not papered over."""
    text = uci_text("4Npie", 40).split("\r\n")
    text[8:40] = ["0.1\tx\t0.2\t0.3\t5"] * 32
    bad = tmp_path / "broken.txt"
    bad.write_text("\r\n".join(text), encoding="latin-1")
    raises_at(bad, 9, "too many to hold", "BF value")


@pytest.mark.parametrize(
    ("edit", "line", "words"),
    [
        (lambda t: [*t[:7], "0.1\t\t0.2\t0.3\t5.0", *t[8:]], 8, ("missing BF value",)),
        (lambda t: [*t[:12], "0.1\t0.1\t0.2\t0.3\t5\t9", *t[13:]], 13, ("6 columns",)),
        (lambda t: [*t[:12], "0.1\t0.1\tnan\t0.3\t5", *t[13:]], 13, ("VM", "not a finite")),
        (lambda t: [*t[:12], "0.1\t0.1\t1e300\t0.3\t5", *t[13:]], 13, ("VM", "out of range")),
        (lambda t: [t[0], t[1], "Channel 2: 'XX', 5 values, engineering units: mV", *t[3:]], 3,
         ("unknown channel 'XX'",)),
        (lambda t: [*t[:7], ""], 7, ("no EMG data rows",)),
    ],
)  # fmt: skip
def test_uci_structural_errors_name_the_line(
    tmp_path: Path, edit: object, line: int, words: tuple[str, ...]
) -> None:
    lines = uci_text("4Npie", 20).split("\r\n")
    bad = tmp_path / "broken.txt"
    bad.write_text("\r\n".join(edit(lines)), encoding="latin-1")  # type: ignore[operator]
    raises_at(bad, line, *words)


def test_uci_rejects_conflicting_rate_or_units() -> None:
    with pytest.raises(RecordingFormatError, match="1000 Hz but rate_hz=2000"):
        load_recording(DATA / "7Nmar.txt.gz", rate_hz=2000)
    with pytest.raises(ValueError, match="declare their units"):
        load_recording(DATA / "7Nmar.txt.gz", units="uV")
    assert load_recording(DATA / "7Nmar.txt.gz", rate_hz=1000, units="mV").n_samples == 8147


# ------------------------------------------------------------------------------- santuz


def test_santuz_walking_trial() -> None:
    rec = load_recording(DATA / "ID0012_TW_01_emg.csv.gz")
    assert rec.rate_hz == 1000.0
    assert rec.t0_s == pytest.approx(0.014)
    assert rec.channels == SANTUZ_MUSCLES
    assert rec.units == ("mV",) * 13
    assert rec.data.shape == (13, 7618) and rec.data.dtype == np.float32
    assert "santuz" in rec.source and "units uV" in rec.source
    assert any("assumed µV" in w for w in rec.warnings)
    vm = rec.data[SANTUZ_MUSCLES.index("VM")].astype(np.float64)
    assert np.sqrt(np.mean(vm**2)) == pytest.approx(0.02097, rel=0.01)  # README: 20.97 µV
    touchdowns = [a for a in rec.annotations if a.text == "touchdown"]
    liftoffs = [a for a in rec.annotations if a.text == "liftoff"]
    assert len(touchdowns) == 6 and len(liftoffs) == 6
    assert touchdowns[0] == Annotation(1.414, 0.0, "touchdown")
    assert liftoffs[-1].onset_s == pytest.approx(7.249)
    assert [a.onset_s for a in rec.annotations] == sorted(a.onset_s for a in rec.annotations)
    assert all(rec.t0_s <= a.onset_s <= rec.t0_s + rec.duration_s for a in rec.annotations)


def test_santuz_units_override_and_missing_cycles(tmp_path: Path) -> None:
    lone = tmp_path / "ID0012_TW_01_emg.csv.gz"
    shutil.copy(DATA / "ID0012_TW_01_emg.csv.gz", lone)
    rec = load_recording(lone, units="mV")
    assert rec.annotations == ()
    assert any("no ID0012_TW_01_cycles.csv" in w for w in rec.warnings)
    assert not any("assumed µV" in w for w in rec.warnings)
    vm = rec.data[SANTUZ_MUSCLES.index("VM")].astype(np.float64)
    assert np.sqrt(np.mean(vm**2)) == pytest.approx(20.97, rel=0.01)


def test_santuz_broken_cycles_file_names_it(tmp_path: Path) -> None:
    shutil.copy(DATA / "ID0012_TW_01_emg.csv.gz", tmp_path / "X_emg.csv.gz")
    cycles = tmp_path / "X_cycles.csv"
    cycles.write_text("touchdown_s,liftoff_s\n1.414,2.074\n2.448;3.115\n")
    with pytest.raises(RecordingFormatError) as info:
        load_recording(tmp_path / "X_emg.csv.gz")
    assert info.value.path == str(cycles) and info.value.line == 3


# ------------------------------------------------------------------------------- generic CSV


def test_generic_csv_with_time_column_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    uv = np.round(rng.normal(0.0, 40.0, (2, 500)), 3)
    t = 2.5 + np.arange(500) / 2000.0
    f = tmp_path / "session.csv"
    rows = [f"{ti:.4f};{a};{b}" for ti, a, b in zip(t, uv[0], uv[1], strict=True)]
    f.write_text("Time;VM;VL\n" + "\n".join(rows) + "\n\n")
    rec = load_recording(f, units="uV")
    assert rec.rate_hz == 2000.0 and rec.t0_s == pytest.approx(2.5)
    assert rec.channels == ("VM", "VL") and rec.units == ("mV", "mV")
    np.testing.assert_allclose(rec.data, (uv / 1000).astype(np.float32), rtol=1e-6)
    assert "';'-separated" in rec.source
    assert "dropped 1 trailing empty row(s)" in rec.warnings


def test_generic_tsv_without_time_needs_rate(tmp_path: Path) -> None:
    f = tmp_path / "vm.tsv"
    f.write_text("VM\tVL\n0.5\t-0.25\n1\t2\n1e-3\t-4E-3\n")
    err = raises_at(f, 1, "no time column", "rate_hz")
    assert "time, t, time_s, t_s, timestamp" in err.reason and "?rate=HZ" in err.reason
    rec = load_recording(f, rate_hz=1500)
    assert rec.rate_hz == 1500 and rec.t0_s == 0.0
    np.testing.assert_array_equal(
        rec.data, np.array([[0.5, 1, 1e-3], [-0.25, 2, -4e-3]], dtype=np.float32)
    )
    volts = load_recording(f, rate_hz=1500, units="V")
    assert volts.data[0, 0] == pytest.approx(500.0)


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.lists(st.floats(-5.0, 5.0, allow_nan=False, width=32), min_size=3, max_size=3),
        min_size=1,
        max_size=40,
    ),
    st.sampled_from([",", "\t", ";"]),
)
def test_generic_csv_property_round_trip(rows: list[list[float]], delim: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "x.csv"
        body = "\n".join(delim.join(repr(v) for v in r) for r in rows)
        f.write_text(delim.join(["a", "b", "c"]) + "\n" + body + "\n")
        rec = load_recording(f, rate_hz=1000)
    np.testing.assert_array_equal(rec.data, np.array(rows, dtype=np.float32).T)


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("time,VM\n0.000,1\n0.001,2\n0.002\n0.003,4\n", 4, ("1 value,", "names 2 columns")),
        ("time,VM\n0.000,1\nx,2\n", 3, ("time value 'x' is not a number",)),
        ("time,VM\n0.000,1\n,2\n", 3, ("empty time value",)),
        ("time,VM\n0.000,1\n\n0.001,2\n", 3, ("empty row inside the data",)),
        ("time,VM\n" + "".join(f"{i / 1000:.3f},{i}\n" for i in range(10) if i != 6), 8,
         ("time step breaks", "0.005 -> 0.007")),
        ("time,VM\n0.000,1\n0.001,2\n0.001,3\n", 4, ("backwards or repeats",)),
        ("time,VM\n0.000,1\n0.001,2\n0.003,3\n", 4, ("time step breaks", "0.001 -> 0.003")),
        ("0.1,0.2\n0.3,0.4\n", 1, ("header row",)),
        ("VM,VM\n1,2\n", 1, ("repeated column name",)),
        ("time,VM\n", 1, ("no data rows",)),
        ("time\n0.0\n0.001\n", 1, ("only a time column",)),
        ("t;VM\n0;1,5\n0,001;2,5\n", 2, ("decimal commas",)),
    ],
)  # fmt: skip
def test_generic_csv_errors_name_the_line(
    tmp_path: Path, text: str, line: int, words: tuple[str, ...]
) -> None:
    f = tmp_path / "broken.csv"
    f.write_text(text)
    raises_at(f, line, *words)


def test_time_column_conflicting_with_rate_hz(tmp_path: Path) -> None:
    f = tmp_path / "t.csv"
    f.write_text("t,VM\n0.0,1\n0.001,2\n0.002,3\n")
    raises_at(f, None, "1000 Hz but rate_hz=2000", rate_hz=2000)
    assert load_recording(f, rate_hz=1000).rate_hz == 1000


def test_csv_tolerates_crlf_trailing_delimiter_latin1_and_bom(tmp_path: Path) -> None:
    f = tmp_path / "export.csv"
    f.write_bytes("timestamp,VM (µV),\r\n0.5,1,\r\n0.501,2,\r\n".encode("latin-1"))
    rec = load_recording(f, units="uV")
    assert rec.channels == ("VM (µV)",) and rec.rate_hz == 1000 and rec.t0_s == 0.5
    assert rec.data[0].tolist() == pytest.approx([0.001, 0.002])
    assert "not valid UTF-8; decoded as Latin-1" in rec.warnings
    g = tmp_path / "bom.csv"
    g.write_bytes("time,VM\n0,1\n0.001,2\n".encode("utf-8-sig"))
    assert load_recording(g).channels == ("VM",)


# ------------------------------------------------------------------------------- EDF+ / BDF+


def write_edf(path: Path, *, bdf: bool = False, vl_rate: int = 1000) -> list[np.ndarray]:
    """VM in uV, VL in mV, a knee angle (all at 1000 Hz unless vl_rate), an accelerometer at
    100 Hz and two annotations. Returns the expected VM, VL (mV) and knee (deg) signals."""
    pyedflib = pytest.importorskip("pyedflib")
    rng = np.random.default_rng(3)
    vm_uv = rng.normal(0.0, 50.0, 3000)
    vl_mv = rng.normal(0.0, 0.08, 3000 * vl_rate // 1000)
    knee = np.linspace(0.0, 90.0, 3000)
    acc = np.zeros(300)
    ftype = pyedflib.FILETYPE_BDFPLUS if bdf else pyedflib.FILETYPE_EDFPLUS
    dmin, dmax = (-8388608, 8388607) if bdf else (-32768, 32767)
    heads = [
        ("EMG VM", "uV", 1000, 5000.0),
        ("EMG VL", "mV", vl_rate, 5.0),
        ("Knee", "deg", 1000, 180.0),
        ("Acc", "g", 100, 8.0),
    ]
    w = pyedflib.EdfWriter(str(path), len(heads), file_type=ftype)
    try:
        w.setSignalHeaders(
            [
                {"label": lb, "dimension": dim, "sample_frequency": fs, "physical_min": -pm,
                 "physical_max": pm, "digital_min": dmin, "digital_max": dmax}
                for lb, dim, fs, pm in heads
            ]
        )  # fmt: skip
        w.writeSamples([vm_uv, vl_mv, knee, acc])
        w.writeAnnotation(1.25, 0.5, "VM burst")
        w.writeAnnotation(2.0, -1, "touchdown")
    finally:
        w.close()
    return [vm_uv / 1000.0, vl_mv, knee]


@pytest.mark.parametrize("bdf", [False, True])
def test_edf_plus_round_trip(tmp_path: Path, bdf: bool) -> None:
    f = tmp_path / ("rec.bdf" if bdf else "rec.edf")
    expected = write_edf(f, bdf=bdf)
    rec = load_recording(f)
    assert rec.rate_hz == 1000.0 and rec.t0_s == 0.0
    assert rec.channels == ("EMG VM", "EMG VL", "Knee")
    assert rec.units == ("mV", "mV", "deg")
    assert rec.data.shape == (3, 3000)
    resolution = 2 * np.array([5.0, 5.0, 180.0]) / (2**24 if bdf else 2**16)  # mV, mV, deg
    for got, want, res in zip(rec.data, expected, resolution, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=res)
    assert rec.annotations == (
        Annotation(1.25, 0.5, "VM burst"),
        Annotation(2.0, 0.0, "touchdown"),
    )
    assert any("dropped signal 'Acc'" in w for w in rec.warnings)
    assert ("BDF+" if bdf else "EDF+") in rec.source


def test_edf_gzipped(tmp_path: Path) -> None:
    f = tmp_path / "rec.edf"
    write_edf(f)
    gz = tmp_path / "rec.edf.gz"
    gz.write_bytes(gzip.compress(f.read_bytes()))
    np.testing.assert_array_equal(load_recording(gz).data, load_recording(f).data)


def test_edf_emg_rate_mismatch_names_the_signals(tmp_path: Path) -> None:
    f = tmp_path / "mixed.edf"
    write_edf(f, vl_rate=2000)
    raises_at(f, None, "different sample rates", "EMG VM 1000 Hz", "EMG VL 2000 Hz")


def test_edf_named_file_that_is_not_edf(tmp_path: Path) -> None:
    f = tmp_path / "fake.edf"
    f.write_text("time,VM\n0,1\n")
    raises_at(f, 1, "does not start with an EDF/BDF header")
    g = tmp_path / "corrupt.edf"
    g.write_bytes(b"0       " + bytes(range(256)) * 4)
    raises_at(g, None, "not a readable EDF/BDF file")


# ------------------------------------------------------------------------------- junk input


def test_empty_and_blank_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    raises_at(empty, None, "empty")
    blank = tmp_path / "blank.txt.gz"
    blank.write_bytes(gzip.compress(b"\r\n\r\n"))
    raises_at(blank, None, "empty", "after gunzip")


def test_binary_garbage(tmp_path: Path) -> None:
    junk = tmp_path / "junk.csv"
    data = bytearray(np.random.default_rng(1).integers(1, 256, 4000, dtype=np.uint8).tobytes())
    data[:40] = b"time,VM\n0.000,1\n0.001,2\n0.002,3\n0.003,4\n"
    data[1000] = 0
    junk.write_bytes(bytes(data))
    err = raises_at(junk, bytes(data[:1000]).count(b"\n") + 1, "binary data")
    assert "offset 1000" in err.reason


def test_wrong_encoding_utf16_without_bom(tmp_path: Path) -> None:
    f = tmp_path / "utf16.csv"
    f.write_bytes("time,VM\n0,1\n".encode("utf-16-le"))
    raises_at(f, 1, "binary data", "encoding")


def test_utf16_with_bom_is_read(tmp_path: Path) -> None:
    f = tmp_path / "excel.txt"
    f.write_bytes("VM\tVL\r\n0.1\t0.2\r\n".encode("utf-16"))
    rec = load_recording(f, rate_hz=1000)
    assert rec.channels == ("VM", "VL") and "decoded as UTF-16 (byte-order mark)" in rec.warnings


def test_corrupt_gzip(tmp_path: Path) -> None:
    f = tmp_path / "cut.txt.gz"
    f.write_bytes((DATA / "7Nmar.txt.gz").read_bytes()[:5000])
    raises_at(f, None, "gzip")


def test_bad_arguments_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown fmt"):
        load_recording(DATA / "7Nmar.txt.gz", fmt="xls")
    with pytest.raises(ValueError, match="unknown units"):
        load_recording(DATA / "7Nmar.txt.gz", units="furlongs")
    with pytest.raises(ValueError, match="rate_hz must be"):
        load_recording(DATA / "7Nmar.txt.gz", rate_hz=0)
    with pytest.raises(FileNotFoundError):
        load_recording(tmp_path / "nope.csv")


def test_forced_format_on_the_wrong_file() -> None:
    err = raises_at(DATA / "ID0012_TW_01_emg.csv.gz", 1, "not a UCI file", fmt="uci")
    assert "File Name" in err.reason


def test_error_pickles_and_reads_well() -> None:
    err = RecordingFormatError("/data/p01.txt", "VM value 'x' is not a number", 12)
    again = pickle.loads(pickle.dumps(err))
    assert (again.path, again.line, again.reason) == ("/data/p01.txt", 12, err.reason)
    assert str(again) == "/data/p01.txt, line 12: VM value 'x' is not a number"
    assert str(RecordingFormatError("a.csv", "empty")) == "a.csv: empty"
    assert isinstance(err, ValueError)


# ------------------------------------------------------------------------------- select_channels


def test_select_channels_maps_roles() -> None:
    rec = load_recording(DATA / "ID0012_TW_01_emg.csv.gz")
    sel = select_channels(rec, {"VM": "VM", "VL": "vl"})  # case-insensitive fallback
    assert sel.channels == ("VM", "VL") and sel.units == ("mV", "mV")
    np.testing.assert_array_equal(sel.data[0], rec.data[SANTUZ_MUSCLES.index("VM")])
    np.testing.assert_array_equal(sel.data[1], rec.data[SANTUZ_MUSCLES.index("VL")])
    assert (sel.rate_hz, sel.t0_s, sel.annotations) == (rec.rate_hz, rec.t0_s, rec.annotations)
    assert not sel.data.flags.writeable
    knee = select_channels(uci("4Nsen"), {"vm": "VM", "knee": "FX"})
    assert knee.channels == ("vm", "knee") and knee.units == ("mV", "deg")


def test_select_channels_error_lists_available_names() -> None:
    rec = uci("4Nsen")
    with pytest.raises(RecordingFormatError) as info:
        select_channels(rec, {"VM": "VM", "VL": "VL", "ref": "EMG VL"})
    msg = str(info.value)
    assert "'VL'" in msg and "'EMG VL' (for ref)" in msg
    assert "available channels: RF, BF, VM, ST, FX" in msg
    assert "4Nsen.txt.gz" in msg
    with pytest.raises(ValueError, match="mapping is empty"):
        select_channels(rec, {})


def test_recording_validates_its_shape() -> None:
    with pytest.raises(ValueError, match="same length"):
        Recording(1000.0, ("VM",), ("mV", "mV"), np.zeros((1, 4), np.float32), 0.0, (), "x", ())
    with pytest.raises(ValueError, match="float32"):
        Recording(1000.0, ("VM",), ("mV",), np.zeros((1, 4)), 0.0, (), "x", ())  # type: ignore[arg-type]


def test_fixture_checksums_match_the_readme() -> None:
    listed = dict(
        re.findall(
            r"^\| `([\w.]+\.gz)` \|.*\| `([0-9a-f]{64})` \|", (DATA / "README.md").read_text(), re.M
        )
    )
    on_disk = {p.name for p in DATA.glob("*.gz")}
    assert set(listed) == on_disk and len(on_disk) == 9
    for name, sha in listed.items():
        assert hashlib.sha256(gzip.decompress((DATA / name).read_bytes())).hexdigest() == sha, name


# ------------------------------------------------------------------------------- hostile files
# Issue 11, defect 7: each of these crashed with a traceback or ate the memory before.


def test_overlong_line_is_a_typed_error_naming_it(tmp_path: Path) -> None:
    f = tmp_path / "long.csv"
    f.write_text("time,VM\n0.000,1\n0.001," + "9" * (200 * 1024) + "\n0.002,3\n")
    raises_at(f, 3, "longer than 128 KiB")
    g = tmp_path / "noline.csv"  # no newline at all
    g.write_bytes(b"time,VM," + b"7," * 100_000)
    raises_at(g, 1, "longer than 128 KiB")


def gzip_members(member: bytes, copies: int) -> bytes:
    """A gzip file of `copies` identical members: a bomb made in a blink."""
    return gzip.compress(member, compresslevel=9) * copies


def test_gzip_bomb_without_newlines_stops_at_the_line_limit(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.csv.gz"
    bomb.write_bytes(gzip_members(b"\x30" * (100 << 20), 100))  # 10 GB of '0' from ~10 MB
    assert bomb.stat().st_size < 12 << 20
    raises_at(bomb, 1, "longer than 128 KiB")


def test_gzip_bomb_of_valid_rows_stops_at_the_ratio_limit(tmp_path: Path) -> None:
    bomb = tmp_path / "rows.csv.gz"
    row = b"0,0,0,0,0,0,0,0\n"
    bomb.write_bytes(gzip.compress(b"A,B,C,D,E,F,G,H\n") + gzip_members(row * (6 << 20), 100))
    with pytest.raises(RecordingFormatError, match="decompression bomb") as info:
        load_recording(bomb, rate_hz=1000)
    assert info.value.path == str(bomb)


@pytest.mark.parametrize(
    ("cell", "words"),
    [
        ("1e308", ("'1e308'", "out of range")),  # finite in float64, inf in float32 mV
        ("-3e38", ("'-3e38'", "out of range")),
        ("1e7", ("'1e7'", "out of range")),  # squares (the envelope) beyond float32
        ("nan", ("'nan'", "not a finite")),
        ("inf", ("'inf'", "not a finite")),
        ("-Infinity", ("'-Infinity'", "not a finite")),
        ("1e999", ("'1e999'", "not a finite")),
    ],
)
def test_non_finite_or_overflowing_values_name_the_line(
    tmp_path: Path, cell: str, words: tuple[str, ...]
) -> None:
    f = tmp_path / "huge.csv"
    f.write_text(f"time,VM,VL\n0.000,1,2\n0.001,0.5,{cell}\n0.002,3,4\n")
    raises_at(f, 3, *words)


def test_microvolt_values_within_range_are_fine_after_scaling(tmp_path: Path) -> None:
    f = tmp_path / "uv.csv"
    f.write_text("time,VM\n0.000,5e8\n0.001,-5e8\n")  # 5e8 µV = 5e5 mV: extreme but finite
    assert load_recording(f, units="uV").data.tolist() == [[5e5, -5e5]]


def test_errors_past_the_first_chunk_name_their_line(tmp_path: Path) -> None:
    """The file is read in batches: line numbers and time checks carry across batches."""
    rows = [f"{i / 1000:.3f},{i % 5}" for i in range(150_000)]
    jump, repeat, bad = list(rows), list(rows), list(rows)
    del jump[100_000]  # a lost sample, far past the rows that set the rate
    repeat[120_000] = repeat[119_999]
    bad[140_000] = "140.000,nan"
    for body, line, words in [
        (jump, 100_002, ("time step breaks", "99.999 -> 100.001")),
        (repeat, 120_002, ("backwards or repeats",)),
        (bad, 140_002, ("VM value 'nan' is not a finite number",)),
    ]:
        f = tmp_path / "late.csv"
        f.write_text("time,VM\n" + "\n".join(body) + "\n")
        raises_at(f, line, *words)
    f.write_text("time,VM\n" + "\n".join(rows) + "\n")
    rec = load_recording(f)
    assert rec.n_samples == 150_000 and rec.rate_hz == 1000.0
    np.testing.assert_array_equal(rec.data[0], np.arange(150_000) % 5)


def test_open_recording_streams_chunks_and_reports_trailing_warnings(tmp_path: Path) -> None:
    from devices.recording_formats import open_recording

    f = tmp_path / "s.csv"
    f.write_text("t_s,VM\n" + "\n".join(f"{i / 2000:.4f},{i}" for i in range(100_000)) + "\n\n\n")
    with open_recording(f) as stream:
        assert stream.rate_hz == 2000.0 and stream.channels == ("VM",)
        sizes = [c.shape[1] for c in stream]
    assert len(sizes) > 5 and sum(sizes) == 100_000 and max(sizes) <= 8192
    assert "dropped 2 trailing empty row(s)" in stream.warnings


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.text("0123456789.,;\tVMé µ", max_size=12), st.sampled_from(["\n", "\r\n", "\r"])
        ),
        max_size=20,
    ),
    st.integers(1, 9),
    st.sampled_from(["utf-8", "latin-1", "utf-16"]),
    st.booleans(),
)
def test_lines_are_the_same_whatever_the_read_size(
    lines: list[tuple[str, str]], piece: int, encoding: str, zipped: bool
) -> None:
    """Newlines (CRLF split between two reads included), decoding and gunzip do not depend on
    where the file is cut into pieces: the same numbered lines come out as from one read."""
    from devices.formats import source

    text = "".join(a + b for a, b in lines)
    raw = text.encode(encoding)  # utf-16 writes a byte-order mark
    raw = gzip.compress(raw) if zipped else raw
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "lines.csv"
        f.write_bytes(raw)

        def read() -> list[tuple[int, str]]:
            try:
                return list(source.TextLines(f, []))
            except RecordingFormatError as exc:  # binary-data checks: same verdict either way
                return [(-1, exc.reason)]

        whole = read()
        saved = source.READ_BYTES
        source.READ_BYTES = piece
        try:
            assert read() == whole
        finally:
            source.READ_BYTES = saved
    if whole and whole[0][0] != -1 and encoding != "latin-1":
        expected = re.split(r"\r\n|\r|\n", text)
        if expected and expected[-1] == "":
            expected.pop()
        assert [t for _, t in whole] == expected


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.lists(
            st.one_of(
                st.sampled_from(["1", "-2.5", "1e3", " 4 ", "1_0", "0x10", "1,5", "+.5", "nan",
                                 "inf", "1e308", "", "1.5d3", "١", "--1", ".", "1e", "e1", "\t7"]),
                st.floats(allow_nan=False, width=32).map(repr),
            ),
            min_size=2,
            max_size=2,
        ),
        min_size=1,
        max_size=6,
    )
)  # fmt: skip
def test_fast_batch_path_accepts_only_what_the_line_path_accepts(rows: list[list[str]]) -> None:
    """numpy's C reader parses plain batches; whatever it accepts, the line-by-line path (which
    names errors) must accept with the same values, or the two would disagree on a file."""
    import itertools as it
    from pathlib import Path as P

    from devices.formats.generic_csv import _Rows, read_header

    lines = [(n, ",".join(r)) for n, r in enumerate(rows, start=2)]
    head = read_header(P("x.csv"), [(1, "VM,VL"), *lines])

    def convert(line_nos: list[int], arr: np.ndarray, text: list[str]) -> object:
        return arr

    reader = _Rows(P("x.csv"), head, [], lambda a: True, convert)  # type: ignore[arg-type]
    reader.hint = ""  # as after the first batch: the fast path is allowed
    batch = list(it.islice(head.rest, 100))
    fast = reader._fast(batch)
    if fast is None:
        return
    slow = reader._slow(batch)
    assert slow is not None
    np.testing.assert_array_equal(fast[1], slow[1])
