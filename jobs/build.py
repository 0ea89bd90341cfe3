"""Stage 2, one unit per shard: read the record batches of the shard's patient buckets from every
table, assemble and write one record per patient into OUT_DIR/<version>/patients/<shard>/,
plus the shard's index.

Reads only its own record batches (listed in the partition markers), so total I/O stays O(input)
whatever the shard count. The shard directory is written under a temporary name and renamed.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import xxhash
import zstandard

from trajectory.assembly.assemble import (count_cleaning_drops, encode_strings, index_texts,
                                          merge_string_ids, order_events, patient_records,
                                          place_details, place_events)
from trajectory.cleaning.flags import clean_events, code_tables, load_concepts, rule_mask
from trajectory.cleaning.vocab import (ReadIndexDamaged, ShardMapDamaged, ensure_shard_map,
                                       ensure_vocab, read_list, restricted,
                                       shard_map_from_markers, shard_map_path, vocab_ready)
from trajectory.events.extra_tables import all_tables, streams
from trajectory.events.map_rows import EVENT_SCHEMA
from trajectory.events.plan import batch_table, load_plan, unit_name
from trajectory.events.tables import JOINED, PREPARE, TABLES_BY_NAME
from trajectory.raw.read import POLARS_TYPES
from trajectory.record import NONE_ID, pack
from trajectory.windows.grids import GridSpec

from trajectory.atomic import atomic_write_parquet, checksum_bytes, checksum_file, tmp_name

from . import cache
from .common import (array_to_json, fresh_unit_memory, peak_rss_mb, publish_dir, read_done,
                     write_done)

STAGE = "build"
RECORD_SUFFIX = ".msgpack.zst"
PACK_SUFFIX = ".pack"


def shard_name(shard: int) -> str:
    return f"{shard:05d}"


def partition_markers(cfg, plan) -> dict[str, list[dict]]:
    """Every table's partition markers, in part order (which is the input's row order). A
    unit found missing or damaged here (pruned, or damaged after stage 1 ran) is redone
    rather than failing the stage that needs it."""
    from . import partition  # local: avoids a cycle when jobs/__init__ lists the stages
    return {name: [partition.ensure(unit_name(name, k), cfg, plan)
                   for k in range(plan.parts[name])] for name in plan.tables}


def unit_folders(cfg, plan) -> list[tuple[str, Path]]:
    from . import partition
    return [(unit_name(t, k), partition.part_dir(cfg, plan, t, k))
            for t in sorted(plan.tables) for k in range(plan.parts[t])]


def verified_unit_folders(cfg, plan) -> list[tuple[str, Path]]:
    """unit_folders after each unit's codes.parquet and sketch.parquet (read whole by
    ensure_vocab) pass their checksums; a damaged unit is set aside and redone first. A
    flipped byte in a sketch moved the outlier fences of dozens of patients."""
    from . import partition
    out = []
    for unit, folder in unit_folders(cfg, plan):
        for attempt in range(3):
            marker = partition.ensure(unit, cfg, plan)  # the cached marker, or redone
            try:
                for name in ("codes.parquet", "sketch.parquet"):
                    cache.verify_file(folder, name, marker)
                break
            except cache.Damaged as e:
                if attempt == 2:
                    raise ValueError(f"{folder}: damaged again after being redone three "
                                     f"times ({e}); is CACHE_DIR's disk failing?") from e
                cache.set_aside(cfg, folder, f"{e.path.name}: {e.why}")
        out.append((unit, folder))
    return out


def read_batches(folder: Path, files: list[dict], buckets: list[int]) -> list[pa.RecordBatch]:
    """These buckets' record batches of the listed files, in file then bucket order; the IPC
    footer locates each batch, so only their own bytes are read. Memory-mapped: with a unit
    per 4 MB of input and a shard per half worker, a shard reads a few batches from each of
    hundreds of files, and opening them through reads cost 2.4x the time of mapping them (75
    units of demo x20: 0.23 s against 0.10 s per shard).
    Verified first: the file's size, its schema and footer ranges, and each wanted batch's
    range against the XXH3-64 its partition marker holds (jobs.cache); a mismatch raises
    cache.Damaged naming the file, before pyarrow parses a byte of it."""
    parts = []
    want = np.asarray(buckets, np.uint64)
    for f in files:
        table = batch_table(f["batches"])
        wanted = table[np.isin(table[:, 0], want), 1:].tolist()  # [index, rows, start, end, xxh3]
        if wanted:
            path = folder / f["path"]
            with pa.memory_map(str(path)) as source:
                if source.size() != f["bytes"]:
                    raise cache.Damaged(path, f"{source.size():,} bytes, its marker says "
                                              f"{f['bytes']:,} (truncated or extended)")
                for a, b, digest, what in ([*f["head"], "schema"], [*f["tail"], "footer"],
                                           *([*w[2:5], f"batch {w[0]}"] for w in wanted)):
                    if b > a and xxhash.xxh3_64_intdigest(source.read_at(b - a, a)) != digest:
                        raise cache.Damaged(path, f"{what} (bytes {a:,}-{b:,}) fails its "
                                                  "XXH3 checksum")
                reader = pa.ipc.open_file(source, options=_IPC_READ)
                parts += [reader.get_batch(w[0]) for w in wanted]
    return parts


def unit_batches(cfg, plan, m: dict, kind: str, buckets: list[int]) -> list[pa.RecordBatch]:
    """One partition unit's batches of these buckets (`kind` "events" or "meta"), from the
    shard's read list `m`. A missing or damaged file is repaired here instead of failing the
    shard: the unit's current marker is used if another process already redid it, else the
    unit is set aside and redone (the same input, plan and code give the same events), then
    read again. Its code ids must be the ones the vocabulary was made from."""
    from . import partition
    unit = unit_name(m["table"], m["part"])
    folder = partition.part_dir(cfg, plan, m["table"], m["part"])
    try:
        return read_batches(folder, m[kind], buckets)
    except (cache.Damaged, FileNotFoundError) as e:
        why = e.why if isinstance(e, cache.Damaged) else f"file missing: {e.filename}"
    for _ in range(3):
        marker = partition.read(cfg, plan, unit)  # cheap checks; a damaged one is set aside
        if marker is not None and marker["marker_xxh3"] == m.get("marker_xxh3"):
            cache.set_aside(cfg, folder, why)  # the copy that just failed
            marker = None
        if marker is None:
            marker = partition.ensure(unit, cfg, plan)
        if marker["files"]["codes.parquet"]["xxh3"] != m.get("codes_xxh3"):
            raise ValueError(f"{folder}: redone after damage ({why}), the unit's codes differ "
                             "from those this build's vocabulary was made from; rerun with "
                             "--overwrite")
        try:
            return read_batches(folder, restricted(marker[kind], buckets), buckets)
        except (cache.Damaged, FileNotFoundError) as e:
            why = e.why if isinstance(e, cache.Damaged) else f"file missing: {e.filename}"
            m = {**m, "marker_xxh3": marker["marker_xxh3"]}
    raise ValueError(f"{folder}: partition unit {unit} is damaged again after being redone "
                     f"three times ({why}); is CACHE_DIR's disk failing?")


# One thread: a worker is one core, and handing each small batch's lz4 buffers to pyarrow's
# pool cost more than decompressing them (80 chartevents batches: 0.017 s against 0.022-0.037).
_IPC_READ = pa.ipc.IpcReadOptions(use_threads=False)


def _frame(table: pa.Table | None, schema: dict) -> pl.DataFrame:
    if table is None:
        return pl.DataFrame(schema=schema)
    return pl.from_arrow(table)


def _table_events(cfg, plan, parts: list[dict], buckets: list[int],
                  luts: dict) -> pa.Table | None:
    """This shard's events of one table: its parts' batches in part order (the input's row
    order, so ties in the event sort fall as in an uncut build), local code ids made global.
    One arrow table for all parts: per part, polars' conversion and concat cost more than the
    batches' bytes."""
    batches, codes = [], []
    for m in parts:
        got = unit_batches(cfg, plan, m, "events", buckets)
        if got:
            lut = luts[unit_name(m["table"], m["part"])]
            codes += [lut[b.column("code").to_numpy()] for b in got]
            batches += got
    if not batches:
        return None
    table = pa.Table.from_batches(batches)
    return table.set_column(table.schema.get_field_index("code"), "code",
                            pa.array(np.concatenate(codes)))


def load_shard(cfg, plan, markers: dict, buckets: list[int], luts: dict):
    """(events, texts, refs, header tables) of one shard. Events carry the global code_id, and
    in `text` and `ref` int32 ids into `texts` (distinct strings of the shard) and `refs` (the
    note ids of note rows and the row ids of tables.JOINED; None for other tables, whose refs
    only tell rows apart)."""
    events, text_parts, ref_parts, n_refs, meta = [], [], [], 0, {}
    # fixed table order (built in, then EXTRA_TABLES): part of what makes record bytes
    # deterministic
    for t in all_tables(plan):
        parts = markers.get(t.name)
        if parts is None:
            continue
        table = _table_events(cfg, plan, parts, buckets, luts)
        if table is not None:
            # Strings become ids while still in Arrow: converted to polars first, they were
            # copied twice more (into string views and back) for the ids alone.
            text_parts.append(encode_strings(table.column("text")))
            ref_ids, ref_strings = encode_strings(table.column("ref"))
            ev = pl.from_arrow(table.drop_columns(["text", "ref"])).select(
                pl.lit(None, pl.Int32).alias(n) if n in ("text", "ref") else pl.col(n)
                for n in table.column_names)  # ids filled in below, in place
            ref_ids = np.where(ref_ids >= 0, ref_ids + n_refs, NONE_ID).astype(np.int32)
            # Notes keep their note_id in the record; parent and detail tables need their row
            # ids for place_details. Other refs only tell rows apart: their strings go.
            keep = t.module == "note" or t.name in JOINED
            ref_parts.append(ref_strings if keep else
                             pl.repeat(None, ref_strings.len(), dtype=pl.String, eager=True))
            n_refs += ref_strings.len()
            events.append(ev.with_columns(pl.Series("ref", ref_ids)).rename({"code": "code_id"}))
        if t.meta:
            schema = {c: POLARS_TYPES[ty] for c, ty in t.columns.items()}
            got = [b for m in parts for b in unit_batches(cfg, plan, m, "meta", buckets)]
            meta[t.name] = _frame(pa.Table.from_batches(got) if got else None, schema)
    refs = (pl.concat(ref_parts) if ref_parts else pl.Series([], dtype=pl.String)).rename("ref")
    text_ids, texts = merge_string_ids(text_parts)
    events = [e.with_columns(pl.Series("text", i)) for e, i in zip(events, text_ids)]
    # One chunk: the sort's gather over the 26 table chunks of a demo x20 shard took 0.2 s,
    # over one chunk 0.05 s after a 0.01 s rechunk.
    ev = pl.concat(events, how="vertical_relaxed", rechunk=True) if events else pl.DataFrame(
        schema=EVENT_SCHEMA).rename({"code": "code_id"}).cast(
            {"code_id": pl.Int32, "text": pl.Int32, "ref": pl.Int32})
    return ev, texts, refs, meta


class ShardMapChanged(Exception):
    """The shard map was made again from the partition markers while this shard ran, and gives
    it other buckets (`buckets`): the shard starts again with them."""

    def __init__(self, buckets: list[int]):
        self.buckets = buckets
        super().__init__(f"the shard map gives this shard buckets {buckets}")


REMADE = "made again from the partition markers"


def checked_map(cfg, plan, markers: dict, started: float | None = None,
                rewrite: bool = False) -> list[list[int]]:
    """`shard_map_from_markers`, with a map it replaced (damaged, edited, another build's)
    reported in dataset.json's warnings: the driver between the stages, finalize, a shard
    that found the read index damaged."""
    shards, why = shard_map_from_markers(cfg, plan, markers, started, rewrite)
    if why is not None:
        cache.note_damage(cfg, shard_map_path(cfg), why, REMADE)
    return shards


def remade_map(cfg, plan, shard: int, buckets: list[int]) -> None:
    """The shard map and read index made again from the partition markers (a shard found the
    index damaged, or not made for this plan's inputs or this shard's buckets), and
    ShardMapChanged raised if this shard's buckets are not what it was started with."""
    shards = checked_map(cfg, plan, partition_markers(cfg, plan), rewrite=True)
    if shards[shard] != list(buckets):
        raise ShardMapChanged(shards[shard])


def sorted_shard(cfg, plan, shard: int, buckets: list[int], luts: dict, lap):
    """(events, texts, refs, header tables, placement counts, cache entry) of one shard, read,
    placed and sorted: from CACHE_DIR when a version of the same inputs made them (jobs.cache;
    cleaning, windows and records follow, and depend on the settings), else made, and kept
    when KEEP_SORTED says so (cache.keep_sorted; the entry is None when not).
    Read and sort are half of a shard's time (demo x20: 12.5 of 25.9 unit-seconds), so a
    version that changes only OUTLIER_K skips them too."""
    final, key = cache.sorted_dir(cfg, plan, shard, buckets)
    cache.hold(cfg, final)
    marker = cache.lookup(cfg, final, key)
    if marker is not None:
        try:
            def load(name):  # verified whole: every byte of it is read
                return pl.read_ipc(cache.verify_file(final, name, marker))
            ev = load("events.arrow")
            texts = load("texts.arrow")["s"]
            refs = load("refs.arrow")["ref"]
            meta = {name: load(f"meta-{name}.arrow") for name in marker["meta"]}
            lap("read")
            return ev, texts, refs, meta, marker["counts"], final
        except cache.Damaged as e:  # made again below, as on a miss
            cache.set_aside(cfg, final, f"{e.path.name}: {e.why}")
    try:
        markers = read_list(cfg, plan, shard, buckets)
    except ReadIndexDamaged as e:  # made again (identical bytes if another shard does too)
        cache.note_damage(cfg, e.folder, e.why, REMADE)
        remade_map(cfg, plan, shard, buckets)
        try:
            markers = read_list(cfg, plan, shard, buckets)
        except ReadIndexDamaged as again:
            raise ValueError(f"{again.folder}: the shard read index is damaged again just "
                             f"after being made ({again.why}); is WORK_DIR's disk "
                             "failing?") from again
    ev, texts, refs, meta = load_shard(cfg, plan, markers, buckets, luts)
    lap("read")
    counts: dict = {}
    # details first: place_events reads any null time as "at the admission's discharge"
    ev = place_details(ev, refs, counts)
    patients = PREPARE["patients"](meta["patients"])
    ev = place_events(ev, patients, meta["admissions"], counts)
    ev = order_events(ev)
    lap("place_sort")
    if not cache.keep_sorted(cfg, plan):
        return ev, texts, refs, meta, counts, None
    tmp = cache.new_unit_folder(final)
    try:
        with cache.cleaned_on_error(tmp):
            # lz4: written once, read by every later version of these inputs
            ev.write_ipc(tmp / "events.arrow", compression="lz4")
            texts.rename("s").to_frame().write_ipc(tmp / "texts.arrow", compression="lz4")
            refs.to_frame("ref").write_ipc(tmp / "refs.arrow", compression="lz4")
            for name, frame in meta.items():
                frame.write_ipc(tmp / f"meta-{name}.arrow", compression="lz4")
            names = ["events.arrow", "texts.arrow", "refs.arrow",
                     *(f"meta-{name}.arrow" for name in sorted(meta))]
            cache.publish_unit(cfg, tmp, final, key, {
                "shard": shard, "meta": sorted(meta), "counts": counts,
                "files": cache.file_sums(tmp, names)})
    except cache.Lost:
        pass  # kept for later versions only; this shard has its events in memory
    lap("keep_sorted")
    return ev, texts, refs, meta, counts, final


def shard_buckets(cfg, plan, shard: int) -> list[int]:
    """This shard's buckets: shards.json's (written last, after the shard read index), made
    from the partition markers when it is not there yet, or not a map of this plan (a SLURM
    array has no driver between the stages to replace it)."""
    try:
        return ensure_shard_map(cfg, plan, None if shard_map_path(cfg).exists()
                                else partition_markers(cfg, plan))[shard]
    except ShardMapDamaged as e:
        shards, _ = shard_map_from_markers(cfg, plan, partition_markers(cfg, plan))
        cache.note_damage(cfg, e.path, e.why, REMADE)
        return shards[shard]


def shard_basis(plan, buckets: list[int]) -> dict:
    """What a shard's records are made from, kept in its done-marker: its buckets and the
    inputs (the plan's stage-1 cache keys). A marker of another basis (a map replaced since,
    a marker copied in from a build of other inputs) does not count as done."""
    keys = json.dumps(dict(plan.cache_keys), sort_keys=True).encode()
    return {"buckets": list(buckets), "inputs": xxhash.xxh3_64_hexdigest(keys)}


def records_problem(cfg, marker: dict, index: pl.DataFrame | None = None) -> str | None:
    """Why the records a shard's done-marker stands for are not all in the version as its
    index lists them (its folder or pack gone; a record missing, renamed, of another size, or
    a file the index does not list: a version folder changed by hand), or None. By names and
    sizes: a record damaged in place with its size kept is the loader's to find (it checks
    every record's checksum as it reads it). `index`: the shard's index rows (path, bytes),
    read here from its file when not given."""
    unit = marker["unit"]
    if index is None:
        ipath = cfg.work_dir / "index" / marker["index"]
        try:
            if checksum_file(ipath) != marker["index_checksum"]:
                return f"{ipath} fails its checksum"
            index = pl.read_parquet(ipath, columns=["path", "bytes"])
        except (OSError, pl.exceptions.PolarsError) as e:
            return f"{ipath}: {type(e).__name__}: {e}"
    if cfg.layout == "shards":
        path = cfg.version_dir / "patients" / f"{unit}{PACK_SUFFIX}"
        if not path.is_file():
            return f"{path} is missing"
        if path.stat().st_size != marker["bytes"]:
            return (f"{path} holds {path.stat().st_size:,} bytes, its done-marker says "
                    f"{marker['bytes']:,}")
        return None
    path = cfg.version_dir / "patients" / unit
    if not path.is_dir():
        return f"{path} is missing"
    have = {e.name: e.stat().st_size for e in os.scandir(path)}
    want = dict(zip((p.rsplit("/", 1)[-1] for p in index["path"]), index["bytes"].to_list()))
    if have != want:
        lost = sorted(set(want) - set(have))
        extra = sorted(set(have) - set(want))
        sized = sorted(n for n in set(want) & set(have) if want[n] != have[n])
        return (f"{path}: " + "; ".join(f"{what} {', '.join(names[:3])}"
                                        f"{' ...' if len(names) > 3 else ''}"
                                        for what, names in (("missing", lost),
                                                            ("not in its index", extra),
                                                            ("of another size", sized))
                                        if names))
    return None


def run(shard: int, cfg) -> dict:
    """The shard's done-marker: the one there when it was made from what the shard is made
    from now (`shard_basis`) and its records are in place, else the shard built (again)."""
    unit = shard_name(shard)
    done = read_done(cfg, STAGE, unit)
    plan = load_plan(cfg)
    buckets = shard_buckets(cfg, plan, shard)
    if done is not None and {k: done.get(k) for k in ("buckets", "inputs")} == shard_basis(
            plan, buckets):
        why = records_problem(cfg, done)
        if why is None:
            return done
        cache.note_damage(cfg, cfg.version_dir / "patients" / unit, why, "the shard built again")
    for attempt in range(3):
        try:
            return _run(shard, cfg, plan, buckets)
        except ShardMapChanged as e:
            if attempt == 2:
                raise ValueError(f"{shard_map_path(cfg)}: the shard map keeps changing while "
                                 f"shard {shard} is built; is another build of other inputs "
                                 "writing to this WORK_DIR?") from e
            buckets = e.buckets


def _run(shard: int, cfg, plan, buckets: list[int]) -> dict:
    unit = shard_name(shard)
    t0 = time.perf_counter()
    start_rss = fresh_unit_memory()
    cache.hold(cfg, *(cache.entry_dir(cfg, plan, t) for t in plan.cache_keys))
    vocab, thresholds, luts = ensure_vocab(
        cfg, None if vocab_ready(cfg) else verified_unit_folders(cfg, plan))
    phase = {}
    tick = time.perf_counter()

    def lap(name):
        nonlocal tick
        now = time.perf_counter()
        phase[name] = round(phase.get(name, 0.0) + now - tick, 4)
        tick = now

    ev, texts, refs, meta, counts, entry = sorted_shard(cfg, plan, shard, buckets, luts, lap)
    patients = PREPARE["patients"](meta["patients"])
    admissions = meta["admissions"]
    stays = meta.get("icustays")
    if stays is None:
        stays = pl.DataFrame(schema={c: POLARS_TYPES[t] for c, t in
                                     TABLES_BY_NAME["icustays"].columns.items()})
    concepts = load_concepts()
    ev, qc, hist = clean_events(ev, patients, admissions, stays,
                                code_tables(vocab, concepts, thresholds), cfg)
    count_cleaning_drops(qc, counts, streams(plan))
    lap("clean")
    ev, texts = index_texts(ev, texts)
    lap("texts")
    grid = GridSpec(step=cfg.window_step_minutes * 60, max_windows=cfg.window_max,
                    admissions=cfg.window_admissions, exclude=rule_mask(cfg.window_exclude),
                    n_concepts=concepts["concept_id"].max() + 1)

    sink = (PackSink if cfg.layout == "shards" else FileSink)(cfg.version_dir, unit)
    compressor = zstandard.ZstdCompressor(level=cfg.zstd_level)
    rows = []
    times = ev["time"].to_numpy()
    for sid, lo, hi, record in patient_records(ev, patients, admissions, stays, texts, refs,
                                               grid, phase):
        data = pack(record, compressor)
        path, offset = sink.add(sid, data)
        rows.append((sid, path, offset, shard, hi - lo,
                     int(times[lo]) if hi > lo else None, int(times[hi - 1]) if hi > lo else None,
                     len(data), checksum_bytes(data)))
    sink.publish()
    lap("records")
    phase["records"] = round(phase["records"] - phase.get("windows", 0.0), 4)

    index = pl.DataFrame(rows, orient="row", schema={
        "subject_id": pl.Int64, "path": pl.String, "offset": pl.Int64, "shard": pl.Int32,
        "n_events": pl.Int64,
        "first_time": pl.Int64, "last_time": pl.Int64, "bytes": pl.Int64, "checksum": pl.String})
    qc_path = cfg.work_dir / "qc" / f"{unit}.parquet"
    atomic_write_parquet(qc, qc_path)
    index_path = cfg.work_dir / "index" / f"{unit}.parquet"
    atomic_write_parquet(index, index_path)
    code_counts = np.bincount(ev["code_id"].to_numpy(), minlength=vocab.height)
    code_ids = np.flatnonzero(code_counts)
    code_counts = code_counts[code_ids]
    return write_done(cfg, STAGE, unit, {
        "shard": shard, **shard_basis(plan, buckets), "sorted": entry.name if entry else None,
        "index": index_path.name,
        "index_checksum": checksum_file(index_path),
        "qc": qc_path.name, "concept_histogram": array_to_json(hist),
        "n_patients": index.height, "n_events": ev.height, "bytes": int(index["bytes"].sum()),
        "counts": counts, "code_ids": array_to_json(code_ids.astype(np.int32)),
        "code_counts": array_to_json(code_counts.astype(np.int64)),
        "seconds": round(time.perf_counter() - t0, 3), "phase_seconds": phase,
        "peak_rss_mb": peak_rss_mb(), "start_rss_mb": start_rss,
    })


class FileSink:
    """One file per patient in patients/<shard>/, published by renaming the directory."""

    def __init__(self, version_dir: Path, unit: str):
        self.rel = f"patients/{unit}"
        self.final = version_dir / self.rel
        self.tmp = tmp_name(self.final)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def add(self, sid: int, data: bytes) -> tuple[str, int]:
        name = f"{sid}{RECORD_SUFFIX}"
        with open(self.tmp / name, "wb") as f:
            f.write(data)
        return f"{self.rel}/{name}", 0

    def publish(self) -> None:
        _fsync_dir(self.tmp)
        publish_dir(self.tmp, self.final)


class PackSink:
    """All records of a shard back to back in patients/<shard>.pack (the same bytes as the
    per-patient files); the manifest's offset and bytes locate each one. For cluster file
    systems where 365k small files cost more than the data."""

    def __init__(self, version_dir: Path, unit: str):
        self.rel = f"patients/{unit}{PACK_SUFFIX}"
        self.final = version_dir / self.rel
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp_name(self.final)
        self.f = open(self.tmp, "wb")

    def add(self, sid: int, data: bytes) -> tuple[str, int]:
        offset = self.f.tell()
        self.f.write(data)
        return self.rel, offset

    def publish(self) -> None:
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        os.replace(self.tmp, self.final)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
