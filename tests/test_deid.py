"""`export share`: the de-identified copy (docs/SHARE.md).

A synthetic build (it has notes) is exported with a fixed key; every file of the copy is then
decoded and searched for the originals: ids (as msgpack/int64 bytes, ints and decimal
strings), each patient's own times, note ids and note text. Also intervals, counts,
determinism, linkage, ages, rare codes, --keep-text, key errors and the real CLI."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import msgpack
import numpy as np
import polars as pl
import pytest
import zstandard

from jobs.export_share import export_share, grid_spec
from trajectory import synth
from trajectory.events.tables import SOURCE_ID
from trajectory.record import unpack
from trajectory.torch import TrajectoryDataset
from trajectory.use import deid, deid_codes
from trajectory.use.store import open_version
from trajectory.windows.grids import GridSpec, patient_windows

from .conftest import REPO, make_cfg

KEY = b"0123456789abcdef-test-key-one"
OTHER = b"fedcba9876543210-test-key-two"


def _key(tmp_path, data: bytes, name="key") -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


@pytest.fixture(scope="module")
def synth_version(tmp_path_factory):
    from jobs.driver import run_build

    root = tmp_path_factory.mktemp("deid_synth")
    synth.generate(root / "raw", n_patients=40, seed=5)
    # packed shards here, per-patient files in the demo's copy: both sinks are exercised;
    # with the generator's outcome registry (EXTRA_TABLES, keyed by hadm_id)
    cfg = make_cfg(root / "raw", root / "out", layout="shards",
                   extra_tables=str(root / "raw" / synth.EXTRA_SPEC))
    run_build(cfg, progress=False)
    return cfg.version_dir


@pytest.fixture(scope="module")
def shared(synth_version, tmp_path_factory):
    """The default copy (texts dropped, K = 10) made with KEY."""
    root = tmp_path_factory.mktemp("deid_share")
    out = root / "copy"
    export_share(synth_version, out, key_file=_key(root, KEY + b"\n"), progress=False)
    return out


def _ids(v) -> dict:
    out = {"subject_id": set(), "hadm_id": set(), "stay_id": set(), "note_id": set()}
    for p in v:
        out["subject_id"].add(p.subject_id)
        out["hadm_id"].update(p.admissions.get("hadm_id", []), set(p.events["hadm_id"].tolist()))
        out["stay_id"].update(p.stays.get("stay_id", []), set(p.events["stay_id"].tolist()))
        out["note_id"].update(n for n in p.notes["note_id"] if n)
    out["hadm_id"].discard(-1)
    out["stay_id"].discard(-1)
    return out


def _header_times(rec: dict) -> set:
    times = {rec["static"][k] for k in ("dod", "birth_time")}
    for section, cols in ((rec["admissions"], deid.ADMISSION_TIMES),
                          (rec["stays"], deid.STAY_TIMES)):
        for c in cols:
            times.update(section.get(c, []))
    times.discard(None)
    return times


def _ints(obj, out: set) -> set:
    if isinstance(obj, bool):
        return out
    if isinstance(obj, int):
        out.add(obj)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _ints(k, out)
            _ints(v, out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _ints(v, out)
    return out


def _records(copy: Path):
    """(every inflated frame's bytes, decoded record) of every record of the copy."""
    m = pl.read_parquet(copy / "manifest.parquet")
    dctx = zstandard.ZstdDecompressor()
    for rel, off, n in zip(m["path"], m["offset"], m["bytes"]):
        with open(copy / rel, "rb") as f:
            f.seek(off)
            data = f.read(n)
        outer = msgpack.unpackb(data, raw=False)
        frames = [outer["head"], outer["texts"], outer["windows"], *outer["chunks"]["data"]]
        raw = b"".join(dctx.decompress(f) for f in frames if f is not None)
        yield data + raw, unpack(data, dctx)


def _original(version: Path, key: bytes) -> dict:
    """keyed subject id -> the original record."""
    v = open_version(version)
    return {deid.keyed_id(key, "subject_id", s): v.raw(s) for s in v.subject_ids}


def test_no_original_id_time_or_note_text_anywhere(synth_version, shared):
    src = open_version(synth_version)
    ids = _ids(src)
    int_ids = ids["subject_id"] | ids["hadm_id"] | ids["stay_id"]
    patterns = [p for i in int_ids for p in (msgpack.packb(i), i.to_bytes(8, "little"),
                                             str(i).encode())]
    note_texts = {p.texts[p.events["text"][e]] for p in src for e in p.notes["event"]}
    snippets = [t[:40].encode() for t in note_texts if len(t) >= 40]
    assert len(ids["note_id"]) > 100 and len(snippets) > 50 and len(int_ids) > 100
    originals = _original(synth_version, KEY)
    files = [p for p in shared.rglob("*") if p.is_file()]
    assert {f.name for f in files if f.parent == shared} == {
        "manifest.parquet", "codes.parquet", "qc_report.json", "deid_report.json",
        "dataset.json"}
    n_records = 0
    for raw, rec in _records(shared):
        n_records += 1
        for pat in patterns + snippets + [n.encode() for n in ids["note_id"]]:
            assert pat not in raw
        ev = rec["events"]
        found = _ints(rec, set()) | set(ev["hadm_id"].tolist()) | set(ev["stay_id"].tolist())
        assert not found & int_ids
        # this patient's own times: no admission, stay or death time is kept, and an
        # original event time is found in the copy only where another event lies exactly
        # the patient's offset later (the shift's coincidence, not a kept time). Birth is
        # 1 January of anchor_year - anchor_age on the copy's clock: it is the source's
        # only where the last time stayed in its calendar year (anchor_year is then the
        # source's too), a value of the rule, not a kept time.
        orig = originals[rec["subject_id"]]
        off = deid.time_offset(KEY, orig["subject_id"])
        birth, old_birth = rec["static"]["birth_time"], orig["static"]["birth_time"]
        times = _header_times(rec) | set(ev["time"].tolist())
        assert not (_header_times(orig) - {old_birth}) & times
        assert birth != old_birth or rec["static"]["anchor_year"] == \
            orig["static"]["anchor_year"]
        old = set(orig["events"]["time"].tolist()) - {old_birth}
        assert all(t - off in old for t in old & (times - {birth}))
        assert rec["texts"] == [] and (ev["text"] == -1).all()
    assert n_records == len(ids["subject_id"])
    for f in files:
        if f.suffix == ".json":
            text = f.read_text()
            for s in [str(i) for i in int_ids] + list(ids["note_id"]) + [
                    t[:40] for t in note_texts if len(t) >= 40]:
                assert s not in text, (f.name, s)
            assert str(synth_version.parent.parent) not in text  # DATA_DIR and OUT_DIR
        elif f.suffix == ".parquet":
            frame = pl.read_parquet(f)
            for c in frame.columns:
                if frame[c].dtype.is_integer():
                    assert not set(frame[c].to_list()) & int_ids, (f.name, c)
                elif frame[c].dtype == pl.String:
                    assert not any(str(i) in s for s in frame[c].drop_nulls().to_list()
                                   for i in ids["subject_id"]), (f.name, c)
    meta = json.loads((shared / "dataset.json").read_text())
    assert not {"inputs", "dictionaries", "created_at", "timings"} & set(meta)
    assert not {"data_dir", "out_dir", "work_dir", "index_dir"} & set(meta["config"])
    assert KEY.decode() not in "".join(f.read_bytes().decode("latin-1") for f in files)


def test_intervals_counts_and_shapes_preserved(synth_version, shared):
    originals = _original(synth_version, KEY)
    copy = open_version(shared)
    src_m = pl.read_parquet(synth_version / "manifest.parquet")
    assert copy.manifest.height == src_m.height
    assert copy.manifest["n_events"].sum() == src_m["n_events"].sum()
    at_birth = same_windows = 0
    spec = grid_spec(copy.meta, shared)
    for sid in copy.subject_ids:
        new, old = copy.raw(sid), originals[sid]
        off = deid.time_offset(KEY, old["subject_id"])
        assert off != 0 and off % (7 * 86400) == 0 and abs(off) <= 260 * 7 * 86400
        t_new, t_old = new["events"]["time"], old["events"]["time"]
        assert len(t_new) == len(t_old)
        assert np.array_equal(np.bincount(new["events"]["source"], minlength=64),
                              np.bincount(old["events"]["source"], minlength=64))
        # what is placed at birth (BIRTH, GENDER) moves with it; every other time exactly
        # by the offset
        birth_old = t_old == old["static"]["birth_time"]
        birth_new = t_new == new["static"]["birth_time"]
        assert birth_old.sum() == birth_new.sum() >= 2
        assert np.array_equal(np.sort(t_old[~birth_old]) + off, np.sort(t_new[~birth_new]))
        at_birth += int(birth_new.sum())
        assert np.all(np.diff(t_new) >= 0)
        for c in deid.ADMISSION_TIMES:
            assert [None if t is None else t + off for t in old["admissions"].get(c, [])] == \
                new["admissions"].get(c, [])
        for c in deid.STAY_TIMES:
            assert [t + off for t in old["stays"].get(c, [])] == new["stays"].get(c, [])
        # windows: the build's own, made on the copy's events; with an hourly step (it
        # divides a week) and no concept dropped, the source's shifted
        ev = new["events"]
        again = patient_windows(ev["time"], ev["concept"], ev["concept_value"], ev["flags"],
                                new["stays"], new["admissions"], spec)
        assert [w["start"] for w in again] == [w["start"] for w in new["windows"]]
        for a, b in zip(again, new["windows"]):
            assert np.array_equal(np.frombuffer(a["data"], "<f4"), b["data"].ravel(),
                                  equal_nan=True)
        if np.array_equal(old["events"]["concept"][np.argsort(t_old, kind="stable")] >= 0,
                          ev["concept"][np.argsort(t_new, kind="stable")] >= 0):
            assert [w["start"] + off for w in old["windows"]] == \
                [w["start"] for w in new["windows"]]
            for a, b in zip(old["windows"], new["windows"]):
                assert np.array_equal(a["data"], b["data"], equal_nan=True)
            same_windows += bool(old["windows"])
        assert len(new["notes"]["event"]) == len(old["notes"]["event"])
        assert {copy.meta["sources"][str(new["events"]["source"][e])]
                for e in new["notes"]["event"]} <= {"discharge", "radiology",
                                                    "discharge_detail", "radiology_detail"}
        row = copy.manifest.filter(pl.col("subject_id") == sid)
        assert row["first_time"][0] == t_new[0] and row["last_time"][0] == t_new[-1]
        assert row["path"][0] == f"patients/{row['shard'][0]:05d}.pack"
        assert row["shard"][0] == sid % copy.meta["n_shards"]
    report = json.loads((shared / "deid_report.json").read_text())
    assert report["times_shifted"]["events_at_birth_moved_with_it"] == at_birth
    assert same_windows > 10
    # the copy opens and loads for PyTorch
    ds = TrajectoryDataset(shared)
    assert len(ds) == copy.manifest.height and len(ds[0]["time"]) > 0


def test_same_key_same_bytes_other_key_no_shared_id(synth_version, shared, tmp_path):
    again, other = tmp_path / "again", tmp_path / "other"
    export_share(synth_version, again, cfg=make_cfg("", tmp_path, runner="dask", max_cpus=2),
                 key_file=_key(tmp_path, KEY), progress=False, in_process_below=0)
    files = sorted(p.relative_to(shared) for p in shared.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    a_meta, b_meta = (json.loads((d / "dataset.json").read_text()) for d in (shared, again))
    for rel in files:
        if rel.name == "dataset.json" and a_meta["code_version"] != b_meta["code_version"]:
            # someone committed between the two exports (the git hash is in dataset.json)
            assert {**a_meta, "code_version": ""} == {**b_meta, "code_version": ""}
            continue
        assert (shared / rel).read_bytes() == (again / rel).read_bytes(), rel
    export_share(synth_version, other, key_file=_key(tmp_path, OTHER, "k2"), progress=False)
    a, b = _ids(open_version(shared)), _ids(open_version(other))
    for kind in a:
        assert a[kind] and not a[kind] & b[kind], kind
    assert json.loads((shared / "dataset.json").read_text())["deid"]["key_fingerprint"] != \
        json.loads((other / "dataset.json").read_text())["deid"]["key_fingerprint"]


def test_linkage_across_exports_with_one_key(synth_version, shared, tmp_path):
    """A second export with the same key (other settings: K = 2, texts kept) names every
    subject, admission and stay as the first does, with the same times."""
    second = tmp_path / "second"
    export_share(synth_version, second, cfg=make_cfg("", tmp_path, deid_min_patients=2),
                 key_file=_key(tmp_path, KEY), keep_text=True, progress=False)
    a, b = open_version(shared), open_version(second)
    assert a.subject_ids == b.subject_ids
    for sid in a.subject_ids:
        x, y = a.raw(sid), b.raw(sid)
        assert x["admissions"] == y["admissions"] and x["stays"] == y["stays"]
        assert np.array_equal(x["events"]["time"], y["events"]["time"])
        assert x["notes"]["note_id"] == y["notes"]["note_id"]
    # and an original subject is found in both by hashing it with the key
    first = open_version(synth_version).subject_ids[0]
    assert deid.keyed_id(KEY, "subject_id", first) in set(b.subject_ids)


def test_keep_text_keeps_notes(synth_version, tmp_path):
    out = tmp_path / "text"
    export_share(synth_version, out, key_file=_key(tmp_path, KEY), keep_text=True,
                 progress=False)
    originals = _original(synth_version, KEY)
    copy = open_version(out)
    n = 0
    for sid in copy.subject_ids:
        p, o = copy.patient(sid), originals[sid]
        body = {SOURCE_ID["discharge"], SOURCE_ID["radiology"]}  # not their detail rows
        old = sorted(o["texts"][o["events"]["text"][e]] for e in o["notes"]["event"]
                     if o["events"]["source"][e] in body)
        assert sorted(p.text(e) for e in p.notes["event"] if p.events["source"][e] in body) \
            == old
        n += len(old)
    assert n > 100
    report = json.loads((out / "deid_report.json").read_text())
    assert report["text"]["kept"] is True
    # detail fields are dropped even so: radiology_detail's hold original note ids
    note_ids = {str(i) for o in originals.values() for i in o["notes"]["note_id"] if i}
    texts = {t for sid in copy.subject_ids for t in copy.raw(sid)["texts"]}
    assert note_ids and not note_ids & texts
    assert "radiology_detail" in json.dumps(report)


def test_rare_codes_generalised_on_copy(synth_version, shared):
    """Every code of the copy is held by at least K patients, or is a top-level prefix."""
    copy = open_version(shared)
    k = json.loads((shared / "dataset.json").read_text())["deid"]["min_patients"]
    per_code = np.zeros(copy.codes.height, np.int64)
    for sid in copy.subject_ids:
        per_code[np.unique(copy.raw(sid)["events"]["code"])] += 1
    strings = copy.codes["code"].to_list()
    assert (per_code > 0).all()
    rare = [s for s, n in zip(strings, per_code) if n < k]
    assert all("//" not in s for s in rare), rare[:5]
    src = open_version(synth_version)
    assert copy.codes.height < src.codes.height
    assert copy.codes["count"].sum() == src.codes["count"].sum()
    report = json.loads((shared / "deid_report.json").read_text())
    assert report["codes"]["codes_out"] == copy.codes.height
    assert report["codes"]["codes_generalised"] > 0


def test_generalise_counts_patients_as_a_union():
    codes = ["LAB//1//mg", "LAB//1//g", "LAB//1//UNK", "LAB//2//mg", "DX//ICD//9//A",
             "DX//ICD//9//B", "DX//ICD//10//C", "DEATH"]
    # patients per code; pairs for every code under K = 3
    pairs = pl.DataFrame({"patient": [1, 1, 2, 3, 4, 5, 6, 4, 7],
                          "code_id": [1, 2, 2, 3, 4, 4, 5, 6, 7]})
    patients = np.array([5, 1, 2, 1, 2, 1, 1, 1])
    out, report = deid_codes.generalise(codes, patients, pairs, 3)
    # LAB//1//g and LAB//1//UNK: patients {1, 2}, 2 < 3; joined in LAB//1 still 2; LAB//1
    # is not a code of >= 3 patients itself, so up to LAB, with LAB//2//mg: {1, 2, 3} = 3
    assert out[0] == "LAB//1//mg"
    assert out[1] == out[2] == out[3] == "LAB"
    # DX//ICD//9//A {4, 5} + B {6} = 3 patients at DX//ICD//9; C alone goes to the top
    assert out[4] == out[5] == "DX//ICD//9"
    assert out[6] == "DX"
    assert out[7] == "DEATH"  # top level, kept below K
    assert report["top_level_below_min"] == {"DEATH": 1, "DX": 1}
    assert deid_codes.parent("LAB//50912//mg/dL") == "LAB//50912"
    assert deid_codes.parent("LAB") is None
    # a union, not a sum: one patient in two rare siblings counts once
    out, _ = deid_codes.generalise(["X//a", "X//b", "Y"], np.array([1, 1, 5]),
                             pl.DataFrame({"patient": [9, 9], "code_id": [0, 1]}), 2)
    assert out[:2] == ["X", "X"]
    codes_df = pl.DataFrame({"code_id": [0, 1, 2], "code": ["X//a", "X//b", "Y"],
                             "table": ["t", "t", "u"], "label": ["L", "L", None],
                             "unit": ["mg", "g", None], "count": [2, 3, 7]})
    table, lut = deid_codes.vocabulary(codes_df, out)
    assert table.to_dicts() == [
        {"code_id": 0, "code": "X", "table": "t", "label": "L", "unit": None, "count": 5},
        {"code_id": 1, "code": "Y", "table": "u", "label": None, "unit": None, "count": 7}]
    assert lut.tolist() == [0, 0, 1]


T0 = 4_000_000_000  # 2096-10-02 07:06:40


def _tiny_record(age=95):
    """A record as the build writes it: birth on 1 January of anchor_year - anchor_age, the
    BIRTH event and a user table's `static` fact (source 40) at it."""
    day = 86400
    birth = deid.jan1(2096 - age)
    times = np.array([birth, birth, T0, T0 + 3600, T0 + 7200], np.int64)
    ev = {"time": times, "code": np.array([0, 3, 1, 2, 1], np.int32),
          "value": np.array([np.nan, np.nan, 1, 2, np.nan], np.float32),
          "text": np.array([-1, 2, 0, -1, 1], np.int32),
          "hadm_id": np.array([-1, -1, 7, 7, 7]), "stay_id": np.array([-1, -1, -1, 8, -1]),
          "source": np.array([1, 40, 18, 17, 23], np.uint8),
          "flags": np.zeros(5, np.uint8), "concept": np.full(5, -1, np.int16),
          "concept_value": np.full(5, np.nan, np.float32),
          "known_delta": np.array([0, 0, 0, 600, 86400], np.uint32)}
    return {"format": 1, "subject_id": 123,
            "static": {"gender": "F", "anchor_age": age, "anchor_year": 2096,
                       "anchor_year_group": "2008 - 2010", "dod": T0 + day,
                       "birth_time": int(birth)},
            "admissions": {"hadm_id": [7], "admittime": [T0 - 60],
                           "dischtime": [T0 + 9000], "deathtime": [None]},
            "stays": {"hadm_id": [7], "stay_id": [8], "intime": [T0],
                      "outtime": [T0 + 8000], "los": [0.1]},
            "events": ev, "texts": ["2150-01-02 00:00:00", "note body: Mr X seen",
                                    "consent of patient 123 signed 2096-10-02"],
            "notes": {"event": [4], "note_id": ["123-DS-1"]},
            "windows": [{"kind": "stay", "id": 8, "start": T0 - T0 % 3600, "step": 3600,
                         "data": np.zeros((3, 0, 8), np.float32)}]}


SOURCES = {1: "patients", 17: "chartevents", 18: "datetimeevents", 23: "discharge",
           40: "my_registry"}
GRID = GridSpec(step=3600, max_windows=720, admissions=False, n_concepts=1, exclude=0)
LUT = deid_codes.CodeMap.plain(np.array([0, 1, 2, 3], np.int32))


def test_rewrite_one_record_ages_ids_texts():
    rec, counts = deid.rewrite(_tiny_record(95), KEY, LUT, False, SOURCES, GRID)
    off = deid.time_offset(KEY, 123)
    t = np.frombuffer(rec["events"]["time"], "<i8")
    assert rec["static"]["anchor_age"] == 90 and counts["anchor_age_top_coded"] == 1
    # no age over 90 can be read: the last time is 90 years after birth, and so are the
    # events at birth (BIRTH and the user table's static fact)
    last = T0 + 86400 + off  # dod is the latest time of the patient
    assert rec["static"]["birth_time"] == last - 90 * deid.YEAR == t[0] == t[1]
    assert rec["static"]["anchor_year"] == deid.year_of(last)
    assert counts["birth_time_capped"] == 1 and counts["events_at_birth"] == 2
    assert list(t[2:]) == [T0 + off, T0 + 3600 + off, T0 + 7200 + off]
    # known times move with their events: the delta to `time` is kept
    assert np.frombuffer(rec["events"]["known_delta"], "<u4").tolist() == [0, 0, 0, 600, 86400]
    assert rec["texts"] == [] and counts["text_dropped"] == {"datetimeevents": 1,
                                                             "discharge": 1, "my_registry": 1}
    assert rec["admissions"]["hadm_id"] == [deid.keyed_id(KEY, "hadm_id", 7)]
    assert rec["stays"]["stay_id"] == [deid.keyed_id(KEY, "stay_id", 8)]
    assert rec["windows"][0]["id"] == deid.keyed_id(KEY, "stay_id", 8)
    assert rec["windows"][0]["start"] % 3600 == 0
    assert rec["notes"] == {"event": [4], "note_id": [str(deid.keyed_id(KEY, "note_id",
                                                                        "123-DS-1"))]}
    young, c = deid.rewrite(_tiny_record(60), KEY, LUT, False, SOURCES, GRID)
    st = young["static"]
    assert st["anchor_age"] == 60 and c["birth_time_capped"] == 0
    # birth: 1 January of anchor_year - anchor_age, anchor_year in the last time's year
    # (as in the source), so MIMIC's rule gives the source's age at the last time
    assert st["anchor_year"] == deid.year_of(last)
    assert st["birth_time"] == deid.jan1(st["anchor_year"] - 60)
    t = np.frombuffer(young["events"]["time"], "<i8")
    assert t[0] == t[1] == st["birth_time"]
    # --keep-text: datetime values shifted, notes kept, the user table's text dropped
    kept, c = deid.rewrite(_tiny_record(60), KEY, LUT, True, SOURCES, GRID)
    shifted = (np.datetime64("2150-01-02T00:00:00") + np.timedelta64(off, "s")).astype(str)
    assert kept["texts"] == [shifted.replace("T", " "), "note body: Mr X seen"]
    assert c["datetime_text_shifted"] == 1 and c["text_dropped"] == {"my_registry": 1}


def test_anchor_depends_on_the_offset_only_through_the_shifted_times():
    """anchor_year, anchor_age and birth_time are functions of the shifted last time and of
    source values: two patients alike but for where their last time and offset fall, with
    the same shifted last time, get the same; and no rule gives an age over 90."""
    rng = np.random.default_rng(3)
    for _ in range(2000):
        age, year = int(rng.integers(18, 92)), int(rng.integers(2110, 2187))
        last = deid.jan1(year + int(rng.integers(-2, 12))) + int(rng.integers(0, 364 * 86400))
        off = int(rng.integers(-260, 261)) * deid.WEEK or deid.WEEK
        static = {"anchor_age": age, "anchor_year": year, "dod": None,
                  "birth_time": deid.jan1(year - age)}
        a, counts = deid.anchor(static, last, off)
        # the same patient with its last time a day earlier or later in the same calendar
        # year, and an offset that brings it to the same shifted time
        d = 86400 if deid.year_of(last + 86400) == deid.year_of(last) else -86400
        b, _ = deid.anchor(static, last + d, off - d)
        assert a == b
        new_last = last + off
        assert a["anchor_age"] + deid.year_of(new_last) - a["anchor_year"] <= deid.AGE_CAP
        assert new_last - a["birth_time"] <= deid.AGE_CAP * deid.YEAR
        source_age = age + deid.year_of(last) - year
        if max(age, source_age) >= deid.AGE_CAP:
            assert a["anchor_age"] == deid.AGE_CAP and counts["anchor_age_top_coded"]
        else:
            assert a["anchor_age"] + deid.year_of(new_last) - a["anchor_year"] == source_age
            assert counts["birth_time_capped"] or \
                a["birth_time"] == deid.jan1(deid.year_of(a["birth_time"]))


def test_anchor_without_times_or_anchor():
    """A patient with nothing but birth: the year moves by the offset in whole years (no
    source value kept as it is); without anchor fields nothing is placed."""
    off = 53 * deid.WEEK
    static = {"anchor_age": 95, "anchor_year": 2150, "dod": None,
              "birth_time": deid.jan1(2055)}
    a, counts = deid.anchor(static, None, off)
    assert (a["anchor_age"], a["anchor_year"]) == (90, 2151)
    assert a["birth_time"] == deid.jan1(2061) and counts["anchor_age_top_coded"] == 1
    b, _ = deid.anchor({"anchor_age": None, "anchor_year": None, "dod": 5, "birth_time": None},
                       100, off)
    assert b["birth_time"] is None and b["dod"] == 5 + off


def test_reports_are_refused_with_an_original_id():
    from jobs.export_share import _refuse_ids

    keyed = {"subject_id": np.array([deid.keyed_id(KEY, "subject_id", 10000032)]),
             "hadm_id": np.array([deid.keyed_id(KEY, "hadm_id", 20000019)])}
    with pytest.raises(RuntimeError, match="dataset.json would hold an original subject_id "
                                           "in the string at /sources/41"):
        _refuse_ids({"dataset.json": {"sources": {"41": "cohort_10000032"}}}, KEY, keyed)
    with pytest.raises(RuntimeError, match="codes.parquet would hold an original hadm_id"):
        _refuse_ids({"codes.parquet": [("X//20000019", None, None, None)]}, KEY, keyed)
    _refuse_ids({"dataset.json": {"sources": {"41": "cohort_2"}, "n": 10000032}}, KEY, keyed)


def test_code_map_drops_a_concept_that_names_a_member():
    """Issue 24: LAB//51300//K/uL (1 patient) became LAB and kept concept wbc, which among
    LAB's members only it has."""
    codes = ["LAB//51300//K/uL", "LAB//51301//K/uL", "LAB//50912//mg/dL", "LAB//9//x",
             "CHART//1//a", "CHART//1//b"]
    out = ["LAB", "LAB//51301//K/uL", "LAB//50912//mg/dL", "LAB", "CHART//1", "CHART//1"]
    concepts = {0: {26}, 1: {26}, 2: {5}, 3: {-1}, 4: {7}, 5: {7}}
    cm, report = deid_codes.code_map(codes, out, np.arange(6), concepts)
    assert cm.keep_concept.tolist() == [False, True, True, False, True, True]
    # the outlier flag: kept only on a string that is one original code alone
    assert cm.keep_outlier.tolist() == [False, True, True, False, False, False]
    assert report == {"strings_concept_dropped": 1, "codes_concept_dropped": 2}
    ev = {"code": np.array([0, 1, 3, 4]), "concept": np.array([26, 26, -1, 7], np.int16),
          "concept_value": np.array([5, 6, np.nan, 1], np.float32),
          "flags": np.array([3, 3, 2, 2], np.uint8)}
    counts = deid._recode(ev, cm)
    assert ev["concept"].tolist() == [-1, 26, -1, 7]
    assert np.isnan(ev["concept_value"][0]) and ev["concept_value"][1] == 6
    assert ev["flags"].tolist() == [0, 3, 0, 0]
    assert counts == {"concept_dropped": 1, "flags_cleared": 3}


def test_reports_keep_no_name_that_can_hold_an_id():
    tables = {"note/discharge", "hosp/omr"}
    kept, withheld = deid.public_warnings([
        "table note/discharge not found in DATA_DIR: skipped",
        "table note/discharge_10000032 not found in DATA_DIR: skipped",
        "file hosp/old/admissions_10000032_fixed.csv not read: unknown file",
        "cache entry labevents-ab12 was damaged (checksum): moved aside and rebuilt"], tables)
    assert kept == ["table note/discharge not found in DATA_DIR: skipped"] and withheld == 3
    found = deid.numbers_in_strings({"sources": {"41": "cohort_10000032"},
                                     "hash": "a10000032f", "n": 10000032, "w": ["x 7 y"]})
    assert found == [("/sources/41", 41), ("/sources/41", 10000032), ("/w[0]", 7)]


def test_generalised_codes_are_resorted():
    """New code ids can reorder events of one time and source: the build's order holds."""
    rec = _tiny_record(60)
    rec["events"]["time"][2:] = T0
    rec["events"]["source"][2:] = 17
    rec["notes"]["event"] = [2]  # code 1, which becomes 2: sorts after the old code 2
    out, _ = deid.rewrite(rec, KEY, deid_codes.CodeMap.plain(np.array([0, 2, 1, 3], np.int32)),
                          False, SOURCES, GRID)
    code = np.frombuffer(out["events"]["code"], "<i4")
    assert code.tolist() == [0, 3, 1, 2, 2]
    assert out["notes"]["event"] == [3]


def test_key_file_errors(synth_version, tmp_path):
    with pytest.raises(ValueError, match="--key-file"):
        export_share(synth_version, tmp_path / "a", key_file=None, progress=False)
    with pytest.raises(ValueError, match="cannot read"):
        export_share(synth_version, tmp_path / "a", key_file=tmp_path / "missing",
                     progress=False)
    for data in (b"", b"\n", b"short-key-15byt\n"):
        with pytest.raises(ValueError, match="at least 16"):
            deid.read_key(_key(tmp_path, data))
    assert deid.read_key(_key(tmp_path, b"exactly-16-bytes\r\n")) == b"exactly-16-bytes"
    assert not (tmp_path / "a").exists()


def test_collision_is_an_error(monkeypatch):
    monkeypatch.setattr(deid, "keyed_id", lambda key, kind, v: 42)
    with pytest.raises(ValueError, match="collision between two hadm_ids"):
        deid.hash_ids(KEY, "hadm_id", [1, 2])


def test_out_dir_refused_when_finished_or_foreign(synth_version, shared, tmp_path):
    key = _key(tmp_path, KEY)
    with pytest.raises(ValueError, match="already holds a finished version"):
        export_share(synth_version, shared, key_file=key, progress=False)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        export_share(synth_version, tmp_path / "busy", key_file=key, progress=False)
    with pytest.raises(ValueError, match="outside the version"):
        export_share(synth_version, synth_version / "copy", key_file=key, progress=False)


def test_config_setting():
    assert make_cfg("", "/tmp").deid_min_patients == 10
    assert make_cfg("", "/tmp", deid_min_patients=3).deid_min_patients == 3
    with pytest.raises(ValueError, match="DEID_MIN_PATIENTS"):
        make_cfg("", "/tmp", deid_min_patients=0)
    # not a build setting: the build's config hash does not move with it
    assert make_cfg("", "/tmp", deid_min_patients=3).output_hash() == \
        make_cfg("", "/tmp").output_hash()


def test_cli_on_the_demo(demo_build, tmp_path):
    """The real CLI on the MIMIC-IV demo; the copy's task funnels equal the version's
    (intervals are kept), and its ages are top-coded."""
    from jobs.tasks import run_tasks

    cfg, _ = demo_build
    key = _key(tmp_path, b"a demo key of enough bytes\n")
    out = tmp_path / "demo_copy"
    run = subprocess.run([sys.executable, "build_patient_files.py", "export", "share",
                          str(cfg.version_dir), str(out), "--key-file", str(key), "--quiet",
                          "--runner", "serial"], cwd=REPO, check=True, capture_output=True,
                         text=True)
    assert "replaced" in run.stdout and "generalised" in run.stdout
    bad = subprocess.run([sys.executable, "build_patient_files.py", "export", "share",
                          str(cfg.version_dir), str(tmp_path / "x"), "--quiet"], cwd=REPO,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--key-file" in bad.stderr
    copy = open_version(out)
    src = open_version(cfg.version_dir)
    sid, shard = copy.subject_ids[0], copy.subject_ids[0] % copy.meta["n_shards"]
    assert copy.manifest["path"][0] == f"patients/{shard:05d}/{sid}.msgpack.zst"
    # top-coded: every patient 90 or older at the last time (by MIMIC's rule), which
    # includes every anchor_age over 89; the report counts them
    ages = [copy.raw(s)["static"]["anchor_age"] for s in copy.subject_ids]
    report = json.loads((out / "deid_report.json").read_text())
    assert max(ages) == 90 and sum(a == 90 for a in ages) == \
        report["ages"]["anchor_age_top_coded"] >= sum(
            src.raw(s)["static"]["anchor_age"] > 89 for s in src.subject_ids)
    for s in copy.subject_ids:
        r = copy.raw(s)
        assert r["events"]["time"].max() - r["static"]["birth_time"] <= 90 * deid.YEAR
    ours = run_tasks(out, ["mortality_in_icu_first_24h", "readmission_30d"], progress=False)
    scratch = tmp_path / "src_tasks"  # tasks write into the version: label a copy of it
    shutil.copytree(cfg.version_dir, scratch, ignore=shutil.ignore_patterns("tasks"))
    base = run_tasks(scratch, ["mortality_in_icu_first_24h", "readmission_30d"],
                     progress=False)
    assert ours["tasks"] == base["tasks"]
    assert len(TrajectoryDataset(out, task="readmission_30d")) == \
        base["tasks"]["readmission_30d"]["samples"]
