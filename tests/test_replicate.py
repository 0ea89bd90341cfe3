"""`python -m trajectory.replicate`: the scaled inputs of the full-size rehearsal. Notes at
MIMIC-IV-Note's rates, lengths and id scheme in every copy, links between notes kept inside
their copy, the heavy patient whole, and the same bytes from the same seed."""
import gzip
import subprocess
import sys

import numpy as np
import polars as pl
import pyarrow.csv as pacsv
import pytest

from tests.conftest import REPO, demo_dir
from trajectory.synth.catalog import HEADERS
from trajectory.replicate import HEAVY_SUBJECT, ID_STEP, replicate

NOTES = ("discharge", "radiology", "discharge_detail", "radiology_detail")


def read(root, table: str) -> pl.DataFrame:
    return pl.from_arrow(pacsv.read_csv(
        root / f"{table}.csv.gz", parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(strings_can_be_null=True)))


@pytest.fixture(scope="module")
def scaled(tmp_path_factory):
    return replicate(demo_dir(), tmp_path_factory.mktemp("rep") / "x2", 2, heavy_events=5000)


def test_notes_have_the_release_columns_rates_and_lengths(scaled):
    for t in NOTES:
        with gzip.open(scaled / "note" / f"{t}.csv.gz", "rt") as f:
            assert f.readline().strip() == HEADERS[f"note/{t}"]
    adm = read(scaled, "hosp/admissions").filter(pl.col("subject_id") != HEAVY_SUBJECT)
    ds, rr = read(scaled, "note/discharge"), read(scaled, "note/radiology")
    assert 0.5 < ds.height / adm.height < 0.7  # MIMIC-IV-Note 2.2: ~0.6 per admission
    assert 3.6 < rr.height / adm.height < 4.8  # ~4.2
    assert 0.05 < rr["hadm_id"].null_count() / rr.height < 0.2  # outpatient exams
    assert set(ds["note_type"]) == {"DS", "AD"} and set(rr["note_type"]) == {"RR", "AR"}
    assert ds["note_id"].str.contains(r"^\d+-DS-\d+$").all()
    assert rr["note_id"].str.contains(r"^\d+-RR-\d+$").all()
    for frame, (mean, _, cap) in ((ds, (10_000, 0, 60_000)), (rr, (1_500, 0, 15_000))):
        n = frame["text"].str.len_chars()
        assert abs(n.mean() / mean - 1) < 0.15 and n.max() == cap
    text = "".join(ds["text"].head(20).to_list() + rr["text"].head(50).to_list())
    for piece in ("\n \n", '"', ",", "°", "µ", "≥"):
        assert piece in text, piece


def test_every_copy_has_its_own_ids_and_links(scaled):
    rr = read(scaled, "note/radiology")
    det = read(scaled, "note/radiology_detail")
    sid = rr["note_id"].str.extract(r"^(\d+)").cast(pl.Int64)
    assert (sid == rr["subject_id"]).all()  # the prefix is the copy's own subject
    assert (rr["subject_id"] > ID_STEP).any() and (rr["subject_id"] < ID_STEP).any()
    links = det.filter(pl.col("field_name").is_in(["parent_note_id", "addendum_note_id"]))
    assert links.height > 0 and links["field_value"].is_in(rr["note_id"].to_list()).all()
    # a link points inside its own copy: the linked note's subject is the row's subject
    target = links["field_value"].str.extract(r"^(\d+)").cast(pl.Int64)
    assert (target == links["subject_id"]).all()
    parents = links.filter(pl.col("field_name") == "parent_note_id")
    kinds = rr.select("note_id", "note_type")
    assert (parents.join(kinds, on="note_id")["note_type"] == "AR").all()
    assert (parents.join(kinds, left_on="field_value", right_on="note_id")["note_type"]
            == "RR").all()


def test_heavy_patient_is_whole(scaled):
    ch = read(scaled, "icu/chartevents").filter(pl.col("subject_id") == HEAVY_SUBJECT)
    assert ch.height == 5000
    stay = read(scaled, "icu/icustays").filter(pl.col("subject_id") == HEAVY_SUBJECT)
    adm = read(scaled, "hosp/admissions").filter(pl.col("subject_id") == HEAVY_SUBJECT)
    assert stay.height == 1 and adm.height == 1
    assert read(scaled, "hosp/patients").filter(pl.col("subject_id") == HEAVY_SUBJECT).height == 1
    t = ch["charttime"]
    assert t.min() > stay["intime"][0] and t.max() < stay["outtime"][0]
    assert stay["outtime"][0] < adm["dischtime"][0]
    assert ch["valuenum"].is_not_null().all() and ch["valueuom"].is_not_null().all()


def test_same_seed_same_bytes(scaled, tmp_path):
    again = replicate(demo_dir(), tmp_path / "x2", 2, heavy_events=5000)
    for t in ("note/discharge", "note/radiology_detail", "icu/chartevents"):
        assert (again / f"{t}.csv.gz").read_bytes() == (scaled / f"{t}.csv.gz").read_bytes()


def test_worker_processes_write_the_same_bytes(tmp_path):
    """Copies formatted by worker processes (in order) make the bytes one process makes; the
    tree is marked whole only at the end, and no temporary file is left."""
    import shutil

    from trajectory.replicate import DONE

    src = tmp_path / "src"
    for t in ("hosp/patients", "icu/icustays"):
        (src / t).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(demo_dir() / f"{t}.csv.gz", src / f"{t}.csv.gz")
    one = replicate(src, tmp_path / "one", 5, notes=False, workers=1)
    two = replicate(src, tmp_path / "two", 5, notes=False, workers=2)
    for t in ("hosp/patients", "icu/icustays"):
        assert (one / f"{t}.csv.gz").read_bytes() == (two / f"{t}.csv.gz").read_bytes()
    assert (two / DONE).exists() and not list(two.rglob(".*.tmp"))


def test_cli_without_notes(tmp_path):
    out = tmp_path / "x1"
    r = subprocess.run([sys.executable, "-m", "trajectory.replicate", str(demo_dir()), str(out),
                        "--times", "1", "--no-notes"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert not (out / "note").exists() and (out / "icu" / "chartevents.csv.gz").exists()
    assert not (out / ".replicate-notes").exists()  # the generated notes' scratch
    r = subprocess.run([sys.executable, "-m", "trajectory.replicate", str(demo_dir()), str(out),
                        "--times", "1", "--heavy-events", "-1"], cwd=REPO, capture_output=True,
                       text=True)
    assert r.returncode != 0 and "--heavy-events must be >= 0" in r.stderr


def test_heavy_patient_builds_into_one_correct_record(tmp_path):
    """Every one of the patient's charted values is in its record, in time order, and the
    record's last events are the stay's last minute."""
    import config
    from jobs.driver import run_build
    from trajectory import open_version

    data = replicate(demo_dir(), tmp_path / "x1", 1, notes=False, heavy_events=30_000)
    cfg = config.load({"DATA_DIR": str(data), "OUT_DIR": str(tmp_path / "out"), "MAX_CPUS": 1,
                       "RUNNER": "serial"}, environ={})
    run_build(cfg, progress=False)
    p = open_version(cfg.version_dir).patient(HEAVY_SUBJECT)
    chart = np.char.startswith(p.codes.astype(str), "CHART//")
    assert chart.sum() == 30_000
    t = p.events["time"]
    assert (np.diff(t) >= 0).all()
    src = read(data, "icu/chartevents").filter(pl.col("subject_id") == HEAVY_SUBJECT)
    assert np.isclose(np.sort(p.events["value"][chart]),
                      np.sort(src["valuenum"].cast(pl.Float64).to_numpy())).all()
