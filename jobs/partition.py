"""Stage 1, one unit per part of an input table (`<table>.<part>`; small tables have one part,
big ones are cut by the plan and the scan stage): stream-parse, map rows to events, split by
patient bucket.

Output: CACHE_DIR/<table>-<key>/<part>/events-NNNNN.arrow (and meta-NNNNN.arrow for the
tables the record header needs), each an Arrow IPC file with one record batch per patient
bucket, plus the table's code statistics and done.json (jobs.cache: shared by every version of
the same input, written to a private folder and renamed into place). The marker lists for
every file which batch holds which bucket and how many rows, so the build stage reads exactly
its own bytes and the buckets can be packed into shards of equal size. Files per table = input size / buffer,
never shards x chunks.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import xxhash

from trajectory.cleaning.flags import merge_sketches, value_sketch
from trajectory.events.extra_tables import table_of
from trajectory.events.map_rows import CodeBook, merge_code_stats, merge_counts
from trajectory.events.plan import batch_json, bucket_of, load_plan, split_unit, unit_name
from trajectory.raw.csv_ranges import Part
from trajectory.raw.read import iter_batches, prefetch

from trajectory.atomic import atomic_write_parquet, tmp_name

from .extra_keys import row_mapper

from . import cache, scan
from .common import fresh_unit_memory, peak_rss_mb

STAGE = "partition"


FLUSH_GROUPS = 8  # conversions per flush: each holds ~1/8 of the buffer twice more


class BucketWriter:
    """Buffers frames, split by patient bucket as they arrive, up to a byte budget; then writes
    one Arrow IPC file holding one record batch per bucket. IPC, not parquet: on 3M
    chartevents rows it wrote in 0.05 s against 0.25 s and read back in 0.06 s against 0.41 s,
    and its footer still lets the build stage read its buckets' batches without touching the
    others. Splitting each small frame on arrival (a cache-sized gather) instead of
    concatenating and sorting the whole buffer at flush spares the flush two copies of the
    buffer: the partition stage of demo x20 went from 8.8 s to 7.8 s."""

    def __init__(self, out_dir: Path, prefix: str, n_buckets: int, budget_bytes: int):
        self.out_dir, self.prefix, self.n_buckets = out_dir, prefix, n_buckets
        self.budget, self.size, self.files = budget_bytes, 0, []
        self.pieces: dict[int, list[pl.DataFrame]] = {}

    def add(self, frame: pl.DataFrame) -> None:
        if frame.height:
            bucket = bucket_of(frame["subject_id"].to_numpy(), self.n_buckets)
            # Stable: rows keep their input order within a bucket, so record bytes do not
            # depend on how the input was cut into blocks, buffers or shards.
            order = np.argsort(bucket, kind="stable")
            frame, bucket = frame[order], bucket[order]
            bounds = np.flatnonzero(np.diff(bucket)) + 1
            for s, e in zip(np.r_[0, bounds], np.r_[bounds, len(bucket)]):
                self.pieces.setdefault(int(bucket[s]), []).append(frame.slice(s, e - s))
            self.size += frame.estimated_size()
        if self.size >= self.budget:
            self.flush()

    def flush(self) -> None:
        if not self.pieces:
            return
        pieces, self.pieces, self.size = self.pieces, {}, 0
        path = self.out_dir / f"{self.prefix}-{len(self.files):05d}.arrow"
        tmp = tmp_name(path)
        # lz4: intermediate files are read once; zstd saved ~15% space for ~2x write time.
        # One thread: a worker is one core, and a bucket's batch is too small to share out.
        options = pa.ipc.IpcWriteOptions(compression="lz4", use_threads=False)
        order = sorted(pieces)
        rows = {b: sum(p.height for p in pieces[b]) for b in order}
        # A few concats and conversions per flush, each of about an eighth of the buffer,
        # then a zero-copy slice per bucket. One conversion of the whole buffer held it three
        # times over (the pieces, their concat, the Arrow copy): demo x800's partition units,
        # whose buffers fill, peaked at up to 1.1 GB over their start against ~0.3-0.45 GB for
        # demo x20's, whose do not; a conversion per bucket cost ~0.2 s a flush at 256
        # buckets. Plain (not view) strings: a string-view slice keeps its whole source
        # buffers, and IPC writes them all into every bucket's batch (emar's files grew from
        # 37 MB to 208 MB). Each bucket's batch holds the same rows, whatever the grouping.
        step = max(1, sum(rows.values()) // FLUSH_GROUPS)
        groups, group, held = [], [], 0
        for b in order:
            group.append(b)
            held += rows[b]
            if held >= step:
                groups.append(group)
                group, held = [], 0
        if group:
            groups.append(group)
        batches, spans, writer, schema = [], [], None, None
        with pa.OSFile(str(tmp), "wb") as sink:
            for group in groups:
                table = pl.concat([p for b in group for p in pieces.pop(b)],
                                  how="vertical_relaxed", rechunk=True
                                  ).to_arrow(compat_level=pl.CompatLevel.oldest()).combine_chunks()
                if writer is None:  # the event columns' types are fixed (EVENT_SCHEMA)
                    schema = table.schema
                    writer = pa.ipc.new_file(sink, schema, options=options)
                elif table.schema != schema:
                    table = table.cast(schema)
                offset = 0
                for bucket in group:
                    n = rows[bucket]
                    (batch,) = table.slice(offset, n).to_batches()
                    start = sink.tell()
                    writer.write_batch(batch)
                    spans.append((start, sink.tell()))
                    batches.append([bucket, len(batches), n])  # [bucket, batch index, rows]
                    offset += n
                del table
            writer.close()
            size = sink.tell()
        # Checksums by byte range: the schema before the first batch, each batch (a shard
        # reads and verifies only its own), the footer after the last. The ranges tile the
        # file, so together they verify all of it. Hashed from the page cache just written:
        # XXH3 at ~18 GB/s against lz4's ~0.5 GB/s that made these bytes.
        with pa.memory_map(str(tmp)) as f:
            def xxh(a, b):
                return xxhash.xxh3_64_intdigest(f.read_at(b - a, a)) if b > a else 0
            for entry, (a, b) in zip(batches, spans):
                entry += [a, b, xxh(a, b)]  # [bucket, index, rows, start, end, XXH3-64]
            first, last = (spans[0][0], spans[-1][1]) if spans else (size, size)
            head, tail = [0, first, xxh(0, first)], [last, size, xxh(last, size)]
        os.replace(tmp, path)
        self.files.append({"path": path.name, "bytes": size, "head": head, "tail": tail,
                           "rows": sum(r[2] for r in batches),
                           "batches": batch_json(np.array(batches, np.uint64))})


def part_of(cfg, plan, table_name: str, k: int) -> tuple[Part | None, list | None]:
    """Unit k's share of its table, and the gzip seek point it starts from: verified, from
    this build's INDEX_DIR (the scan marker may have been written by a build with another),
    the index rebuilt if it is damaged or gone (jobs.scan.seek_point)."""
    n = plan.parts[table_name]
    if n == 1:
        return None, None
    if table_name in plan.row_groups:
        a, b = plan.row_groups[table_name][k]
        return Part(k, n, a, b, "row_groups"), None
    # the scan's marker, or the scan done here: it was set aside as damaged, or removed (a
    # prune, a user) after the scan stage ran; the same input gives the same cuts
    marker = scan.run(table_name, cfg)
    cuts = marker["cuts"]
    points = ([scan.seek_point(cfg, table_name, plan.tables[table_name], cuts[k])]
              if marker["index"] else None)
    return Part(k, n, cuts[k], cuts[k + 1], "bytes"), points


def part_dir(cfg, plan, table_name: str, k: int) -> Path:
    return cache.unit_dir(cfg, plan, table_name, k)


def read(cfg, plan, unit: str) -> dict | None:
    """The unit's marker if it is in the cache (built by this or any other version) and
    passes the cheap checks; a damaged unit is set aside and None returned (a miss)."""
    table_name, k = split_unit(unit)
    return cache.lookup(cfg, part_dir(cfg, plan, table_name, k), plan.cache_keys[table_name])


def run(unit: str, cfg) -> dict:
    return ensure(unit, cfg, load_plan(cfg))


def ensure(unit: str, cfg, plan) -> dict:
    """The unit's marker: from the cache if it is there and passes its checks, else made
    (a unit whose folder vanished while it was written is made again)."""
    table_name, k = split_unit(unit)
    if table_name not in plan.tables or k >= plan.parts[table_name]:
        raise ValueError(f"partition unit {unit!r} is not in the plan "
                         f"({plan.parts.get(table_name, 0)} parts of {table_name!r})")
    entry = cache.entry_dir(cfg, plan, table_name)
    cache.hold(cfg, entry)
    for attempt in range(3):
        cache.touch(entry)
        done = read(cfg, plan, unit)
        if done is not None:
            return done
        try:
            return _make(unit, cfg, plan, table_name, k)
        except cache.Lost:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _make(unit: str, cfg, plan, table_name: str, k: int) -> dict:
    t0, cpu0 = time.perf_counter(), time.process_time()
    start_rss = fresh_unit_memory()
    table = table_of(plan, table_name)  # built in, or one of EXTRA_TABLES
    to_events = row_mapper(cfg, table)  # a user table's key is resolved first
    path = Path(plan.tables[table_name]["path"])
    part, points = part_of(cfg, plan, table_name, k)
    final = part_dir(cfg, plan, table_name, k)
    out = cache.new_unit_folder(final)
    with cache.cleaned_on_error(out):  # a failed attempt leaves no folder behind
        budget = cfg.partition_buffer_mb << 20
        events = BucketWriter(out, "events", plan.n_buckets, budget)
        meta = BucketWriter(out, "meta", plan.n_buckets, budget // 4) if table.meta else None
        rows, counts, stats, sketches, book = 0, {}, [], [], CodeBook()
        block = cfg.csv_block_mb << 20
        if part is not None and part.kind == "bytes":
            # At least ~8 blocks per part: the first block's parse and the last one's mapping do
            # not overlap (the prefetch pipeline fills and drains), and with 3 blocks in a 25 MB
            # part that was a third of the unit (prescriptions: 4 parts took 2.2x the whole).
            block = int(min(block, max(1 << 20, (part.end - part.start) // 8)))
        for batch in prefetch(iter_batches(path, table.columns, block, table.multiline, part,
                                           points)):
            df = pl.from_arrow(batch)
            rows += df.height
            ev, st, c = to_events(table, df, book)
            events.add(ev)
            stats.append(st)
            sketches.append(value_sketch(ev))
            merge_counts(counts, c)
            if meta is not None:
                meta.add(df.filter(pl.col("subject_id").is_not_null()))
            if len(stats) >= 16:  # per-batch stats and sketches (~100k rows each) stay bounded
                stats, sketches = [merge_code_stats(stats)], [merge_sketches(sketches)]
        events.flush()
        if meta is not None:
            meta.flush()
        book_frame = book.frame()
        codes = (merge_code_stats(stats).with_columns(pl.lit(table_name).alias("table"))
                 .join(book_frame, on="code", how="left"))
        sketch = (merge_sketches(sketches).rename({"code": "local_id"})
                  .cast({"local_id": pl.UInt32})  # an empty table's sketch has no typed ids
                  .join(book_frame, on="local_id").select("code", "bucket", "count")
                  .sort("code", "bucket"))
        atomic_write_parquet(codes, out / "codes.parquet", mkdir=False)
        atomic_write_parquet(sketch, out / "sketch.parquet", mkdir=False)
        return cache.publish_unit(cfg, out, final, plan.cache_keys[table_name], {
            "stage": STAGE, "unit": unit, "table": table_name, "part": k,
            "parts": plan.parts[table_name],
            "range": [part.kind, part.start, part.end] if part else None,
            "input": plan.tables[table_name], "rows_read": rows,
            "events": events.files, "meta": meta.files if meta else [], "codes": "codes.parquet",
            "sketch": "sketch.parquet",
            "files": {**cache.file_sums(out, ["codes.parquet", "sketch.parquet"]),
                      **cache.file_sums(out, [f["path"] for f in events.files
                                              + (meta.files if meta else [])], whole=False)},
            "counts": counts, "seconds": round(time.perf_counter() - t0, 3),
            "cpu_seconds": round(time.process_time() - cpu0, 3),
            "peak_rss_mb": peak_rss_mb(), "start_rss_mb": start_rss,
        })
