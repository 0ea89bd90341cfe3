"""EXTRA_TABLES: user tables declared in TOML, keyed by subject_id, hadm_id or stay_id, built
into the records; bad specs fail at plan time naming the file and the entry; reconciliation
and the match report."""
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from trajectory import open_version, synth
from trajectory.assembly.kernels_sort import SOURCE_BITS
from trajectory.events.extra_tables import MAX_SOURCE, plan_spec
from trajectory.events.plan import make_plan
from trajectory.events.tables import TABLES

from .conftest import REPO, make_cfg

PATIENTS = """subject_id,gender,anchor_age,anchor_year,anchor_year_group,dod
10001,F,60,2150,2008 - 2010,
10002,M,45,2160,2011 - 2013,
10003,F,30,2170,2014 - 2016,
"""
ADMISSIONS = """subject_id,hadm_id,admittime,dischtime,deathtime,admission_type,admission_location,discharge_location,insurance,language,marital_status,race,edregtime,edouttime,hospital_expire_flag
10001,20001,2150-01-01 10:00:00,2150-01-05 12:00:00,,URGENT,ER,HOME,Other,ENGLISH,,WHITE,,,0
10002,20002,2160-03-01 08:00:00,2160-03-04 09:30:00,,URGENT,ER,HOME,Other,ENGLISH,,WHITE,,,0
10003,20003,2170-06-10 00:00:00,2170-06-12 00:00:00,,URGENT,ER,HOME,Other,ENGLISH,,WHITE,,,0
"""
ICUSTAYS = """subject_id,hadm_id,stay_id,first_careunit,last_careunit,intime,outtime,los
10001,20001,30001,MICU,MICU,2150-01-02 00:00:00,2150-01-03 06:00:00,1.25
"""
# subject-keyed, with a subject not in patients and a null subject
VITALS = """subject_id,charttime,test,result,unit
10001,2150-01-02 01:00:00,hr,88,bpm
10002,2160-03-02 10:15:00,hr,101,bpm
99999,2150-01-02 01:00:00,hr,70,bpm
,2150-01-02 01:00:00,hr,70,bpm
"""
# hadm-keyed, two rows naming admissions that do not exist
REGISTRY = """hadm_id,status,recorded_at
20001,home,2150-02-01 00:00:00
20002,rehab,2160-04-01 12:00:00
29999,home,2150-02-01 00:00:00
29998,dead,2150-02-01 00:00:00
"""
GENES = """subject_id,gene,variant
10001,APOE,e4
10003,BRCA1,
"""
SPEC = """
[[table]]
name = "vitals"
file = "vitals.csv"
key = "subject_id"
[[table.event]]
name = "obs"
code = ["MYVITAL", "test", "unit"]
time = ["charttime"]
value = "result"
unit = "unit"

[[table]]
name = "registry"
file = "registry.csv"
key = "hadm_id"
[[table.event]]
name = "followup"
code = ["REG", "status"]
time = "recorded_at"
[[table.event]]
name = "enrolled"
code = ["REG_ENROLLED"]
at = "admission_end"

[[table]]
name = "sofa"
file = "sofa.parquet"
key = "stay_id"
[[table.event]]
name = "score"
code = ["SOFA"]
time = ["hr_end"]
value = "sofa"
[[table.event]]
name = "start"
code = ["SOFA_STAY"]
at = "stay_start"
[[table.event]]
name = "admitted"
code = ["SOFA_ADM"]
at = "admission_start"

[[table]]
name = "genes"
file = "genes.csv.gz"
key = "subject_id"
[[table.event]]
name = "variant"
code = ["GENE", "gene", "variant"]
at = "static"
"""


def epoch(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp())


def write_data(root: Path) -> tuple[Path, Path]:
    """A 3-patient DATA_DIR and a folder of user tables with their spec."""
    data, extra = root / "mimic", root / "extra"
    for rel, text in (("hosp/patients.csv", PATIENTS), ("hosp/admissions.csv", ADMISSIONS),
                      ("icu/icustays.csv", ICUSTAYS), ("vitals.csv", VITALS),
                      ("registry.csv", REGISTRY)):
        path = (data if "/" in rel else extra) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    import gzip
    with gzip.open(extra / "genes.csv.gz", "wt") as f:
        f.write(GENES)
    pl.DataFrame({"stay_id": [30001, 30001, 39999],
                  "hr_end": [datetime(2150, 1, 2, 1), datetime(2150, 1, 2, 2),
                             datetime(2150, 1, 2, 1)],
                  "sofa": [3, 5, 1]}).write_parquet(extra / "sofa.parquet")
    (extra / "tables.toml").write_text(SPEC)
    return data, extra / "tables.toml"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from jobs.driver import run_build

    root = tmp_path_factory.mktemp("extra")
    data, spec = write_data(root)
    cfg = make_cfg(data, root / "out", extra_tables=str(spec))
    summary = run_build(cfg, progress=False)
    return cfg, summary


def events_of(v, subject: int, table: str) -> list[tuple[int, str, float]]:
    src = int(next(i for i, n in v.meta["sources"].items() if n == table))
    p = v.patient(subject)
    keep = p.events["source"] == src
    return [(int(t), c, float(x)) for t, c, x in
            zip(p.events["time"][keep], np.array(p.codes)[keep], p.events["value"][keep])]


def test_events_in_records_with_their_times_and_codes(built):
    cfg, _ = built
    v = open_version(cfg.version_dir)
    assert events_of(v, 10001, "vitals") == [(epoch("2150-01-02 01:00:00"), "MYVITAL//hr//bpm",
                                              88.0)]
    reg = events_of(v, 10001, "registry")
    assert [(t, c) for t, c, _ in reg] == [(epoch("2150-01-05 12:00:00"), "REG_ENROLLED"),
                                           (epoch("2150-02-01 00:00:00"), "REG//home")]
    assert [(t, c) for t, c, _ in events_of(v, 10002, "registry")] == [
        (epoch("2160-03-04 09:30:00"), "REG_ENROLLED"), (epoch("2160-04-01 12:00:00"), "REG//rehab")]
    sofa = events_of(v, 10001, "sofa")
    # every row gives each event: two rows of the stay, two events at its start
    assert [(t, c) for t, c, _ in sofa] == [
        (epoch("2150-01-01 10:00:00"), "SOFA_ADM"), (epoch("2150-01-01 10:00:00"), "SOFA_ADM"),
        (epoch("2150-01-02 00:00:00"), "SOFA_STAY"), (epoch("2150-01-02 00:00:00"), "SOFA_STAY"),
        (epoch("2150-01-02 01:00:00"), "SOFA"), (epoch("2150-01-02 02:00:00"), "SOFA")]
    assert [x for _, c, x in sofa if c == "SOFA"] == [3.0, 5.0]
    # static facts at birth: Jan 1 of anchor_year - anchor_age; a null part is UNK
    assert [(t, c) for t, c, _ in events_of(v, 10001, "genes")] == [
        (epoch("2090-01-01 00:00:00"), "GENE//APOE//e4")]
    assert [c for _, c, _ in events_of(v, 10003, "genes")] == ["GENE//BRCA1//UNK"]
    # the stay's events carry its stay_id and admission; the registry's its admission
    p = v.patient(10001)
    src = {n: int(i) for i, n in v.meta["sources"].items()}
    sofa_rows = p.events["source"] == src["sofa"]
    assert set(p.events["stay_id"][sofa_rows]) == {30001}
    assert set(p.events["hadm_id"][sofa_rows]) == {20001}
    assert set(p.events["hadm_id"][p.events["source"] == src["registry"]]) == {20001}
    # user tables' ids follow the built-in ones, in spec order
    assert [src[n] for n in ("vitals", "registry", "sofa", "genes")] == list(
        range(len(TABLES) + 1, len(TABLES) + 5))
    codes = pl.read_parquet(cfg.version_dir / "codes.parquet")
    assert codes.filter(pl.col("code") == "MYVITAL//hr//bpm")["unit"].to_list() == ["bpm"]


def test_reconciliation_and_match_report(built):
    cfg, summary = built
    qc = json.loads((cfg.version_dir / "qc_report.json").read_text())
    for name in ("vitals", "registry", "sofa", "genes"):
        for ev, c in qc["tables"][name]["events"].items():
            assert c["rows"] == c["written"] + sum(c["dropped"].values()), (name, ev)
    assert qc["tables"]["registry"]["events"]["followup"] == {
        "rows": 4, "written": 2, "dropped": {"hadm_not_found": 2}}
    report = qc["extra_tables"]
    assert summary["extra_tables"] == report
    assert {n: (r["rows_read"], r["matched"], r["unmatched"]) for n, r in report.items()} == {
        "vitals": (4, 2, {"null_subject_id": 1, "subject_not_in_patients": 1}),
        "registry": (4, 2, {"hadm_not_found": 2}),
        "sofa": (3, 2, {"stay_not_found": 1}),
        "genes": (2, 2, {}),
    }
    assert report["registry"]["events_written"] == {"followup": 2, "enrolled": 2}
    assert summary["n_events"] == sum(
        c["written"] for t in qc["tables"].values() for c in t["events"].values())


def bad_spec(tmp_path, text: str, extra_files: dict | None = None):
    data, spec = write_data(tmp_path)
    for name, content in (extra_files or {}).items():
        (spec.parent / name).write_text(content)
    spec.write_text(text)
    return make_cfg(data, tmp_path / "out", extra_tables=str(spec)), spec


TABLE = '[[table]]\nname = "{name}"\nfile = "{file}"\nkey = "{key}"\n'
EVENT = '[[table.event]]\nname = "e"\ncode = ["X", "{col}"]\ntime = ["{time}"]\n'


@pytest.mark.parametrize("text, files, message", [
    (TABLE.format(name="reg", file="registry.csv", key="hadm_id")
     + EVENT.format(col="nope", time="recorded_at"), None,
     r"table 1 \('reg'\).*missing required column\(s\) 'nope'"),
    (TABLE.format(name="reg", file="registry.csv", key="patient_id")
     + EVENT.format(col="status", time="recorded_at"), None,
     r"table 1 \('reg'\): key must be one of subject_id, hadm_id, stay_id, got 'patient_id'"),
    (TABLE.format(name="reg", file="bad_time.csv", key="hadm_id")
     + EVENT.format(col="status", time="recorded_at"),
     {"bad_time.csv": "hadm_id,status,recorded_at\n20001,home,01/02/2150 noon\n"},
     r"table 1 \('reg'\).*column 'recorded_at'"),
    (TABLE.format(name="reg", file="registry.csv", key="hadm_id")
     + EVENT.format(col="status", time="recorded_at")
     + TABLE.format(name="reg", file="registry.csv", key="hadm_id")
     + EVENT.format(col="status", time="recorded_at"), None,
     r"table 2 \('reg'\): duplicate table name 'reg'"),
    (TABLE.format(name="labevents", file="registry.csv", key="hadm_id")
     + EVENT.format(col="status", time="recorded_at"), None,
     r"table 1 \('labevents'\): name 'labevents' is a built-in table's"),
    (TABLE.format(name="dictionaries", file="registry.csv", key="hadm_id")
     + EVENT.format(col="status", time="recorded_at"), None, r"or a stage-1 unit's"),
    (TABLE.format(name="reg", file="registry.csv", key="hadm_id")
     + EVENT.format(col="status", time="recorded_at") + 'colour = "red"\n', None,
     r"table 1 \('reg'\), event 1: unknown field\(s\) \['colour'\]"),
    (TABLE.format(name="reg", file="registry.csv", key="hadm_id")
     + '[[table.event]]\nname = "e"\ncode = ["X"]\nat = "stay_start"\n', None,
     r"at = 'stay_start' needs key stay_id"),
    (TABLE.format(name="reg", file="missing.csv", key="hadm_id")
     + EVENT.format(col="status", time="recorded_at"), None, r"table 1 \('reg'\): file .* not found"),
    ("[[table]\n", None, r"not valid TOML"),
])
def test_bad_spec_is_a_clear_error_at_plan_time(tmp_path, text, files, message):
    cfg, spec = bad_spec(tmp_path, text, files)
    with pytest.raises(ValueError, match=message) as e:
        make_plan(cfg)
    assert str(spec) in str(e.value)
    assert not (cfg.work_dir / "plan.json").exists()


def test_missing_spec_file_fails_at_load(tmp_path):
    with pytest.raises(ValueError, match="EXTRA_TABLES .*no such file"):
        make_cfg(tmp_path, tmp_path / "out", extra_tables=str(tmp_path / "nope.toml"))


def test_sources_fit_the_sort_key():
    assert MAX_SOURCE == (1 << SOURCE_BITS) - 1 and len(TABLES) < MAX_SOURCE


def test_synthetic_registry_is_deterministic_and_has_unmatched_rows(tmp_path):
    synth.generate(tmp_path / "a", n_patients=8, seed=3)
    first = (tmp_path / "a" / "extra" / "outcomes.csv").read_bytes()
    synth.generate_extra(tmp_path / "a", seed=3)
    assert (tmp_path / "a" / "extra" / "outcomes.csv").read_bytes() == first
    reg = pl.read_csv(tmp_path / "a" / "extra" / "outcomes.csv")
    adm = pl.read_csv(tmp_path / "a" / "hosp" / "admissions.csv.gz")
    assert 0 < reg.filter(~pl.col("hadm_id").is_in(adm["hadm_id"].implode())).height < reg.height


def test_cli_build_with_extra_tables_env(tmp_path):
    data, spec = write_data(tmp_path)
    env = {**os.environ, "EXTRA_TABLES": str(spec)}
    run = subprocess.run([sys.executable, str(REPO / "build_patient_files.py"), "--data-dir",
                          str(data), "--out-dir", str(tmp_path / "out"), "--runner", "serial",
                          "--quiet"], check=True, env=env, capture_output=True, text=True)
    assert ("extra table registry (key hadm_id): 4 rows read, 2 matched; unmatched: "
            "hadm_not_found 2") in run.stdout
    meta = json.loads((tmp_path / "out" / "v1" / "dataset.json").read_text())
    assert meta["extra_tables"]["sofa"]["unmatched"] == {"stay_not_found": 1}
    assert "extra" in meta["inputs"]["registry"]  # the spec entry, kept with the input


def test_example_spec_is_valid():
    spec = REPO / "examples" / "extra_tables" / "tables.toml"
    present = {"admissions": {"path": "a", "bytes": 1}, "icustays": {"path": "i", "bytes": 1}}
    tables = plan_spec(spec, present, None)
    assert list(tables) == ["sofa_hourly", "followup"]
    assert tables["followup"]["extra"]["keys"] == {"admissions": {"bytes": 1},
                                                   "icustays": {"bytes": 1}}


def test_cut_user_tables_give_the_same_records(built, tmp_path):
    """User tables cut into several partition units (their CSVs scanned for cut points, the
    .csv.gz through its seek-point index) give the records of the uncut build."""
    from jobs.driver import run_build

    cfg, _ = built
    cut = make_cfg(cfg.data_dir, tmp_path / "out", extra_tables=str(cfg.extra_tables),
                   partition_unit_mb=0.00001)
    run_build(cut, progress=False)
    plan = json.loads((cut.work_dir / "plan.json").read_text())
    assert plan["parts"]["vitals"] > 1 and plan["parts"]["genes"] > 1
    a, b = (pl.read_parquet(c.version_dir / "manifest.parquet") for c in (cfg, cut))
    assert a["checksum"].to_list() == b["checksum"].to_list()


def test_unit_without_the_graph_makes_its_lookup(tmp_path):
    """A SLURM array task runs a user table's unit alone: it makes the key lookup itself."""
    from jobs import extra_keys, partition
    from jobs.driver import prepare

    data, spec = write_data(tmp_path)
    cfg = make_cfg(data, tmp_path / "out", extra_tables=str(spec))
    prepare(cfg)
    assert not (extra_keys.keys_dir(cfg) / "admissions.parquet").exists()
    marker = partition.run("registry.0000", cfg)
    assert marker["rows_read"] == 4
    assert marker["counts"]["followup"]["dropped"] == {"hadm_not_found": 2}
    assert pl.read_parquet(extra_keys.keys_dir(cfg) / "admissions.parquet").height == 3
