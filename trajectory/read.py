"""Streaming readers for raw MIMIC-IV tables (.csv.gz, .csv, .parquet) with explicit schemas.

Nothing is type-inferred: every column read has the type its table spec names, so a bad value
is an error naming the file and column instead of a silently different dtype.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import queue
import threading
from pathlib import Path
from typing import Iterator

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from isal import igzip

from .gzindex import GzRange
from .split import FileRange, Part

ARROW_TYPES = {"int": pa.int64(), "float": pa.float64(), "str": pa.string(),
               "time": pa.timestamp("s")}
POLARS_TYPES = {"int": pl.Int64, "float": pl.Float64, "str": pl.String,
                "time": pl.Datetime("ms")}
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
                    arrays.append(col.cast(field.type, safe=field.type != pa.timestamp("s")))
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


def fingerprint(path: Path) -> dict:
    """Cheap identity of an input file: size and a hash of its first and last MiB
    (hashing whole multi-GB inputs would cost as much as parsing them)."""
    st = path.stat()
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        if st.st_size > 2 << 20:
            f.seek(-(1 << 20), 2)
            h.update(f.read())
    return {"path": str(path), "bytes": st.st_size, "head_tail_blake2b": h.hexdigest()}


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
