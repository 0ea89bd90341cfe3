"""Same bytes whatever the worker count or shard count; a killed run resumes without redoing
finished units."""
import json
import os
import signal
import subprocess
import sys
import time

import polars as pl

from jobs import build, partition
from jobs.common import done_path
from jobs.driver import partition_tasks, prepare, run_build

from .conftest import REPO, demo_dir, make_cfg


def manifest(cfg):
    return pl.read_parquet(cfg.version_dir / "manifest.parquet")


def test_max_cpus_1_2_and_4_identical(demo_build, tmp_path):
    """With the plan's worker count fixed, MAX_CPUS changes nothing at all; left to follow
    MAX_CPUS, it changes how many shards hold the records (the manifest's location columns),
    never a record, code or QC count."""
    ref_cfg, _ = demo_build
    ref_plan = json.loads((ref_cfg.work_dir / "plan.json").read_text())
    for cpus in (1, 2, 4):
        cfg = make_cfg(demo_dir(), tmp_path / f"cpus{cpus}", runner="dask", max_cpus=cpus,
                       plan_workers=ref_cfg.plan_workers)
        run_build(cfg, progress=False)
        assert manifest(cfg).equals(manifest(ref_cfg)), cpus
        plan = json.loads((cfg.work_dir / "plan.json").read_text())
        assert (plan["n_shards"], plan["parts"]) == (ref_plan["n_shards"], ref_plan["parts"])
    cfg = make_cfg(demo_dir(), tmp_path / "follow", runner="dask", max_cpus=4)
    run_build(cfg, progress=False)
    plan = json.loads((cfg.work_dir / "plan.json").read_text())
    assert plan["n_shards"] == 8 != ref_plan["n_shards"]
    where = ["shard", "path", "offset"]
    assert manifest(cfg).drop(where).equals(manifest(ref_cfg).drop(where))
    for name in ("codes.parquet", "qc_report.json"):
        assert (cfg.version_dir / name).read_bytes() == (ref_cfg.version_dir / name).read_bytes()


def test_shard_count_does_not_change_records(demo_build, tmp_path):
    ref_cfg, _ = demo_build
    cfg = make_cfg(demo_dir(), tmp_path / "one", n_shards=1)
    run_build(cfg, progress=False)
    a, b = manifest(cfg), manifest(ref_cfg)
    assert a["shard"].unique().to_list() == [0]
    assert a["checksum"].equals(b["checksum"]) and a["subject_id"].equals(b["subject_id"])
    assert pl.read_parquet(cfg.version_dir / "codes.parquet").equals(
        pl.read_parquet(ref_cfg.version_dir / "codes.parquet"))


def markers(cfg) -> dict:
    """Every done-marker: the build's in the work folder, stage 1's in the shared cache."""
    return {p: p.stat().st_mtime_ns for d in (cfg.work_dir / "done", cfg.cache_dir)
            for p in d.rglob("*.json") if "_leases" not in p.parts}  # leases come and go


def test_resume_skips_finished_units(demo_build, tmp_path):
    ref_cfg, _ = demo_build
    cfg = make_cfg(demo_dir(), tmp_path / "resume")
    plan = prepare(cfg)
    for _, fn, unit, _ in partition_tasks(plan):
        fn(unit, cfg)
    build.run(0, cfg)
    # A killed shard: its directory half-written, no marker.
    stale = cfg.version_dir / "patients" / build.shard_name(1)
    stale.mkdir(parents=True)
    (stale / "garbage.msgpack.zst").write_bytes(b"partial")
    before = markers(cfg)
    run_build(cfg, progress=False)
    for p, mtime in before.items():
        assert p.stat().st_mtime_ns == mtime, f"{p} was redone"
    assert not (stale / "garbage.msgpack.zst").exists()
    assert manifest(cfg).equals(manifest(ref_cfg))


def test_sigkill_mid_build_then_rerun(demo_build, tmp_path):
    """Kill the real CLI (driver and Dask workers) mid-build, rerun, compare with a clean
    build. Finished units' markers must not be rewritten by the rerun."""
    ref_cfg, _ = demo_build
    out = tmp_path / "killed"
    cmd = [sys.executable, str(REPO / "build_patient_files.py"), "--data-dir", str(demo_dir()),
           "--out-dir", str(out), "--max-cpus", "2", "--quiet", "--n-shards", "4"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    cfg = make_cfg(demo_dir(), out, n_shards=4)
    first = done_path(cfg, build.STAGE, build.shard_name(0)).parent
    deadline = time.time() + 120
    while time.time() < deadline and not any(first.glob("*.json")):
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (cfg.version_dir / "dataset.json").exists()
    before = markers(cfg)
    assert before, "nothing finished before the kill"
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    for p, mtime in before.items():
        assert p.stat().st_mtime_ns == mtime, f"{p} was redone"
    assert manifest(cfg)["checksum"].equals(manifest(ref_cfg)["checksum"])


def test_changed_config_on_existing_work_dir_is_refused(tmp_path):
    import pytest

    cfg = make_cfg(demo_dir(), tmp_path / "o", n_shards=3)
    plan = prepare(cfg)
    partition.run(plan.partition_units()[-1], cfg)
    other = make_cfg(demo_dir(), tmp_path / "o", n_shards=5)
    with pytest.raises(ValueError, match="unfinished build of different inputs or config"):
        run_build(other, progress=False)


def test_packed_shards_hold_the_same_record_bytes(demo_build, tmp_path):
    from trajectory import open_version

    ref_cfg, _ = demo_build
    cfg = make_cfg(demo_dir(), tmp_path / "packed", layout="shards")
    run_build(cfg, progress=False)
    a, b = manifest(cfg), manifest(ref_cfg)
    assert a["checksum"].equals(b["checksum"])
    assert a["path"].str.ends_with(".pack").all()
    assert len(list((cfg.version_dir / "patients").glob("*.pack"))) == a["shard"].n_unique()
    packed, files = open_version(cfg.version_dir), open_version(ref_cfg.version_dir)
    for sid in packed.subject_ids[:10]:
        assert packed.read_bytes(sid) == files.read_bytes(sid)


def test_finalize_refuses_missing_or_corrupt_shard(tmp_path):
    import pytest

    from jobs import finalize

    cfg = make_cfg(demo_dir(), tmp_path / "f", n_shards=2)
    plan = prepare(cfg)
    for _, fn, unit, _ in partition_tasks(plan):
        fn(unit, cfg)
    build.run(0, cfg)
    with pytest.raises(ValueError, match=r"cannot publish: 1 of 2 shards not built \(first: \[1\]\)"):
        finalize.run("all", cfg)
    build.run(1, cfg)
    index = cfg.work_dir / "index" / f"{build.shard_name(1)}.parquet"
    index.write_bytes(index.read_bytes() + b"x")
    with pytest.raises(ValueError, match=r"1 of 2 built shards do not stand \(first: 1 \(.*"
                                         r"00001.parquet is missing or fails its checksum\)\); their "
                                         "done-markers are removed"):
        finalize.run("all", cfg)
    assert not (cfg.version_dir / "dataset.json").exists()
    build.run(1, cfg)  # built again: its marker went with the damaged index
    finalize.run("all", cfg)
    assert (cfg.version_dir / "dataset.json").exists()
