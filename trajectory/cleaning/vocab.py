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
    again from the partition markers (`shard_map_from_markers`)."""

    def __init__(self, folder: Path, why: str):
        self.folder, self.why = folder, why
        super().__init__(f"{folder}: damaged shard read index ({why}); it is made again from "
                         "the partition markers")


def bucket_digest(buckets) -> str:
    return xxhash.xxh3_64_hexdigest(np.asarray(list(buckets), np.int64).tobytes())


def read_list(cfg, plan, shard: int, buckets: list[int]) -> dict:
    """Shard `shard`'s read list: per table, per unit (in part order), the unit's marker and
    codes checksums and its files (each file's size and checksummed ranges: the shard verifies
    what it reads) that hold this shard's batches, with only those batches, as raw bytes of
    their batch-table rows. What `restricted` gives for every unit's marker, less files with
    nothing for the shard. The index files are verified first (shards.json holds the file
    list's XXH3, the file list each shard's slice's), then that they are this build's: made
    from the partition units of this plan's inputs (their cache keys), for the buckets
    shards.json gives this shard. Damage, or an index of other inputs or of another shard
    map, raises ReadIndexDamaged, never reads as a list."""
    folder = shard_reads_dir(cfg)
    fpath, bpath = folder / FILES_NAME, folder / BATCHES_NAME
    try:
        smap = json.loads(shard_map_path(cfg).read_text())
        want = smap.get("files_xxh3") if isinstance(smap, dict) else None
        if want is None:
            raise ValueError(f"{shard_map_path(cfg).name} was made by an earlier version of "
                             "this tool, without the read index's checksum")
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
        # checksums that agree say nothing of whose index it is: one copied in with its
        # shards.json from a build of other inputs, or a shards.json whose bucket lists
        # were edited, passed them and read other batches or lost some
        if index["cache_keys"] != dict(plan.cache_keys):
            raise ValueError(f"{FILES_NAME} was made from the partition units of other "
                             "inputs or settings (their cache keys differ from this plan's)")
        if index["buckets_xxh3"][shard] != bucket_digest(buckets):
            raise ValueError(f"{shard_map_path(cfg).name} gives shard {shard} buckets "
                             f"{_short(buckets)}, not those the read index was made for")
    except (OSError, ValueError, KeyError, IndexError, TypeError,
            msgpack.UnpackException) as e:
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


def _write_read_index(cfg, packed: bytes, batches: np.ndarray) -> None:
    """The shard read index (`_read_index_bytes`) written: batches.npy, then files.msgpack
    (atomic renames; the same bytes from every writer of the same markers)."""
    folder = shard_reads_dir(cfg)
    if (folder.exists() or folder.is_symlink()) and not folder.is_dir():
        folder.unlink()  # a file (or a dangling link) where the folder goes: replaced
    folder.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(folder / BATCHES_NAME)
    with open(tmp, "wb") as f:
        np.save(f, batches, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / BATCHES_NAME)
    atomic_write_bytes(folder / FILES_NAME, packed)


def _read_index_bytes(plan, units: list, files: list, batches: np.ndarray,
                      shards: list[list[int]]) -> tuple[bytes, np.ndarray]:
    """(files.msgpack's bytes, batches.npy's table) of the read index for these shards."""
    shard_of = np.zeros(plan.n_buckets, np.int64)
    for s, buckets in enumerate(shards):
        shard_of[buckets] = s
    index, batches = shard_read_index(units, files, batches, shard_of, plan.n_shards)
    index["cache_keys"] = dict(plan.cache_keys)
    index["buckets_xxh3"] = [bucket_digest(b) for b in shards]
    return msgpack.packb(index), batches


def _short(buckets) -> str:
    buckets = list(buckets)
    return str(buckets) if len(buckets) <= 8 else f"[{', '.join(map(str, buckets[:8]))}, ...]"


def ensure_shard_map(cfg, plan, markers: dict[str, list[dict]] | None = None,
                     started: float | None = None) -> list[list[int]]:
    """Buckets of every shard: shards.json's when it is there (a shard's usual read), else
    made from the partition markers (`shard_map_from_markers`)."""
    path = shard_map_path(cfg)
    if path.exists():
        return read_shard_map(cfg, plan)
    if markers is None:
        raise ValueError(f"{path}: no shard map yet, and no partition markers to make it from")
    return shard_map_from_markers(cfg, plan, markers, started)[0]


def read_shard_map(cfg, plan) -> list[list[int]]:
    """shards.json's buckets of every shard, checked to be a map of this plan: one list of
    integers per shard, every bucket in exactly one. Anything else (unreadable, a list
    short, a bucket twice or as 2.0) raises ShardMapDamaged."""
    path = shard_map_path(cfg)
    try:
        shards = json.loads(path.read_text())["shards"]
        problem = map_problem(shards, plan)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ShardMapDamaged(path, f"{type(e).__name__}: {e}") from e
    if problem:
        raise ShardMapDamaged(path, problem)
    return shards


class ShardMapDamaged(ValueError):
    """shards.json unreadable or not a map of this plan's buckets (`why`); it is made again
    from the partition markers (`shard_map_from_markers`)."""

    def __init__(self, path: Path, why: str):
        self.path, self.why = path, why
        super().__init__(f"{path}: damaged shard map ({why})")


def map_problem(shards, plan) -> str | None:
    """What keeps `shards` from being a shard map of this plan, or None."""
    if not isinstance(shards, list) or len(shards) != plan.n_shards:
        return f"expected a list of {plan.n_shards} bucket lists"
    if not all(isinstance(b, list) and all(type(x) is int for x in b) for b in shards):
        return "expected lists of integer buckets"
    if sorted(x for b in shards for x in b) != list(range(plan.n_buckets)):
        return f"expected every bucket 0-{plan.n_buckets - 1} in exactly one shard"
    return None


def shard_map_from_markers(cfg, plan, markers: dict[str, list[dict]],
                           started: float | None = None, rewrite: bool = False,
                           ) -> tuple[list[list[int]], str | None]:
    """(buckets of every shard, what was wrong with the map replaced or None): the shard map
    and the shard read index (`read_list`) the partition markers give. Buckets are packed by
    the partition stage's row counts (all tables, events and header rows). Written unless
    shards.json already holds exactly this map and this index's checksum (the driver at every
    stage boundary, a resumed build included), or always with `rewrite` (a shard found the
    index damaged). Any writer writes the same bytes (atomic renames; shards.json last, the
    map's done-marker). The markers are what the map is made from: a shards.json that
    disagrees with them (damaged, edited, copied from a build of other inputs) is replaced,
    and `why` says how it differed, for the caller to report; a shard already built from the
    replaced map is rebuilt (its done-marker keeps its buckets, jobs/build.py)."""
    path = shard_map_path(cfg)
    units, files, batches = marker_batches(markers)
    rows = _bucket_rows(batches, plan.n_buckets)
    shards = shards_of_buckets(rows, plan.n_shards)
    packed, table = _read_index_bytes(plan, units, files, batches, shards)
    digest = xxhash.xxh3_64_hexdigest(packed)
    why = None
    if path.exists():
        try:
            current = json.loads(path.read_text())
            if not isinstance(current, dict):
                raise ValueError(f"holds a {type(current).__name__}, not an object")
            if json.dumps(current.get("shards")) != json.dumps(shards):  # 2.0 == 2, not here
                why = "its shard map is not the one the partition markers give"
            elif current.get("files_xxh3") != digest:
                why = ("its read index is not the one the partition markers give (another "
                       "build's, or an earlier version's)")
        except ValueError as e:
            why = f"unreadable ({e})"
        if why is None and not rewrite:
            return shards, None
    _write_read_index(cfg, packed, table)
    sizes = [int(rows[b].sum()) for b in shards]
    # `started`: when the caller began reading the markers; the wall between the stages is a
    # serial step of the build, which the scaling model adds (benchmarks/bench_build.py)
    seconds = round(time.perf_counter() - started, 3) if started is not None else None
    if why is not None or not path.exists() or started is not None:
        atomic_write_json(path, {"shards": shards, "rows": sizes, "seconds": seconds,
                                 "files_xxh3": digest})
    return shards, why
