"""Stage 1's outputs are shared by versions of the same inputs (jobs.cache): a version that
changes only stage-2 settings repartitions nothing and gives the bytes of a cold build; a
changed table repartitions that table alone; a finished version is up to date or refused."""
from __future__ import annotations

import filecmp
import gzip
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import polars as pl
import pytest

from jobs import cache
from trajectory import synth
from jobs.driver import run_build
from trajectory.events.plan import load_plan

from .conftest import make_cfg

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("synth")
    synth.generate(d, n_patients=24, seed=3)
    return d


def unit_markers(cfg) -> dict[Path, int]:
    # not the leases and build notes, nor the sorted shards a second version keeps
    return {p: p.stat().st_mtime_ns for p in cfg.cache_dir.rglob("*.json")
            if not p.parts[-2].startswith(("_", "sorted-"))}


def same_version(a: Path, b: Path) -> None:
    ma, mb = pl.read_parquet(a / "manifest.parquet"), pl.read_parquet(b / "manifest.parquet")
    assert ma.select("subject_id", "n_events", "checksum").equals(
        mb.select("subject_id", "n_events", "checksum"))
    for name in ("codes.parquet", "qc_report.json"):
        assert filecmp.cmp(a / name, b / name, shallow=False), name


def test_stage2_setting_reuses_stage1_and_matches_a_cold_build(data, tmp_path):
    first = make_cfg(data, tmp_path / "out", trajectory_version="a")
    s1 = run_build(first, progress=False)
    assert s1["stage1_cache"]["reused"] == 0
    before = unit_markers(first)
    assert any(p.name == "done.json" for p in before)

    second = make_cfg(data, tmp_path / "out", trajectory_version="b", outlier_k=2.0)
    s2 = run_build(second, progress=False)
    assert s2["stage1_cache"]["reused"] == s2["stage1_cache"]["units"] > 0
    assert unit_markers(second) == before  # nothing of stage 1 rewritten
    assert s2["config_hash"] != s1["config_hash"]

    cold = make_cfg(data, tmp_path / "cold", trajectory_version="b", outlier_k=2.0)
    run_build(cold, progress=False)
    assert not (tmp_path / "out" / "_cache").samefile(tmp_path / "cold" / "_cache")
    same_version(second.version_dir, cold.version_dir)
    # the thresholds do differ: the setting reached stage 2
    assert not filecmp.cmp(first.work_dir / "thresholds.parquet",
                           second.work_dir / "thresholds.parquet", shallow=False)


def sorted_entries(cfg) -> list[str]:
    return sorted(p.name for p in cfg.cache_dir.glob("sorted-*"))


def read_from_sorted_cache(cfg) -> list[bool]:
    """Per shard, whether it took its sorted events from CACHE_DIR (only a miss places and
    sorts them)."""
    return [("place_sort" not in json.loads(p.read_text())["phase_seconds"])
            for p in sorted((cfg.work_dir / "done" / "build").glob("*.json"))]


def test_sorted_shards_kept_from_the_second_version_on(data, tmp_path):
    """KEEP_SORTED=auto: a first build keeps no sorted shards (it would pay for them alone);
    the second version of the same inputs keeps them, and the third reads them, with the
    bytes of a cold build. A changed input is not "the same inputs"."""
    out = tmp_path / "out"
    a = make_cfg(data, out, trajectory_version="a")
    run_build(a, progress=False)
    assert sorted_entries(a) == []
    assert json.loads((a.version_dir / "dataset.json").read_text())["sorted_cache"] == []
    assert not any(read_from_sorted_cache(a))

    b = make_cfg(data, out, trajectory_version="b", outlier_k=2.0)
    run_build(b, progress=False)
    plan = load_plan(b)
    kept = sorted_entries(b)
    assert len(kept) == plan.n_shards
    assert json.loads((b.version_dir / "dataset.json").read_text())["sorted_cache"] == kept
    assert not any(read_from_sorted_cache(b))

    c = make_cfg(data, out, trajectory_version="c", outlier_k=2.5)
    run_build(c, progress=False)
    assert all(read_from_sorted_cache(c)) and sorted_entries(c) == kept
    cold = make_cfg(data, tmp_path / "cold", trajectory_version="c", outlier_k=2.5)
    run_build(cold, progress=False)
    same_version(c.version_dir, cold.version_dir)
    # every kept entry is named as used by b and c, so a prune leaves them
    used = {r["entry"]: r["versions"] for r in cache.entries(c)}
    assert all(used[name] == ["b", "c"] for name in kept)

    # another input: its first build keeps nothing, though OUT_DIR has versions
    src = tmp_path / "changed"
    shutil.copytree(data, src)
    omr = src / "hosp" / "omr.csv.gz"
    omr.write_bytes(gzip.compress(b"".join(gzip.decompress(omr.read_bytes())
                                           .splitlines(keepends=True)[:-1])))  # one row fewer
    d = make_cfg(src, out, trajectory_version="d")
    run_build(d, progress=False)
    assert sorted_entries(d) == kept


@pytest.mark.parametrize("mode, kept_by_first, kept_by_second", [("always", True, True),
                                                                 ("never", False, False)])
def test_keep_sorted_always_and_never(data, tmp_path, mode, kept_by_first, kept_by_second):
    out = tmp_path / "out"
    a = make_cfg(data, out, trajectory_version="a", keep_sorted=mode)
    run_build(a, progress=False)
    n = load_plan(a).n_shards
    assert len(sorted_entries(a)) == (n if kept_by_first else 0)
    b = make_cfg(data, out, trajectory_version="b", outlier_k=2.0, keep_sorted=mode)
    run_build(b, progress=False)
    assert len(sorted_entries(b)) == (n if kept_by_second else 0)
    assert all(read_from_sorted_cache(b)) == (mode == "always")


def test_changed_table_repartitions_that_table_only(data, tmp_path):
    src = tmp_path / "data"
    shutil.copytree(data, src)
    first = make_cfg(src, tmp_path / "out", trajectory_version="a", n_shards=4)
    run_build(first, progress=False)
    keys_a = load_plan(first).cache_keys
    # one more outputevents row for an existing patient (same columns, new value)
    path = src / "icu" / "outputevents.csv.gz"
    frame = pl.read_csv(path, infer_schema=False)
    frame = pl.concat([frame, frame.head(1).with_columns(pl.lit("123").alias("value"))])
    path.unlink()
    frame.write_csv(src / "icu" / "outputevents.csv")
    second = make_cfg(src, tmp_path / "out", trajectory_version="b", n_shards=4)
    s2 = run_build(second, progress=False)
    keys_b = load_plan(second).cache_keys
    changed = sorted(t for t in keys_b if keys_a.get(t) != keys_b[t])
    assert changed == ["outputevents"]
    assert s2["stage1_cache"]["units"] - s2["stage1_cache"]["reused"] == 1
    qc = json.loads((second.version_dir / "qc_report.json").read_text())["tables"]
    qa = json.loads((first.version_dir / "qc_report.json").read_text())["tables"]
    assert qc["outputevents"]["rows_read"] == qa["outputevents"]["rows_read"] + 1


def test_finished_version_up_to_date_or_refused(data, tmp_path):
    cfg = make_cfg(data, tmp_path / "out", trajectory_version="a")
    run_build(cfg, progress=False)
    stamp = (cfg.version_dir / "dataset.json").stat().st_mtime_ns
    again = run_build(make_cfg(data, tmp_path / "out", trajectory_version="a"), progress=False)
    assert again["up_to_date"] is True
    assert (cfg.version_dir / "dataset.json").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match=r"finished version of other inputs or config "
                                         r"\(OUTLIER_K 3\.0 -> 2\.0\);"):
        run_build(make_cfg(data, tmp_path / "out", trajectory_version="a", outlier_k=2.0),
                  progress=False)
    # through the CLI: exit 0 and says so
    out = subprocess.run([sys.executable, str(ROOT / "build_patient_files.py"), "--data-dir",
                          str(data), "--out-dir", str(tmp_path / "out"), "--version", "a",
                          "--runner", "serial", "--quiet"],
                         check=True, capture_output=True, text=True, cwd=tmp_path)
    assert "a is up to date" in out.stdout


def test_concurrent_builds_share_the_cache(data, tmp_path):
    """Two versions building the same stage 1 at once: each unit is published once, and both
    versions equal a lone build."""
    cfgs = [make_cfg(data, tmp_path / "out", trajectory_version=v, outlier_k=k)
            for v, k in (("a", 3.0), ("b", 2.0))]
    errors = []

    def build(c):
        try:
            run_build(c, progress=False)
        except Exception as e:  # surfaced by the assert below
            errors.append(e)

    threads = [threading.Thread(target=build, args=(c,)) for c in cfgs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert not list(cfgs[0].cache_dir.glob("*/.*.tmp-*"))  # losers dropped their copies
    lone = make_cfg(data, tmp_path / "lone", trajectory_version="b", outlier_k=2.0)
    run_build(lone, progress=False)
    same_version(cfgs[1].version_dir, lone.version_dir)


def test_list_and_prune(data, tmp_path):
    cfg = make_cfg(data, tmp_path / "out", trajectory_version="a")
    run_build(cfg, progress=False)
    rows = cache.entries(cfg)
    assert rows and all(r["versions"] == ["a"] for r in rows)
    assert cache.prune(cfg, older_than_hours=0) == []  # all in use by version a
    shutil.rmtree(cfg.version_dir)
    shutil.rmtree(cfg.work_dir)
    assert len(cache.prune(cfg, older_than_hours=1, dry_run=True)) == 0  # used just now
    gone = cache.prune(cfg, older_than_hours=0)
    assert {r["entry"] for r in gone} == {r["entry"] for r in rows}
    assert sorted(p.name for p in cfg.cache_dir.iterdir() if p.is_dir()) == ["_builds",
                                                                             "_leases"]
    assert not list((cfg.cache_dir / "_leases").iterdir())  # the build gave its lease up
    assert not list((cfg.cache_dir / "_builds").iterdir())  # its folders gone, so is its note


def test_prune_honours_builds_of_another_out_dir(data, tmp_path):
    """A version built into another OUT_DIR (another project, another host's mount) with the
    same CACHE_DIR keeps its entries through a prune run from this OUT_DIR."""
    shared = tmp_path / "shared_cache"
    other = make_cfg(data, tmp_path / "elsewhere", trajectory_version="x", cache_dir=str(shared))
    run_build(other, progress=False)
    here = make_cfg(data, tmp_path / "here", cache_dir=str(shared))
    before = {r["entry"] for r in cache.entries(here)}
    assert before and all(r["versions"] for r in cache.entries(here))
    assert cache.prune(here, older_than_hours=0) == []
    shutil.rmtree(other.version_dir)
    shutil.rmtree(other.work_dir)
    assert {r["entry"] for r in cache.prune(here, older_than_hours=0)} == before
