"""End-to-end on the real MIMIC-IV demo: counts reconcile with the raw files, counted here
independently (Python's csv module, not the builder's pyarrow reader)."""
import csv
import gzip
import json
from collections import Counter

import numpy as np
import polars as pl
import pytest

from trajectory import open_version
from trajectory.events.tables import SOURCE_ID, TABLES
from trajectory.record import FORMAT

from .conftest import demo_dir


def raw_rows(module, name):
    with gzip.open(demo_dir() / module / f"{name}.csv.gz", "rt", newline="") as f:
        reader = csv.DictReader(f)
        return [{k.lower(): v for k, v in row.items()} for row in reader]


def test_one_file_per_patient(demo_build):
    cfg, summary = demo_build
    manifest = pl.read_parquet(cfg.version_dir / "manifest.parquet")
    expected = {int(r["subject_id"]) for r in raw_rows("hosp", "patients")}
    assert set(manifest["subject_id"]) == expected and len(expected) == 100
    files = list((cfg.version_dir / "patients").rglob("*.msgpack.zst"))
    assert len(files) == 100
    assert summary["n_patients"] == 100
    for rel, size in zip(manifest["path"], manifest["bytes"]):
        assert (cfg.version_dir / rel).stat().st_size == size


def test_rows_read_equal_input_and_reconcile(demo_build):
    cfg, _ = demo_build
    report = json.loads((cfg.version_dir / "qc_report.json").read_text())["tables"]
    present = [t for t in TABLES if (demo_dir() / t.module / f"{t.name}.csv.gz").exists()]
    assert {t.name for t in present} == set(report)
    for t in present:
        n = len(raw_rows(t.module, t.name))
        entry = report[t.name]
        assert entry["rows_read"] == n, t.name
        for name, c in entry["events"].items():
            assert c["rows"] == n, (t.name, name)
            assert c["written"] + sum(c["dropped"].values()) == n, (t.name, name)


def test_per_subject_lab_and_chart_counts(demo_build):
    cfg, _ = demo_build
    v = open_version(cfg.version_dir)
    got = {SOURCE_ID["labevents"]: Counter(), SOURCE_ID["chartevents"]: Counter()}
    for p in v:
        for src in got:
            got[src][p.subject_id] = int(np.sum(p.events["source"] == src))
    for table, module in (("labevents", "hosp"), ("chartevents", "icu")):
        expected = Counter(int(r["subject_id"]) for r in raw_rows(module, table))
        assert +got[SOURCE_ID[table]] == expected, table


def test_record_values_match_raw(demo_build):
    """A lab row's value, time and code survive exactly (value via float32)."""
    cfg, _ = demo_build
    v = open_version(cfg.version_dir)
    rows = [r for r in raw_rows("hosp", "labevents") if r["subject_id"] == "10014729"]
    p = v.patient(10014729)
    lab = p.events["source"] == SOURCE_ID["labevents"]
    codes = p.codes[lab]
    values = p.events["value"][lab]
    for r in rows[:50]:
        code = f"LAB//{r['itemid']}//{r['valueuom'] or 'UNK'}"
        t = int((np.datetime64(r["charttime"]) - np.datetime64("1970-01-01")).astype("<m8[s]").astype(int))
        hit = (codes == code) & (p.events["time"][lab] == t)
        assert hit.any(), code
        if r["valuenum"]:
            assert np.float32(float(r["valuenum"])) in values[hit]


def test_events_sorted_and_diagnoses_at_discharge(demo_build):
    cfg, _ = demo_build
    v = open_version(cfg.version_dir)
    adm = {int(r["hadm_id"]): r["dischtime"] for r in raw_rows("hosp", "admissions")}
    for p in list(v)[:20]:
        t = p.events["time"]
        assert np.all(np.diff(t) >= 0)
        dx = p.events["source"] == SOURCE_ID["diagnoses_icd"]
        for when, hadm in zip(t[dx], p.events["hadm_id"][dx]):
            expected = np.datetime64(adm[int(hadm)]).astype("<M8[s]").astype(int)
            assert when == expected


def test_codes_have_labels_and_counts(demo_build):
    cfg, summary = demo_build
    codes = pl.read_parquet(cfg.version_dir / "codes.parquet")
    assert codes["code_id"].to_list() == list(range(codes.height))
    assert codes["count"].sum() == summary["n_events"]
    hr = codes.filter(pl.col("code") == "CHART//220045//bpm").row(0, named=True)
    assert hr["label"] == "Heart Rate" and hr["unit"] == "bpm"
    cr = codes.filter(pl.col("code") == "LAB//50912//mg/dL").row(0, named=True)
    assert cr["label"] == "Creatinine"


def test_dataset_json_records_missing_notes(demo_build):
    cfg, _ = demo_build
    meta = json.loads((cfg.version_dir / "dataset.json").read_text())
    assert any("note/discharge" in w for w in meta["warnings"])
    assert meta["config_hash"] == cfg.output_hash()
    assert meta["record_format"] == FORMAT


def test_finished_version_is_not_overwritten(demo_build):
    """Same inputs and config: up to date, nothing rewritten; another config: refused."""
    import dataclasses

    from jobs.driver import run_build

    cfg, _ = demo_build
    stamp = (cfg.version_dir / "manifest.parquet").stat().st_mtime_ns
    assert run_build(cfg, progress=False)["up_to_date"] is True
    assert (cfg.version_dir / "manifest.parquet").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="finished version of other inputs or config"):
        run_build(dataclasses.replace(cfg, zstd_level=5), progress=False)
