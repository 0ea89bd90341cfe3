"""Window statistics keep the sickest patients' real extremes and leave out impossible values.

Rows are injected into a copy of the real demo inside ICU stay 39553978 of subject 10000032
(2180-07-23 14:00 to 23:50): real extremes (a creatinine of 6 mg/dL, a WBC of 40 K/uL, an SpO2
of 80 %) reach their window's mean; impossible ones (a heart rate of 9999, an SpO2 of 180, a
weight of -70 kg: all `range`) never do. WINDOW_EXCLUDE="range,duplicate,outlier" brings the
old windows back, which left every outlier-flagged event out. Plus the windows' exclusion mask
on tiny inline arrays, and the skewed-code fences on the demo's own labs.
"""
import gzip
import json
import shutil

import numpy as np
import polars as pl
import pytest

from trajectory import open_version
from trajectory.cleaning.flags import BITS, rule_mask
from jobs.driver import run_build
from trajectory.windows.grids import GridSpec, patient_windows

from .conftest import demo_dir, make_cfg

SUBJECT, HADM, STAY = 10000032, 29079034, 39553978
DAY = "2180-07-23"
# (table, itemid, value, unit, minute of the day, concept, reaches the window mean)
INJECTED = [
    ("chartevents", "220277", 80, "%", "15:20", "spo2", True),  # hypoxaemia
    ("labevents", "50912", 6, "mg/dL", "16:10", "creatinine", True),  # renal failure
    ("labevents", "51301", 40, "K/uL", "16:20", "wbc", True),  # leukocytosis
    ("chartevents", "220045", 9999, "bpm", "15:10", "heart_rate", False),  # impossible
    ("chartevents", "220277", 180, "%", "15:30", "spo2", False),  # above 100 %
    ("chartevents", "224639", -70, "kg", "15:40", "weight", False),  # negative weight
]
# In range (creatinine 0-66 mg/dL) but far beyond even the log-scale fence: `outlier` only.
OUTLIER = ("labevents", "50912", 60, "mg/dL", "18:10", "creatinine", True)


def _append(path, rows):
    with gzip.open(path, "rt") as f:
        text = f.read()
    with gzip.open(path, "wt") as f:
        f.write(text.rstrip("\n") + "\n" + "\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def injected_data(tmp_path_factory):
    data = tmp_path_factory.mktemp("extremes") / "mimic"
    for module in ("hosp", "icu"):
        shutil.copytree(demo_dir() / module, data / module)
    chart, lab = [], []
    for i, (table, item, value, unit, at, _, _) in enumerate(INJECTED + [OUTLIER]):
        t = f"{DAY} {at}:00"
        if table == "chartevents":
            # subject_id,hadm_id,stay_id,caregiver_id,charttime,storetime,itemid,value,
            # valuenum,valueuom,warning
            chart.append(f"{SUBJECT},{HADM},{STAY},,{t},{t},{item},{value},{value},{unit},0")
        else:
            # labevent_id,subject_id,hadm_id,specimen_id,itemid,order_provider_id,charttime,
            # storetime,value,valuenum,valueuom,ref_range_lower,ref_range_upper,flag,
            # priority,comments
            lab.append(f"{990000 + i},{SUBJECT},{HADM},{990000 + i},{item},,{t},{t},{value},"
                       f"{value},{unit},,,abnormal,STAT,")
    _append(data / "icu" / "chartevents.csv.gz", chart)
    _append(data / "hosp" / "labevents.csv.gz", lab)
    return data


@pytest.fixture(scope="module")
def default_build(injected_data, tmp_path_factory):
    cfg = make_cfg(injected_data, tmp_path_factory.mktemp("extremes_default"))
    assert cfg.window_exclude == ("range", "duplicate")
    run_build(cfg, progress=False)
    return cfg


def _epoch(at: str) -> int:
    return int(np.datetime64(f"{DAY}T{at}:00", "s").astype(np.int64))


def _injected_event(p, item, value, unit, at) -> int:
    hit = np.flatnonzero(np.char.endswith(p.codes.astype(str), f"//{item}//{unit}")
                         & (p.events["value"] == np.float32(value))
                         & (p.events["time"] == _epoch(at)))
    assert hit.size == 1, (item, value, hit)
    return int(hit[0])


def _window(v, p, concept, at):
    """(stats of the stay's window holding time `at` for `concept` (None when the concept is
    no feature of the stay's grid), window bounds, concept id)."""
    (w,) = [w for w in p.windows if w["kind"] == "stay" and w["id"] == STAY]
    i = (_epoch(at) - w["start"]) // w["step"]
    begin = w["start"] + i * w["step"]
    cid = v.meta["concepts"].index(concept)
    if cid not in w["features"]:
        return None, (begin, begin + w["step"]), cid
    stats = dict(zip(w["stats"], w["data"][i, w["features"].index(cid)].tolist()))
    return stats, (begin, begin + w["step"]), cid


def _used(p, cid, bounds, mask, skip=-1) -> np.ndarray:
    """Values of the concept in [begin, end) whose flags hit no bit of mask (event `skip`
    left out), from the record's events: the reference the window must match."""
    ev = p.events
    use = ((ev["concept"] == cid) & (ev["time"] >= bounds[0]) & (ev["time"] < bounds[1])
           & ((ev["flags"] & mask) == 0) & ~np.isnan(ev["concept_value"]))
    if skip >= 0:
        use[skip] = False
    return ev["concept_value"][use].astype(np.float64)


def _check_window(stats, used):
    if not used.size:
        assert stats is None or (stats["count"] == 0 and np.isnan(stats["mean"]))
        return
    assert stats["count"] == used.size
    assert stats["mean"] == pytest.approx(used.mean(), rel=1e-6)
    assert stats["max"] == pytest.approx(used.max(), rel=1e-6)


@pytest.mark.parametrize("row", INJECTED, ids=lambda r: f"{r[5]}={r[2]}")
def test_extremes_reach_the_window_mean_and_impossible_values_do_not(default_build, row):
    cfg = default_build
    _, item, value, unit, at, concept, reaches = row
    v = open_version(cfg.version_dir)
    p = v.patient(SUBJECT)
    e = _injected_event(p, item, value, unit, at)
    assert bool(p.events["flags"][e] & (1 << BITS["range"])) == (not reaches)
    stats, bounds, cid = _window(v, p, concept, at)
    mask = rule_mask(cfg.window_exclude)
    used = _used(p, cid, bounds, mask)
    _check_window(stats, used)
    others = _used(p, cid, bounds, mask, skip=e)
    if reaches:  # counted: the mean is that of the others and the injected value
        assert used.size == others.size + 1
        assert stats["mean"] == pytest.approx((others.sum() + value) / used.size, rel=1e-6)
        assert stats["min"] <= value <= stats["max"]
    else:  # left out: the window is what it would be without it
        assert used.size == others.size
        assert stats is None or not abs(stats["max"]) >= abs(value)


def test_real_lab_extremes_are_not_outliers_any_more(default_build):
    """On the demo's own creatinine and WBC distributions, log-scale fences keep 6 mg/dL and
    40 K/uL unflagged (the raw k=3 fences cut them at 4.7 and 35)."""
    v = open_version(default_build.version_dir)
    p = v.patient(SUBJECT)
    for _, item, value, unit, at, _, _ in INJECTED[1:3]:
        assert p.events["flags"][_injected_event(p, item, value, unit, at)] == 0
    th = pl.read_parquet(default_build.work_dir / "thresholds.parquet").join(
        pl.read_parquet(default_build.version_dir / "codes.parquet").select("code_id", "code"),
        on="code_id")
    for code, value in (("LAB//50912//mg/dL", 6), ("LAB//51301//K/uL", 40)):
        row = th.filter(pl.col("code") == code).to_dicts()[0]
        assert row["log_fences"] and row["hi"] > value, row


def test_window_exclude_with_outlier_brings_the_old_windows_back(injected_data, default_build,
                                                                  tmp_path):
    cfg = make_cfg(injected_data, tmp_path / "old", window_exclude="range,duplicate,outlier")
    assert cfg.window_exclude == ("range", "outlier", "duplicate")
    assert cfg.output_hash() != default_build.output_hash()
    run_build(cfg, progress=False)
    assert json.loads((cfg.version_dir / "dataset.json").read_text())["windows"]["exclude"] == [
        "range", "outlier", "duplicate"]
    _, item, value, unit, at, concept, _ = OUTLIER
    results = {}
    for c in (default_build, cfg):
        v = open_version(c.version_dir)
        p = v.patient(SUBJECT)
        e = _injected_event(p, item, value, unit, at)
        assert p.events["flags"][e] == 1 << BITS["outlier"]  # in range, beyond the fence
        stats, bounds, cid = _window(v, p, concept, at)
        _check_window(stats, _used(p, cid, bounds, rule_mask(c.window_exclude)))
        results[c.window_exclude] = stats
    new, old = results[default_build.window_exclude], results[cfg.window_exclude]
    assert new["max"] == value  # the default keeps the outlier...
    assert new["count"] == old["count"] + 1 and not old["max"] >= value  # ...the old did not


# ---- the exclusion mask on tiny inline arrays ----

def _grid(exclude):
    return GridSpec(step=3600, max_windows=4, admissions=False, n_concepts=2, exclude=exclude)


@pytest.mark.parametrize("rules", [(), ("range",), ("range", "duplicate"),
                                   ("range", "outlier", "duplicate"), tuple(BITS)])
def test_patient_windows_leave_out_exactly_the_excluded_rules(rules):
    rng = np.random.default_rng(len(rules))
    n = 200
    time = np.sort(rng.integers(0, 4 * 3600, n)).astype(np.int64)
    concept = rng.integers(-1, 2, n).astype(np.int16)
    value = rng.normal(50, 10, n).astype(np.float32)
    value[rng.random(n) < 0.1] = np.nan
    flags = np.where(rng.random(n) < 0.5, 0, 1 << rng.integers(0, len(BITS), n)).astype(np.uint8)
    flags[rng.random(n) < 0.1] |= 1 << BITS["outlier"]
    mask = rule_mask(rules)
    (w,) = patient_windows(time, concept, value, flags, {"stay_id": [1], "intime": [0],
                                                           "outtime": [4 * 3600]}, {},
                           _grid(mask))
    data = np.frombuffer(w["data"], np.float32).reshape(w["shape"]) \
        if isinstance(w["data"], bytes) else w["data"]
    mean = w["stats"].index("mean")
    for c in range(2):
        use = (concept == c) & ((flags & mask) == 0) & ~np.isnan(value)
        if c not in w["features"]:
            assert not use.any()
            continue
        f = w["features"].index(c)
        for i in range(4):
            sel = use & (time >= i * 3600) & (time < (i + 1) * 3600)
            assert data[i, f, 0] == sel.sum()
            if sel.any():
                assert data[i, f, mean] == pytest.approx(value[sel].astype(np.float64).mean(),
                                                         rel=1e-6)
