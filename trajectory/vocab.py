"""The global code vocabulary: every code any table produced, sorted, code_id = row number.

Sorted by code string, so ids depend only on the set of codes in the input, never on shard
count, worker count or which unit finished first.
"""
from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from .events import merge_code_stats


def vocab_path(cfg) -> Path:
    return cfg.work_dir / "vocab.parquet"


def build_vocab(code_files: list[Path]) -> pl.DataFrame:
    per_table = [pl.read_parquet(p) for p in code_files]
    if not per_table:
        raise ValueError("no partitioned tables: nothing to build")
    tables = (pl.concat(per_table).group_by("code")
              .agg(pl.col("table").unique().sort().str.join(",")))
    merged = merge_code_stats([f.drop("table") for f in per_table])
    return (merged.join(tables, on="code", how="left").sort("code")
            .with_row_index("code_id").with_columns(pl.col("code_id").cast(pl.Int32)))


def ensure_vocab(cfg, code_files: list[Path]) -> pl.DataFrame:
    """Read the vocabulary, creating it if absent. Any unit may create it: every writer
    produces identical bytes and the rename is atomic, so concurrent creators are harmless."""
    path = vocab_path(cfg)
    if path.exists():
        return pl.read_parquet(path)
    vocab = build_vocab(code_files)
    tmp = path.with_name(f".{path.name}.tmp-{os.uname().nodename}-{os.getpid()}")
    vocab.write_parquet(tmp)
    os.replace(tmp, path)
    return vocab
