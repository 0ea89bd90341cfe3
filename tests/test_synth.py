"""The synthetic MIMIC-IV generator: real headers, determinism, notes, referential sanity."""
import csv
import gzip
import os
import re
from pathlib import Path

import polars as pl
import pyarrow.csv as pacsv
import pytest

from trajectory import synth
from trajectory.synth.catalog import HEADERS

NOTE_HEADER = "note_id,subject_id,hadm_id,note_type,note_seq,charttime,storetime,text"
NOTE_DETAIL_HEADER = "note_id,subject_id,field_name,field_value,field_ordinal"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return synth.generate(tmp_path_factory.mktemp("synth"), n_patients=60, seed=7)


def read(root: Path, table: str) -> pl.DataFrame:
    """A table as pyarrow parses it (quoted newlines allowed, empty = null), types inferred."""
    return pl.from_arrow(pacsv.read_csv(
        root / f"{table}.csv.gz", parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(strings_can_be_null=True)))


def header(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return f.readline().rstrip("\n").split(",")


def test_every_table_written(data):
    written = {f"{p.parent.name}/{p.name[:-7]}" for p in data.glob("*/*.csv.gz")}
    assert written == set(HEADERS)
    for table in HEADERS:
        assert read(data, table).height > 0, table


def test_headers_match_real_demo(data):
    demo = Path(os.environ.get("MIMIC_DEMO_DIR", "/work/shared/data/mimic-iv-demo"))
    if not (demo / "hosp" / "patients.csv.gz").exists():
        pytest.skip(f"MIMIC-IV demo not found at {demo} (set MIMIC_DEMO_DIR)")
    compared = 0
    for table in HEADERS:
        got = header(data / f"{table}.csv.gz")
        if table.startswith("note/"):  # the demo has no note module
            want = NOTE_DETAIL_HEADER if table.endswith("_detail") else NOTE_HEADER
            assert ",".join(got) == want, table
            continue
        real = demo / f"{table}.csv.gz"
        assert real.exists(), real
        assert got == header(real), table
        compared += 1
    assert compared == len(HEADERS) - 4  # the four note tables
    assert header(data / "icu/procedureevents.csv.gz")[-2:] == ["ORIGINALAMOUNT", "ORIGINALRATE"]


def test_same_seed_same_bytes(tmp_path):
    a = synth.generate(tmp_path / "a", n_patients=25, seed=3)
    b = synth.generate(tmp_path / "b", n_patients=25, seed=3)
    c = synth.generate(tmp_path / "c", n_patients=25, seed=4)
    for table in ("hosp/admissions", "hosp/labevents", "icu/chartevents", "note/discharge"):
        name = f"{table}.csv.gz"
        assert (a / name).read_bytes() == (b / name).read_bytes(), table
        assert (a / name).read_bytes() != (c / name).read_bytes(), table


def test_cli(tmp_path):
    synth.main([str(tmp_path / "cli"), "--patients", "3", "--seed", "1"])
    assert read(tmp_path / "cli", "hosp/patients").height == 3


def test_notes_multiline_round_trip(data):
    adm = read(data, "hosp/admissions")
    for table, kind in (("note/discharge", "DS"), ("note/radiology", "RR")):
        notes = read(data, table)
        with gzip.open(data / f"{table}.csv.gz", "rt", encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        assert notes.height == len(rows) > 0
        assert notes["text"].to_list() == [r["text"] for r in rows]
        assert (notes["note_type"] == kind).all()
        assert all(re.fullmatch(rf"{s}-{kind}-{q}", i) for i, s, q in
                   zip(notes["note_id"], notes["subject_id"], notes["note_seq"]))
        assert notes["note_id"].n_unique() == notes.height
        text = notes["text"]
        assert text.str.contains("\n").all()
        assert text.str.contains('"').any() and text.str.contains(",").all()
        assert text.str.len_chars().min() >= 200 and text.str.len_chars().max() <= 5000
        assert set(notes["hadm_id"]) <= set(adm["hadm_id"])
    ds = read(data, "note/discharge")
    for section in ("Chief Complaint:", "History of Present Illness:", "Discharge Diagnosis:"):
        assert ds["text"].str.contains(section, literal=True).any()
    # Discharge summaries are written at the admission's discharge.
    joined = ds.join(adm, on="hadm_id")
    assert (joined["charttime"] == joined["dischtime"]).all()


def test_detail_tables_point_at_their_parents(data):
    """Detail rows name a parent row of the same subject; only a few emar_detail rows name
    an administration eMAR never recorded (the build drops those as parent_not_found)."""
    for detail, parent, key in (("hosp/emar_detail", "hosp/emar", "emar_id"),
                                ("hosp/poe_detail", "hosp/poe", "poe_id"),
                                ("note/discharge_detail", "note/discharge", "note_id"),
                                ("note/radiology_detail", "note/radiology", "note_id")):
        d, p = read(data, detail), read(data, parent)
        assert d.height > 0, detail
        joined = d.join(p.select(key, pl.col("subject_id").alias("_s")), on=key, how="left")
        found = joined["_s"].is_not_null()
        assert (joined.filter(found)["subject_id"] == joined.filter(found)["_s"]).all()
        if detail == "hosp/emar_detail":
            assert 0 < (~found).sum() < 0.01 * d.height
        else:
            assert found.all(), detail
    ed = read(data, "hosp/emar_detail")
    summary = ed.filter(pl.col("parent_field_ordinal").is_null())
    assert summary["emar_id"].n_unique() == summary.height  # one summary row per administration
    assert summary["dose_given"].null_count() == summary.height
    assert ed["infusion_rate"].drop_nulls().len() > 0 and (ed["dose_given"] == "___").any()
    rr = read(data, "note/radiology_detail")
    assert {"exam_name", "exam_code", "cpt_code"} <= set(rr["field_name"])
    assert read(data, "hosp/provider")["provider_id"].n_unique() > 100


def test_subjects_exist(data):
    subjects = set(read(data, "hosp/patients")["subject_id"])
    for table in ("icu/chartevents", "hosp/labevents", "hosp/admissions", "icu/icustays"):
        assert set(read(data, table)["subject_id"]) <= subjects, table


def test_identifier_ranges_unique(data):
    pat, adm, stays = (read(data, t) for t in ("hosp/patients", "hosp/admissions",
                                               "icu/icustays"))
    for df, col, lo, hi in ((pat, "subject_id", 10_000_000, 20_000_000),
                            (adm, "hadm_id", 20_000_000, 30_000_000),
                            (stays, "stay_id", 30_000_000, 40_000_000)):
        assert df[col].n_unique() == df.height
        assert df[col].min() >= lo and df[col].max() < hi
    assert (adm["dischtime"] > adm["admittime"]).all()
    assert ((adm["deathtime"].is_not_null()) == (adm["hospital_expire_flag"] == 1)).all()
    labs = read(data, "hosp/labevents")
    assert labs["labevent_id"].n_unique() == labs.height
    assert labs["hadm_id"].null_count() > 0  # outpatient draws


def test_icustays_inside_admissions(data):
    stays = read(data, "icu/icustays").join(read(data, "hosp/admissions"), on="hadm_id")
    assert stays.height == read(data, "icu/icustays").height
    assert (stays["subject_id"] == stays["subject_id_right"]).all()
    assert (stays["intime"] >= stays["admittime"]).all()
    assert (stays["outtime"] <= stays["dischtime"]).all()
    assert (stays["outtime"] > stays["intime"]).all()


def test_chart_times_inside_stays(data):
    stays = read(data, "icu/icustays")
    chart = read(data, "icu/chartevents").join(stays, on="stay_id")
    assert chart.height == read(data, "icu/chartevents").height
    assert (chart["hadm_id"] == chart["hadm_id_right"]).all()
    assert (chart["charttime"] >= chart["intime"]).all()
    assert (chart["charttime"] <= chart["outtime"]).all()
    # Text-only rows (heart rhythm) have no valuenum and no unit.
    rhythm = chart.filter(pl.col("itemid") == 220048)
    assert rhythm.height > 0 and rhythm["valuenum"].null_count() == rhythm.height
    assert rhythm["valueuom"].null_count() == rhythm.height


def test_dictionaries_cover_codes(data):
    d_items = set(read(data, "icu/d_items")["itemid"])
    for table in ("icu/chartevents", "icu/inputevents", "icu/outputevents",
                  "icu/procedureevents", "icu/datetimeevents", "icu/ingredientevents"):
        assert set(read(data, table)["itemid"]) <= d_items, table
    labs = set(read(data, "hosp/labevents")["itemid"])
    assert labs <= set(read(data, "hosp/d_labitems")["itemid"])
    for table, dictionary in (("hosp/diagnoses_icd", "hosp/d_icd_diagnoses"),
                              ("hosp/procedures_icd", "hosp/d_icd_procedures")):
        pairs = lambda df: set(zip(df["icd_code"].cast(pl.String), df["icd_version"]))  # noqa
        assert pairs(read(data, table)) <= pairs(read(data, dictionary)), table
    assert set(read(data, "hosp/hcpcsevents")["hcpcs_cd"].cast(pl.String)) <= set(
        read(data, "hosp/d_hcpcs")["code"].cast(pl.String))


def test_csv_formatting(data):
    """Nulls are empty (never ""), integers never "12.0", dates and times in MIMIC's format."""
    for table in HEADERS:
        with gzip.open(data / f"{table}.csv.gz", "rt", encoding="utf-8") as f:
            head = f.read(200_000)
        assert ',"",' not in head and not head.endswith(',""\n'), table
    pat = read(data, "hosp/patients")
    assert pat["dod"].dtype == pl.Date and pat["anchor_age"].dtype == pl.Int64
    for table, cols in (("hosp/admissions", ("subject_id", "hadm_id", "hospital_expire_flag")),
                        ("icu/chartevents", ("stay_id", "itemid", "caregiver_id", "warning")),
                        ("hosp/labevents", ("labevent_id", "specimen_id", "itemid")),
                        ("hosp/diagnoses_icd", ("seq_num", "icd_version"))):
        df = read(data, table)
        for col in cols:
            assert df[col].dtype == pl.Int64, (table, col)
    for table, col in (("hosp/procedures_icd", "chartdate"), ("hosp/omr", "chartdate"),
                       ("hosp/hcpcsevents", "chartdate")):
        assert read(data, table)[col].dtype == pl.Date, (table, col)
    with gzip.open(data / "hosp/microbiologyevents.csv.gz", "rt") as f:
        row = next(csv.DictReader(f))
    assert re.fullmatch(r"\d{4}-\d\d-\d\d 00:00:00", row["chartdate"])
    with gzip.open(data / "hosp/admissions.csv.gz", "rt") as f:
        row = next(csv.DictReader(f))
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", row["admittime"])
