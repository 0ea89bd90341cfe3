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
import xxhash

from ..atomic import atomic_write_bytes, atomic_write_json, atomic_write_parquet, tmp_name
from ..events.map_rows import merge_code_stats
from ..events.plan import BATCH_COLUMNS, batch_table, shards_of_buckets
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


def shard_reads_dir(cfg) -> Path:
    return cfg.work_dir / "shard_reads"


# The shards' read lists, as one table for all of them instead of one list per shard: demo
# x800's 896 lists repeated each of ~1,000 partition files' entries per shard (896k small dicts,
# 127 MB of msgpack), and making them was a serial step of 3.6-6.9 s in the driver between the
# stages. Now `files.msgpack` lists every unit and file once, and `batches.npy` holds every
# batch as a uint64 row [file, *BATCH_COLUMNS], sorted by shard, then file, then batch; a
# shard reads its own slice (memory-mapped) and the list it would have had is made from it.
FILES_NAME, BATCHES_NAME = "files.msgpack", "batches.npy"


def restricted(files: list[dict], buckets) -> list[dict]:
    """A partition marker's file list (each file's size and checksummed ranges kept) cut down
    to these buckets' batches: a shard's read list."""
    keep = np.asarray(list(buckets), np.uint64)
    out = []
    for f in files:
        table = batch_table(f["batches"])
        out.append({**f, "batches": table[np.isin(table[:, 0], keep)].tobytes()})
    return out


def marker_batches(markers: dict[str, list[dict]]) -> tuple[list, list, np.ndarray]:
    """(units, files, batches) of the partition markers: each unit and each file once (tables
    by name, parts in order, events files then meta files), and every batch as a uint64 row
    [file, *BATCH_COLUMNS], in file then batch (= bucket) order."""
    units, files, ids, tables = [], [], [], []
    for name in sorted(markers):
        for m in markers[name]:
            units.append({"table": m["table"], "part": m["part"],
                          "marker_xxh3": m["marker_xxh3"],
                          "codes_xxh3": m["files"]["codes.parquet"]["xxh3"]})
            for kind in ("events", "meta"):
                for f in m[kind]:
                    table = batch_table(f["batches"])
                    ids.append(np.full(len(table), len(files), np.uint64))
                    tables.append(table)
                    files.append({"unit": len(units) - 1, "kind": kind,
                                  **{k: v for k, v in f.items() if k != "batches"}})
    rows = (np.column_stack([np.concatenate(ids), np.concatenate(tables)]) if tables
            else np.zeros((0, 1 + len(BATCH_COLUMNS)), np.uint64))
    return units, files, rows


def shard_read_index(units: list, files: list, batches: np.ndarray, shard_of: np.ndarray,
                     n_shards: int) -> tuple[dict, np.ndarray]:
    """(index, batches) for `read_list`: marker_batches' rows sorted by their bucket's shard
    (`shard_of[bucket]`), then file, then batch; index["offsets"][s]:index["offsets"][s + 1]
    are shard s's rows, and index["xxh3"][s] their XXH3-64."""
    owner = shard_of[batches[:, 1].astype(np.int64)]
    # stable: rows come in file order and, within a file, in batch (= bucket) order
    batches = np.ascontiguousarray(batches[np.argsort(owner, kind="stable")])
    offsets = np.concatenate(([0], np.cumsum(np.bincount(owner, minlength=n_shards))))
    digests = [xxhash.xxh3_64_hexdigest(batches[a:b].tobytes())
               for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
    return ({"units": units, "files": files, "offsets": offsets.tolist(), "xxh3": digests},
            batches)


class ReadIndexDamaged(ValueError):
    """The shard read index is missing, damaged or of an earlier version (`why`); it is made
    again from the partition markers (`remake_read_index`)."""

    def __init__(self, folder: Path, why: str):
        self.folder, self.why = folder, why
        super().__init__(f"{folder}: damaged shard read index ({why}); it is made again from "
                         "the partition markers")


def read_list(cfg, shard: int) -> dict:
    """Shard `shard`'s read list: per table, per unit (in part order), the unit's marker and
    codes checksums and its files (each file's size and checksummed ranges: the shard verifies
    what it reads) that hold this shard's batches, with only those batches, as raw bytes of
    their batch-table rows. What `restricted` gives for every unit's marker, less files with
    nothing for the shard. The index files are verified first (shards.json holds the file
    list's XXH3, the file list each shard's slice's): damage raises ReadIndexDamaged, never
    reads as a list."""
    folder = shard_reads_dir(cfg)
    fpath, bpath = folder / FILES_NAME, folder / BATCHES_NAME
    want = json.loads(shard_map_path(cfg).read_text()).get("files_xxh3")
    if want is None:
        raise ReadIndexDamaged(folder, f"{shard_map_path(cfg).name} was made by an earlier "
                                       "version of this tool, without one")
    try:
        raw = fpath.read_bytes()
        if xxhash.xxh3_64_hexdigest(raw) != want:
            raise ValueError(f"{FILES_NAME} fails the XXH3 checksum shards.json holds")
        index = msgpack.unpackb(raw)
        a, b = index["offsets"][shard], index["offsets"][shard + 1]
        # no map for an empty table: numpy cannot memory-map zero bytes
        table = np.load(bpath, mmap_mode="r" if index["offsets"][-1] else None,
                        allow_pickle=False)
        if table.dtype != np.uint64 or table.ndim != 2 or table.shape[1] != 1 + len(
                BATCH_COLUMNS) or table.shape[0] != index["offsets"][-1]:
            raise ValueError(f"{bpath.name} holds {table.dtype} {table.shape}, expected "
                             f"uint64 ({index['offsets'][-1]}, {1 + len(BATCH_COLUMNS)})")
        rows = np.array(table[a:b])
        del table
        if xxhash.xxh3_64_hexdigest(rows.tobytes()) != index["xxh3"][shard]:
            raise ValueError(f"{bpath.name}: shard {shard}'s rows {a:,}-{b:,} fail their "
                             "XXH3 checksum")
    except (OSError, ValueError, KeyError, IndexError, msgpack.UnpackException) as e:
        raise ReadIndexDamaged(folder, f"{type(e).__name__}: {e}") from e
    units, files = index["units"], index["files"]
    out: dict[str, list[dict]] = {}
    parts = []
    for u in units:
        part = {**u, "events": [], "meta": []}
        out.setdefault(u["table"], []).append(part)
        parts.append(part)
    if len(rows):
        cut = np.flatnonzero(np.diff(rows[:, 0])) + 1
        for group in np.split(rows, cut):
            f = files[int(group[0, 0])]
            entry = {k: v for k, v in f.items() if k not in ("unit", "kind")}
            entry["batches"] = np.ascontiguousarray(group[:, 1:]).tobytes()
            parts[f["unit"]][f["kind"]].append(entry)
    return out


def _bucket_rows(batches: np.ndarray, n_buckets: int) -> np.ndarray:
    return np.bincount(batches[:, 1].astype(np.int64), weights=batches[:, 3].astype(np.float64),
                       minlength=n_buckets).astype(np.int64)


def _write_read_index(cfg, plan, units: list, files: list, batches: np.ndarray,
                      shards: list[list[int]]) -> str:
    """The shard read index of marker_batches' (units, files, batches) for these shards,
    written (atomic renames; the same bytes from every writer of the same markers); returns
    its file list's XXH3."""
    shard_of = np.zeros(plan.n_buckets, np.int64)
    for s, buckets in enumerate(shards):
        shard_of[buckets] = s
    files, batches = shard_read_index(units, files, batches, shard_of, plan.n_shards)
    folder = shard_reads_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(folder / BATCHES_NAME)
    with open(tmp, "wb") as f:
        np.save(f, batches, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / BATCHES_NAME)
    packed = msgpack.packb(files)
    atomic_write_bytes(folder / FILES_NAME, packed)
    return xxhash.xxh3_64_hexdigest(packed)


def ensure_shard_map(cfg, plan, markers: dict[str, list[dict]] | None = None,
                     started: float | None = None) -> list[list[int]]:
    """Buckets of every shard, packed by the partition stage's row counts (all tables, events
    and header rows); created if absent, by whichever unit or driver gets there first (same
    bytes from every writer, atomic rename). With it, the shard read index (`read_list`): each
    shard finds its own batches there instead of parsing every unit's marker (with 141 units
    and 1,024 buckets, ~0.2 s per shard)."""
    path = shard_map_path(cfg)
    if path.exists():
        return json.loads(path.read_text())["shards"]
    if markers is None:
        raise ValueError(f"{path}: no shard map yet, and no partition markers to make it from")
    units, files, batches = marker_batches(markers)
    rows = _bucket_rows(batches, plan.n_buckets)
    shards = shards_of_buckets(rows, plan.n_shards)
    digest = _write_read_index(cfg, plan, units, files, batches, shards)
    sizes = [int(rows[b].sum()) for b in shards]
    # `started`: when the caller began reading the markers; the wall between the stages is a
    # serial step of the build, which the scaling model adds (benchmarks/bench_build.py)
    seconds = round(time.perf_counter() - started, 3) if started is not None else None
    atomic_write_json(path, {"shards": shards, "rows": sizes, "seconds": seconds,
                             "files_xxh3": digest})
    return shards


def remake_read_index(cfg, plan, markers: dict[str, list[dict]]) -> None:
    """The shard read index made again from the partition markers, for the shard map in place
    (its index damaged, removed, or of an earlier version). The markers must still give that
    map: a shard already built from it must not be joined by ones cut differently."""
    path = shard_map_path(cfg)
    current = json.loads(path.read_text())
    units, files, batches = marker_batches(markers)
    if shards_of_buckets(_bucket_rows(batches, plan.n_buckets), plan.n_shards) != current[
            "shards"]:
        raise ValueError(f"{path}: the partition markers no longer give this shard map (a "
                         "unit's rows changed since it was made); rerun with --overwrite")
    digest = _write_read_index(cfg, plan, units, files, batches, current["shards"])
    if current.get("files_xxh3") != digest:
        atomic_write_json(path, {**current, "files_xxh3": digest})
