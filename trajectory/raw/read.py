"""Streaming readers for raw MIMIC-IV tables (.csv.gz, .csv, .parquet) with explicit schemas.

Nothing is type-inferred: every column read has the type its table spec names, so a bad value
is an error naming the file and column instead of a silently different dtype.
"""
from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import io
import json
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from isal import igzip

from ..atomic import atomic_write_json, tmp_name, xxh3_file
from .csv_ranges import FileRange, Part
from .gzindex import GzRange

# "time_ms": a time written with milliseconds (procedureevents' storetime is, on 242 of the
# demo's 1,468 rows: "2142-08-03 21:06:00.090"), which the seconds parser refuses.
ARROW_TYPES = {"int": pa.int64(), "float": pa.float64(), "str": pa.string(),
               "time": pa.timestamp("s"), "time_ms": pa.timestamp("ms")}
POLARS_TYPES = {"int": pl.Int64, "float": pl.Float64, "str": pl.String,
                "time": pl.Datetime("ms"), "time_ms": pl.Datetime("ms")}
SUFFIXES = (".csv.gz", ".csv", ".parquet")


def find_table(data_dir: Path, module: str, name: str) -> Path | None:
    """The table's file under DATA_DIR/module, whichever supported format is present."""
    folder = data_dir / module
    for suffix in SUFFIXES:
        path = folder / f"{name}{suffix}"
        if path.is_file():
            return path
    return None


def read_header(path: Path) -> list[str]:
    if path.suffix == ".parquet":
        try:
            return list(pq.read_schema(path).names)
        except (pa.ArrowInvalid, OSError) as e:
            raise ValueError(f"{path}: not a readable parquet file: {e}") from e
    try:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as f:  # bytes: decoding ahead would trip on later rows
            header = next(csv.reader(io.StringIO(f.readline().decode("utf-8"))), None)
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read the header line: {e}") from e
    if not header:
        raise ValueError(f"{path}: empty file, expected a CSV header line")
    return header


def resolve_columns(path: Path, header: list[str], columns: dict) -> dict[str, str]:
    """Map each wanted (lower-case) column to the file's spelling; MIMIC-IV 2.2 has upper-case
    names in procedureevents, so the match is case-insensitive."""
    by_lower = {h.strip().lower(): h for h in header}
    missing = [c for c in columns if c not in by_lower]
    if missing:
        raise ValueError(f"{path}: missing required column(s) {', '.join(map(repr, missing))}; "
                         f"the file has {', '.join(header)}")
    return {c: by_lower[c] for c in columns}


def iter_batches(path: Path, columns: dict, block_bytes: int, multiline: bool = False,
                 part: Part | None = None, points: list | None = None,
                 ) -> Iterator[pa.RecordBatch]:
    """Yield record batches with lower-case column names and the spec's types, streaming:
    the whole table, or one `part` of it (a byte range of the text, after the header, on
    record boundaries; for .csv.gz `points` are the file's seek points)."""
    header = read_header(path)
    names = resolve_columns(path, header, columns)
    schema = pa.schema([(c, ARROW_TYPES[t]) for c, t in columns.items()])
    if part is not None and part.start >= part.end:
        return  # more units than records (a tiny PARTITION_UNIT_MB): this one holds none
    if path.suffix == ".parquet":
        yield from _parquet_batches(path, names, schema, part)
        return
    where = f" ({part.describe()})" if part else ""
    convert = pacsv.ConvertOptions(
        column_types={names[c]: ARROW_TYPES[t] for c, t in columns.items()},
        include_columns=[names[c] for c in columns], strings_can_be_null=True,
        null_values=[""], quoted_strings_can_be_null=True)
    gz = path.name.endswith(".gz")
    # gzip through ISA-L, not pyarrow's zlib: chartevents of demo x20 inflates in 0.54 s
    # against 2.0 s. A part starts after the header, so it is given the column names.
    # pyarrow's threads (use_threads, the default) come from its CPU pool, which
    # OMP_NUM_THREADS sizes: one thread in a Dask or SLURM worker (runners.WORKER_ENV), where
    # use_threads=False measured the same (8 chartevents/labevents units of demo x20: 6.1 s
    # CPU either way); every core when a unit runs alone (serial runner), where turning them
    # off cost chartevents 40% more wall time.
    if part is None:
        source = igzip.open(path, "rb") if gz else open(path, "rb")
        read_options = pacsv.ReadOptions(block_size=block_bytes)
    else:
        source = (GzRange(path, points, part.start, part.end) if gz
                  else FileRange(path, part.start, part.end))
        read_options = pacsv.ReadOptions(block_size=block_bytes, column_names=header)
    try:
        with source:
            reader = pacsv.open_csv(
                source, read_options=read_options,
                parse_options=pacsv.ParseOptions(newlines_in_values=multiline),
                convert_options=convert)
            for batch in reader:
                yield pa.RecordBatch.from_arrays(batch.columns, schema=schema)
    except (pa.ArrowInvalid, OSError, EOFError) as e:
        raise ValueError(f"{path}{where}: {_explain(e, header)}") from e
    except ValueError as e:  # the range reader's own errors name the file already
        raise ValueError(f"{e}{where}") from e


def _parquet_batches(path, names, schema, part: Part | None):
    try:
        pf = pq.ParquetFile(path)
        groups = range(part.start, part.end) if part else None
        for batch in pf.iter_batches(batch_size=262_144, columns=list(names.values()),
                                     row_groups=groups):
            arrays = []
            for field, actual in zip(schema, names.values()):
                col = batch.column(actual)
                try:
                    arrays.append(col.cast(field.type,
                                           safe=not pa.types.is_timestamp(field.type)))
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                    where = f" ({part.describe()})" if part else ""
                    raise ValueError(f"{path}{where}: column {actual!r} expected {field.type}, "
                                     f"got {col.type}: {e}") from e
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)
    except (pa.ArrowInvalid, OSError) as e:
        raise ValueError(f"{path}: {e}") from e


def _explain(e: Exception, header: list[str]) -> str:
    """pyarrow says 'In CSV column #7: ...' (position in the file); add the column's name."""
    msg = str(e)
    if "CSV column #" in msg:
        try:
            idx = int(msg.split("CSV column #", 1)[1].split(":", 1)[0])
            return f"column {header[idx].lower()!r}: {msg}"
        except (ValueError, IndexError):
            return msg
    return msg


# Input identity: an XXH3-128 hash of the whole file, so any edit of any size is a new
# identity (a hash of the first and last MiB, as before, missed a same-size edit in the middle
# of a plain CSV, and of a .csv.gz of 1-2 MiB, whose gzip trailer it skipped). Whole-file
# hashing reads every byte once, so the hash is remembered per file in INDEX_DIR/_hashes
# (kept across builds) under the file's stat: later builds pay a `stat`. The stat key has
# ctime because no user call sets it back: an edit followed by `touch -d` to restore the
# mtime still changes it. No st_dev: NFS clients number the same mount differently, so on a
# cluster sharing INDEX_DIR every host would rehash and rewrite the other's memo.
MEMO_FORMAT = 1
# A memo is written only for a file whose last change (ctime) is this much older than the
# hash's start: a same-size rewrite in the same timestamp tick as that change (a jiffy on
# Linux, up to 1-2 s on some NFS servers and old filesystems) would leave the stat as it
# was, and the memo would name the old content forever (git calls such entries "racily
# clean"). Such a file is simply hashed again by the next build.
RACY_SECONDS = 2.0


def fingerprint(path: Path, memo_dir: Path | None) -> dict:
    """Identity of an input file: its size and an XXH3-128 hash of its whole content,
    remembered in `memo_dir` (None: hashed every time)."""
    try:
        size, digest = _content_hash(path, memo_dir)
    except OSError as e:
        raise ValueError(f"{path}: cannot read the input to fingerprint it: {e}") from e
    return {"path": str(path), "bytes": size, "xxh3_128": digest}


def fingerprints(paths: list[Path], memo_dir: Path | None) -> list[dict]:
    """`fingerprint` of each path, hashed in threads: xxhash and file reads release the GIL
    (a pure-Python thread kept its full speed beside a hashing one), so several inputs are
    read and hashed at once. Demo x100 (1.3 GB) on 2 CPUs, from disk (page cache dropped):
    0.71-0.96 s one file at a time, 0.63-0.83 s in 2 threads, 0.78-1.25 s in 4 (more
    streams than CPUs cost the disk's read-ahead); from the page cache ~0.15 s either way."""
    if len(paths) < 2:
        return [fingerprint(p, memo_dir) for p in paths]
    with ThreadPoolExecutor(max_workers=min(len(paths), os.cpu_count() or 1)) as pool:
        return list(pool.map(lambda p: fingerprint(p, memo_dir), paths))


def _stat_key(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns,
            "ctime_ns": st.st_ctime_ns, "inode": st.st_ino}


def memo_path(memo_dir: Path, path: Path) -> Path:
    """The memo of one input: one small file per resolved path."""
    name = hashlib.blake2b(str(path.resolve()).encode(), digest_size=8).hexdigest()
    return memo_dir / f"{name}.json"


def _content_hash(path: Path, memo_dir: Path | None) -> tuple[int, str]:
    """The file's size and content hash, from its memo when the stat still matches."""
    resolved = path.resolve()
    started = time.time_ns()
    key = _stat_key(resolved)
    memo = memo_path(memo_dir, resolved) if memo_dir is not None else None
    if memo is not None:
        known = _read_memo(memo, key)
        if known is not None:
            return key["bytes"], known
    digest = xxh3_file(resolved)
    racy = key["ctime_ns"] > started - RACY_SECONDS * 1e9
    # Not remembered either when the file changed while it was read: the hash may be of
    # neither version (this build uses it; the next one hashes the file again).
    if memo is not None and not racy and _stat_key(resolved) == key:
        try:
            atomic_write_json(memo, {"format": MEMO_FORMAT, **key, "xxh3_128": digest})
        except OSError:
            # A memo is only a shortcut: a read-only or full INDEX_DIR, or two threads of one
            # process racing on the same temporary name (identical content), costs a rehash
            # next time, never this build.
            with contextlib.suppress(OSError):
                tmp_name(memo).unlink()
    return key["bytes"], digest


def _read_memo(memo: Path, key: dict) -> str | None:
    """The remembered hash if the memo is readable and made for this exact stat; anything
    else (no memo, damaged JSON, missing keys, another stat) is a miss, and the caller
    rewrites it."""
    try:
        data = json.loads(memo.read_text())
        same = data.get("format") == MEMO_FORMAT and all(data.get(k) == v
                                                          for k, v in key.items())
        digest = data.get("xxh3_128")
    except (OSError, ValueError, AttributeError):  # ValueError: bad JSON or bytes
        return None
    if not same or not isinstance(digest, str) or len(digest) != 32:
        return None
    return digest


def prefetch(batches: Iterator, depth: int = 2) -> Iterator:
    """Iterate `batches` in a background thread, up to `depth` ahead. pyarrow parses without
    the GIL, so the next blocks decompress and parse while the caller maps and writes the
    last one: chartevents' partition unit (demo x20), the stage's straggler, went from 6.5 s
    to 4.8 s. The producer's exception is re-raised here, in the caller's thread."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce():
        try:
            for b in batches:
                while not stop.is_set():
                    try:
                        q.put(b, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as e:  # handed to the consumer, which raises it
            q.put(e)

    thread = threading.Thread(target=produce, daemon=True, name="prefetch")
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
