"""What the build stage needs from the whole partition stage, computed once, after it.

The global code vocabulary (every code any table produced, sorted, code_id = row number:
ids depend only on the set of codes in the input, never on shard count, worker count or
which unit finished first), the outlier thresholds, and the packing of patient buckets into
shards.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import polars as pl

from ..atomic import atomic_write_json, atomic_write_parquet, tmp_name
from ..events.map_rows import merge_code_stats
from ..events.plan import shards_of_buckets
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
    return cfg.work_dir / "shard_reads" / f"{shard:05d}.json"


def restricted(files: list[dict], buckets) -> list[dict]:
    """A partition marker's file list (each file's size and checksummed ranges kept) cut down
    to these buckets' batches: a shard's read list."""
    keep = {str(b) for b in buckets}
    return [{**f, "batches": {b: v for b, v in f["batches"].items() if b in keep}}
            for f in files]


def ensure_shard_map(cfg, plan, markers: dict[str, list[dict]] | None = None,
                     ) -> list[list[int]]:
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
                for bucket, (_, n, *_) in f["batches"].items():
                    rows[int(bucket)] += n
    shards = shards_of_buckets(rows, plan.n_shards)
    for s, buckets in enumerate(shards):
        # each file's size and checksummed ranges go along (the shard verifies what it reads),
        # and the unit's marker and codes checksums (to tell a redone unit from the one read)
        atomic_write_json(shard_reads_path(cfg, s), {name: [
            {"table": m["table"], "part": m["part"], "marker_xxh3": m["marker_xxh3"],
             "codes_xxh3": m["files"]["codes.parquet"]["xxh3"], **{
                kind: restricted(m[kind], buckets) for kind in ("events", "meta")}}
            for m in parts] for name, parts in markers.items()})
    sizes = [int(rows[b].sum()) for b in shards]
    atomic_write_json(path, {"shards": shards, "rows": sizes})
    return shards
