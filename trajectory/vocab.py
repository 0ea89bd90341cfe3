"""What the build stage needs from the whole partition stage, computed once, after it.

The global code vocabulary (every code any table produced, sorted, code_id = row number:
ids depend only on the set of codes in the input, never on shard count, worker count or
which unit finished first), the outlier thresholds, and the packing of patient buckets into
shards.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from .atomic import atomic_write_json, atomic_write_parquet
from .cleaning import global_thresholds, merge_sketches
from .events import merge_code_stats
from .plan import shards_of_buckets


def vocab_path(cfg) -> Path:
    return cfg.work_dir / "vocab.parquet"


def build_vocab(code_files: list[Path]) -> pl.DataFrame:
    per_table = [pl.read_parquet(p) for p in code_files]
    if not per_table:
        raise ValueError("no partitioned tables: nothing to build")
    tables = (pl.concat(per_table).group_by("code")
              .agg(pl.col("table").unique().sort().str.join(",")))
    merged = merge_code_stats([f.drop("table", "local_id", strict=False) for f in per_table])
    return (merged.join(tables, on="code", how="left").sort("code")
            .with_row_index("code_id").with_columns(pl.col("code_id").cast(pl.Int32)))


def thresholds_path(cfg) -> Path:
    return cfg.work_dir / "thresholds.parquet"


def ensure_vocab(cfg, tables: list[Path]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(vocabulary, outlier thresholds) of the whole input, from the partition outputs of
    `tables` (folders holding codes.parquet and sketch.parquet); created if absent. Any unit
    may create them: every writer produces identical bytes and renames atomically, so
    concurrent creators are harmless."""
    vpath, tpath = vocab_path(cfg), thresholds_path(cfg)
    if vpath.exists() and tpath.exists():
        return pl.read_parquet(vpath), pl.read_parquet(tpath)
    vocab = build_vocab([t / "codes.parquet" for t in tables])
    sketch = merge_sketches([pl.read_parquet(t / "sketch.parquet") for t in tables])
    thresholds = global_thresholds(vocab, sketch, cfg.outlier_method, cfg.outlier_k,
                                   cfg.outlier_min_count)
    for df, path in ((vocab, vpath), (thresholds, tpath)):
        atomic_write_parquet(df, path)
    return vocab, thresholds


def shard_map_path(cfg) -> Path:
    return cfg.work_dir / "shards.json"


def ensure_shard_map(cfg, plan, markers: dict[str, dict]) -> list[list[int]]:
    """Buckets of every shard, packed by the partition stage's row counts (all tables, events
    and header rows); created if absent, by whichever unit or driver gets there first (same
    bytes from every writer, atomic rename)."""
    path = shard_map_path(cfg)
    if path.exists():
        return json.loads(path.read_text())["shards"]
    rows = np.zeros(plan.n_buckets, np.int64)
    for name in sorted(markers):
        for f in markers[name]["events"] + markers[name]["meta"]:
            for bucket, (_, n) in f["batches"].items():
                rows[int(bucket)] += n
    shards = shards_of_buckets(rows, plan.n_shards)
    sizes = [int(rows[b].sum()) for b in shards]
    atomic_write_json(path, {"shards": shards, "rows": sizes})
    return shards
