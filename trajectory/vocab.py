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


def luts_path(cfg) -> Path:
    return cfg.work_dir / "code_luts.parquet"


def ensure_vocab(cfg, units: list[tuple[str, Path]],
                 ) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(vocabulary, outlier thresholds, local -> global code id of every unit) of the whole
    input, from the partition outputs of `units` ((unit, folder holding codes.parquet and
    sketch.parquet), tables by name, each table's parts in order: per-code stats keep the
    first unit and label seen in file order, whatever the cut); created if absent. Any unit
    may create them: every writer produces identical bytes and renames atomically, so
    concurrent creators are harmless. One lookup file, not each unit's codes.parquet read by
    every shard: with a unit per 4 MB of input and a shard per worker, those reads grow as
    units x shards."""
    vpath, tpath, lpath = vocab_path(cfg), thresholds_path(cfg), luts_path(cfg)
    if vpath.exists() and tpath.exists() and lpath.exists():
        return pl.read_parquet(vpath), pl.read_parquet(tpath), pl.read_parquet(lpath)
    vocab = build_vocab([folder / "codes.parquet" for _, folder in units])
    sketch = merge_sketches([pl.read_parquet(folder / "sketch.parquet") for _, folder in units])
    thresholds = global_thresholds(vocab, sketch, cfg.outlier_method, cfg.outlier_k,
                                   cfg.outlier_min_count)
    ids = vocab.select("code", "code_id")
    luts = pl.concat([
        pl.read_parquet(folder / "codes.parquet", columns=["local_id", "code"])
        .join(ids, on="code").select(pl.lit(unit).alias("unit"), "local_id", "code_id")
        for unit, folder in units]).sort("unit", "local_id")
    for df, path in ((vocab, vpath), (thresholds, tpath), (luts, lpath)):
        atomic_write_parquet(df, path)
    return vocab, thresholds, luts


def shard_map_path(cfg) -> Path:
    return cfg.work_dir / "shards.json"


def ensure_shard_map(cfg, plan, markers: dict[str, list[dict]]) -> list[list[int]]:
    """Buckets of every shard, packed by the partition stage's row counts (all tables, events
    and header rows); created if absent, by whichever unit or driver gets there first (same
    bytes from every writer, atomic rename)."""
    path = shard_map_path(cfg)
    if path.exists():
        return json.loads(path.read_text())["shards"]
    rows = np.zeros(plan.n_buckets, np.int64)
    for name in sorted(markers):
        for m in markers[name]:
            for f in m["events"] + m["meta"]:
                for bucket, (_, n) in f["batches"].items():
                    rows[int(bucket)] += n
    shards = shards_of_buckets(rows, plan.n_shards)
    sizes = [int(rows[b].sum()) for b in shards]
    atomic_write_json(path, {"shards": shards, "rows": sizes})
    return shards
