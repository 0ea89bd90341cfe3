"""`export meds`: the MEDS files pass the `meds` package's own schemas, hold every event of
the version (plus one MEDS_DEATH row per death), split as trajectory.splits says, carry the
community's codes (checked against the shared MEDS demo), and come out byte-identical on a
rerun, with Dask, and through the CLI."""
import json
import subprocess
import sys
from pathlib import Path

import meds
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.export_meds import export_meds
from trajectory import open_version
from trajectory.splits import split_of
from trajectory.use.meds import STATIC_TIME, code_lookup, meds_code, parent_codes, patient_rows

from .conftest import REPO, demo_dir, make_cfg

ROWS_PER_FILE = 100_000  # small, so the demo's splits are cut into several files
# the community's MIMIC_IV_MEDS conversion of the same demo, shared beside it (SOURCE.md there)
COMMUNITY = "mimic-iv-demo-meds/mimic_iv_demo_meds_events.parquet"
SPLIT = {"train": "train", "val": "tuning", "test": "held_out"}


def files_of(out: Path) -> dict:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file()}


# ---- the mapping and one record, inline -------------------------------------------------


@pytest.mark.parametrize("code, want", [
    ("BIRTH", ("MEDS_BIRTH", False)),
    ("ADMISSION//URGENT//TRANSFER FROM HOSPITAL",
     ("HOSPITAL_ADMISSION//URGENT//TRANSFER FROM HOSPITAL", False)),
    ("DISCHARGE//UNK", ("HOSPITAL_DISCHARGE//UNK", False)),
    ("CHART//220052//mmHg", ("LAB//220052//mmHg", False)),
    ("LAB//50912//mg/dL", ("LAB//50912//mg/dL", False)),
    ("ICU_ADMISSION//Medical Intensive Care Unit (MICU)",
     ("ICU_ADMISSION//Medical Intensive Care Unit (MICU)", False)),
    ("ED_REGISTRATION", ("ED_REGISTRATION", False)),
    ("DX//ICD//10//I10", ("DIAGNOSIS//ICD//10//I10", False)),
    ("GENDER//F", ("GENDER//F", True)),
    ("HOSPITAL_DEATH", ("HOSPITAL_DEATH", False)),  # kept: MEDS_DEATH is an added row
    ("CHARTER//1", ("CHARTER//1", False)),  # a prefix matches whole parts only
])
def test_code_rules(code, want):
    assert meds_code(code) == want


@pytest.mark.parametrize("code, want", [
    ("DIAGNOSIS//ICD//9//4019", ["ICD9CM/4019"]),
    ("DIAGNOSIS//ICD//10//I10", ["ICD10CM/I10"]),
    ("PROCEDURE//ICD//9//3893", ["ICD9Proc/3893"]),
    ("PROCEDURE//ICD//10//0BH17EZ", ["ICD10PCS/0BH17EZ"]),
    ("DIAGNOSIS//ICD//10//UNK", None),  # no code, no parent
    ("DIAGNOSIS//ICD//UNK//I10", None),  # no version: which ontology is unknown
    ("LAB//50912//mg/dL", None),
])
def test_parent_codes(code, want):
    assert parent_codes(code) == want


def test_constants_are_the_meds_packages_and_the_docs_table_lists_every_rule():
    from jobs.export_meds import SPLIT_DIRS
    from trajectory.use.meds import CODE_RULES, DEATH_CODE, SPLITS

    assert DEATH_CODE == meds.death_code
    assert meds_code("BIRTH") == (meds.birth_code, False)
    assert tuple(SPLITS.values()) == SPLIT_DIRS == (meds.train_split, meds.tuning_split,
                                                    meds.held_out_split)
    doc = (REPO / "docs" / "MEDS.md").read_text()
    for r in CODE_RULES:
        assert f"| `{r.prefix}" in doc and f"`{r.meds}" in doc, r


def _record(dod=None, deathtimes=()):
    codes = ["GENDER//F", "BIRTH", "LAB//1//x", "DISCHARGE//HOME"]
    ev = {"time": np.array([0, 0, 100, 200], "<i8"), "code": np.array([1, 0, 2, 3], "<i4"),
          "value": np.array([np.nan, np.nan, 1.5, np.nan], "<f4"),
          "text": np.array([-1, -1, 0, -1], "<i4"), "hadm_id": np.array([-1, -1, 7, 7], "<i8"),
          "stay_id": np.full(4, -1, "<i8"), "flags": np.array([0, 0, 2, 0], "|u1"),
          "concept": np.array([-1, -1, 0, -1], "<i2"),
          "concept_value": np.array([np.nan, np.nan, 1.5, np.nan], "<f4"),
          "known_delta": np.array([0, 0, 3600, 0], "<u4")}
    adms = {"hadm_id": [7] * len(deathtimes), "admittime": [50] * len(deathtimes),
            "dischtime": [200] * len(deathtimes), "deathtime": list(deathtimes)}
    return codes, {"format": 1, "subject_id": 5, "static": {"dod": dod}, "admissions": adms,
                   "stays": {}, "events": ev, "texts": ["NEG"],
                   "notes": {"event": [], "note_id": []}}


@pytest.mark.parametrize("dod, deathtimes, death", [
    (None, (), None), (86400, (), 86400), (86400, (200, None), 200), (None, (300, 200), 200)])
def test_patient_rows_order_and_death(dod, deathtimes, death):
    codes, rec = _record(dod, deathtimes)
    lk = code_lookup(codes)
    rows = patient_rows(rec, lk)
    got = [lk.codes[int(c)].as_py() for c in rows["code"]]
    want = ["GENDER//F", "MEDS_BIRTH", "LAB//1//x", "HOSPITAL_DISCHARGE//HOME"]
    if death is not None:  # after the events of its own time (a death at discharge follows it)
        want.insert(1 + sum(t <= death for t in (0, 100, 200)), "MEDS_DEATH")
    assert got == want
    assert rows["time"][0] == STATIC_TIME and sorted(rows["time"]) == list(rows["time"])
    assert (rows["time"][np.array(got) == "MEDS_DEATH"] == ([death] if death else [])).all()
    # known: the lab an hour after its time, the added death at its own, static rows none
    known = dict(zip(got, rows["known"].tolist()))
    assert known["LAB//1//x"] == 3700 and known["GENDER//F"] == STATIC_TIME
    assert known.get("MEDS_DEATH", death) == death


# ---- the real demo ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(demo_build, tmp_path_factory):
    cfg, _ = demo_build
    out = tmp_path_factory.mktemp("meds") / "demo"
    result = export_meds(cfg.version_dir, out, None, progress=False,
                         rows_per_file=ROWS_PER_FILE)
    return cfg, out, result


def read_data(out: Path) -> pl.DataFrame:
    parts = []
    for split in ("train", "tuning", "held_out"):
        for f in sorted((out / "data" / split).glob("*.parquet"), key=lambda p: int(p.stem)):
            parts.append(pl.read_parquet(f).with_columns(split=pl.lit(split),
                                                         file=pl.lit(f.name)))
    return pl.concat(parts)


def test_files_pass_the_meds_schemas(exported):
    _, out, result = exported
    files = sorted((out / "data").rglob("*.parquet"))
    assert {p.parent.name for p in files} == {"train", "tuning", "held_out"}
    for split in ("train", "tuning", "held_out"):  # numbered 0..n-1 per split
        names = sorted(int(p.stem) for p in (out / "data" / split).glob("*.parquet"))
        assert names == list(range(result["splits"][split]["files"])) and len(names) > 1
    for p in files:
        table = pq.read_table(p)
        meds.DataSchema.validate(table)  # raises on a wrong type or a null code
        base = meds.DataSchema.schema()
        assert table.schema.field("code").type == base.field("code").type
        assert table.schema.field("text_value").type == base.field("text_value").type
        assert table.column_names[:5] == base.names
        df = pl.from_arrow(table)
        assert df["subject_id"].n_unique() == 1 or df.height <= ROWS_PER_FILE, p
        # each subject contiguous, sorted by time, static rows (null time) first
        assert df.equals(df.sort("subject_id", "time", nulls_last=False, maintain_order=True))
        assert not df.filter(pl.col("time").is_null())["code"].str.starts_with("GENDER//").not_().any()
    with pytest.raises(Exception):  # the check is real: a float64 value column fails it
        meds.DataSchema.validate(table.set_column(
            3, "numeric_value", table["numeric_value"].cast(pa.float64())))
    meds.CodeMetadataSchema.validate(pq.read_table(out / "metadata/codes.parquet"))
    meds.SubjectSplitSchema.validate(pq.read_table(out / "metadata/subject_splits.parquet"))
    doc = json.loads((out / "metadata/dataset.json").read_text())
    meds.DatasetMetadataSchema.validate(doc)
    assert doc["meds_version"] == meds.__version__ and doc["etl_name"] == "mimic-trajectory"
    assert not (out / ".work").exists()


def test_round_trip_every_event(exported):
    cfg, out, _ = exported
    data = read_data(out)
    v = open_version(cfg.version_dir)
    concepts = v.meta["concepts"]
    mapped = [meds_code(c) for c in v.codes["code"].to_list()]
    meds_codes = np.array([m for m, _ in mapped], dtype=object)
    static_code = np.array([s for _, s in mapped])
    want, deaths = [], {}
    for p in v:
        e = p.events
        static = static_code[e["code"]]
        want.append(pl.DataFrame({
            "subject_id": np.full(len(p), p.subject_id, np.int64),
            "time": pl.Series(np.where(static, None, e["time"] * 1_000_000).tolist(),
                              dtype=pl.Int64).cast(pl.Datetime("us")),
            "code": meds_codes[e["code"]].tolist(),
            "numeric_value": pl.Series(e["value"]).fill_nan(None),
            "text_value": [p.text(i) for i in range(len(p))],
            "hadm_id": pl.Series(e["hadm_id"]).replace(-1, None),
            "stay_id": pl.Series(e["stay_id"]).replace(-1, None),
            "flags": e["flags"],
            "concept": [concepts[c] if c >= 0 else None for c in e["concept"]],
            "concept_value": pl.Series(e["concept_value"]).fill_nan(None),
            "static": static}))
        dt = [t for t in p.admissions.get("deathtime", []) if t is not None]
        death = min(dt) if dt else p.static.get("dod")
        if death is not None:
            deaths[p.subject_id] = death * 1_000_000
    want = pl.concat(want)
    cols = [c for c in want.columns if c != "static"]
    got = data.filter(pl.col("code") != "MEDS_DEATH").sort("subject_id", maintain_order=True)
    # static rows first, then every other event in the record's order
    for is_static in (True, False):
        w = want.filter(pl.col("static") == is_static).select(cols)
        g = got.filter(pl.col("time").is_null() == is_static).select(cols)
        assert g.height == w.height > 0
        assert g.equals(w), "export differs from the version's events"
    assert data.height == want.height + len(deaths)
    d = data.filter(pl.col("code") == "MEDS_DEATH")
    assert dict(zip(d["subject_id"].to_list(),
                    d["time"].dt.epoch("us").to_list())) == deaths
    # every version event's code reaches codes.parquet, with the d_* label as description
    codes = pl.read_parquet(out / "metadata/codes.parquet")
    assert set(data["code"].unique()) <= set(codes["code"])
    assert codes.filter(pl.col("code") == "LAB//50912//mg/dL")["description"].item() == "Creatinine"
    dx = codes.filter(pl.col("code").str.starts_with("DIAGNOSIS//ICD//"))
    assert dx.height and dx["parent_codes"].null_count() == 0
    assert all(p == [f"ICD{c.split('//')[2]}CM/{c.split('//')[3]}"]
               for c, p in zip(dx["code"].to_list(), dx["parent_codes"].to_list()))


def test_splits_are_the_projects(exported):
    cfg, out, result = exported
    data = read_data(out)
    per_subject = data.group_by("subject_id").agg(pl.col("split").n_unique().alias("n"),
                                                  pl.col("file").n_unique().alias("f"),
                                                  pl.col("split").first())
    assert (per_subject["n"] == 1).all() and (per_subject["f"] == 1).all()
    sids = open_version(cfg.version_dir).subject_ids
    want = dict(zip(sids, [SPLIT[s] for s in split_of(sids)]))
    assert dict(zip(per_subject["subject_id"], per_subject["split"])) == want
    splits = pl.read_parquet(out / "metadata/subject_splits.parquet")
    assert dict(zip(splits["subject_id"], splits["split"])) == want
    assert splits["subject_id"].is_sorted()
    assert {s: c["subjects"] for s, c in result["splits"].items()} == \
        {s: list(want.values()).count(s) for s in ("train", "tuning", "held_out")}


# MEDS-DEV's MIMIC-IV predicates name these codes; they must be in the export as written.
PREDICATE_CODES = ("LAB//220645//mEq/L", "LAB//50912//mg/dL", "LAB//220052//mmHg",
                   "LAB//220228//g/dl", "MEDS_BIRTH", "MEDS_DEATH")
PREDICATE_REGEXES = ("^HOSPITAL_ADMISSION//.*", "^HOSPITAL_DISCHARGE//.*", "^ED_REGISTRATION.*",
                     "^ED_OUT.*", "^ICU_ADMISSION//.*", "^ICU_DISCHARGE//.*", "MEDS_DEATH.*")
# code families whose rows must equal the community's MIMIC-IV conversion of the demo
EXACT = ("MEDS_BIRTH", "MEDS_DEATH", "GENDER", "HOSPITAL_ADMISSION", "HOSPITAL_DISCHARGE",
         "ICU_ADMISSION", "ICU_DISCHARGE", "ED_REGISTRATION", "ED_OUT", "LAB")


def test_codes_match_the_community_conversion(exported):
    _, out, _ = exported
    data = read_data(out).select("subject_id", "time", "code")
    present = set(data["code"].unique())
    assert set(PREDICATE_CODES) <= present
    for rx in PREDICATE_REGEXES:
        assert data["code"].str.contains(rx).any(), rx
    community = demo_dir().parent / COMMUNITY
    if not community.exists():
        pytest.skip(f"{community} not found")
    key = ["subject_id", "time", "code"]
    fam = pl.col("code").str.extract(r"^([^/]*)").alias("fam")
    ref = (pl.read_parquet(community, columns=key).with_columns(fam)
           .filter(pl.col("fam").is_in(EXACT)).group_by("fam", *key).len("b"))
    data = (data.with_columns(fam).filter(pl.col("fam").is_in(EXACT))
            .group_by("fam", *key).len("a"))
    for f in EXACT:
        a = data.filter(pl.col("fam") == f).drop("fam")
        b = ref.filter(pl.col("fam") == f).drop("fam")
        j = a.join(b, on=key, how="full", coalesce=True, nulls_equal=True).fill_null(0)
        matched = j.select(pl.min_horizontal("a", "b")).to_series().sum()
        # LAB: 339 rows of itemid 51498 whose unit is " " (the build strips it: 'LAB//51498//',
        # the community keeps 'LAB//51498// '); ED_*/LAB: the community drops repeated rows,
        # the export keeps every event of the version.
        floor = 0.995 if f == "LAB" else 1.0
        assert b["b"].sum() > 0 and matched >= floor * b["b"].sum(), f
        assert matched >= floor * a["a"].sum() - 1, f


def test_rerun_and_dask_are_byte_identical(exported, tmp_path):
    cfg, out, _ = exported
    before = files_of(out)
    export_meds(cfg.version_dir, out, None, progress=False, rows_per_file=ROWS_PER_FILE)
    assert files_of(out) == before
    dask_cfg = make_cfg(cfg.data_dir, cfg.out_dir, runner="dask", max_cpus=2)
    result = export_meds(cfg.version_dir, tmp_path / "d", dask_cfg, progress=False,
                         rows_per_file=ROWS_PER_FILE, in_process_below=0)
    assert result["runner"] == "dask"
    assert files_of(tmp_path / "d") == before


def test_resumes_from_done_markers_and_refuses_other_folders(exported, tmp_path, monkeypatch):
    cfg, out, _ = exported
    import jobs.export_meds as em

    # a run killed after its first unit: the rerun redoes only the other shards
    calls = []
    real = em.run

    def dies_after_one(shard, job):
        if calls:
            raise KeyboardInterrupt
        calls.append(shard)
        return real(shard, job)

    monkeypatch.setattr(em, "run", dies_after_one)
    with pytest.raises(KeyboardInterrupt):
        export_meds(cfg.version_dir, tmp_path / "r", None, progress=False,
                    rows_per_file=ROWS_PER_FILE)
    assert not (tmp_path / "r/metadata/dataset.json").exists()
    done = []
    monkeypatch.setattr(em, "patient_rows", lambda rec, lk: done.append(1) or
                        patient_rows(rec, lk))
    monkeypatch.setattr(em, "run", real)
    export_meds(cfg.version_dir, tmp_path / "r", None, progress=False,
                rows_per_file=ROWS_PER_FILE)
    assert 0 < len(done) < len(open_version(cfg.version_dir))
    assert files_of(tmp_path / "r") == files_of(out)
    (tmp_path / "other").mkdir()
    (tmp_path / "other/notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a MEDS export"):
        export_meds(cfg.version_dir, tmp_path / "other", None, progress=False)


def test_cli_on_a_synthetic_version(tmp_path):
    from trajectory import synth
    from jobs.driver import run_build

    synth.generate(tmp_path / "raw", n_patients=12, seed=3)
    cfg = make_cfg(tmp_path / "raw", tmp_path / "out")
    run_build(cfg, progress=False)
    cmd = [sys.executable, str(REPO / "build_patient_files.py"), "export", "meds",
           str(cfg.version_dir), str(tmp_path / "meds"), "--quiet"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    assert "wrote MEDS" in out and "12 patients" in out
    data = read_data(tmp_path / "meds")
    v = open_version(cfg.version_dir)
    n_events = int(v.manifest["n_events"].sum())
    n_deaths = sum(1 for p in v if p.static.get("dod") is not None
                   or any(t is not None for t in p.admissions.get("deathtime", [])))
    assert data.height == n_events + n_deaths
    assert set(data["subject_id"]) == set(v.subject_ids)
    notes = data.filter(pl.col("code").str.starts_with("NOTE//"))
    assert notes.height > 0 and notes["text_value"].is_not_null().all()  # note bodies travel
    for p in (tmp_path / "meds/data").rglob("*.parquet"):
        meds.DataSchema.validate(pq.read_table(p))
    first = files_of(tmp_path / "meds")
    subprocess.run(cmd, check=True, capture_output=True)
    assert files_of(tmp_path / "meds") == first
