"""Fault injection on what builds share (issue 23): the stage-1 cache, the sorted-shard cache,
the seek-point indexes, a prune beside a build, kills at bad moments. Every case must end with
the bytes of a build that never met the fault, or a clear error naming the entry; never other
bytes with exit 0. On the real demo, cut into units so that scans and indexes exist."""
from __future__ import annotations

import filecmp
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest

from jobs import build, cache, lease
from jobs.driver import run_build
from trajectory.events.plan import batch_table, load_plan

from .conftest import demo_dir, make_cfg

REPO = Path(__file__).resolve().parent.parent
# chartevents and labevents cut, scanned; sorted shards kept from the first build, as the
# cases need them
SETTINGS = {"partition_unit_mb": 0.5, "n_shards": 4, "keep_sorted": "always"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A build that met no fault: its bytes are what every case must end with."""
    cfg = make_cfg(demo_dir(), tmp_path_factory.mktemp("faults") / "out", **SETTINGS)
    run_build(cfg, progress=False)
    return cfg


def fresh(reference, tmp_path, version="b", **extra):
    """A copy of the reference's OUT_DIR (its caches and indexes included), and the config of a
    new version in it: it reuses every cached entry, as a researcher's second version would."""
    out = tmp_path / "out"
    shutil.copytree(reference.out_dir, out, ignore=shutil.ignore_patterns("_leases"))
    return make_cfg(demo_dir(), out, trajectory_version=version, **{**SETTINGS, **extra})


def assert_reference_bytes(cfg, reference):
    a, b = (pl.read_parquet(c.version_dir / "manifest.parquet") for c in (cfg, reference))
    assert a.select("subject_id", "n_events", "checksum").equals(
        b.select("subject_id", "n_events", "checksum"))
    for name in ("codes.parquet", "qc_report.json"):
        assert filecmp.cmp(cfg.version_dir / name, reference.version_dir / name,
                           shallow=False), name


def warnings(cfg) -> str:
    return "\n".join(json.loads((cfg.version_dir / "dataset.json").read_text())["warnings"])


def units(cfg, table: str) -> list[Path]:
    return sorted(p for p in cache.entry_dir(cfg, load_plan(cfg), table).glob("[0-9]*"))


def unit_marker(folder: Path) -> dict:
    return json.loads((folder / "done.json").read_text())


def flip(path: Path, at: int | None = None) -> None:
    """One bit of one byte (the middle by default) changed, the size kept."""
    data = bytearray(path.read_bytes())
    at = len(data) // 2 if at is None else at
    data[at] ^= 0x10
    path.write_bytes(bytes(data))


def drop_sorted(cfg) -> None:
    """Without the sorted-shard cache the build reads the partition files, where the faults
    of the first cases are."""
    for d in cfg.cache_dir.glob("sorted-*"):
        shutil.rmtree(d)


def before_first_shard(monkeypatch, fault) -> list:
    """build.run patched to run `fault(cfg)` once, before the first shard (between the
    stages); the list gets what it returned once it has run."""
    real = build.run
    done = []

    def first(shard, c):
        if not done:
            done.append(fault(c))
        return real(shard, c)

    monkeypatch.setattr(build, "run", first)
    return done


def prepare_plan(cfg):
    from jobs.driver import prepare
    return prepare(cfg)


def test_a_flipped_bit_in_every_kind_of_stage1_file_is_found_and_rebuilt(reference, tmp_path):
    cfg = fresh(reference, tmp_path)
    prepare_plan(cfg)
    drop_sorted(cfg)
    damaged = []
    # a partition unit's events: a byte inside one record batch
    unit = units(cfg, "labevents")[0]
    f = unit_marker(unit)["events"][0]
    _, _, _, start, end, _ = batch_table(f["batches"])[0].tolist()
    flip(unit / f["path"], (start + end) // 2)
    damaged.append(unit)
    # the footer of another unit's events file (it locates every batch)
    unit = units(cfg, "chartevents")[1]
    f = unit_marker(unit)["events"][0]
    flip(unit / f["path"], f["bytes"] - 20)
    damaged.append(unit)
    # header-table rows (admissions' meta), a code book, a value sketch, the labels
    for table, name in (("admissions", "meta-00000.arrow"), ("prescriptions", "codes.parquet"),
                        ("chartevents", "sketch.parquet")):
        unit = units(cfg, table)[0]
        flip(unit / name)
        damaged.append(unit)
    labels = cache.entry_dir(cfg, load_plan(cfg), cache.DICTIONARIES) / "all"
    flip(labels / "labels.parquet")
    damaged.append(labels)
    # a unit's marker: a digit of its row count (still valid JSON), and a cut point of a scan
    unit = units(cfg, "emar")[0]
    text = (unit / "done.json").read_text()
    (unit / "done.json").write_text(text.replace('"rows_read": ', '"rows_read": 1', 1))
    damaged.append(unit)
    scan = cache.scan_marker_path(cfg, load_plan(cfg), "chartevents")
    marker = json.loads(scan.read_text())
    marker["cuts"][1] += 1
    scan.write_text(json.dumps(marker))
    # the scan is only reread by units that are redone: make one of chartevents' redone
    shutil.rmtree(units(cfg, "chartevents")[2])
    damaged.append(scan)

    summary = run_build(cfg, progress=False)
    assert_reference_bytes(cfg, reference)
    said = warnings(cfg)
    for path in damaged:
        assert str(path) in said, f"{path} not named in the warnings:\n{said}"
    assert summary["stage1_cache"]["reused"] < summary["stage1_cache"]["units"]


def test_truncated_missing_and_unmarked_files_are_rebuilt(reference, tmp_path):
    cfg = fresh(reference, tmp_path)
    prepare_plan(cfg)
    drop_sorted(cfg)
    damaged = []
    unit = units(cfg, "outputevents")[0]
    events = unit / unit_marker(unit)["events"][0]["path"]
    events.write_bytes(events.read_bytes()[:-100])  # truncated
    damaged.append(unit)
    unit = units(cfg, "inputevents")[0]
    (unit / "sketch.parquet").unlink()  # missing
    damaged.append(unit)
    unit = units(cfg, "diagnoses_icd")[0]
    (unit / "done.json").unlink()  # a finished folder without its marker
    damaged.append(unit)
    unit = units(cfg, "transfers")[0]
    (unit / "done.json").write_text("{not json")  # a corrupt marker
    damaged.append(unit)
    unit = units(cfg, "procedures_icd")[0]
    events = unit / unit_marker(unit)["events"][0]["path"]
    events.write_bytes(events.read_bytes() + b"\0")  # extended
    damaged.append(unit)

    run_build(cfg, progress=False)
    assert_reference_bytes(cfg, reference)
    said = warnings(cfg)
    for path in damaged:
        assert str(path) in said, f"{path} not named in the warnings:\n{said}"


def test_damaged_sorted_shards_are_rebuilt(reference, tmp_path):
    cfg = fresh(reference, tmp_path)
    sorted_dirs = sorted(cfg.cache_dir.glob("sorted-*"))
    assert len(sorted_dirs) == SETTINGS["n_shards"]
    flip(sorted_dirs[0] / "events.arrow")
    (sorted_dirs[1] / "texts.arrow").write_bytes((sorted_dirs[1] / "texts.arrow").read_bytes()[:50])
    (sorted_dirs[2] / "refs.arrow").unlink()
    marker = json.loads((sorted_dirs[3] / "done.json").read_text())
    marker["shard"] += 1
    (sorted_dirs[3] / "done.json").write_text(json.dumps(marker))  # valid JSON, wrong content

    run_build(cfg, progress=False)
    assert_reference_bytes(cfg, reference)
    said = warnings(cfg)
    for d in sorted_dirs:
        assert str(d) in said, f"{d} not named in the warnings:\n{said}"


def test_entry_gone_mid_run_is_redone(reference, tmp_path, monkeypatch):
    """A partition entry removed after stage 1, before the shards read it (a prune that did
    not see this build, a user's rm): the shard redoes the unit instead of dying."""
    cfg = fresh(reference, tmp_path)
    prepare_plan(cfg)
    drop_sorted(cfg)

    def remove(c):
        gone = [cache.entry_dir(c, load_plan(c), t) for t in ("labevents", "admissions")]
        for entry in gone:
            shutil.rmtree(entry)
        return gone

    done = before_first_shard(monkeypatch, remove)
    run_build(cfg, progress=False)
    assert done and all(e.is_dir() for e in done[0])  # redone
    assert_reference_bytes(cfg, reference)


def test_a_damaged_shard_read_index_is_made_again(reference, tmp_path, monkeypatch):
    """The shard read index damaged between the stages (a flipped bit in the batch table, a
    garbled file list): shards find it by its checksums, make it again from the partition
    markers, and the records are the reference's; dataset.json says so."""
    from trajectory.cleaning.vocab import BATCHES_NAME, FILES_NAME, shard_reads_dir

    cfg = fresh(reference, tmp_path)
    prepare_plan(cfg)
    drop_sorted(cfg)

    def damage(c):
        folder = shard_reads_dir(c)
        flip(folder / BATCHES_NAME, at=(folder / BATCHES_NAME).stat().st_size - 5)
        flip(folder / FILES_NAME)

    done = before_first_shard(monkeypatch, damage)
    run_build(cfg, progress=False)
    assert done
    assert_reference_bytes(cfg, reference)
    assert re.search(r"shard_reads was damaged .*: made again from the partition markers",
                     warnings(cfg))


def test_a_read_index_damaged_again_after_remaking_is_an_error(reference, tmp_path,
                                                               monkeypatch):
    """Damage that comes back at once (a failing disk) stops the build with an error that
    says so, instead of remaking the index forever."""
    from trajectory.cleaning.vocab import ReadIndexDamaged, shard_reads_dir

    cfg = fresh(reference, tmp_path)
    prepare_plan(cfg)
    drop_sorted(cfg)

    def always_damaged(c, plan, shard, buckets):
        raise ReadIndexDamaged(shard_reads_dir(c), "XXH3 mismatch")

    monkeypatch.setattr(build, "read_list", always_damaged)
    with pytest.raises(ValueError, match="shard_reads: the shard read index is damaged again "
                                         r"just after being made \(XXH3 mismatch\)"):
        run_build(cfg, progress=False)


def test_a_build_stopped_between_the_read_index_and_the_shard_map_resumes(reference, tmp_path,
                                                                         monkeypatch):
    """The worst moment for the shard map: the read index written, shards.json (written last,
    the map's done-marker) not. The rerun makes both again over the leftover (damaged here
    too) and ends with the reference's bytes."""
    import trajectory.cleaning.vocab as vocab

    cfg = fresh(reference, tmp_path)
    real = vocab.atomic_write_json

    def stopped_at_the_map(path, obj, *args, **kwargs):
        if path.name == "shards.json":
            raise KeyboardInterrupt("stopped before the shard map")
        return real(path, obj, *args, **kwargs)

    monkeypatch.setattr(vocab, "atomic_write_json", stopped_at_the_map)
    with pytest.raises(KeyboardInterrupt):
        run_build(cfg, progress=False)
    monkeypatch.undo()
    leftover = vocab.shard_reads_dir(cfg) / vocab.BATCHES_NAME
    assert leftover.exists() and not vocab.shard_map_path(cfg).exists()
    flip(leftover)
    run_build(cfg, progress=False)
    assert_reference_bytes(cfg, reference)


def at_the_stage_boundary(cfg) -> None:
    """A built version taken back to the stage boundary: stage 1, shards.json and the read
    index kept, the version and every shard's done-marker gone (a build killed just after the
    boundary, or a user's cleanup); the next run passes the boundary again."""
    shutil.rmtree(cfg.version_dir)
    shutil.rmtree(cfg.work_dir / "done" / "build")


def forged_index(cfg, **changes) -> None:
    """shards.json and the read index rewritten with `changes` to the file list (what an
    index copied in from a build of other inputs holds), their checksums made to agree."""
    import msgpack
    import xxhash

    from trajectory.cleaning.vocab import FILES_NAME, shard_map_path, shard_reads_dir

    path = shard_reads_dir(cfg) / FILES_NAME
    index = {**msgpack.unpackb(path.read_bytes()), **changes}
    packed = msgpack.packb(index)
    path.write_bytes(packed)
    smap = json.loads(shard_map_path(cfg).read_text())
    shard_map_path(cfg).write_text(json.dumps({**smap,
                                               "files_xxh3": xxhash.xxh3_64_hexdigest(packed)}))


def moved_bucket(cfg) -> None:
    """One bucket moved from shard 0 to shard 1 in shards.json (nothing else changed)."""
    from trajectory.cleaning.vocab import shard_map_path

    smap = json.loads(shard_map_path(cfg).read_text())
    smap["shards"][1].append(smap["shards"][0].pop())
    shard_map_path(cfg).write_text(json.dumps(smap))


@pytest.mark.parametrize("fault", ["moved bucket", "other inputs"])
def test_a_shard_map_or_index_that_disagrees_with_the_markers_is_replaced(
        reference, tmp_path, monkeypatch, fault):
    """A shards.json whose bucket lists were edited, or a read index copied in (with its
    shards.json) from a build of other inputs, all checksums agreeing: checksums cannot tell,
    so the map and index are checked against what the partition markers give: by the driver
    at the stage boundary of a resumed build, and by each shard (a SLURM array has no driver
    between the stages), which makes them again and, given other buckets, starts again with
    its own. Both end with the reference's bytes and say what was replaced."""
    def tamper(c):
        if fault == "moved bucket":
            moved_bucket(c)
        else:
            forged_index(c, cache_keys={**load_plan(c).cache_keys, "labevents": "other"})

    cfg = fresh(reference, tmp_path)
    drop_sorted(cfg)
    run_build(cfg, progress=False)
    # the driver's check, on a resume
    at_the_stage_boundary(cfg)
    tamper(cfg)
    run_build(cfg, progress=False)
    assert_reference_bytes(cfg, reference)
    assert re.search(r"shards.json was damaged \(its (shard map|read index) is not the one the "
                     r"partition markers give.*\): made again from the partition markers",
                     warnings(cfg))
    # the shards' check: the same fault after the driver's check, before the first shard
    # (the sorted shards kept by the last run go too: a shard that finds its own reads none)
    at_the_stage_boundary(cfg)
    drop_sorted(cfg)
    done = before_first_shard(monkeypatch, tamper)
    run_build(cfg, progress=False)
    assert done
    assert_reference_bytes(cfg, reference)
    said = warnings(cfg)
    assert re.search(r"shard_reads was damaged .*(gives shard 0 buckets .* not those the read "
                     r"index was made for|made from the partition units of other inputs)",
                     said), said


def test_a_file_where_the_read_index_folder_goes_is_replaced(reference, tmp_path, monkeypatch):
    """WORK_DIR/shard_reads replaced by a file between the stages: read as damage, the file
    replaced by the index made again, the reference's bytes."""
    from trajectory.cleaning.vocab import shard_reads_dir

    cfg = fresh(reference, tmp_path)
    prepare_plan(cfg)
    drop_sorted(cfg)

    def file_for_folder(c):
        shutil.rmtree(shard_reads_dir(c))
        shard_reads_dir(c).write_text("not a folder")

    done = before_first_shard(monkeypatch, file_for_folder)
    run_build(cfg, progress=False)
    assert done and shard_reads_dir(cfg).is_dir()
    assert_reference_bytes(cfg, reference)
    assert "NotADirectoryError" in warnings(cfg)


def test_a_shard_built_from_other_buckets_than_the_map_is_built_again(reference, tmp_path):
    """A shard whose done-marker holds other buckets than the shard map gives it (built from a
    map since replaced): a rerun builds it again; finalize alone refuses to publish it, names
    it, and removes its marker so that the next run builds it."""
    from jobs import finalize
    from jobs.common import done_path

    cfg = fresh(reference, tmp_path)
    run_build(cfg, progress=False)
    (cfg.version_dir / "dataset.json").unlink()  # unfinished again: the shards kept
    marker = done_path(cfg, build.STAGE, build.shard_name(1))
    stale = {**json.loads(marker.read_text()), "buckets": [0]}
    marker.write_text(json.dumps(stale))
    with pytest.raises(ValueError, match=r"1 of 4 built shards do not stand \(first: 1 \(built "
                                         r"from other buckets or inputs"):
        finalize.run("all", cfg)
    assert not marker.exists()
    marker.write_text(json.dumps(stale))
    before = {p.name: p.stat().st_mtime_ns for p in (cfg.work_dir / "done" / "build").iterdir()}
    run_build(cfg, progress=False)
    after = {p.name: p.stat().st_mtime_ns for p in (cfg.work_dir / "done" / "build").iterdir()}
    assert [n for n in before if before[n] != after[n]] == [marker.name]  # only it, again
    assert_reference_bytes(cfg, reference)


def test_a_deleted_version_folder_is_built_again_not_published_empty(reference, tmp_path):
    """The version folder of a finished build deleted by hand (the done-markers in WORK_DIR
    kept), or one shard's records: the rerun sees the records are not there, builds those
    shards again, and publishes the reference's records, never a manifest without them."""
    from trajectory import open_version

    cfg = fresh(reference, tmp_path)
    run_build(cfg, progress=False)
    shutil.rmtree(cfg.version_dir)
    run_build(cfg, progress=False)
    assert_reference_bytes(cfg, reference)
    v = open_version(cfg.version_dir)
    assert all(v.read_bytes(s) for s in v.subject_ids)
    # one record deleted, one renamed, a file no index lists, a folder of no shard (in a
    # version of their own: dataset.json names each damaged entry once)
    (tmp_path / "2").mkdir()
    cfg = fresh(reference, tmp_path / "2", version="c")
    run_build(cfg, progress=False)
    (cfg.version_dir / "dataset.json").unlink()
    patients = cfg.version_dir / "patients"
    victim = sorted((patients / build.shard_name(2)).iterdir())[0]
    victim.unlink()
    renamed = sorted((patients / build.shard_name(1)).iterdir())[0]
    renamed.rename(renamed.with_name("999" + renamed.name))
    (patients / build.shard_name(3) / "notes.txt").write_text("mine")
    (patients / "99999").mkdir()
    run_build(cfg, progress=False)
    assert victim.exists() and renamed.exists()
    assert not (patients / build.shard_name(3) / "notes.txt").exists()
    assert_reference_bytes(cfg, reference)
    said = warnings(cfg)
    for shard, what in ((2, "missing"), (1, "not in its index"), (3, "not in its index")):
        assert re.search(rf"patients/{build.shard_name(shard)} was damaged \(.*{what} .*\): "
                         "the shard built again", said), said
    assert "holds 1 entries that are not this version's shards (99999)" in said


def test_a_forged_map_and_index_without_a_driver_are_not_published(reference, tmp_path):
    """As a SLURM array runs (no driver between the stages): a shards.json with a bucket moved
    and a read index made for it, every checksum agreeing, put in place between the stages.
    The shards build from it (nothing they read disagrees); finalize, which checks the map
    against the partition markers, replaces it and refuses the shards built from it; the
    rerun of the stages gives the reference's records, where they belong."""
    import xxhash

    from jobs import finalize
    from trajectory.cleaning import vocab

    cfg = fresh(reference, tmp_path)
    drop_sorted(cfg)
    plan = prepare_plan(cfg)
    from jobs.driver import partition_tasks
    for _, fn, unit, _ in partition_tasks(plan):
        fn(unit, cfg)
    markers = build.partition_markers(cfg, plan)
    units, files, batches = vocab.marker_batches(markers)
    shards = vocab.shards_of_buckets(vocab._bucket_rows(batches, plan.n_buckets), plan.n_shards)
    shards[1].append(shards[0].pop())
    packed, table = vocab._read_index_bytes(plan, units, files, batches, shards)
    vocab._write_read_index(cfg, packed, table)
    vocab.atomic_write_json(vocab.shard_map_path(cfg), {
        "shards": shards, "files_xxh3": xxhash.xxh3_64_hexdigest(packed)})
    for shard in range(plan.n_shards):
        build.run(shard, cfg)
    with pytest.raises(ValueError, match=r"2 of 4 built shards do not stand \(first: 0 \(built "
                                         r"from other buckets"):
        finalize.run("all", cfg)
    for shard in range(plan.n_shards):
        build.run(shard, cfg)
    finalize.run("all", cfg)
    assert_reference_bytes(cfg, reference)
    m = pl.read_parquet(cfg.version_dir / "manifest.parquet")
    r = pl.read_parquet(reference.version_dir / "manifest.parquet")
    assert m.select("subject_id", "shard").equals(r.select("subject_id", "shard"))
    assert "shards.json was damaged (its shard map is not the one" in warnings(cfg)


@pytest.mark.parametrize("broken", ["a list short", "not JSON", "no shards", "float buckets"])
def test_a_broken_shard_map_is_made_again_by_the_shard_that_finds_it(reference, tmp_path,
                                                                      broken):
    """shards.json not a map of this plan (a list short, not JSON, no `shards`, buckets as
    2.0), found by a shard with no driver before it (a SLURM array task): made again from
    the partition markers, not a crash on every resubmission; the reference's records."""
    from jobs import finalize
    from trajectory.cleaning.vocab import shard_map_path

    cfg = fresh(reference, tmp_path)
    drop_sorted(cfg)
    run_build(cfg, progress=False)
    at_the_stage_boundary(cfg)
    path = shard_map_path(cfg)
    smap = json.loads(path.read_text())
    path.write_text({"a list short": json.dumps({**smap, "shards": smap["shards"][:-1]}),
                     "not JSON": "{", "no shards": json.dumps({"rows": smap["rows"]}),
                     "float buckets": json.dumps({**smap, "shards": [[float(b) for b in s]
                                                                    for s in smap["shards"]]}),
                     }[broken])
    for shard in range(4):
        build.run(shard, cfg)
    finalize.run("all", cfg)
    assert_reference_bytes(cfg, reference)
    assert json.loads(path.read_text())["shards"] == smap["shards"]
    assert "shards.json was damaged" in warnings(cfg)


def test_prune_in_a_loop_beside_a_build(reference, tmp_path):
    """`cache prune --older-than-hours 0` over and over while the real CLI builds (Dask
    workers, another process): nothing the build holds is removed, the build ends with the
    reference bytes, and an unused entry is pruned meanwhile."""
    out = tmp_path / "out"
    cfg = make_cfg(demo_dir(), out, **SETTINGS)
    stale = cfg.cache_dir / "labevents-0123456789abcdef"  # no version refers to it
    (stale / "0000").mkdir(parents=True)
    (stale / "0000" / "done.json").write_text("{}")
    cmd = [sys.executable, str(REPO / "build_patient_files.py"), "--data-dir", str(demo_dir()),
           "--out-dir", str(out), "--max-cpus", "2", "--quiet", "--n-shards", "4",
           "--partition-unit-mb", "0.5", "--keep-sorted", "always"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    rounds, removed = 0, set()
    while proc.poll() is None:
        removed |= {e["entry"] for e in cache.prune(cfg, older_than_hours=0)}
        rounds += 1
        time.sleep(0.02)
    log = proc.stdout.read()
    assert proc.returncode == 0, log
    assert rounds > 10
    assert stale.name in removed
    assert not (removed - {stale.name}), f"pruned what the build held: {removed}"
    assert_reference_bytes(cfg, reference)
    assert cache.leftovers(cfg, everywhere=True) == []


def test_prune_keeps_what_a_live_lease_holds_and_temporaries_of_live_owners(tmp_path):
    cfg = make_cfg(demo_dir(), tmp_path / "out")
    entry = cfg.cache_dir / "chartevents-00000000000000aa"
    entry.mkdir(parents=True)
    live_tmp = entry / f".0000.tmp-{lease.HOST}-{os.getpid()}-{time.time_ns()}"
    live_tmp.mkdir()
    dead_tmp = entry / f".0001.tmp-{lease.HOST}-{dead_pid()}-{time.time_ns()}"
    dead_tmp.mkdir()
    remote = entry / f".0002.tmp-otherhost-123-{time.time_ns()}"  # young, no lease: kept
    remote.mkdir()
    with lease.building(cfg.cache_dir):
        cache.hold(cfg, entry)
        assert cache.prune(cfg, older_than_hours=0) == []
        assert entry.is_dir() and live_tmp.is_dir() and remote.is_dir()
        assert not dead_tmp.exists()
    # the lease given up: the entry is unreferenced and goes
    assert [e["entry"] for e in cache.prune(cfg, older_than_hours=0)] == [entry.name]
    assert not entry.exists()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("moment", ["partition", "sorted", "records"])
def test_sigkill_at_bad_moments_leaves_nothing_behind(reference, tmp_path, moment):
    """Kill the real CLI when a temporary name of the given stage exists, rerun: the version
    has the reference bytes and no temporary file is left in the version, its work folder,
    CACHE_DIR or INDEX_DIR; before the rerun, `cache list` names the leftovers."""
    out = tmp_path / "out"
    cfg = make_cfg(demo_dir(), out, **SETTINGS)
    where = {"partition": lambda: list(cfg.cache_dir.glob("*-*/.[0-9]*.tmp-*")),
             "sorted": lambda: list(cfg.cache_dir.glob(".sorted-*.tmp-*")),
             "records": lambda: list((cfg.version_dir / "patients").glob(".*.tmp-*"))}[moment]
    cmd = [sys.executable, str(REPO / "build_patient_files.py"), "--data-dir", str(demo_dir()),
           "--out-dir", str(out), "--max-cpus", "2", "--quiet", "--n-shards", "4",
           "--partition-unit-mb", "0.5", "--keep-sorted", "always"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and not where() and proc.poll() is None:
        time.sleep(0.002)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if not where():
        pytest.skip(f"the build passed the {moment} moment before it could be caught")
    listed = subprocess.run([sys.executable, str(REPO / "build_patient_files.py"), "cache",
                             "list", "--out-dir", str(out)], capture_output=True, text=True,
                            check=True).stdout
    assert "left by a killed build" in listed, listed
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    assert_reference_bytes(cfg, reference)
    left = [p for p in out.rglob("*") if ".tmp" in p.name and "_leases" not in p.parts]
    assert left == []


def test_a_flipped_bit_in_a_seek_point_window_is_not_blamed_on_the_input(reference, tmp_path):
    """The gzip index's windows decide where a unit starts inflating: a changed byte there
    once made a unit read wrong rows, counted as `subject_not_in_patients`. Now the index is
    set aside, rebuilt, and the version equals the reference, counts included."""
    from trajectory.raw import gzindex

    cfg = fresh(reference, tmp_path)
    plan = prepare_plan(cfg)
    drop_sorted(cfg)
    cuts = json.loads(cache.scan_marker_path(cfg, plan, "chartevents").read_text())["cuts"]
    for table in ("chartevents", "labevents"):  # their units re-read the input
        shutil.rmtree(cache.entry_dir(cfg, plan, table))
    index = next(cfg.index_dir.glob("chartevents-*.gzidx"))
    _, points = gzindex.read_points(index)
    # the window of the seek point the last unit starts from (point 0 has none)
    i = max(j for j, p in enumerate(points) if p.out <= cuts[-2])
    assert i > 0
    flip(index, gzindex._windows_at(len(points)) + (i - 1) * gzindex.WINDOW + 1000)
    run_build(cfg, progress=False)
    assert_reference_bytes(cfg, reference)  # qc_report.json included: no rows blamed
    assert str(index) in warnings(cfg)


def test_leftovers_of_dead_processes_are_listed_then_removed_by_the_next_run(reference,
                                                                             tmp_path):
    """What a killed index pass, unit, shard or marker write leaves (names carrying a dead
    owner) in INDEX_DIR, CACHE_DIR, the version and its work folder: `cache list` names each,
    the next run of the version removes each, and nothing a live process owns is touched."""
    cfg = fresh(reference, tmp_path)
    prepare_plan(cfg)
    dead = f"{lease.HOST}-{dead_pid()}"
    index = next(cfg.index_dir.glob("chartevents-*.gzidx"))
    planted = [index.with_name(f".{index.name}.tmp-{dead}"),
               cache.entry_dir(cfg, load_plan(cfg), "labevents") / f".0000.tmp-{dead}-{time.time_ns()}",
               cfg.version_dir / "patients" / f".00001.tmp-{dead}",
               cfg.work_dir / "done" / "build" / f".00002.json.tmp-{dead}"]
    for p in planted:
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.name.startswith(".0"):
            p.mkdir()
            (p / "half-written").write_bytes(b"x" * 100)
        else:
            p.write_bytes(b"partial")
    alive = cfg.cache_dir / f".sorted-00000-x.tmp-{lease.HOST}-{os.getpid()}-{time.time_ns()}"
    alive.mkdir()
    listed = subprocess.run([sys.executable, str(REPO / "build_patient_files.py"), "cache",
                             "list", "--out-dir", str(cfg.out_dir)], capture_output=True,
                            text=True, check=True).stdout
    for p in planted:
        assert str(p) in listed, listed
    assert str(alive) not in listed
    run_build(cfg, progress=False)
    assert not any(p.exists() for p in planted)
    assert alive.is_dir()
    assert_reference_bytes(cfg, reference)


def test_resume_after_a_code_change_is_refused_not_mixed(tmp_path, monkeypatch):
    """An unfinished build resumed by other stage-1 code would read the old code's units
    under the keys it planned with; it is refused instead, naming why."""
    from jobs.driver import prepare

    cfg = make_cfg(demo_dir(), tmp_path / "out")
    prepare(cfg)
    monkeypatch.setattr(cache, "code_hash", lambda: "another code")
    with pytest.raises(ValueError, match=r"unfinished build .*the code or the polars/pyarrow "
                                         r"versions .* changed since it started"):
        prepare(cfg)
