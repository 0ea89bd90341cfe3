"""The per-patient record (format 3). See docs/FORMAT.md.

One msgpack map, not compressed as a whole, whose values are small zstd frames: `head`
(everything but events, texts and windows), `texts`, `windows`, and the events cut into
chunks of CHUNK_EVENTS with a time index. A loader item needs only the last events up to a
prediction time: it inflates the chunks that hold them, never the patient's whole history
(format 1's single frame cost every item its whole record: 0.9 ms of 1.8 on the demo).

Event columns travel as raw little-endian bytes so a reader gets numpy arrays with one
`np.frombuffer` each, never a per-element decode.

Format 3 adds when each event became known (`known_delta`, seconds after `time`) and the note
id of every note detail row.
"""
from __future__ import annotations

from bisect import bisect_right
from itertools import accumulate

import msgpack
import numpy as np
import zstandard

FORMAT = 3
EVENT_DTYPES = {
    "time": "<i8",  # seconds since 1970-01-01 (MIMIC's shifted calendar)
    "code": "<i4",  # row of codes.parquet (code_id)
    "value": "<f4",  # numeric value, NaN when none
    "text": "<i4",  # index into record["texts"], -1 when none
    "hadm_id": "<i8",  # -1 when none
    "stay_id": "<i8",  # -1 when none
    "source": "|u1",  # source table id (dataset.json "sources")
    "flags": "|u1",  # QC bits (dataset.json "flags"); 0 = clean
    "concept": "<i2",  # canonical variable (dataset.json "concepts"), -1 when none
    "concept_value": "<f4",  # value in the concept's unit (converted, maybe clipped), else NaN
    # seconds from `time` to when the content became known (a lab's result, a note's
    # signature); KNOWN_NEVER: never. A delta, not a second time: on demo x20 it costs 0.222
    # bytes an event compressed (+4.9% of the records), an absolute <i8 time 0.274
    # (benchmarks/bench_known_size.py).
    "known_delta": "<u4",
}
KNOWN_NEVER = 0xFFFF_FFFF  # known_delta of an event whose availability is unknown
CUT_RULES = ("known", "charttime")  # what a cut at a prediction time keeps (read_events)
NONE_ID = -1
# Events per chunk, measured on the demo (repacking every record): 1,024 / 2,048 / 4,096
# cost 18% / 11% / 5% more bytes than format 1's single frame (a frame cannot refer back to
# an earlier chunk); a task item of the last 2,048 events took 0.2-0.3 ms with each, vs 1.0
# ms in format 1; 2,048 was the fastest there with the smaller size cost of the two.
CHUNK_EVENTS = 2048
# bytes per event of the columns before each one: where a column starts in a chunk of n
_OFFSET = dict(zip(EVENT_DTYPES, accumulate((np.dtype(dt).itemsize for dt in
                                              EVENT_DTYPES.values()), initial=0)))
_SPLIT = ("events", "texts", "windows")  # the keys that are not in `head`
_REBUILD = ("rebuild the version with this code (build_patient_files.py with --overwrite, or "
            "another TRAJECTORY_VERSION)")
# Columns read_events computes from stored ones: known_time = time + known_delta (int64
# seconds; KNOWN_NEVER gives a time ~136 years later, after every prediction time).
DERIVED = {"known_time": ("time", "known_delta")}


def _packb(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _unpackb(data) -> object:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def pack(record: dict, compressor: zstandard.ZstdCompressor) -> bytes:
    """A record map (events as column -> little-endian bytes, window blocks as bytes) ->
    the stored bytes. Pure: the same record gives the same bytes."""
    cols = [np.frombuffer(record["events"][k], dt) for k, dt in EVENT_DTYPES.items()]
    n = len(cols[0])
    if any(len(c) != n for c in cols):
        raise ValueError(f"record of subject {record.get('subject_id')}: event columns of "
                         f"different lengths {[len(c) for c in cols]}")
    starts = range(0, n, CHUNK_EVENTS)
    by = dict(zip(EVENT_DTYPES, cols))
    windowed = (by["concept"] >= 0) & ~np.isnan(by["concept_value"])
    known = by["time"] + by["known_delta"]
    chunks = {"n": [min(CHUNK_EVENTS, n - s) for s in starts],
              "t_first": [int(cols[0][s]) for s in starts],
              # the latest known_time of the chunk's events with a concept value (what
              # windows count), nil when none: a cut at P need look for values charted
              # before P and known after it only in chunks whose known_max > P
              "known_max": [int(known[s:s + CHUNK_EVENTS][windowed[s:s + CHUNK_EVENTS]].max())
                            if windowed[s:s + CHUNK_EVENTS].any() else None for s in starts],
              "data": [compressor.compress(b"".join(c[s:s + CHUNK_EVENTS].tobytes()
                                                    for c in cols)) for s in starts]}
    head = {k: v for k, v in record.items() if k not in _SPLIT and k != "format"}
    texts, windows = record.get("texts") or [], record.get("windows") or []
    return _packb({
        "format": FORMAT,
        "head": compressor.compress(_packb(head)),
        # nil when empty: most items then inflate nothing for them
        "texts": compressor.compress(_packb(texts)) if texts else None,
        "windows": compressor.compress(_packb(windows)) if windows else None,
        "chunks": chunks,
    })


def parse(data) -> dict:
    """The stored bytes -> the outer map (frames still compressed), its format checked.
    The read_* functions take either the bytes or this map."""
    if isinstance(data, dict):
        return data
    try:
        outer = _unpackb(data)
    except Exception as e:  # msgpack raises several types on foreign bytes
        if bytes(data[:4]) == b"\x28\xb5\x2f\xfd":  # a zstd frame: format 1's whole record
            raise ValueError("record format 1 (one zstd frame); this reader knows format "
                             f"{FORMAT}: {_REBUILD}") from e
        raise ValueError(f"not a trajectory record ({e}); this reader knows format "
                         f"{FORMAT}") from e
    fmt = outer.get("format") if isinstance(outer, dict) else None
    if fmt != FORMAT:
        raise ValueError(f"record format {fmt!r}, this reader knows {FORMAT}"
                         + (f": {_REBUILD}" if isinstance(fmt, int) and 0 < fmt < FORMAT
                            else ""))
    return outer


def frames(data) -> list[bytes]:
    """Every zstd frame of a record (head, texts, windows, event chunks), still compressed."""
    outer = parse(data)
    return [f for f in (outer["head"], outer["texts"], outer["windows"],
                        *outer["chunks"]["data"]) if f is not None]


def _dctx(dctx):
    return dctx or zstandard.ZstdDecompressor()


def read_head(data, dctx: zstandard.ZstdDecompressor | None = None) -> dict:
    """`format` and the head keys (subject_id, static, admissions, stays, notes, ...)."""
    outer = parse(data)
    return {"format": outer["format"], **_unpackb(_dctx(dctx).decompress(outer["head"]))}


def read_texts(data, dctx: zstandard.ZstdDecompressor | None = None) -> list:
    frame = parse(data)["texts"]
    return [] if frame is None else _unpackb(_dctx(dctx).decompress(frame))


def read_windows(data, dctx: zstandard.ZstdDecompressor | None = None) -> list:
    """The window maps, each `data` a read-only float32 array of its `shape`."""
    frame = parse(data)["windows"]
    windows = [] if frame is None else _unpackb(_dctx(dctx).decompress(frame))
    for w in windows:
        w["data"] = np.frombuffer(w["data"], "<f4").reshape(w["shape"])
    return windows


def read_events(data, cut: int | None = None, last: int | None = None,
                dctx: zstandard.ZstdDecompressor | None = None,
                chunk_cache: dict | None = None, columns=None, rule: str = "known") -> dict:
    """Event columns (column -> read-only array; `columns`, default the stored ones; also
    DERIVED's `known_time`) of the events known at ``cut`` (all when None), only the ``last``
    of them when given, inflating only the chunks that hold them.

    `rule` says what a cut keeps: "known" (default) the events with ``time + known_delta <=
    cut``, what was known then; "charttime" those with ``time <= cut``, as MEDS and ACES cut
    (a lab drawn before the cut and resulted after it is in). known_delta is never negative,
    so the known events are among the charttime ones.

    Events are sorted by time, so chunk k holds times in [t_first[k], t_first[k+1]]: every
    chunk before the last one with t_first <= cut lies wholly at or before the cut, and only
    that one is searched (equal times spanning a boundary stay exact). With the known rule
    the chunks are walked back from there until ``last`` known events are found.
    `chunk_cache`: a dict the caller keeps for repeated reads of ONE record (chunk index ->
    inflated bytes), so consecutive items of a patient inflate each chunk once."""
    names = [c for c in EVENT_DTYPES] if columns is None else list(columns)
    unknown = [c for c in names if c not in EVENT_DTYPES and c not in DERIVED]
    if unknown:
        raise ValueError(f"no event column(s) {unknown}; the columns are {list(EVENT_DTYPES)} "
                         f"and the derived {list(DERIVED)}")
    if rule not in CUT_RULES:
        raise ValueError(f"rule must be one of {CUT_RULES}, got {rule!r}")
    chunks, d = parse(data)["chunks"], _dctx(dctx)
    cache = {} if chunk_cache is None else chunk_cache
    n = chunks["n"]

    def col(k: int, name: str) -> np.ndarray:
        if name in DERIVED:  # known_time
            return col(k, "time") + col(k, "known_delta")
        raw = cache.get(k)
        if raw is None:
            raw = cache[k] = d.decompress(chunks["data"][k])
        return np.frombuffer(raw, EVENT_DTYPES[name], n[k], n[k] * _OFFSET[name])

    starts = list(accumulate(n, initial=0))
    k_end = len(n) if cut is None else bisect_right(chunks["t_first"], cut)
    end = starts[k_end]
    if cut is not None and k_end:
        end = starts[k_end - 1] + int(np.searchsorted(col(k_end - 1, "time"), cut, "right"))
    if cut is not None and rule == "known":
        picks = _known_picks(col, starts, end, cut, last)
    else:
        begin = 0 if last is None else max(0, end - int(last))
        picks, k = [], bisect_right(starts, begin) - 1  # (chunk, rows within the chunk)
        while begin < end and starts[k] < end:
            picks.append((k, slice(max(begin, starts[k]) - starts[k],
                                   min(end, starts[k + 1]) - starts[k])))
            k += 1
    out = {}
    for name in names:
        if len(picks) == 1:
            arr = col(picks[0][0], name)[picks[0][1]]
        elif picks:
            arr = np.concatenate([col(k, name)[rows] for k, rows in picks])
        else:
            arr = np.empty(0, np.int64 if name in DERIVED else EVENT_DTYPES[name])
        arr.flags.writeable = False
        out[name] = arr
    return out


def read_chunk(data, k: int, columns, dctx: zstandard.ZstdDecompressor | None = None,
               chunk_cache: dict | None = None) -> dict:
    """The columns (stored ones, or DERIVED) of every event of chunk `k`, read-only."""
    chunks, d = parse(data)["chunks"], _dctx(dctx)
    cache = {} if chunk_cache is None else chunk_cache
    raw = cache.get(k)
    if raw is None:
        raw = cache[k] = d.decompress(chunks["data"][k])
    n = chunks["n"][k]

    def col(name):
        if name in DERIVED:
            return col("time") + col("known_delta")
        return np.frombuffer(raw, EVENT_DTYPES[name], n, n * _OFFSET[name])
    return {name: col(name) for name in columns}


def _known_picks(col, starts: list, end: int, cut: int, last: int | None) -> list:
    """(chunk, row indexes) of the events before `end` known at `cut`, the last `last` of
    them, walking the chunks back from the one that holds event end - 1."""
    picks, need = [], None if last is None else int(last)
    k = bisect_right(starts, end - 1) - 1 if end else -1
    while k >= 0 and need != 0:
        hi = min(end, starts[k + 1]) - starts[k]
        known = col(k, "known_time")[:hi] <= cut
        if known.all():  # most chunks before a cut: a slice, read as views
            rows = slice(0 if need is None else max(0, hi - need), hi)
            n = rows.stop - rows.start
        else:
            rows = np.flatnonzero(known)
            if need is not None:
                rows = rows[max(0, len(rows) - need):]
            n = len(rows)
        if need is not None:
            need -= n
        if n:
            picks.append((k, rows))
        k -= 1
    return picks[::-1]


def unpack(data, decompressor: zstandard.ZstdDecompressor | None = None) -> dict:
    """Decode one whole record: the map `pack` was given, events and window blocks as
    numpy arrays (read-only)."""
    outer, d = parse(data), _dctx(decompressor)
    return {**read_head(outer, d), "events": read_events(outer, dctx=d),
            "texts": read_texts(outer, d), "windows": read_windows(outer, d)}


def events_to_bytes(columns: dict[str, np.ndarray]) -> dict[str, bytes]:
    return {k: np.ascontiguousarray(columns[k], dtype=dt).tobytes()
            for k, dt in EVENT_DTYPES.items()}
