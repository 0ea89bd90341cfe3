"""One shard's events + header tables -> per-patient records (pure: frames in, dicts out)."""
from __future__ import annotations

import time
from typing import Iterator

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from ..events.map_rows import parent_key
from ..events.tables import SOURCE_ID, TABLES
from ..record import FORMAT, NONE_ID, events_to_bytes
from ..windows.grids import GridSpec, patient_windows
from .kernels_sort import (CODE_BITS, SOURCE_BITS, TIME_BITS, event_sort_keys,
                           sort_runs_by_secondary)
from .kernels_text import first_use_ids

SOURCE_NAME = {i + 1: t.name for i, t in enumerate(TABLES)}
EVENT_NAME = {(i + 1, k): e.name for i, t in enumerate(TABLES) for k, e in enumerate(t.events)}
SORT_KEY = ["subject_id", "time", "source", "code_id", "value"]


def _count_by_stream(dropped: pl.DataFrame, reason: str, counts: dict,
                     streams: dict | None = None) -> None:
    """Add dropped rows to counts[table][event]["dropped"][reason]. `streams`: (source, kind)
    -> (table, event) names of the user tables (extra_tables.streams)."""
    if dropped.height == 0:
        return
    # rows are events, or pre-counted groups carrying their count in "_n"
    weight = pl.col("_n").sum() if "_n" in dropped.columns else pl.len()
    for source, kind, n in dropped.group_by("source", "kind").agg(weight).iter_rows():
        table, event = (streams or {}).get((source, kind)) or (SOURCE_NAME[source],
                                                               EVENT_NAME[(source, kind)])
        ev = counts.setdefault(table, {}).setdefault(event, {"dropped": {}})
        ev["dropped"][reason] = ev["dropped"].get(reason, 0) + n


def count_cleaning_drops(qc: pl.DataFrame, counts: dict, streams: dict | None = None) -> None:
    """Add the cleaning rules' drops (qc rows with a reason) to the per-stream counts."""
    from ..cleaning.flags import BITS

    for rule in BITS:
        part = qc.filter(pl.col(f"dropped_{rule}") > 0)
        _count_by_stream(part.select("source", "kind", pl.col(f"dropped_{rule}").alias("_n")),
                         rule, counts, streams)


def epoch_columns(df: pl.DataFrame) -> pl.DataFrame:
    """Datetime columns -> int64 seconds (records carry plain integers)."""
    return df.with_columns(pl.col(pl.Datetime).dt.epoch("s"))


def place_events(ev: pl.DataFrame, patients: pl.DataFrame, admissions: pl.DataFrame,
                 counts: dict) -> pl.DataFrame:
    """Give admission-timed events (diagnoses, DRGs) their admission's dischtime and drop what
    cannot be placed: rows of subjects absent from `patients` and admission-timed rows whose
    hadm_id is not in `admissions`. Every drop is counted by reason. Events known at their
    admission's discharge (a null `known_delta`: tables.AT_DISCHARGE) get it as the delta
    from their time (0 when the discharge is earlier, or when their admission is unknown:
    known at their own time then)."""
    known = ev["subject_id"].is_in(patients["subject_id"].implode())
    if not known.all():  # filters copy every column: only when something goes
        _count_by_stream(ev.filter(~known), "subject_not_in_patients", counts)
        ev = ev.filter(known)
    untimed = np.flatnonzero(ev["time"].is_null().to_numpy())
    if len(untimed):
        # Only the few admission-timed rows go through the join; their times are scattered
        # back in place, so no full-frame copy and every row keeps its position.
        disch = (admissions.select("hadm_id", pl.col("dischtime").dt.epoch("s").alias("_t"))
                 .unique("hadm_id", keep="first"))
        placed = (ev[untimed].select("hadm_id")
                  .join(disch, on="hadm_id", how="left", maintain_order="left")["_t"])
        ev = ev.with_columns(ev["time"].scatter(untimed, placed))
        lost = placed.is_null().to_numpy()
        if lost.any():
            _count_by_stream(ev[untimed[lost]], "no_admission_time", counts)
            ev = ev.filter(ev["time"].is_not_null())
    at_discharge = np.flatnonzero(ev["known_delta"].is_null().to_numpy())
    if len(at_discharge):
        disch = (admissions.select("hadm_id", pl.col("dischtime").dt.epoch("s").alias("_t"))
                 .unique("hadm_id", keep="first"))
        rows = ev[at_discharge].select("hadm_id", "time")
        known = rows.join(disch, on="hadm_id", how="left", maintain_order="left")
        delta = (known["_t"] - known["time"]).clip(0, None).fill_null(0)
        ev = ev.with_columns(ev["known_delta"].scatter(at_discharge, delta))
    return ev


# Detail table source -> its parent table's source (tables.Parent), as a dict and a lookup.
PARENT_SOURCE = {SOURCE_ID[t.name]: SOURCE_ID[t.parent.table] for t in TABLES if t.parent}
# Sources of the notes and their detail tables: their events are listed in `notes`.
NOTE_SOURCES = [SOURCE_ID[t.name] for t in TABLES if t.module == "note"]
_PARENT_OF = np.zeros(256, np.uint8)
_PARENT_OF[list(PARENT_SOURCE)] = list(PARENT_SOURCE.values())


def ref_strings(refs: pl.Series, ids: np.ndarray) -> pl.Series:
    """The strings of `ref` ids into `refs` (jobs/build.load_shard); NONE_ID gives None."""
    strings = pl.concat([refs.cast(pl.String), pl.Series([None], dtype=pl.String)])
    return strings.gather(np.where(ids >= 0, ids, refs.len()))


def place_details(ev: pl.DataFrame, refs: pl.Series, counts: dict) -> pl.DataFrame:
    """Give detail-table events (emar_detail, poe_detail, the note details) the time, hadm_id
    and known_delta of their parent row's first event, and drop those whose parent is not in the
    shard (counted "parent_not_found"). `ref` holds int ids into `refs`, which for the
    parent and detail tables are their row id strings (jobs/build.load_shard). A join inside
    one shard: both tables are split by subject_id, so a row and its details meet here, and
    memory is one shard's rows of the two tables, whatever the input size. A parent id seen
    twice (never in MIMIC-IV) gives its first row's time. The parent ids and the details'
    parent keys are encoded together into integers and matched by a sorted search (a polars
    join on the strings: 0.25 s a shard of demo x20; this: 0.21 s, most of it the encoding)."""
    source = ev["source"].to_numpy()
    detail = np.flatnonzero(np.isin(source, list(PARENT_SOURCE)))
    if not len(detail):
        return ev
    parent = np.flatnonzero(np.isin(source, list(set(PARENT_SOURCE.values())))
                            & (ev["kind"].to_numpy() == 0))
    ref = ev["ref"].to_numpy()

    def keys(rows: np.ndarray) -> pl.Series:
        return ref_strings(refs, ref[rows])

    ids, _ = encode_strings(pl.concat([keys(parent), parent_key(keys(detail))]))
    # (string id, parent table) as one int64; no key (-1) never matches
    key = np.where(ids >= 0, ids.astype(np.int64) * 256, -1)
    key_p = np.where(key[:len(parent)] >= 0, key[:len(parent)] + source[parent], -1)
    key_d = np.where(key[len(parent):] >= 0, key[len(parent):] + _PARENT_OF[source[detail]], -2)
    uniq, first = np.unique(key_p, return_index=True)  # first occurrence of every parent id
    pos = np.clip(np.searchsorted(uniq, key_d), 0, max(len(uniq) - 1, 0))
    found = (uniq[pos] == key_d) if len(uniq) else np.zeros(len(detail), bool)
    rows, src = detail[found], pl.Series(parent[first[pos[found]]])
    ev = ev.with_columns(ev["time"].scatter(rows, ev["time"].gather(src)),
                         ev["hadm_id"].scatter(rows, ev["hadm_id"].gather(src)),
                         ev["known_delta"].scatter(rows, ev["known_delta"].gather(src)))
    if not found.all():
        lost = detail[~found]
        _count_by_stream(ev[lost], "parent_not_found", counts)
        keep = np.ones(ev.height, bool)
        keep[lost] = False
        ev = ev.filter(pl.Series(keep))
    return ev


def sort_keys(subject_id: np.ndarray, time: np.ndarray, source: np.ndarray,
              code: np.ndarray, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two uint64 keys whose lexicographic order is SORT_KEY's (value compared as float32,
    no value last)."""
    n = len(time)
    hi, lo = np.empty(n, np.uint64), np.empty(n, np.uint64)
    if n == 0:
        return hi, lo
    s0, s1 = int(subject_id.min()), int(subject_id.max())
    if s1 - s0 < 1 << 24:  # MIMIC's ids span 10M: the offset is a rank, no search needed
        rank = subject_id.astype(np.int64, copy=False) - s0
    else:
        subjects = np.sort(pl.Series(subject_id).unique().to_numpy())
        if len(subjects) >= 1 << 24:
            raise ValueError(f"shard too wide to sort: {len(subjects)} subjects; use more shards")
        rank = np.searchsorted(subjects, subject_id)
    t0 = int(time.min())
    if int(time.max()) - t0 >= 1 << TIME_BITS:
        raise ValueError(f"shard too wide to sort: times span {int(time.max()) - t0} s; "
                         "use more shards")
    if int(code.max()) >= 1 << CODE_BITS or int(source.max()) >= 1 << SOURCE_BITS:
        raise ValueError(f"code id {int(code.max())} or source {int(source.max())} exceeds "
                         "the sort key's width")
    event_sort_keys(rank.astype(np.int64, copy=False), time.astype(np.int64, copy=False),
                    np.int64(t0), source.astype(np.uint8, copy=False),
                    code.astype(np.int32, copy=False), value.astype(np.float32, copy=False),
                    hi, lo)
    return hi, lo


def sort_order(subject_id, time, source, code, value) -> np.ndarray:
    """Stable argsort by SORT_KEY: ties keep input order."""
    hi, lo = sort_keys(subject_id, time, source, code, value)
    order = np.argsort(hi, kind="stable")
    secondary = lo[order]
    sort_runs_by_secondary(hi[order], secondary, order)
    return order


def order_events(ev: pl.DataFrame) -> pl.DataFrame:
    """Sort deterministically by SORT_KEY; ties keep input order (stable sort)."""
    order = sort_order(ev["subject_id"].to_numpy(), ev["time"].to_numpy(),
                       ev["source"].to_numpy(), ev["code_id"].to_numpy(),
                       ev["value"].to_numpy())  # a null float becomes NaN: no value, last
    return ev[pl.Series(order)]


def encode_strings(col: pl.Series | pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, pl.Series]:
    """int32 id of every row (NONE_ID for null) and the distinct strings by id, in order of
    first appearance. Events carry ids, not strings, through the sort and cleaning: the
    strings are gathered never, compared never, and looked up once per patient when the
    record is written. Arrow's hash dictionary encoding, not a polars group_by into row lists,
    on the Arrow columns as read: a demo x20 shard's text and ref columns (2.2M rows) took
    0.25 s that way, a third of the shard's read, and take 0.2 s this way."""
    if isinstance(col, pl.Series):
        col = col.cast(pl.String).rechunk().to_arrow(compat_level=pl.CompatLevel.oldest())
    elif isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    n = len(col)
    if col.null_count == n:
        return np.full(n, NONE_ID, np.int32), pl.Series("s", [], pl.String)
    encoded = pc.dictionary_encode(col)
    ids = encoded.indices.fill_null(NONE_ID).to_numpy().astype(np.int32, copy=False)
    return ids, pl.Series("s", encoded.dictionary, pl.String)


def merge_string_ids(parts: list[tuple[np.ndarray, pl.Series]]
                     ) -> tuple[list[np.ndarray], pl.Series]:
    """Ids of several tables -> ids into one list of distinct strings, so a text two tables
    share is one entry of the patient's `texts`."""
    if not parts:
        return [], pl.Series("s", [], pl.String)
    ids, uniq = encode_strings(pl.concat([u for _, u in parts]))
    out, offset = [], 0
    for local, u in parts:
        # index -1 (no text) picks the appended NONE_ID
        remap = np.append(ids[offset:offset + u.len()], np.int32(NONE_ID))
        out.append(remap[local])
        offset += u.len()
    return out, uniq


def index_texts(ev: pl.DataFrame, texts: pl.Series) -> tuple[pl.DataFrame, dict]:
    """Per patient, distinct texts in order of first use; events point at them by index.
    `ev` is sorted by subject and its `text` column holds ids into `texts`."""
    sid = ev["subject_id"].to_numpy()
    n = len(sid)
    starts = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1]]) if n else np.zeros(0, np.int64)
    local, used = np.empty(n, np.int32), np.empty(n, np.int32)
    used_starts = np.empty(len(starts) + 1, np.int64)
    first_use_ids(np.r_[starts, n].astype(np.int64), ev["text"].to_numpy(),
                  np.full(texts.len(), -1, np.int64), np.empty(texts.len(), np.int32),
                  local, used, used_starts)
    strings = texts.to_list()
    per_subject = {int(sid[a]): [strings[g] for g in used[used_starts[b]:used_starts[b + 1]]]
                   for b, a in enumerate(starts) if used_starts[b + 1] > used_starts[b]}
    return ev.with_columns(pl.Series("text_id", local)), per_subject


def _sections(df: pl.DataFrame, order: list[str]) -> dict:
    """Header table rows of each subject as {column: [values]} (None for null)."""
    if df.height == 0:
        return {}
    df = epoch_columns(df.sort(order, maintain_order=True, nulls_last=True)).drop("shard", strict=False)
    grouped = df.group_by("subject_id", maintain_order=True).agg(pl.all())
    cols = [c for c in grouped.columns if c != "subject_id"]
    return {row[0]: dict(zip(cols, row[1:])) for row in grouped.iter_rows()}


def patient_records(ev: pl.DataFrame, patients: pl.DataFrame, admissions: pl.DataFrame,
                    stays: pl.DataFrame, texts: dict, refs: pl.Series,
                    grid: GridSpec | None = None, timers: dict | None = None,
                    ) -> Iterator[tuple[int, int, int, dict]]:
    """Yield (subject_id, first, end, record) for every patient of the shard, in subject_id
    order, where ev[first:end] are the patient's events; `ev` is
    sorted by SORT_KEY and carries code_id, text_id and `ref` (an index into `refs`, the note
    ids) (and, once cleaned, flags, concept and concept_value). With a GridSpec, each record
    gets its per-stay windows."""
    patients = epoch_columns(patients.unique("subject_id", keep="first", maintain_order=True)
                             .sort("subject_id"))
    adm = _sections(admissions, ["subject_id", "admittime", "hadm_id"])
    icu = _sections(stays, ["subject_id", "intime", "stay_id"])
    sid = ev["subject_id"].to_numpy()
    cols = {
        "time": ev["time"].to_numpy(),
        "code": ev["code_id"].to_numpy(),
        "value": ev["value"].fill_null(np.nan).to_numpy().astype(np.float32),
        "text": ev["text_id"].fill_null(NONE_ID).to_numpy(),
        "hadm_id": ev["hadm_id"].fill_null(NONE_ID).to_numpy(),
        "stay_id": ev["stay_id"].fill_null(NONE_ID).to_numpy(),
        "source": ev["source"].to_numpy(),
        "flags": _column(ev, "flags", 0, np.uint8),
        "concept": _column(ev, "concept", NONE_ID, np.int16),
        "concept_value": _column(ev, "concept_value", np.nan, np.float32),
        "known_delta": ev["known_delta"].fill_null(0).to_numpy().astype(np.uint32),
    }
    ref = ev["ref"].to_numpy()
    # Every event of a note, the note and its detail rows, with that note's note_id (a detail
    # row's ref starts with its note's id), looked up once for the shard (refs index -1:
    # None). Two reports of one time and admission keep their exam and CPT fields apart.
    source = ev["source"].to_numpy()
    note_rows = np.flatnonzero(np.isin(source, NOTE_SOURCES))
    ids = ref_strings(refs, ref[note_rows])
    detail = np.isin(source[note_rows], list(PARENT_SOURCE))
    note_ids = pl.Series(np.where(detail, parent_key(ids).to_numpy(), ids.to_numpy()),
                         dtype=pl.String).to_list() if len(note_rows) else []
    pids = patients["subject_id"].to_numpy()
    bounds = zip(np.searchsorted(sid, pids, "left").tolist(),
                 np.searchsorted(sid, pids, "right").tolist())
    for p, (lo, hi) in zip(patients.iter_rows(named=True), bounds):
        s = p["subject_id"]
        a, b = np.searchsorted(note_rows, (lo, hi))
        note_pos = note_rows[a:b] - lo
        mine = {k: v[lo:hi] for k, v in cols.items()}
        t = time.perf_counter()
        windows = [] if grid is None else patient_windows(
            mine["time"], mine["concept"], mine["concept_value"], mine["flags"],
            icu.get(s, {}), adm.get(s, {}), grid)
        if timers is not None:
            timers["windows"] = timers.get("windows", 0.0) + time.perf_counter() - t
        yield s, lo, hi, {
            "format": FORMAT,
            "subject_id": s,
            "static": {k: p[k] for k in ("gender", "anchor_age", "anchor_year",
                                         "anchor_year_group", "dod", "birth_time")},
            "admissions": adm.get(s, {}),
            "stays": icu.get(s, {}),
            "events": events_to_bytes(mine),
            "texts": texts.get(s, []),
            "notes": {"event": note_pos.astype(np.int32).tolist(),
                      "note_id": note_ids[a:b]},
            "windows": windows,
        }


def _column(ev: pl.DataFrame, name: str, missing, dtype) -> np.ndarray:
    if name not in ev.columns:
        return np.full(ev.height, missing, dtype)
    return ev[name].fill_null(missing).to_numpy().astype(dtype, copy=False)
