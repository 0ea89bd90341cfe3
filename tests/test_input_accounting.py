"""Every file under DATA_DIR/{hosp,icu,note} read as events or listed as not read, with the
reason; the detail tables (emar_detail, poe_detail, note details) as events of their parent
row, at its time, reconciled row for row."""
import csv
import gzip
import json
import shutil
from collections import defaultdict

import numpy as np
import polars as pl
import pytest

from trajectory import open_version, synth
from trajectory.assembly.assemble import place_details
from trajectory.events import inputs
from jobs.driver import describe, run_build
from trajectory.events.map_rows import REF_SEP, CodeBook, map_rows
from trajectory.events.tables import SOURCE_ID, TABLES, TABLES_BY_NAME
from trajectory.raw.read import POLARS_TYPES

from .conftest import demo_dir, make_cfg


def touch(root, *names):
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")


def test_account_names_every_file_and_why(tmp_path):
    touch(tmp_path, "hosp/patients.csv.gz", "hosp/labevents.csv.gz", "hosp/labevents.parquet",
          "hosp/provider.csv.gz", "hosp/d_labitems.csv", "hosp/mystery.csv.gz",
          "hosp/index.html", "hosp/old/emar.csv.gz", "icu/caregiver.parquet",
          "note/discharge_detail.csv.gz", "ed/edstays.csv.gz", "LICENSE.txt")
    got = {f["file"]: f["kind"] for f in inputs.account(tmp_path)}
    assert got == {
        "hosp/patients.csv.gz": "table", "hosp/labevents.csv.gz": "table",
        "hosp/labevents.parquet": "duplicate",  # .csv.gz is the copy read
        "hosp/provider.csv.gz": "no_events", "hosp/d_labitems.csv": "dictionary",
        "hosp/mystery.csv.gz": "unknown", "hosp/index.html": "unknown",
        "hosp/old/emar.csv.gz": "unknown",  # a table's name in a subfolder is not read
        "icu/caregiver.parquet": "no_events", "note/discharge_detail.csv.gz": "table"}
    listed = inputs.not_read(tmp_path)
    assert [f["file"] for f in listed] == sorted(
        f for f, k in got.items() if k != "table")
    assert all(f["reason"] for f in listed)
    warned = inputs.warnings(listed)
    assert len(warned) == 4 and any("hosp/mystery.csv.gz" in w for w in warned)
    assert not any("provider" in w or "d_labitems" in w for w in warned)


def test_demo_has_no_unknown_file():
    data = demo_dir()
    files = {p.relative_to(data).as_posix() for m in inputs.MODULES if (data / m).is_dir()
             for p in (data / m).rglob("*") if p.is_file()}
    acc = inputs.account(data)
    assert {f["file"] for f in acc} == files
    kinds = defaultdict(set)
    for f in acc:
        kinds[f["kind"]].add(f["file"].split("/")[1].split(".")[0])
    assert set(kinds) == {"table", "dictionary", "no_events"}, dict(kinds)
    assert kinds["no_events"] == {"provider", "caregiver"}
    assert kinds["dictionary"] == {"d_labitems", "d_items", "d_icd_diagnoses",
                                   "d_icd_procedures", "d_hcpcs"}
    # the detail tables are read now
    assert {"emar_detail", "poe_detail"} <= kinds["table"]


def test_require_counts_rows_without_the_field():
    t = TABLES_BY_NAME["emar_detail"]
    df = pl.DataFrame({
        "subject_id": [1, 1, 2], "emar_id": ["1-5", "1-5", "2-9"],
        "parent_field_ordinal": [None, "1.1", None],
        "administration_type": ["IV Infusion", None, "Standard Maintenance Medication"],
        "product_code": [None, "NACLFLUSH", None], "dose_due": ["0", None, "0.125-0.25"],
        "dose_due_unit": ["mL/hr", None, "mg"], "dose_given": [None, "___", None],
        "dose_given_unit": [None, "mL", None], "infusion_rate": ["75", None, None],
        "infusion_rate_unit": ["mL/hr", None, None]},
        schema={c: POLARS_TYPES[ty] for c, ty in t.columns.items()})
    book = CodeBook()
    ev, _, counts = map_rows(t, df, book)
    assert counts == {
        "dose_due": {"rows": 3, "written": 2, "dropped": {"null_dose_due": 1}},
        "dose_given": {"rows": 3, "written": 1, "dropped": {"null_dose_given": 2}},
        "infusion_rate": {"rows": 3, "written": 1, "dropped": {"null_infusion_rate": 2}}}
    codes = [book.codes[i] for i in ev["code"].to_list()]
    assert codes == ["EMAR_DOSE_DUE//IV Infusion//mL/hr",
                     "EMAR_DOSE_DUE//Standard Maintenance Medication//mg",
                     "EMAR_DOSE_GIVEN//NACLFLUSH//mL", "EMAR_INFUSION_RATE//mL/hr"]
    assert ev["time"].is_null().all()  # placed in the build stage, at the parent's time
    assert ev["value"].to_list()[:2] == [0.0, None] and ev["text"][1] == "0.125-0.25"
    assert ev["text"][2] == "___"  # a de-identified dose stays as text
    # the row id starts with the parent's key; the ordinal keeps a row's products apart
    assert ev["ref"].to_list() == [f"1-5{REF_SEP}", f"2-9{REF_SEP}", f"1-5{REF_SEP}1.1",
                                   f"1-5{REF_SEP}"]


def test_place_details_takes_parent_time_and_counts_orphans():
    emar, detail = SOURCE_ID["emar"], SOURCE_ID["emar_detail"]
    refs = pl.Series(["1-5", "1-6", f"1-5{REF_SEP}", f"1-5{REF_SEP}1.1", f"1-7{REF_SEP}1.1"])
    ev = pl.DataFrame({
        "subject_id": [1, 1, 1, 1, 1, 1], "time": [100, 200, None, None, None, 50],
        "code_id": [0, 0, 1, 2, 2, 3], "hadm_id": [7, 8, None, None, None, None],
        "source": [emar, emar, detail, detail, detail, SOURCE_ID["labevents"]],
        "kind": [0, 0, 0, 1, 1, 0], "ref": [0, 1, 2, 3, 4, -1],
        "known_delta": [30, 0, 0, 0, 0, 5]},
        schema_overrides={"source": pl.UInt8, "kind": pl.UInt8, "ref": pl.Int32})
    counts = {}
    got = place_details(ev, refs, counts)
    assert got["time"].to_list() == [100, 200, 100, 100, 50]
    assert got["hadm_id"].to_list() == [7, 8, 7, 7, None]
    assert got["known_delta"].to_list() == [30, 0, 30, 30, 5]  # known when the parent is
    assert counts == {"emar_detail": {"dose_given": {"dropped": {"parent_not_found": 1}}}}


@pytest.fixture(scope="module")
def synth_build(tmp_path_factory):
    """A small synthetic set (every table, a few orphan emar_detail rows) with an unknown file
    and a second copy of a table added."""
    root = tmp_path_factory.mktemp("acc")
    data = synth.generate(root / "mimic", n_patients=12, seed=2)
    (data / "hosp" / "notes_export.csv.gz").write_bytes(gzip.compress(b"a,b\n1,2\n"))
    (data / "icu" / "README.txt").write_text("local notes\n")
    cfg = make_cfg(data, root / "out")
    return cfg, run_build(cfg, progress=False)


def raw_count(path) -> int:
    with gzip.open(path, "rt", newline="") as f:
        return sum(1 for _ in csv.reader(f)) - 1


def test_build_lists_not_read_files_and_warns_on_unknown(synth_build):
    cfg, summary = synth_build
    meta = json.loads((cfg.version_dir / "dataset.json").read_text())
    listed = {f["file"]: f["kind"] for f in meta["not_read"]}
    assert listed["hosp/notes_export.csv.gz"] == listed["icu/README.txt"] == "unknown"
    assert listed["hosp/provider.csv.gz"] == listed["icu/caregiver.csv.gz"] == "no_events"
    assert listed["hosp/d_labitems.csv.gz"] == "dictionary"
    assert {t.name for t in TABLES} == {f.split("/")[1].split(".")[0] for f in (
        x["file"] for x in inputs.account(cfg.data_dir)) if f not in listed}
    assert sum("notes_export" in w for w in meta["warnings"]) == 1
    text = describe(summary, cfg)
    assert "not read: hosp/provider.csv.gz (no events" in text
    assert "warning: file hosp/notes_export.csv.gz not read: unknown file" in text


def test_detail_rows_reconcile_and_orphans_are_named(synth_build):
    cfg, _ = synth_build
    report = json.loads((cfg.version_dir / "qc_report.json").read_text())["tables"]
    for name in ("emar_detail", "poe_detail", "discharge_detail", "radiology_detail"):
        t = TABLES_BY_NAME[name]
        n = raw_count(cfg.data_dir / t.module / f"{name}.csv.gz")
        assert report[name]["rows_read"] == n > 0, name
        for ev, c in report[name]["events"].items():
            assert c["rows"] == n == c["written"] + sum(c["dropped"].values()), (name, ev)
    # the generator writes a few emar_detail rows of administrations eMAR never recorded
    assert report["emar_detail"]["events"]["dose_given"]["dropped"]["parent_not_found"] > 0


def test_detail_events_sit_at_their_parents_time(synth_build):
    """Every detail event has the time, admission and known time of a parent event of its
    patient; every note detail row is listed in `notes` with its own note's id, whose note
    event has its time, admission and known time."""
    cfg, _ = synth_build
    v = open_version(cfg.version_dir)
    parent = {SOURCE_ID[t.name]: SOURCE_ID[t.parent.table] for t in TABLES if t.parent}
    note_src = [SOURCE_ID[t.name] for t in TABLES if t.module == "note"]
    seen = defaultdict(int)
    for p in v:
        src, time, hadm = p.events["source"], p.events["time"], p.events["hadm_id"]
        known = p.known_time
        for d, s in parent.items():
            mine = src == d
            seen[d] += int(mine.sum())
            at = set(zip(time[src == s].tolist(), hadm[src == s].tolist(),
                         known[src == s].tolist()))
            assert set(zip(time[mine].tolist(), hadm[mine].tolist(),
                           known[mine].tolist())) <= at
        notes = np.asarray(p.notes["event"], np.int64)
        assert sorted(notes.tolist()) == np.flatnonzero(np.isin(src, note_src)).tolist()
        body = {n: e for e, n in zip(p.notes["event"], p.notes["note_id"])
                if src[e] in (SOURCE_ID["discharge"], SOURCE_ID["radiology"])}
        for e, n in zip(p.notes["event"], p.notes["note_id"]):
            b = body[n]  # a detail row's note is one of the patient's notes
            assert (time[e], hadm[e], known[e]) == (time[b], hadm[b], known[b])
    assert all(seen[d] > 0 for d in parent), seen


def test_demo_build_reads_emar_and_poe_details(demo_build):
    cfg, summary = demo_build
    meta = json.loads((cfg.version_dir / "dataset.json").read_text())
    assert not [f for f in meta["not_read"] if f["kind"] in ("unknown", "duplicate")]
    assert {f["file"] for f in meta["not_read"]} == {
        "hosp/provider.csv.gz", "icu/caregiver.csv.gz", "hosp/d_labitems.csv.gz",
        "icu/d_items.csv.gz", "hosp/d_icd_diagnoses.csv.gz", "hosp/d_icd_procedures.csv.gz",
        "hosp/d_hcpcs.csv.gz"}
    report = json.loads((cfg.version_dir / "qc_report.json").read_text())["tables"]
    emar = report["emar_detail"]["events"]
    assert emar["dose_given"]["written"] > 30_000 and emar["infusion_rate"]["written"] > 1000
    assert report["poe_detail"]["events"]["field"]["written"] == raw_count(
        demo_dir() / "hosp" / "poe_detail.csv.gz")
    assert "not read: icu/caregiver.csv.gz" in describe(summary, cfg)


def test_other_tables_unchanged_by_the_details(synth_build, tmp_path):
    """The same input without the four detail tables: every other event, text, header and
    window decodes the same (code ids move: the vocabulary is sorted, and grows)."""
    cfg, _ = synth_build
    data = tmp_path / "mimic"
    shutil.copytree(cfg.data_dir, data)
    details = [t for t in TABLES if t.parent]
    for t in details:
        (data / t.module / f"{t.name}.csv.gz").unlink()
    bare = make_cfg(data, tmp_path / "out")
    run_build(bare, progress=False)
    a, b = open_version(bare.version_dir), open_version(cfg.version_dir)
    assert a.subject_ids == b.subject_ids
    new = [SOURCE_ID[t.name] for t in details]
    for sid in a.subject_ids:
        pa, pb = a.patient(sid), b.patient(sid)
        keep = ~np.isin(pb.events["source"], new)
        assert len(pa) == keep.sum()
        for col in ("time", "value", "hadm_id", "stay_id", "source", "flags", "concept"):
            assert np.array_equal(pa.events[col], pb.events[col][keep], equal_nan=True), col
        assert pa.codes.tolist() == pb.codes[keep].tolist()
        assert [pa.text(i) for i in range(len(pa))] == [pb.text(i) for i in np.flatnonzero(keep)]
        body = [n for e, n in zip(pb.notes["event"], pb.notes["note_id"]) if keep[e]]
        assert pa.notes["note_id"] == body  # the details' own rows aside
        assert len(pa.windows) == len(pb.windows)
        for x, y in zip(pa.windows, pb.windows):
            assert {k: v for k, v in x.items() if k != "data"} == {
                k: v for k, v in y.items() if k != "data"}
            assert np.array_equal(x["data"], y["data"], equal_nan=True)
