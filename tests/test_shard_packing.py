"""Patient buckets are packed into shards of near-equal size, deterministically."""
import numpy as np

from trajectory.events.plan import (BUCKETS_PER_SHARD, batch_json, batch_table, bucket_of,
                                   shards_of_buckets)


def test_every_bucket_once_and_shards_balanced():
    rng = np.random.default_rng(0)
    n_shards = 41
    # 10,000 patients of heavy-tailed sizes (as demo x100), hashed into buckets
    patient_rows = rng.lognormal(8.5, 1.0, 10_000)
    ids = rng.choice(np.arange(10_000_000, 20_000_000), 10_000, replace=False)
    rows = np.bincount(bucket_of(ids, n_shards * BUCKETS_PER_SHARD), weights=patient_rows,
                       minlength=n_shards * BUCKETS_PER_SHARD).astype(np.int64)
    shards = shards_of_buckets(rows, n_shards)
    flat = sorted(b for s in shards for b in s)
    assert flat == list(range(len(rows)))
    sizes = np.array([rows[s].sum() for s in shards])
    # patients hashed straight into shards, for comparison
    naive = np.bincount(bucket_of(ids, n_shards), weights=patient_rows)
    assert sizes.max() / sizes.mean() < 1.05 < naive.max() / naive.mean()
    assert shards_of_buckets(rows, n_shards) == shards  # input-determined


def test_empty_buckets_and_ties():
    shards = shards_of_buckets(np.zeros(8, np.int64), 2)
    assert sorted(map(len, shards)) == [4, 4]
    assert shards_of_buckets(np.array([5, 5, 5, 5]), 2) == [[0, 2], [1, 3]]


def test_bucket_of_is_stable_and_in_range():
    ids = np.array([10000032, 10000033, 19999999, 9910040025])
    b = bucket_of(ids, 328)
    assert ((0 <= b) & (b < 328)).all()
    assert np.array_equal(b, bucket_of(ids.copy(), 328))


def test_bucket_files_do_not_depend_on_how_a_flush_is_grouped(tmp_path, monkeypatch):
    """A flush converts its buffer in groups of buckets (jobs.partition.FLUSH_GROUPS) to hold
    less of it at once; every bucket's batch holds the rows a single conversion gave it, in
    the same order, with the same types, and its recorded byte range and checksum are its
    own (a validity bitmap may be written or not, so the bytes may differ)."""
    import numpy as np
    import pyarrow as pa
    import xxhash
    import polars as pl

    from jobs import partition

    r = np.random.default_rng(3)
    frames = [pl.DataFrame({"subject_id": r.integers(1, 5000, 700),
                            "value": r.normal(size=700),
                            "text": [None if x < 0.2 else f"t{x:.3f},\"q\"" for x in r.random(700)]})
              for _ in range(5)]
    out = {}
    for groups in (1, 3, 8, 1000):
        monkeypatch.setattr(partition, "FLUSH_GROUPS", groups)
        d = tmp_path / str(groups)
        d.mkdir()
        w = partition.BucketWriter(d, "events", 64, 1 << 40)
        for f in frames:
            w.add(f)
        w.flush()
        path = d / "events-00000.arrow"
        (info,) = w.files
        reader = pa.ipc.open_file(str(path))
        data = path.read_bytes()
        per_bucket = {}
        for bucket, index, rows, start, end, xxh in batch_table(info["batches"]).tolist():
            batch = reader.get_batch(index)
            assert batch.num_rows == rows
            assert xxhash.xxh3_64_intdigest(data[start:end]) == xxh
            per_bucket[bucket] = batch.to_pylist()
        out[groups] = (reader.schema, per_bucket)
    assert all(v == out[1] for v in out.values())
    assert len(out[1][1]) > 50  # most buckets got rows


def test_read_index_gives_each_shard_only_its_batches_and_damage_is_named(tmp_path):
    """The shard read index gives each shard what cutting every unit's files down to its
    buckets gives (`restricted`, files with nothing for it left out); a damaged index (file
    list, a shard's slice of the batch table, a truncated or missing table, a shards.json of
    an earlier version, an index of other inputs, a shards.json whose bucket lists were
    edited) raises ReadIndexDamaged naming the folder, never a wrong list, and is made again,
    the same, from the markers; a map that disagrees with them is replaced, and said so."""
    import json
    import shutil
    from types import SimpleNamespace

    import pytest

    from trajectory.cleaning.vocab import (BATCHES_NAME, FILES_NAME, ReadIndexDamaged,
                                           ensure_shard_map, read_list, restricted,
                                           shard_map_from_markers, shard_map_path,
                                           shard_reads_dir)

    rng = np.random.default_rng(5)
    n_shards = 3
    n_buckets = n_shards * BUCKETS_PER_SHARD

    def files(k):
        return [{"path": f"events-{k}-{i}.arrow", "bytes": 100 + i, "head": [0, 8, 1],
                 "tail": [90, 100 + i, 2], "rows": 9,
                 "batches": batch_json(np.array(
                     [[b, j, int(rng.integers(1, 9)), 8 + j, 9 + j, 2**63 + j * 7]
                      for j, b in enumerate(sorted(rng.choice(n_buckets, n_buckets // 2,
                                                              replace=False)))],
                     np.uint64))}
                for i in range(3)]

    markers = {t: [{"table": t, "part": k, "marker_xxh3": f"m{k}",
                    "files": {"codes.parquet": {"xxh3": f"c{k}"}},
                    "events": files(k), "meta": files(k) if t == "admissions" else []}
                   for k in range(2)] for t in ("admissions", "labevents")}
    cfg = SimpleNamespace(work_dir=tmp_path)
    plan = SimpleNamespace(n_buckets=n_buckets, n_shards=n_shards,
                           cache_keys={"admissions": "a1", "labevents": "l1"})
    shards = ensure_shard_map(cfg, plan, markers)
    assert sorted(b for s in shards for b in s) == list(range(n_buckets))
    for s, buckets in enumerate(shards):
        got = read_list(cfg, plan, s, buckets)
        want = {t: [{"table": t, "part": m["part"], "marker_xxh3": m["marker_xxh3"],
                     "codes_xxh3": m["files"]["codes.parquet"]["xxh3"],
                     **{kind: [f for f in restricted(m[kind], buckets) if f["batches"]]
                        for kind in ("events", "meta")}} for m in parts]
                for t, parts in markers.items()}
        assert got == want
        assert sum(len(f["batches"]) for parts in got.values() for m in parts
                   for f in m["events"] + m["meta"]) > 0
    folder = shard_reads_dir(cfg)
    index = json.loads(shard_map_path(cfg).read_text())
    assert ensure_shard_map(cfg, plan) == shards  # made once: read back, not made again

    def read_all(p=plan):
        return [read_list(cfg, p, s, b) for s, b in enumerate(shards)]

    def damaged(shard, match, buckets=None, map_why=None):
        with pytest.raises(ReadIndexDamaged, match=rf"shard_reads: damaged shard read index "
                                                   rf".*{match}.*made again"):
            read_list(cfg, plan, shard, shards[shard] if buckets is None else buckets)
        # what a shard does on ReadIndexDamaged (jobs/build.remade_map)
        assert shard_map_from_markers(cfg, plan, markers, rewrite=True) == (shards, map_why)
        assert read_all() == lists
        assert json.loads(shard_map_path(cfg).read_text()) == index

    lists = read_all()
    good = (folder / FILES_NAME).read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0x20
    (folder / FILES_NAME).write_bytes(bytes(bad))
    damaged(0, "fails the XXH3 checksum shards.json holds")
    table = np.load(folder / BATCHES_NAME)
    offsets = __import__("msgpack").unpackb(good)["offsets"]
    raw = bytearray((folder / BATCHES_NAME).read_bytes())
    header = len(raw) - table.nbytes
    # one flipped bit in shard 1's rows: shard 1 finds it, shard 0 still reads its own
    raw[header + offsets[1] * table.shape[1] * 8 + 3] ^= 0x01
    (folder / BATCHES_NAME).write_bytes(bytes(raw))
    assert read_list(cfg, plan, 0, shards[0]) == lists[0]
    damaged(1, "shard 1's rows .* fail their XXH3 checksum")
    (folder / BATCHES_NAME).write_bytes(bytes(raw[:-40]))  # truncated
    damaged(2, "")
    (folder / BATCHES_NAME).unlink()
    damaged(0, "No such file")
    shard_map_path(cfg).write_text(json.dumps({k: v for k, v in index.items()
                                               if k != "files_xxh3"}))
    damaged(0, "earlier version", map_why="its read index is not the one the partition markers "
                                          "give (another build's, or an earlier version's)")
    # the folder replaced by a file: read as damaged, and the folder made again in its place
    shutil.rmtree(folder)
    folder.write_text("not a folder")
    damaged(2, "NotADirectoryError")
    # a shard given other buckets than the index was made for (shards.json edited after the
    # index): the shard refuses; the map made again from the markers is the index's
    moved = [list(b) for b in shards]
    moved[1].append(moved[0].pop())
    shard_map_path(cfg).write_text(json.dumps({**index, "shards": moved}))
    damaged(0, "gives shard 0 buckets .* not those the read index was made for",
            buckets=moved[0], map_why="its shard map is not the one the partition markers give")
    # an index made from other inputs' units, its checksums made to agree with it
    other = SimpleNamespace(**{**vars(plan), "cache_keys": {"admissions": "a1",
                                                            "labevents": "l2"}})
    shard_map_from_markers(cfg, other, markers, rewrite=True)
    with pytest.raises(ReadIndexDamaged, match="made from the partition units of other inputs"):
        read_list(cfg, plan, 0, shards[0])
    assert shard_map_from_markers(cfg, plan, markers) == (shards, (
        "its read index is not the one the partition markers give (another build's, or an "
        "earlier version's)"))
    assert read_all() == lists
    assert shard_map_from_markers(cfg, plan, markers) == (shards, None)  # in place: kept
    # markers that give another map (a unit's rows changed) replace it, and say so
    grown = {t: [{**m, "events": [{**f, "batches": batch_json(
        batch_table(f["batches"]) * np.array([1, 1, 50, 1, 1, 1], np.uint64))}
        for f in m["events"]]} for m in parts] for t, parts in markers.items()}
    new, why = shard_map_from_markers(cfg, plan, grown)
    assert new != shards and why == "its shard map is not the one the partition markers give"
    assert json.loads(shard_map_path(cfg).read_text())["shards"] == new
    assert [read_list(cfg, plan, s, b) for s, b in enumerate(new)]
