"""Task-cut samples (TrajectoryDataset(task=..., labels=...)): no item holds anything not known
at its prediction time, on the real demo and on a synthetic build with notes, under both cut
rules; one item per label row of the split; any MEDS label file; clear errors. The reference
cut is recomputed here from the raw record, not from trajectory.torch: the events with
time + known_delta <= prediction time (rule "known", the default; time <= prediction time for
"charttime"), the window rows ending at or before it, and in each row every concept's
`count` recounted from the raw events charted in the window (and, under the known rule,
known at the prediction time: the rows aggregate the item's own events)."""
import numpy as np
import polars as pl
import pytest

torch = pytest.importorskip("torch")

from torch.utils.data import DataLoader  # noqa: E402

from jobs.tasks import run_tasks  # noqa: E402
from trajectory import open_version  # noqa: E402
from trajectory.cleaning.flags import rule_mask  # noqa: E402
from trajectory.splits import split_of  # noqa: E402
from trajectory.torch import (TrajectoryDataset, TrajectoryIterableDataset,  # noqa: E402
                              collate_packed, collate_trajectories)
from trajectory.use.tasks import TASKS  # noqa: E402
from trajectory.windows.aggregate import compute_windows  # noqa: E402

from .conftest import make_cfg  # noqa: E402


@pytest.fixture(scope="module")
def demo_tasks(demo_build):
    cfg, _ = demo_build
    run_tasks(cfg.version_dir, None, progress=False)
    return cfg.version_dir


@pytest.fixture(scope="module")
def synth_tasks(tmp_path_factory):
    from trajectory import synth
    from jobs.driver import run_build

    root = tmp_path_factory.mktemp("synth_tasks")
    synth.generate(root / "raw", n_patients=40, seed=5, death_rate=0.3)
    cfg = make_cfg(root / "raw", root / "out")
    run_build(cfg, progress=False)
    run_tasks(cfg.version_dir, None, progress=False)
    return cfg.version_dir


def seconds(frame: pl.DataFrame) -> np.ndarray:
    return frame["prediction_time"].dt.epoch("s").to_numpy()


def same_block(a, b) -> bool:
    """Bit for bit (NaN, an empty window's statistic, equals NaN)."""
    return torch.equal(a.view(torch.int32), b.view(torch.int32))


def window_counts(raw, w: dict, n: int, rule: str, exclude: int, pt: int) -> np.ndarray:
    """[n, F] observations of each feature in the first n windows of grid `w`, recounted from
    the raw events: concept events with a value, not flagged by an excluded rule, charted in
    the window and (rule "known") known at `pt`."""
    ev = raw["events"]
    t, k = ev["time"], ev["time"] + ev["known_delta"]
    col = {c: i for i, c in enumerate(w["features"])}
    use = ((ev["flags"] & exclude) == 0) & ~np.isnan(ev["concept_value"]) & np.isin(
        ev["concept"], list(col))
    row = (t - w["start"]) // w["step"]
    use &= (row >= 0) & (row < n)
    if rule == "known":
        use &= k <= pt
    out = np.zeros((n, len(col)), np.int64)
    np.add.at(out, (row[use], [col[c] for c in ev["concept"][use].tolist()]), 1)
    return out


def reference_rows(raw, w: dict, n: int, rule: str, exclude: int, pt: int) -> np.ndarray:
    """The first n rows of grid `w`: stored (charttime), or (known) the plain kernel over
    only the events known at `pt`, as a block of the build would be without the others."""
    if rule == "charttime":
        return w["data"][:n]
    ev = raw["events"]
    m = ev["time"] + ev["known_delta"] <= pt
    feats = {c: i for i, c in enumerate(w["features"])}
    feature = np.array([feats.get(c, -1) for c in ev["concept"][m].tolist()], np.int32)
    return compute_windows(ev["time"][m], feature, ev["concept_value"][m],
                           (ev["flags"][m] & exclude) == 0, w["start"], w["step"], n,
                           len(feats))


def check_item(v, item, pt: int, max_events=None, rule="known"):
    """The item holds exactly what was known at `pt` (rule "known"; charted by it for
    "charttime"): reference from the raw record. Returns the window rows checked."""
    assert item["prediction_time"] == pt
    raw = v.raw(item["subject_id"])
    t = raw["events"]["time"]
    known_time = t + raw["events"]["known_delta"]
    known = np.flatnonzero((known_time if rule == "known" else t) <= pt)
    if max_events is not None:
        known = known[len(known) - max_events:] if len(known) > max_events else known
    got = item["time"].numpy()
    assert item["length"] == len(known) == len(got)
    assert (got <= pt).all()
    if rule == "known":
        assert (item["known_time"].numpy() <= pt).all()
    np.testing.assert_array_equal(got, t[known])
    np.testing.assert_array_equal(item["code"].numpy(), raw["events"]["code"][known])
    np.testing.assert_array_equal(item["known_time"].numpy(), known_time[known])
    full = {(w["kind"], w["id"]): w for w in raw["windows"]}
    exclude = rule_mask(v.meta["windows"]["exclude"])
    seen = set()
    rows = 0
    for w in item["windows"]:
        n = w["data"].shape[0]
        assert n >= 1 and w["start"] + n * w["step"] <= pt  # every kept row ends by pt
        ref = full[(w["kind"], w["id"])]
        assert n == min(len(ref["data"]), (pt - ref["start"]) // ref["step"])  # none lost
        counts = w["data"].numpy()[:, :, w["stats"].index("count")]
        np.testing.assert_array_equal(counts, window_counts(raw, ref, n, rule, exclude, pt))
        np.testing.assert_array_equal(w["data"].numpy(), reference_rows(raw, ref, n, rule,
                                                                        exclude, pt))
        seen.add((w["kind"], w["id"]))
        rows += n
    for key, ref in full.items():  # a block left out is one whose first row ends after pt
        if key not in seen:
            assert ref["start"] + ref["step"] > pt
    return rows


def check_version(vdir, rule="known"):
    """Every sample of every task and split; returns (items, items whose events or window
    rows the known rule changes)."""
    v = open_version(vdir)
    items = window_rows = changed = 0
    for name in TASKS:
        labels = pl.read_parquet(vdir / "tasks" / f"{name}.parquet")
        for split in ("train", "val", "test"):
            rows = labels.filter(pl.Series(split_of(labels["subject_id"].to_numpy())) == split)
            ds = TrajectoryDataset(vdir, task=name, split=split, cut_rule=rule)
            other = TrajectoryDataset(vdir, task=name, split=split,
                                      cut_rule="charttime" if rule == "known" else "known")
            assert len(ds) == rows.height
            for i, (sid, pt, y) in enumerate(zip(rows["subject_id"].to_list(), seconds(rows),
                                                 rows["boolean_value"].to_list())):
                item = ds[i]
                assert item["subject_id"] == sid and bool(item["label"]) == y
                assert item["label"].dtype == torch.bool and item["label"].dim() == 0
                window_rows += check_item(v, item, int(pt), rule=rule)
                alt = other[i]
                changed += alt["length"] != item["length"] or any(
                    not same_block(a["data"], b["data"]) for a, b in
                    zip(item["windows"], alt["windows"]))
                items += 1
    assert window_rows > 1000  # the windows were there to leak
    return items, changed


@pytest.mark.parametrize("rule", ["known", "charttime"])
def test_no_leakage_on_demo(demo_tasks, rule):
    items, changed = check_version(demo_tasks, rule)
    assert items > 500  # 5 tasks, ~600 samples
    assert changed > 100  # the rules differ: there was something to leak


@pytest.mark.parametrize("rule", ["known", "charttime"])
def test_no_leakage_on_synthetic(synth_tasks, rule):
    items, changed = check_version(synth_tasks, rule)
    assert items > 50 and changed > 20


def test_check_catches_a_leak(demo_tasks):
    """The reference check fails on an uncut item (so it can fail at all), and the known
    rule's check fails on an item cut on charttime: a lab drawn before the prediction time and
    resulted after it, or a window row counting one, is caught."""
    v = open_version(demo_tasks)
    labels = pl.read_parquet(demo_tasks / "tasks" / "mortality_in_icu_first_24h.parquet")
    item = TrajectoryDataset(demo_tasks, subjects=[labels["subject_id"][0]])[0]
    item["prediction_time"] = int(seconds(labels)[0])
    with pytest.raises(AssertionError):
        check_item(v, item, int(seconds(labels)[0]))
    chart = TrajectoryDataset(demo_tasks, task="mortality_in_icu_first_24h",
                              cut_rule="charttime")
    known = TrajectoryDataset(demo_tasks, task="mortality_in_icu_first_24h")
    caught = 0
    for i in range(len(chart)):
        pt = int(seconds(labels)[i])
        check_item(v, known[i], pt)
        try:
            check_item(v, chart[i], pt)
        except AssertionError:
            caught += 1
    assert caught > 30
    # a window row alone: the known item's events with the charttime item's windows
    i = next(i for i in range(len(chart))
             if known[i]["length"] and any(not same_block(a["data"], b["data"]) for a, b in
                                           zip(known[i]["windows"], chart[i]["windows"])))
    mixed = {**known[i], "windows": chart[i]["windows"]}
    with pytest.raises(AssertionError):
        check_item(v, mixed, int(seconds(labels)[i]))


def test_max_events_keeps_last_before_cut(demo_tasks):
    v = open_version(demo_tasks)
    ds = TrajectoryDataset(demo_tasks, task="long_los_icu_3d", max_events=50)
    labels = pl.read_parquet(demo_tasks / "tasks" / "long_los_icu_3d.parquet")
    for i in range(0, len(ds), 7):
        check_item(v, ds[i], int(seconds(labels)[i]), max_events=50)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_iterable_covers_label_rows_once(demo_tasks, num_workers):
    labels = pl.read_parquet(demo_tasks / "tasks" / "readmission_30d.parquet")
    want = sorted(zip(labels["subject_id"].to_list(), seconds(labels).tolist()))
    got = []
    for rank in (0, 1):
        ds = TrajectoryIterableDataset(demo_tasks, task="readmission_30d", rank=rank,
                                       world_size=2, shuffle_buffer=4, with_windows=False)
        dl = DataLoader(ds, batch_size=5, num_workers=num_workers,
                        collate_fn=collate_trajectories)
        n = 0
        for b in dl:
            assert b["label"].shape == b["prediction_time"].shape == b["subject_id"].shape
            got += list(zip(b["subject_id"].tolist(), b["prediction_time"].tolist()))
            n += len(b["subject_id"])
        assert n == ds.num_samples(num_workers)
    assert sorted(got) == want


def test_collates_carry_labels(demo_tasks):
    ds = TrajectoryDataset(demo_tasks, task="mortality_in_icu_first_24h")
    items = [ds[i] for i in range(6)]
    for b in (collate_trajectories(items), collate_packed(items)):
        assert b["label"].dtype == torch.bool and b["label"].shape == (6,)
        assert b["prediction_time"].dtype == torch.int64
        assert b["prediction_time"].tolist() == [it["prediction_time"] for it in items]
        assert b["stay_id"].tolist() == [it["stay_id"] for it in items]
    b = collate_trajectories(items)
    for i, it in enumerate(items):
        assert (b["time"][i, :it["length"]] <= it["prediction_time"]).all()


def test_any_meds_label_file(demo_tasks, tmp_path):
    """An ACES-shaped file: all four value columns, one used; integer, float, categorical."""
    v = open_version(demo_tasks)
    sids = v.subject_ids[:6]
    pt = [v.manifest.filter(pl.col("subject_id") == s)["first_time"][0] + 86400 for s in sids]
    base = {"subject_id": pl.Series(sids, dtype=pl.Int64),
            "prediction_time": (pl.Series(pt, dtype=pl.Int64) * 1_000_000
                                ).cast(pl.Datetime("us"))}
    cases = {"boolean_value": (pl.Boolean, [True, False] * 3, torch.bool),
             "integer_value": (pl.Int64, [0, 1, 2, 3, 4, 5], torch.int64),
             "float_value": (pl.Float64, [0.5] * 6, torch.float32),
             "categorical_value": (pl.String, list("bacbca"), torch.int64)}
    for col, (dt, values, tdt) in cases.items():
        frame = pl.DataFrame({**base, **{c: pl.Series(values if c == col else [None] * 6,
                                                      dtype=cases[c][0]) for c in cases}})
        path = tmp_path / f"{col}.parquet"
        frame.write_parquet(path)
        ds = TrajectoryDataset(v.path, labels=path)
        assert len(ds) == 6
        for i in range(6):
            item = ds[i]
            assert item["label"].dtype == tdt and "stay_id" not in item
            check_item(v, item, pt[i])
        if col == "categorical_value":
            assert ds.label_classes == ["a", "b", "c"]
            assert [int(ds[i]["label"]) for i in range(6)] == [1, 0, 2, 1, 2, 0]
        it = TrajectoryIterableDataset(v.path, labels=path)
        assert sorted(x["subject_id"] for x in it) == sorted(sids)


def test_label_errors_are_clear(demo_tasks, tmp_path):
    with pytest.raises(FileNotFoundError, match="build_patient_files.py tasks"):
        TrajectoryDataset(demo_tasks, task="no_such_task")
    good = {"subject_id": pl.Series([open_version(demo_tasks).subject_ids[0]], dtype=pl.Int64),
            "prediction_time": pl.Series([5_000_000_000_000_000]).cast(pl.Datetime("us")),
            "boolean_value": [True]}

    def bad(match, **change):
        path = tmp_path / "bad.parquet"
        cols = {**good, **change}
        pl.DataFrame({k: c for k, c in cols.items() if c is not None}).write_parquet(path)
        with pytest.raises(ValueError, match=match) as e:
            TrajectoryDataset(demo_tasks, labels=path)
        assert str(path) in str(e.value)

    bad("no column 'prediction_time'", prediction_time=None)
    bad("no column 'subject_id'", subject_id=None)
    bad("'prediction_time' must be a datetime", prediction_time=[5])
    bad("'subject_id' must be an integer", subject_id=["x"])
    bad("exactly one label column", boolean_value=None)
    bad("'boolean_value' must be boolean", boolean_value=[1.0])
    bad("subject_id 123", subject_id=pl.Series([123], dtype=pl.Int64))
    with pytest.raises(ValueError, match="task= or labels="):
        TrajectoryDataset(demo_tasks, task="readmission_30d", labels=tmp_path / "x.parquet")
