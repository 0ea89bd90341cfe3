"""Task labels: every boundary on hand-made patients, then the real demo through the Python API
and the real CLI, against a slow reference computed here from the raw admissions, patients
and icustays tables (never from trajectory.use.tasks)."""
import calendar
import csv
import gzip
import json
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import datetime

import meds
import msgpack
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from jobs.tasks import run_tasks
from trajectory import open_version
from trajectory.atomic import checksum_file
from trajectory.record import EVENT_DTYPES, FORMAT, events_to_bytes, pack
from trajectory.use.tasks import HEADER_KEYS, TASKS, funnel, read_header, timeline

from .conftest import REPO, demo_dir, make_cfg

H, D = 3600, 86400
T = 4_000_000_000  # some time in 2096, like MIMIC's shifted calendar


def cols(rows, names):
    return {n: [r[i] for r in rows] for i, n in enumerate(names)} if rows else {}


def tl(stays=(), adms=(), dod=None, last=None):
    """A patient: stays (stay_id, hadm_id, intime, outtime), admissions (hadm_id, admittime,
    dischtime, deathtime), the date of death, the last event time."""
    return timeline({"subject_id": 7, "static": {"dod": dod},
                     "admissions": cols(adms, ("hadm_id", "admittime", "dischtime", "deathtime")),
                     "stays": cols(stays, ("stay_id", "hadm_id", "intime", "outtime"))}, last)


def label(task, patient):
    """(rows as (prediction_time, label), excluded by reason) of one task on one patient."""
    rows, excluded = TASKS[task].label(patient)
    return [(r[1], r[2]) for r in rows], dict(excluded)


# ---- pure functions, hand-made patients -----------------------------------------------------


def test_timeline_death_and_last_time():
    p = tl(adms=[(1, T, T + D, None), (2, T + 5 * D, T + 6 * D, T + 6 * D)], dod=T + 5 * D,
           last=T + 2 * D)
    assert p.death == T + 6 * D  # a deathtime of any admission wins over the date
    assert p.last_time == T + 6 * D  # admission times count as events
    assert tl(dod=T).death == T and tl().death is None and tl().last_time is None
    assert tl(adms=[(1, T, None, None)], last=T + 9).last_time == T + 9


@pytest.mark.parametrize("stays, death, expect", [
    ([(1, 9, T, T + 48 * H)], None, {"icu_discharge_in_gap": 1}),  # gap end inclusive
    ([(1, 9, T, T + 48 * H + 1)], None, [(T + 24 * H, False)]),
    ([(1, 9, T, T + 72 * H)], T + 48 * H, {"death_in_gap": 1}),
    ([(1, 9, T, T + 72 * H)], T + 48 * H + 1, [(T + 24 * H, True)]),  # target start open
    ([(1, 9, T, T + 72 * H)], T + 72 * H, [(T + 24 * H, True)]),  # death at ICU discharge
    ([(1, 9, T, T + 72 * H)], T + 72 * H + 1, [(T + 24 * H, False)]),  # after: not in ICU
    ([(1, 9, T, T + 72 * H)], T, {"death_at_or_before_icu_admission": 1}),
    ([(1, 9, T, None)], None, {"missing_icu_time": 1}),
    ([(1, 9, None, T)], None, {"missing_icu_time": 1}),
    ([(1, 9, T, T)], None, {"icu_outtime_not_after_intime": 1}),
    # another ICU admission at exactly T + 48 h is in the gap; the second stay ends in its own
    ([(1, 9, T, T + 99 * H), (2, 9, T + 48 * H, T + 50 * H)], None,
     {"icu_admission_in_gap": 1, "icu_discharge_in_gap": 1}),
    # a death in a later ICU stay is not this stay's death (target ends at its discharge)
    ([(1, 9, T, T + 60 * H), (2, 9, T + 80 * H, T + 200 * H)], T + 150 * H,
     [(T + 24 * H, False), (T + 104 * H, True)]),
])
def test_mortality_in_icu_boundaries(stays, death, expect):
    rows, excluded = label("mortality_in_icu_first_24h",
                           tl(stays=stays, adms=[(9, T - D, T + 300 * H, death)]))
    assert (rows if isinstance(expect, list) else excluded) == expect
    assert len(rows) + sum(excluded.values()) == len(stays)


ADM = (9, T - 10 * H, T + 100 * H, None)


@pytest.mark.parametrize("stay, adm, dod, expect", [
    ((1, 9, T, T + 48 * H), ADM, None, [(T + 48 * H, False)]),  # exactly 48 h is kept
    ((1, 9, T, T + 48 * H - 1), ADM, None, {"icu_stay_under_48h": 1}),
    ((1, 9, T, T + 50 * H), ADM[:3] + (T + 100 * H,), None, [(T + 48 * H, True)]),
    ((1, 9, T, T + 50 * H), ADM, T + 100 * H, [(T + 48 * H, True)]),  # death == dischtime
    ((1, 9, T, T + 50 * H), ADM, T + 100 * H + 1, [(T + 48 * H, False)]),
    # dischtime truncated to 00:00 with the deathtime later that day: died in the admission
    ((1, 9, T, T + 50 * H), ADM[:3] + (T + 110 * H,), None, [(T + 48 * H, True)]),
    ((1, 9, T, T + 50 * H), ADM, T + 48 * H, {"death_at_or_before_prediction": 1}),
    ((1, 9, T, T + 50 * H), ADM[:2] + (T + 48 * H, None), None,
     {"discharged_at_or_before_prediction": 1}),
    ((1, 8, T, T + 50 * H), ADM, None, {"admission_not_found": 1}),
    ((1, 9, T, T + 50 * H), ADM[:2] + (None, None), None, {"missing_admission_time": 1}),
    ((1, 9, T, None), ADM, None, {"missing_icu_time": 1}),
])
def test_mortality_in_hospital_boundaries(stay, adm, dod, expect):
    rows, excluded = label("mortality_in_hospital_first_48h_icu",
                           tl(stays=[stay], adms=[adm], dod=dod))
    assert (rows if isinstance(expect, list) else excluded) == expect


@pytest.mark.parametrize("outtime, dod, expect3, expect7", [
    (T + 24 * H, None, {"icu_discharge_at_or_before_prediction": 1}, None),
    (T + 24 * H + 1, None, [(T + 24 * H, False)], [(T + 24 * H, False)]),
    (T + 3 * D, None, [(T + 24 * H, False)], None),  # exactly 3 days is not more than 3
    (T + 3 * D + 1, None, [(T + 24 * H, True)], [(T + 24 * H, False)]),
    (T + 7 * D, None, [(T + 24 * H, True)], [(T + 24 * H, False)]),
    (T + 7 * D + 1, None, [(T + 24 * H, True)], [(T + 24 * H, True)]),
    (T + 9 * D, T + 24 * H, {"death_at_or_before_prediction": 1}, None),
    (T + 9 * D, T + 24 * H + 1, [(T + 24 * H, True)], None),  # alive at prediction
])
def test_long_los_boundaries(outtime, dod, expect3, expect7):
    p = tl(stays=[(1, 9, T, outtime)], dod=dod)
    for task, expect in (("long_los_icu_3d", expect3), ("long_los_icu_7d", expect7 or expect3)):
        rows, excluded = label(task, p)
        assert (rows if isinstance(expect, list) else excluded) == expect, task


DIS = T + 5 * D  # discharge of the first admission


@pytest.mark.parametrize("adms, dod, last, expect", [
    ([(1, T, DIS, None), (2, DIS + 30 * D, DIS + 31 * D, None)], None, None,
     [(DIS, True)]),  # readmission at exactly D + 30 d is in the window
    ([(1, T, DIS, None), (2, DIS + 30 * D + 1, DIS + 31 * D, None)], None, None,
     [(DIS, False)]),  # ...one second later is not, and is the event after the window
    ([(1, T, DIS, None), (2, DIS, DIS + D, None)], None, DIS + 40 * D,
     [(DIS, False), (DIS + D, False)]),  # admitted at the discharge itself: not in (D, ...]
    ([(1, T, DIS, None)], None, DIS + 30 * D, {"censored": 1}),  # last event at D + 30 d
    ([(1, T, DIS, None)], None, DIS + 30 * D + 1, [(DIS, False)]),
    ([(1, T, DIS, None)], DIS + 10 * D, DIS + 10 * D, {"censored": 1}),  # died after
    ([(1, T, DIS, DIS)], None, DIS + 90 * D, {"died_in_admission": 1}),
    ([(1, T, DIS, None)], DIS - 9 * H, DIS + 90 * D, {"died_in_admission": 1}),  # dod 00:00
    ([(1, T, None, None)], None, DIS + 90 * D, {"missing_admission_time": 1}),
    ([(1, None, DIS, None)], None, DIS + 90 * D, {"missing_admission_time": 1}),
    ([(1, DIS, T, None)], None, DIS + 90 * D, {"discharge_before_admission": 1}),
])
def test_readmission_boundaries(adms, dod, last, expect):
    rows, excluded = label("readmission_30d", tl(adms=adms, dod=dod, last=last))
    assert (rows if isinstance(expect, list) else excluded) == expect


def test_funnel_must_add_up():
    task = TASKS["readmission_30d"]
    f = funnel(task, 5, Counter(censored=2), 3, 1)
    assert f["excluded"] == dict.fromkeys(task.reasons, 0) | {"censored": 2}
    with pytest.raises(RuntimeError, match="candidates"):
        funnel(task, 6, Counter(censored=2), 3, 1)


def test_read_header_inflates_only_the_head():
    head = {"format": FORMAT, "subject_id": 5, "static": {"dod": None},
            "admissions": {"hadm_id": [1], "admittime": [T]}, "stays": {}}
    later = {"events": events_to_bytes({k: np.zeros(3) for k in EVENT_DTYPES}),
             "texts": ["x"], "notes": {"event": [], "note_id": []}, "windows": []}
    dctx = zstandard.ZstdDecompressor()
    for record in ({**head, **later}, {**later, **head}):
        data = pack(record, zstandard.ZstdCompressor())
        assert read_header(data, dctx) == head
    old = zstandard.ZstdCompressor().compress(msgpack.packb({**head, "format": 1}))
    with pytest.raises(ValueError, match="record format 1"):
        read_header(old, dctx)


# ---- the real demo ------------------------------------------------------------------------


def snapshot(vdir):
    """Every file of the version outside tasks/: size, mtime and checksum."""
    return {str(p.relative_to(vdir)): (p.stat().st_size, p.stat().st_mtime_ns,
                                       checksum_file(p))
            for p in sorted(vdir.rglob("*"))
            if p.is_file() and p.relative_to(vdir).parts[0] != "tasks"}


def task_files(vdir):
    return {p.name: p.read_bytes() for p in sorted((vdir / "tasks").iterdir())}


@pytest.fixture(scope="module")
def labelled(demo_build):
    cfg, _ = demo_build
    vdir = cfg.version_dir
    before = snapshot(vdir)
    result = run_tasks(vdir, None, cfg, progress=False)  # cfg: the serial runner
    assert snapshot(vdir) == before, "tasks changed the version"
    return cfg, result, before, task_files(vdir)


def test_files_schema_and_funnel(labelled):
    cfg, result, _, files = labelled
    vdir = cfg.version_dir
    assert sorted(files) == sorted(f"{n}.{ext}" for n in TASKS
                                   for ext in ("json", "parquet", "ids.parquet"))
    meta = json.loads((vdir / "dataset.json").read_text())
    for name, task in TASKS.items():
        table = pq.read_table(vdir / "tasks" / f"{name}.parquet")
        want = [("subject_id", pa.int64()), ("prediction_time", pa.timestamp("us")),
                ("boolean_value", pa.bool_())]
        assert [(f.name, f.type) for f in table.schema] == want, name
        meds.LabelSchema.validate(table)  # the real MEDS schema, not our reading of it
        ids = pq.read_table(vdir / "tasks" / f"{name}.ids.parquet")
        assert ids.column_names == ["subject_id", "prediction_time", *task.id_columns]
        assert ids.select(["subject_id", "prediction_time"]).equals(
            table.select(["subject_id", "prediction_time"]))
        doc = json.loads(files[f"{name}.json"])
        f = doc["funnel"]
        assert doc["config_hash"] == meta["config_hash"] and doc["parameters"] == task.params
        assert f == result["tasks"][name]
        assert f["candidates"] == f["samples"] + sum(f["excluded"].values()) > 0
        labels = pl.read_parquet(vdir / "tasks" / f"{name}.parquet")
        assert labels.height == f["samples"] and labels["boolean_value"].sum() == f["positives"]
        both = pl.concat([labels, pl.read_parquet(vdir / "tasks" / f"{name}.ids.parquet")
                          .drop("subject_id", "prediction_time")], how="horizontal")
        assert both.equals(both.sort(doc["sorted_by"]))
        assert doc["labels_checksum"] == checksum_file(vdir / "tasks" / f"{name}.parquet")
    assert not (vdir / "tasks" / ".work").exists()


def test_cli_rerun_with_dask_is_byte_identical(labelled):
    cfg, _, before, files = labelled
    vdir = cfg.version_dir
    out = subprocess.run([sys.executable, str(REPO / "build_patient_files.py"), "tasks",
                          str(vdir), "--runner", "dask", "--max-cpus", "2", "--quiet"],
                         check=True, capture_output=True, text=True).stdout
    assert all(f"{name}:" in out for name in TASKS) and "dask runner" in out
    assert task_files(vdir) == files
    assert snapshot(vdir) == before
    # one task alone rewrites only its own files, to the same bytes; a version this small is
    # labelled in-process even when the settings say dask (the cluster's start costs more)
    dask_cfg = make_cfg(cfg.data_dir, cfg.out_dir, runner="dask")
    result = run_tasks(vdir, ["readmission_30d"], dask_cfg, progress=False)
    assert result["runner"] == "serial" and list(result["tasks"]) == ["readmission_30d"]
    assert task_files(vdir) == files
    with pytest.raises(ValueError, match="unknown task"):
        run_tasks(vdir, ["mortality"], progress=False)


# The reference: raw CSV rows, parsed here, each task written out again from its definition.


def _epoch(s):
    if not s:
        return None
    fmt = "%Y-%m-%d %H:%M:%S" if " " in s else "%Y-%m-%d"
    return calendar.timegm(datetime.strptime(s, fmt).timetuple())


def _raw(name):
    with gzip.open(demo_dir() / name, "rt", newline="") as f:
        return list(csv.DictReader(f))


def _int(s):
    return int(s) if s else None


def reference_labels(subjects, last_event):
    """{task: {(subject_id, prediction_time, label, hadm_id, stay_id)}} from the raw tables.
    Censoring needs the patient's last event of any kind: raw events are far too big to
    scan here, so it is the record's last event time (events["time"].max(), read with
    open_version), with the raw admission, stay and death times."""
    adms, stays, dod = defaultdict(list), defaultdict(list), {}
    for r in _raw("hosp/patients.csv.gz"):
        dod[int(r["subject_id"])] = _epoch(r["dod"])
    for r in _raw("hosp/admissions.csv.gz"):
        adms[int(r["subject_id"])].append(
            (_int(r["hadm_id"]), _epoch(r["admittime"]), _epoch(r["dischtime"]),
             _epoch(r["deathtime"])))
    for r in _raw("icu/icustays.csv.gz"):
        stays[int(r["subject_id"])].append(
            (_int(r["stay_id"]), _int(r["hadm_id"]), _epoch(r["intime"]), _epoch(r["outtime"])))
    out = {name: set() for name in TASKS}
    for s in subjects:
        deathtimes = sorted(a[3] for a in adms[s] if a[3] is not None)
        death = deathtimes[0] if deathtimes else dod[s]

        def alive_at(t, death=death):
            return death is None or death > t

        for stay_id, hadm, i, o in stays[s]:
            if i is None or o is None or o <= i:
                continue
            key = (hadm, stay_id)
            # in-ICU mortality: nothing happens in (i, i+48h]
            g = i + 48 * H
            quiet = alive_at(g) and not any(
                (x[2] is not None and i < x[2] <= g) or (x[3] is not None and i < x[3] <= g)
                for x in stays[s])
            if quiet:
                end = min([x[3] for x in stays[s] if x[3] is not None and x[3] > g]
                          + ([death] if death is not None else []))
                out["mortality_in_icu_first_24h"].add(
                    (s, i + 24 * H, death is not None and g < death <= end) + key)
            # in-hospital mortality after 48 h in the ICU
            adm = [a for a in adms[s] if a[0] == hadm]
            if o - i >= 48 * H and adm and adm[0][1] is not None and adm[0][2] is not None:
                _, _, disch, deathtime = adm[0]
                if alive_at(i + 48 * H) and disch > i + 48 * H:
                    dead = deathtime is not None or (death is not None and death <= disch)
                    out["mortality_in_hospital_first_48h_icu"].add((s, i + 48 * H, dead) + key)
            # long ICU stays, from 24 h on
            if alive_at(i + 24 * H) and o > i + 24 * H:
                for days in (3, 7):
                    out[f"long_los_icu_{days}d"].add((s, i + 24 * H, o - i > days * D) + key)
        times = [last_event[s], death] + [t for a in adms[s] for t in a[1:]]
        times += [t for x in stays[s] for t in x[2:]]
        last = max(t for t in times if t is not None)
        for hadm, admit, disch, deathtime in adms[s]:
            if admit is None or disch is None or disch < admit or deathtime is not None:
                continue
            if (death is not None and death <= disch) or last <= disch + 30 * D:
                continue
            again = any(a[1] is not None and disch < a[1] <= disch + 30 * D for a in adms[s])
            out["readmission_30d"].add((s, disch, again, hadm, None))
    return out


def test_labels_equal_reference(labelled):
    cfg, result, _, _ = labelled
    v = open_version(cfg.version_dir)
    last_event, dctx = {}, zstandard.ZstdDecompressor()
    for s in v.subject_ids:
        raw = v.raw(s)
        last_event[s] = int(raw["events"]["time"].max())
        # the streamed header is exactly what a full decode gives
        assert read_header(v.read_bytes(s), dctx) == {k: raw[k] for k in HEADER_KEYS}
    ref = reference_labels(v.subject_ids, last_event)
    for name, task in TASKS.items():
        df = pl.concat([pl.read_parquet(cfg.version_dir / "tasks" / f"{name}.parquet"),
                        pl.read_parquet(cfg.version_dir / "tasks" / f"{name}.ids.parquet")
                        .drop("subject_id", "prediction_time")], how="horizontal")
        got = {(r["subject_id"], r["prediction_time"], r["boolean_value"], r["hadm_id"],
                r.get("stay_id")) for r in df.with_columns(
                    pl.col("prediction_time").dt.epoch("s")).iter_rows(named=True)}
        assert len(got) == df.height > 0, name
        assert got == ref[name], name
        assert sum(x[2] for x in ref[name]) == result["tasks"][name]["positives"]
