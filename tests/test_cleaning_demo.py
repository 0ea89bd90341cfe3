"""Cleaning and windows on the real demo: °F ends in °C, injected impossible values are flagged
and counted exactly, thresholds do not depend on the shard count, QC limits stop a bad build,
hourly heart-rate means match an independent polars computation."""
import gzip
import json

import numpy as np
import polars as pl
import pytest

from trajectory import open_version
from trajectory.cleaning.flags import BITS
from jobs.driver import run_build

from .conftest import demo_dir, make_cfg


def concept_id(v, name):
    return v.meta["concepts"].index(name)


def test_fahrenheit_temperatures_end_in_celsius(demo_build):
    cfg, _ = demo_build
    v = open_version(cfg.version_dir)
    temp = concept_id(v, "temperature")
    seen = 0
    for p in v:
        f = p.codes == "CHART//223761//°F"
        if not f.any():
            continue
        assert np.all(p.events["concept"][f] == temp)
        want = (p.events["value"][f].astype(np.float64) - 32) * 5 / 9
        np.testing.assert_allclose(p.events["concept_value"][f], want, rtol=1e-5)
        c = p.codes == "CHART//223762//°C"
        np.testing.assert_array_equal(p.events["concept_value"][c], p.events["value"][c])
        seen += int(f.sum())
    assert seen == 3379  # every °F row of the demo


INJECTED = [  # (itemid, value, unit, concept): physiologically impossible
    ("220045", "9999", "bpm"),  # heart rate
    ("224639", "-70", "kg"),  # negative weight
    ("220277", "180", "%"),  # SpO2 above 100%
]


@pytest.fixture(scope="module")
def injected_build(tmp_path_factory):
    import shutil

    root = tmp_path_factory.mktemp("inject")
    data = root / "mimic"
    for module in ("hosp", "icu"):
        shutil.copytree(demo_dir() / module, data / module)
    path = data / "icu" / "chartevents.csv.gz"
    with gzip.open(path, "rt") as f:
        text = f.read()
    first = text.split("\n")[1].split(",")
    rows = []
    for i, (item, value, unit) in enumerate(INJECTED * 2):  # each twice
        r = list(first)
        r[4] = r[5] = f"2180-07-23 13:{i:02d}:00"
        r[6], r[7], r[8], r[9] = item, value, value, unit
        rows.append(",".join(r))
    with gzip.open(path, "wt") as f:
        f.write(text.rstrip("\n") + "\n" + "\n".join(rows) + "\n")
    cfg = make_cfg(data, root / "out")
    run_build(cfg, progress=False)
    return cfg, first[0]


def test_injected_values_flagged_and_counted(injected_build, demo_build):
    cfg, subject = injected_build
    v = open_version(cfg.version_dir)
    p = v.patient(int(subject))
    for item, value, unit in INJECTED:
        hit = (p.codes == f"CHART//{item}//{unit}") & (p.events["value"] == np.float32(value))
        assert hit.sum() == 2
        assert np.all(p.events["flags"][hit] & (1 << BITS["range"]))
    report = json.loads((cfg.version_dir / "qc_report.json").read_text())
    base = json.loads((demo_build[0].version_dir / "qc_report.json").read_text())
    got = report["cleaning"]["tables"]["chartevents"]["flagged"]["range"]
    was = base["cleaning"]["tables"]["chartevents"]["flagged"]["range"]
    assert got - was == len(INJECTED) * 2
    chart = report["tables"]["chartevents"]
    assert chart["rows_read"] == base["tables"]["chartevents"]["rows_read"] + 6
    for c in chart["events"].values():
        assert c["rows"] == c["written"] + sum(c["dropped"].values())


def test_thresholds_identical_for_1_and_4_shards(demo_build, tmp_path):
    ref_cfg, _ = demo_build
    cfg = make_cfg(demo_dir(), tmp_path / "one", n_shards=1)
    run_build(cfg, progress=False)
    a = pl.read_parquet(cfg.work_dir / "thresholds.parquet")
    b = pl.read_parquet(ref_cfg.work_dir / "thresholds.parquet")
    assert json.loads((ref_cfg.work_dir / "plan.json").read_text())["n_shards"] == 4
    assert a.equals(b) and a["lo"].is_not_nan().sum() > 100


def test_qc_limit_fails_the_run_or_quarantines(tmp_path):
    cfg = make_cfg(demo_dir(), tmp_path / "strict", qc_max_flag_rate=0.01)
    with pytest.raises(ValueError, match=r"(?s)QC failed, nothing published:.*chartevents: 11.9% of events flagged by 'duplicate'"):
        run_build(cfg, progress=False)
    assert not (cfg.version_dir / "dataset.json").exists()
    q = make_cfg(demo_dir(), tmp_path / "q", qc_max_flag_rate=0.01, qc_on_fail="quarantine")
    summary = run_build(q, progress=False)
    assert "chartevents" in summary["quarantined"]


def test_drop_rules_drop_and_count(tmp_path, demo_build):
    cfg = make_cfg(demo_dir(), tmp_path / "drop", drop_rules="duplicate")
    summary = run_build(cfg, progress=False)
    report = json.loads((cfg.version_dir / "qc_report.json").read_text())
    chart = report["tables"]["chartevents"]["events"]["chart"]
    flagged = report["cleaning"]["tables"]["chartevents"]["flagged"]["duplicate"]
    assert chart["dropped"]["duplicate"] == flagged > 0
    assert chart["rows"] == chart["written"] + sum(chart["dropped"].values())
    assert summary["n_events"] == demo_build[1]["n_events"] - sum(
        t["dropped"]["duplicate"] for t in report["cleaning"]["tables"].values())


def test_hourly_heart_rate_matches_polars(demo_build):
    """For a handful of stays: windows' hourly mean heart rate == polars group_by_dynamic
    over the raw chartevents rows (flag-free rows; the demo's HR rows are all clean)."""
    cfg, _ = demo_build
    v = open_version(cfg.version_dir)
    hr = concept_id(v, "heart_rate")
    raw = (pl.read_csv(demo_dir() / "icu" / "chartevents.csv.gz", infer_schema=False,
                       columns=["subject_id", "charttime", "itemid", "valuenum"])
           .filter(pl.col("itemid") == "220045")
           .with_columns(pl.col("subject_id").cast(pl.Int64),
                         pl.col("charttime").str.to_datetime("%Y-%m-%d %H:%M:%S"),
                         pl.col("valuenum").cast(pl.Float64)))
    checked = 0
    for sid in v.subject_ids[:15]:
        p = v.patient(sid)
        for w in p.windows:
            if w["kind"] != "stay" or hr not in w["features"]:
                continue
            f = w["features"].index(hr)
            start = np.datetime64(w["start"], "s").astype("datetime64[us]").item()
            end = np.datetime64(w["start"] + w["step"] * w["shape"][0], "s").astype(
                "datetime64[us]").item()
            want = (raw.filter((pl.col("subject_id") == sid) & (pl.col("charttime") >= start)
                               & (pl.col("charttime") < end)).sort("charttime")
                    .group_by_dynamic("charttime", every="1h").agg(pl.col("valuenum").mean()))
            got = w["data"][:, f, w["stats"].index("mean")]
            idx = want.select((pl.col("charttime") - pl.lit(start)).dt.total_seconds() // 3600
                              ).to_series().to_numpy()
            np.testing.assert_allclose(got[idx], want["valuenum"].to_numpy(), rtol=1e-5)
            assert np.isnan(np.delete(got, idx)).all()
            checked += 1
    assert checked >= 3


def test_html_report_has_the_plots(demo_build):
    cfg, _ = demo_build
    page = (cfg.version_dir / "qc_report.html").read_text()
    assert page.startswith("<!doctype html>") and "Flag rates per table" in page
    assert "<h3>temperature</h3>" in page and "<h3>heart_rate</h3>" in page
    assert page.count("<svg") >= 20 and "Events per patient" in page
    meta = json.loads((cfg.version_dir / "dataset.json").read_text())
    assert meta["flags"] == BITS and "temperature" in meta["concepts"]
