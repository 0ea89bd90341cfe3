"""Stage 1's side unit: the labels and units of the d_* dictionaries, read once beside the
partition units. Finalize, which joins them onto codes.parquet, runs in one process after
every shard, so each second it spends is a second of the whole build at any worker count;
reading the dictionaries there was a third of it (0.24 of 0.74 s on demo x20).
"""
from __future__ import annotations

import time
from pathlib import Path

import polars as pl

from trajectory.atomic import atomic_write_parquet
from trajectory.plan import load_plan
from trajectory.read import iter_batches
from trajectory.tables import DICTIONARIES

from .common import read_done, write_done

STAGE = "dictionaries"
UNIT = "all"


def labels_path(cfg) -> Path:
    return cfg.work_dir / "dictionary_labels.parquet"


def dictionary_labels(plan, cfg) -> pl.DataFrame:
    frames = []
    for d in DICTIONARIES:
        if d.name not in plan.dictionaries:
            continue
        path = Path(plan.dictionaries[d.name]["path"])
        for batch in iter_batches(path, d.columns, cfg.csv_block_mb << 20):
            df = pl.from_arrow(batch)
            frames.append(df.select(
                pl.lit(d.name).alias("dictionary"),
                pl.concat_str([pl.col(c).cast(pl.String).str.strip_chars() for c in d.key],
                              separator="//").alias("label_key"),
                pl.coalesce([pl.col(c) for c in d.label]).alias("label"),
                (pl.col(d.unit) if d.unit else pl.lit(None, pl.String)).alias("dict_unit")))
    if not frames:
        return pl.DataFrame(schema={"dictionary": pl.String, "label_key": pl.String,
                                    "label": pl.String, "dict_unit": pl.String})
    return (pl.concat(frames).unique(["dictionary", "label_key"], keep="first",
                                     maintain_order=True))


def run(unit: str, cfg) -> dict:
    done = read_done(cfg, STAGE, unit)
    if done is not None:
        return done
    t0, cpu0 = time.perf_counter(), time.process_time()
    labels = dictionary_labels(load_plan(cfg), cfg)
    atomic_write_parquet(labels, labels_path(cfg))
    return write_done(cfg, STAGE, unit, {"rows": labels.height,
                                         "seconds": round(time.perf_counter() - t0, 3),
                                         "cpu_seconds": round(time.process_time() - cpu0, 3)})


def labels(cfg) -> pl.DataFrame:
    """The labels, made here if stage 1 did not (SLURM arrays run only the table units)."""
    run(UNIT, cfg)
    return pl.read_parquet(labels_path(cfg))
