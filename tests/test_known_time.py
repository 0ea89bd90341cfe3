"""When each event became known (issue 25): each table's rule, as data, on tiny inline rows; note
detail rows linked to their own note when two reports share a time; the availability time
through the MEDS export, `export share` and `export windows`; format 2 refused with the rebuild
hint; the demo-with-notes generator and the benchmark that measures the effect. The leakage
checks of task-cut samples under both rules are in test_task_samples.py."""
import datetime as dt
import gzip
import json

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from trajectory import synth
from trajectory.events.map_rows import CodeBook, map_rows
from trajectory.events.tables import AT_DISCHARGE, PREPARE, SOURCE_ID, TABLES, TABLES_BY_NAME
from trajectory.record import KNOWN_NEVER
from trajectory.synth.catalog import HEADERS
from trajectory.use.store import open_version

from .conftest import demo_dir, make_cfg

T0 = dt.datetime(2150, 1, 1, 10, 0)
H = 3600


def deltas(table: str, rows: list[dict]) -> list:
    """known_delta of each row's first event, by map_rows (the partition stage's mapping)."""
    t = TABLES_BY_NAME[table]
    schema = {c: {"int": pl.Int64, "float": pl.Float64, "str": pl.String}.get(
        ty, pl.Datetime("ms")) for c, ty in t.columns.items()}
    df = pl.DataFrame([{c: r.get(c) for c in t.columns} for r in rows], schema=schema)
    ev, _, _ = map_rows(t, df, CodeBook())
    return ev.filter(pl.col("kind") == 0)["known_delta"].to_list()


def at(hours: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=hours)


def test_each_tables_rule():
    base = {"subject_id": 1, "hadm_id": 2, "itemid": 50912, "charttime": T0}
    # a lab: its storetime; none (a held specimen): its time; stored "before" it: its time
    assert deltas("labevents", [{**base, "storetime": at(1.5)}, base,
                                {**base, "storetime": at(-1)}]) == [5400, 0, 0]
    # microbiology: storetime, else the end of storedate, else never known
    micro = {"subject_id": 1, "microevent_id": 1, "chartdate": dt.datetime(2150, 1, 1),
             "charttime": T0}
    assert deltas("microbiologyevents", [
        {**micro, "storetime": at(50), "storedate": dt.datetime(2150, 1, 3)},
        {**micro, "storedate": dt.datetime(2150, 1, 3)}, micro]) == [
        50 * H, 2 * 86400 + 86399 - 10 * H, KNOWN_NEVER]
    # notes: storetime, else charttime
    note = {"note_id": "1-DS-1", "subject_id": 1, "charttime": T0, "text": "x"}
    for table in ("discharge", "radiology"):
        assert deltas(table, [{**note, "storetime": at(49)}, note]) == [49 * H, 0]
    # pharmacy: when entered (never before its start)
    ph = {"subject_id": 1, "pharmacy_id": 1, "starttime": T0}
    assert deltas("pharmacy", [{**ph, "entertime": at(2)}, {**ph, "entertime": at(-3)}]) == \
        [2 * H, 0]
    # date-only rows: by the end of their day
    assert deltas("omr", [{"subject_id": 1, "chartdate": dt.datetime(2150, 1, 1)}]) == [86399]
    assert deltas("patients", [{"subject_id": 1, "anchor_age": 50, "anchor_year": 2150,
                                "dod": dt.datetime(2150, 2, 1)}]) == [0]  # birth: at it
    death = TABLES_BY_NAME["patients"].events[2]
    assert death.name == "death" and death.known == ("dod_end",)
    # billing procedure codes: at the discharge (resolved in the build stage: null here)
    assert deltas("procedures_icd", [{"subject_id": 1, "hadm_id": 2, "chartdate": T0}]) == \
        [None]
    # a store time with milliseconds rounds up; one 136 years or more away saturates: never
    pe = {"subject_id": 1, "stay_id": 3, "itemid": 1, "starttime": T0, "endtime": at(1)}
    assert deltas("procedureevents", [
        {**pe, "storetime": at(2) + dt.timedelta(milliseconds=90)},
        {**pe, "storetime": dt.datetime(2290, 1, 1)}]) == [2 * H + 1, KNOWN_NEVER]


def test_every_store_time_of_mimic_is_read():
    """A table whose MIMIC-IV header (the demo's, and MIMIC-IV-Note's) has a storetime reads it
    for every event; a table without one has a rule of its own or is known at its time."""
    headers = dict(HEADERS)
    demo = demo_dir()
    for t in TABLES:
        path = demo / t.module / f"{t.name}.csv.gz"
        if path.exists():
            with gzip.open(path, "rt") as f:
                headers[f"{t.module}/{t.name}"] = f.readline().strip().lower()
        header = headers[f"{t.module}/{t.name}"].split(",")
        for ev in t.events:
            if "storetime" in header and not t.parent:
                assert ev.known[:1] == ("storetime",), (t.name, ev.name)
                assert "storetime" in t.columns
            elif ev.known and ev.known != AT_DISCHARGE:
                cols = set(t.columns) | {"dod_end", "storedate_end", "chartdate_end"}
                assert set(ev.known) <= cols, (t.name, ev.known)
    assert set(PREPARE) == {"patients", "microbiologyevents", "omr"}


# ---- a synthetic build with notes ---------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from jobs.driver import run_build
    from jobs.tasks import run_tasks

    root = tmp_path_factory.mktemp("known")
    synth.generate(root / "raw", n_patients=30, seed=3, death_rate=0.3)
    cfg = make_cfg(root / "raw", root / "out")
    run_build(cfg, progress=False)
    run_tasks(cfg.version_dir, None, progress=False)
    return cfg.version_dir


def test_detail_rows_keep_their_own_note(built):
    """Radiology reports of one admission at one minute (synth: an admission's 2nd report):
    every detail row names its own note, whose text is that exam's."""
    v = open_version(built)
    rad, det = SOURCE_ID["radiology"], SOURCE_ID["radiology_detail"]
    shared = checked = 0
    for p in v:
        src, t, h = p.events["source"], p.events["time"], p.events["hadm_id"]
        own = dict(zip(p.notes["event"], p.notes["note_id"]))
        notes = {own[i]: i for i in np.flatnonzero(src == rad)}
        keys = [(t[i], h[i]) for i in notes.values()]
        shared += len(keys) - len(set(keys))
        for i in np.flatnonzero(src == det):
            n = notes[own[i]]  # its note is a radiology note of the patient
            assert (t[i], h[i], p.known_time[i]) == (t[n], h[n], p.known_time[n])
            if p.codes[i] == "RADIOLOGY_DETAIL//exam_name":
                assert p.text(n).startswith(f"EXAMINATION:  {p.text(i)}\n")
                checked += 1
            assert p.note_id(i) == own[i]
    assert shared > 3 and checked > 30


def test_meds_export_columns(built, tmp_path):
    from jobs.export_meds import export_meds

    export_meds(built, tmp_path / "meds", None, progress=False)
    df = pl.read_parquet(tmp_path / "meds" / "data" / "*" / "*.parquet")
    meta = json.loads((tmp_path / "meds" / "metadata" / "dataset.json").read_text())
    assert "note_id" in meta["raw_source_id_columns"]
    assert "known_time" in meta["other_extension_columns"]
    assert {"known_time", "note_id"} <= set(meta["extension_columns"])
    timed = df.filter(pl.col("time").is_not_null())
    assert (timed.filter(pl.col("known_time").is_not_null())
            .select((pl.col("known_time") >= pl.col("time")).all()).item())
    labs = timed.filter(pl.col("code").str.starts_with("LAB//5"))
    assert (labs["known_time"] > labs["time"]).mean() > 0.9  # synth: resulted after drawn
    # the known time is the record's, row for row, for one patient
    v = open_version(built)
    sid = v.subject_ids[0]
    p = v.patient(sid)
    mine = df.filter((pl.col("subject_id") == sid) & (pl.col("code") != "MEDS_DEATH")
                     & pl.col("time").is_not_null())
    timed = ~np.char.startswith(p.codes.astype(str), "GENDER")  # static rows: no time
    never = p.events["known_delta"] == KNOWN_NEVER  # never known: null
    want = sorted(zip(p.events["time"][timed].tolist(),
                      np.where(never, -1, p.known_time)[timed].tolist()))
    got = sorted(zip(mine["time"].dt.epoch("s").to_list(),
                     mine["known_time"].dt.epoch("s").fill_null(-1).to_list()))
    assert got == want
    notes = df.filter(pl.col("code").str.starts_with("NOTE//")
                      | pl.col("code").str.contains("_DETAIL//"))
    notes = notes.filter(~pl.col("code").str.starts_with("POE_DETAIL"))
    assert notes["note_id"].null_count() == 0 and notes.height > 100
    assert df.filter(pl.col("code").str.starts_with("LAB//"))["note_id"].null_count() == \
        df.filter(pl.col("code").str.starts_with("LAB//")).height


def test_share_shifts_known_times_with_their_events(built, tmp_path):
    from jobs.export_share import export_share
    from trajectory.use import deid

    key = b"a-test-key-of-32-bytes-0123456789"
    (tmp_path / "key").write_bytes(key)
    export_share(built, tmp_path / "share", key_file=tmp_path / "key", progress=False)
    src, copy = open_version(built), open_version(tmp_path / "share")
    birth = SOURCE_ID["patients"]
    n = 0
    for sid in src.subject_ids:
        a, b = src.patient(sid), copy.patient(deid.keyed_id(key, "subject_id", sid))
        off = deid.time_offset(key, sid)

        def pairs(p, shift):
            keep = p.events["source"] != birth  # birth may move (age top-coding)
            return sorted(zip((p.events["time"][keep] + shift).tolist(),
                              (p.known_time[keep] + shift).tolist()))
        assert pairs(b, 0) == pairs(a, off)
        n += int((a.events["known_delta"] > 0).sum())
    assert n > 1000


def test_recounted_rows_are_the_stored_rows(built):
    """Recounting a grid from the record's events with every value known when charted gives
    the stored block bit for bit, for every grid of the version: the rows a known-cut sample
    recounts differ from the stored ones only by the values known after its cut."""
    from trajectory.cleaning.flags import rule_mask
    from trajectory.windows.grids import recount_rows

    v = open_version(built)
    exclude = rule_mask(v.meta["windows"]["exclude"])
    n = 0
    for sid in v.subject_ids:
        raw = v.raw(sid)
        ev = raw["events"]
        for w in raw["windows"]:
            got = recount_rows(w, ev["time"], ev["time"], ev["concept"], ev["concept_value"],
                               ev["flags"], exclude, w["shape"][0])
            assert got.tobytes() == w["data"].tobytes()
            n += 1
    assert n > 20


def test_export_windows_says_its_rule(built, tmp_path):
    from trajectory.cleaning.flags import rule_mask
    from trajectory.use.windows_table import export_windows

    chart = export_windows(built, tmp_path / "c.parquet")
    known = export_windows(built, tmp_path / "k.parquet", rule="known")
    assert chart["rule"] == "charttime" and "whenever it was resulted" in chart["rule_text"]
    assert known["rule"] == "known" and "known by its end" in known["rule_text"]
    assert pq.read_schema(tmp_path / "k.parquet").metadata[b"window_rule"] == b"known"
    assert pq.read_schema(tmp_path / "c.parquet").metadata[b"window_rule"] == b"charttime"
    k, c = pl.read_parquet(tmp_path / "k.parquet"), pl.read_parquet(tmp_path / "c.parquet")
    counts = [x for x in k.columns if x.endswith("__count")]
    assert k.height == c.height == known["rows"]
    assert (c.select(counts).to_numpy() >= k.select(counts).to_numpy()).all()
    assert c.select(counts).to_numpy().sum() > k.select(counts).to_numpy().sum()
    # a known-rule count, recounted from the raw events: charted in the row, known by its end
    v = open_version(built)
    concepts = v.meta["concepts"]
    sid = v.subject_ids[0]
    raw = v.raw(sid)
    ev, w = raw["events"], raw["windows"][0]
    rows = k.filter((pl.col("subject_id") == sid) & (pl.col("id") == w["id"]))
    lab = next(f for f in w["features"] if concepts[f] == "lactate")
    exclude = rule_mask(v.meta["windows"]["exclude"])
    m = (ev["concept"] == lab) & ~np.isnan(ev["concept_value"]) & ((ev["flags"] & exclude) == 0)
    r = (ev["time"][m] - w["start"]) // w["step"]
    ok = ev["time"][m] + ev["known_delta"][m] <= w["start"] + (r + 1) * w["step"]
    want = np.bincount(r[ok & (r >= 0) & (r < rows.height)], minlength=rows.height)
    np.testing.assert_array_equal(rows["lactate__count"].to_numpy(), want)
    with pytest.raises(ValueError, match="rule must be one of"):
        export_windows(built, tmp_path / "x.parquet", rule="storetime")


def test_format_2_refused_with_the_rebuild_hint(built, tmp_path):
    """A version whose records say format 2 (same length: the number is one byte) is refused
    by every reader with the error that says how to rebuild."""
    import shutil

    from trajectory.torch import TrajectoryDataset

    old = tmp_path / "old"
    shutil.copytree(built, old)
    for f in (old / "patients").rglob("*.msgpack.zst"):
        data = f.read_bytes()
        f.write_bytes(data.replace(b"\xa6format\x03", b"\xa6format\x02", 1))
    v = open_version(old)
    with pytest.raises(ValueError, match="record format 2, this reader knows 3: rebuild the "
                                         "version .*--overwrite"):
        v.patient(v.subject_ids[0])
    with pytest.raises(ValueError, match="record format 2.*rebuild"):
        TrajectoryDataset(old, task="readmission_30d")[0]


def test_inspect_shows_when_known(built):
    from trajectory.use.timeline import timeline

    sid = open_version(built).subject_ids[0]
    text = timeline(built, sid, limit=5000)
    assert "(known +" in text and text.count(" notes") == 1


def test_demo_notes_shape(tmp_path):
    """The demo-with-notes generator: MIMIC-IV-Note headers, discharge summaries charted at
    00:00 of the day of discharge and stored after it, reports sharing a minute."""
    from trajectory.demo_notes import write_note_module

    out = write_note_module(demo_dir(), tmp_path / "d")
    for t in ("discharge", "radiology", "discharge_detail", "radiology_detail"):
        with gzip.open(out / "note" / f"{t}.csv.gz", "rt") as f:
            assert f.readline().strip() == HEADERS[f"note/{t}"]
    ds = pl.read_csv(out / "note" / "discharge.csv.gz", try_parse_dates=True)
    adm = pl.read_csv(out / "hosp" / "admissions.csv.gz", try_parse_dates=True)
    j = ds.join(adm.select("hadm_id", "dischtime"), on="hadm_id")
    assert (j["charttime"] == j["dischtime"].dt.truncate("1d")).all()
    stored = j.filter(pl.col("storetime").is_not_null())
    assert (stored["storetime"] > stored["dischtime"]).all() and stored.height < j.height
    rr = pl.read_csv(out / "note" / "radiology.csv.gz", try_parse_dates=True)
    assert rr.filter(pl.col("note_type") == "RR").group_by("hadm_id", "charttime").len()[
        "len"].max() >= 2
    assert (out / "hosp" / "labevents.csv.gz").stat().st_size == \
        (demo_dir() / "hosp" / "labevents.csv.gz").stat().st_size
    with pytest.raises(ValueError, match="already has a note/ module"):
        write_note_module(out, tmp_path / "again")


def test_effect_benchmark_on_the_synthetic_build(built, capsys):
    """benchmarks/known_time_effect.py prints a row per task and the note links."""
    import importlib.util

    from .conftest import REPO

    spec = importlib.util.spec_from_file_location(
        "known_time_effect", REPO / "benchmarks" / "known_time_effect.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--version-dir", str(built)])
    out = capsys.readouterr().out
    assert out.count("\n| ") == 5 and "readmission_30d" in out  # a row per task
    links = bench.detail_links(built)
    assert links["with_note_id"] == links["detail_rows"] > links["ambiguous_by_time"] > 0
    lut = bench.group_of(open_version(built).meta["sources"])
    r = bench.task_effect(built, "readmission_30d", lut)
    assert r["changed"] > 0 and r["notes"] > 0  # discharge summaries stored after discharge
