"""What the build stage needs from the whole partition stage, computed once, after it.

The global code vocabulary (every code any table produced, sorted, code_id = row number:
ids depend only on the set of codes in the input, never on shard count, worker count or
which unit finished first), the outlier thresholds, and the packing of patient buckets into
shards.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import msgpack
import numpy as np
import polars as pl

from ..atomic import atomic_write_bytes, atomic_write_json, atomic_write_parquet, tmp_name
from ..events.map_rows import merge_code_stats
from ..events.plan import batch_table, shards_of_buckets
from .flags import global_thresholds, merge_sketches


def vocab_path(cfg) -> Path:
    return cfg.work_dir / "vocab.parquet"


def build_vocab(per_table: list[pl.DataFrame]) -> pl.DataFrame:
    """The vocabulary from every unit's codes.parquet frame (tables by name, parts in order)."""
    if not per_table:
        raise ValueError("no partitioned tables: nothing to build")
    tables = (pl.concat(per_table).group_by("code")
              .agg(pl.col("table").unique().sort().str.join(",")))
    merged = merge_code_stats([f.drop("table", "local_id", strict=False) for f in per_table])
    return (merged.join(tables, on="code", how="left").sort("code")
            .with_row_index("code_id").with_columns(pl.col("code_id").cast(pl.Int32)))


def thresholds_path(cfg) -> Path:
    return cfg.work_dir / "thresholds.parquet"


def luts_path(cfg) -> Path:
    return cfg.work_dir / "code_luts.npz"


def vocab_ready(cfg) -> bool:
    return all(p.exists() for p in (vocab_path(cfg), thresholds_path(cfg), luts_path(cfg)))


def ensure_vocab(cfg, units: list[tuple[str, Path]] | None,
                 ) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, np.ndarray]]:
    """(vocabulary, outlier thresholds, unit -> array mapping its local code ids to the
    global code_id) of the whole input, from the partition outputs of `units` ((unit,
    folder holding codes.parquet and sketch.parquet), tables by name, each table's parts in
    order: per-code stats keep the first unit and label seen in file order, whatever the
    cut); created if absent. Any unit may create them: every writer produces identical bytes
    and renames atomically, so concurrent creators are harmless. One lookup file of numpy
    arrays, not each unit's codes.parquet read and joined by every shard: those reads grow
    as units x shards (141 x 128 on demo x100 cut for 64 workers)."""
    vpath, tpath, lpath = vocab_path(cfg), thresholds_path(cfg), luts_path(cfg)
    if vocab_ready(cfg):
        with np.load(lpath) as z:
            luts = {k: z[k] for k in z.files}
        return pl.read_parquet(vpath), pl.read_parquet(tpath), luts
    books = [pl.read_parquet(folder / "codes.parquet") for _, folder in units]
    vocab = build_vocab(books)
    sketch = merge_sketches([pl.read_parquet(folder / "sketch.parquet") for _, folder in units])
    thresholds = global_thresholds(vocab, sketch, cfg.outlier_method, cfg.outlier_k,
                                   cfg.outlier_min_count)
    ids = vocab.select("code", "code_id")
    luts = {}
    for (unit, _), book in zip(units, books):
        got = book.select("local_id", "code").join(ids, on="code")
        lut = np.full(int(book["local_id"].max()) + 1 if book.height else 0, -1, np.int32)
        lut[got["local_id"].to_numpy()] = got["code_id"].to_numpy()
        luts[unit] = lut
    for df, path in ((vocab, vpath), (thresholds, tpath)):
        atomic_write_parquet(df, path)
    tmp = tmp_name(lpath)  # a leftover of a kill is found and removed by its name
    with open(tmp, "wb") as f:
        np.savez(f, **luts)
    os.replace(tmp, lpath)
    return vocab, thresholds, luts


def shard_map_path(cfg) -> Path:
    return cfg.work_dir / "shards.json"


def shard_reads_path(cfg, shard: int) -> Path:
    return cfg.work_dir / "shard_reads" / f"{shard:05d}.msgpack"


def restricted(files: list[dict], buckets) -> list[dict]:
    """A partition marker's file list (each file's size and checksummed ranges kept) cut down
    to these buckets' batches: a shard's read list."""
    keep = np.asarray(list(buckets), np.uint64)
    out = []
    for f in files:
        table = batch_table(f["batches"])
        out.append({**f, "batches": table[np.isin(table[:, 0], keep)].tobytes()})
    return out


def read_list(path: Path) -> dict:
    """A shard's read list as ensure_shard_map wrote it."""
    try:
        return msgpack.unpackb(path.read_bytes(), strict_map_key=False)
    except (ValueError, msgpack.UnpackException) as e:
        raise ValueError(f"{path}: damaged shard read list ({type(e).__name__}: {e}); delete "
                         f"{path.parent.parent / 'shards.json'} and {path.parent}/ to make "
                         "them again") from e


def shard_read_lists(markers: dict[str, list[dict]], shards: list[list[int]]) -> list[dict]:
    """Each shard's read list: per table, per unit, the marker's files (each file's size and
    checksummed ranges go along: the shard verifies what it reads) with only that shard's
    buckets' batches (raw bytes of their batch-table rows), and the unit's marker and codes
    checksums (to tell a redone unit from the one read); what `restricted` gives, with each
    file's batches split among the shards at once. Cut per shard, demo x800's 896 shards
    took 38 s of the driver between the stages (every shard walked every unit's batches)."""
    n_buckets = 1 + max((b for buckets in shards for b in buckets), default=-1)
    shard_of = np.zeros(n_buckets, np.int64)
    for s, buckets in enumerate(shards):
        shard_of[buckets] = s
    n = len(shards)
    out: list[dict] = [{} for _ in shards]
    for name, parts in markers.items():
        for reads in out:
            reads[name] = []
        for m in parts:
            split = {}
            for kind in ("events", "meta"):
                lists: list[list] = [[] for _ in shards]
                for f in m[kind]:
                    table = batch_table(f["batches"])
                    owner = shard_of[table[:, 0].astype(np.int64)]
                    order = np.argsort(owner, kind="stable")  # keeps bucket order per shard
                    rows = np.ascontiguousarray(table[order]).tobytes()
                    ends = np.cumsum(np.bincount(owner, minlength=n)) * table.shape[1] * 8
                    starts = np.concatenate(([0], ends[:-1]))
                    meta = {k: v for k, v in f.items() if k != "batches"}
                    for s, (a, b) in enumerate(zip(starts.tolist(), ends.tolist())):
                        lists[s].append({**meta, "batches": rows[a:b]})
                split[kind] = lists
            head = {"table": m["table"], "part": m["part"], "marker_xxh3": m["marker_xxh3"],
                    "codes_xxh3": m["files"]["codes.parquet"]["xxh3"]}
            for s, reads in enumerate(out):
                reads[name].append({**head, "events": split["events"][s],
                                    "meta": split["meta"][s]})
    return out


def ensure_shard_map(cfg, plan, markers: dict[str, list[dict]] | None = None,
                     started: float | None = None) -> list[list[int]]:
    """Buckets of every shard, packed by the partition stage's row counts (all tables, events
    and header rows); created if absent, by whichever unit or driver gets there first (same
    bytes from every writer, atomic rename). With it, each shard's read list: the partition
    markers cut down to its own buckets' batches, so a shard parses a few KB of JSON instead
    of every unit's marker (with 141 units and 1,024 buckets, ~0.2 s per shard)."""
    path = shard_map_path(cfg)
    if path.exists():
        return json.loads(path.read_text())["shards"]
    if markers is None:
        raise ValueError(f"{path}: no shard map yet, and no partition markers to make it from")
    rows = np.zeros(plan.n_buckets, np.int64)
    for name in sorted(markers):
        for m in markers[name]:
            for f in m["events"] + m["meta"]:
                table = batch_table(f["batches"])
                rows += np.bincount(table[:, 0].astype(np.int64),
                                    weights=table[:, 2].astype(np.float64),
                                    minlength=plan.n_buckets).astype(np.int64)
    shards = shards_of_buckets(rows, plan.n_shards)
    for s, reads in enumerate(shard_read_lists(markers, shards)):
        # msgpack: demo x800's 896 read lists (292 MB as indented JSON, whose encoder is pure
        # Python) took the driver 54 s to write, 4 s as compact JSON
        atomic_write_bytes(shard_reads_path(cfg, s), msgpack.packb(reads))
    sizes = [int(rows[b].sum()) for b in shards]
    # `started`: when the caller began reading the markers; the wall between the stages is a
    # serial step of the build, which the scaling model adds (benchmarks/bench_build.py)
    seconds = round(time.perf_counter() - started, 3) if started is not None else None
    atomic_write_json(path, {"shards": shards, "rows": sizes, "seconds": seconds})
    return shards
