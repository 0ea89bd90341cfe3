"""Stage 1's side unit: the labels and units of the d_* dictionaries, read once beside the
partition units. Finalize, which joins them onto codes.parquet, runs in one process after
every shard, so each second it spends is a second of the whole build at any worker count;
reading the dictionaries there was a third of it (0.24 of 0.74 s on demo x20). Kept in the
stage-1 cache (jobs.cache) by the dictionaries' fingerprints.
"""
from __future__ import annotations

import time
from pathlib import Path

import polars as pl

from trajectory.atomic import atomic_write_parquet
from trajectory.events.plan import load_plan
from trajectory.events.tables import DICTIONARIES
from trajectory.raw.read import iter_batches

from . import cache
from .common import fresh_unit_memory, peak_rss_mb

STAGE = "dictionaries"
UNIT = "all"


def entry(cfg, plan) -> Path:
    return cache.entry_dir(cfg, plan, cache.DICTIONARIES) / UNIT


def labels_path(cfg, plan) -> Path:
    return entry(cfg, plan) / "labels.parquet"


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


def read(cfg, plan) -> dict | None:
    return cache.lookup(cfg, entry(cfg, plan), plan.cache_keys[cache.DICTIONARIES])


def run(unit: str, cfg) -> dict:
    plan = load_plan(cfg)
    cache.hold(cfg, entry(cfg, plan).parent)
    for attempt in range(3):
        cache.touch(entry(cfg, plan).parent)
        done = read(cfg, plan)
        if done is not None:
            return done
        try:
            return _make(unit, cfg, plan)
        except cache.Lost:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _make(unit: str, cfg, plan) -> dict:
    t0, cpu0 = time.perf_counter(), time.process_time()
    start_rss = fresh_unit_memory()
    final = entry(cfg, plan)
    tmp = cache.new_unit_folder(final)
    with cache.cleaned_on_error(tmp):
        labels = dictionary_labels(plan, cfg)
        atomic_write_parquet(labels, tmp / "labels.parquet", mkdir=False)
        return cache.publish_unit(cfg, tmp, final, plan.cache_keys[cache.DICTIONARIES], {
            "stage": STAGE, "unit": unit, "rows": labels.height,
            "files": cache.file_sums(tmp, ["labels.parquet"]),
            "seconds": round(time.perf_counter() - t0, 3),
            "cpu_seconds": round(time.process_time() - cpu0, 3),
            "peak_rss_mb": peak_rss_mb(), "start_rss_mb": start_rss})


def labels(cfg) -> pl.DataFrame:
    """The labels, made here if stage 1 did not (SLURM arrays run only the table units),
    verified against their checksum; damaged, they are set aside and made again."""
    plan = load_plan(cfg)
    for _ in range(3):
        marker = run(UNIT, cfg)
        try:
            return pl.read_parquet(cache.verify_file(entry(cfg, plan), "labels.parquet", marker))
        except cache.Damaged as e:
            cache.set_aside(cfg, entry(cfg, plan), f"{e.path.name}: {e.why}")
    raise ValueError(f"{entry(cfg, plan)}: the dictionaries' labels fail their checksum "
                     "again after being redone three times; is CACHE_DIR's disk failing?")
