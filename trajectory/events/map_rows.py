"""Row -> event mapping (pure polars): one source frame in, one event frame plus counts out.

Mapping happens in the partition stage, not per shard as DESIGN.md first drew it: the rows are
already in memory there, only the narrow event columns get written and re-read (chartevents'
11 raw columns shrink to 9 typed ones, text only where there is no number), and the global code
vocabulary falls out of the same pass. Only what needs another table (diagnoses' time from
their admission) waits for the shard stage.
"""
from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from ..record import KNOWN_NEVER
from .tables import AT_DISCHARGE, PREPARE, SOURCE_ID, Event, Table

EVENT_SCHEMA = {
    "subject_id": pl.Int64, "time": pl.Int64, "code": pl.String, "value": pl.Float64,
    "text": pl.String, "hadm_id": pl.Int64, "stay_id": pl.Int64, "source": pl.UInt8,
    "kind": pl.UInt8, "ref": pl.String, "known_delta": pl.Int64,
}
UNKNOWN = "UNK"  # null code part, as MIMIC_IV_MEDS writes it
# Between a detail row's parent key and the rest of its row id in `ref` (ASCII unit
# separator: never in MIMIC's ids), so the build stage can cut the key back out.
REF_SEP = "\x1f"


def _epoch(cols: tuple[str, ...]) -> pl.Expr:
    exprs = [pl.col(c).dt.epoch("s") for c in cols]
    return (exprs[0] if len(exprs) == 1 else pl.coalesce(exprs)).cast(pl.Int64)


def _known_delta(ev: Event) -> pl.Expr:
    """Seconds from `time` to when the row's content became known (tables.Event.known), never
    negative: a row stored before its time (a planned infusion end) is known at its time.
    KNOWN_NEVER where the rule says so, and for a store time 136 years or more after the time
    (the record's uint32 saturates: never known); null for AT_DISCHARGE, which the build stage
    resolves (assemble.place_events). Events timed by their parent or admission (detail rows,
    diagnoses) get 0 here: place_details gives a detail its parent's."""
    if not ev.known:
        return pl.lit(0, pl.Int64)
    if ev.known == AT_DISCHARGE:
        return pl.lit(None, pl.Int64)
    # a known time with milliseconds rounds up: known in that second's end, never earlier
    exprs = [(pl.col(c).dt.epoch("ms") + 999) // 1000 for c in ev.known]
    delta = (exprs[0] if len(exprs) == 1 else pl.coalesce(exprs)).cast(pl.Int64) \
        - _epoch(ev.time)
    missing = 0 if ev.known_else == "time" else KNOWN_NEVER
    return pl.when(delta.is_null()).then(pl.lit(missing, pl.Int64)).otherwise(
        delta.clip(0, KNOWN_NEVER))


def _code(ev: Event) -> pl.Expr:
    prefix, *cols = ev.code
    parts = [pl.lit(prefix)] + [pl.col(c).cast(pl.String).str.strip_chars().fill_null(UNKNOWN)
                                for c in cols]
    return pl.concat_str(parts, separator="//") if cols else pl.lit(prefix)


def _label_key(ev: Event) -> pl.Expr:
    if ev.label is None:
        return pl.lit(None, pl.String)
    return pl.concat_str([pl.col(c).cast(pl.String).str.strip_chars() for c in ev.label[1]],
                         separator="//")


def _ref(table: Table, ev: Event) -> pl.Expr:
    if table.parent is not None:  # the parent's key first: the build stage joins on it
        parts = [table.parent.key, *table.parent.row]
        return pl.concat_str([pl.col(c).cast(pl.String).fill_null("") for c in parts],
                             separator=REF_SEP)
    return pl.col(ev.ref).cast(pl.String) if ev.ref else pl.lit(None, pl.String)


def parent_key(ref: pl.Series) -> pl.Series:
    """The parent row id of detail events' `ref`."""
    return ref.str.split_exact(REF_SEP, 1).struct.field("field_0")


def event_exprs(table: Table, kind: int, columns: set[str]) -> dict[str, pl.Expr]:
    """The columns of the table's `kind`-th event as expressions over the source frame."""
    ev = table.events[kind]
    value = (pl.col(ev.value).cast(pl.Float64, strict=False) if ev.value
             else pl.lit(None, pl.Float64))
    text = pl.lit(None, pl.String)
    if ev.text:
        text = pl.coalesce([pl.col(c).cast(pl.String) for c in ev.text])
        if not ev.text_always:
            text = pl.when(value.is_null()).then(text).otherwise(None)
    optional_id = {c: (pl.col(c) if c in columns else pl.lit(None, pl.Int64))
                   for c in ("hadm_id", "stay_id")}
    return {
        "subject_id": pl.col("subject_id"),
        "time": _epoch(ev.time) if ev.time else pl.lit(None, pl.Int64),
        "value": value,
        "text": text,
        "hadm_id": optional_id["hadm_id"],
        "stay_id": optional_id["stay_id"],
        # a user table (extra_tables.py) carries its own id, after the built-in ones
        "source": pl.lit(SOURCE_ID.get(table.name) or table.source, pl.UInt8),
        "kind": pl.lit(kind, pl.UInt8),  # which of the table's events: exact QC accounting
        "ref": _ref(table, ev),
        "known_delta": _known_delta(ev),
    }


def map_rows(table: Table, df: pl.DataFrame, book: "CodeBook",
             ) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """Source rows -> (events with `code` as the book's local id, per-code stats, counts per
    event stream).

    counts[event] = {"rows": n, "written": k, "dropped": {reason: m}} with rows = written +
    sum(dropped). Events whose time comes from their admission or their parent row (detail
    tables) keep a null time here.
    """
    prepare = PREPARE.get(table.name)
    if prepare is not None:
        df = prepare(df)
    columns = set(df.columns)
    frames, stats, counts = [], [], {}
    for kind, ev in enumerate(table.events):
        frame = df.select(**event_exprs(table, kind, columns))
        dropped = {}
        keep = frame["subject_id"].is_not_null()
        if not keep.all():
            dropped["null_subject_id"] = int((~keep).sum())
        if ev.time:
            # A row with no time cannot be placed in a trajectory; counted, never silent.
            timed = frame["time"].is_not_null()
            n_null_time = int((keep & ~timed).sum())
            if n_null_time:
                dropped["null_time"] = n_null_time
            keep = keep & timed
        if ev.require:
            present = df[ev.require].is_not_null()
            n_absent = int((keep & ~present).sum())
            if n_absent:
                dropped[f"null_{ev.require}"] = n_absent
            keep = keep & present
        src = df
        if dropped:
            frame, src = frame.filter(keep), df.filter(keep)
        counts[ev.name] = {"rows": df.height, "written": frame.height, "dropped": dropped}
        ids, st = _encode_codes(ev, src, book)
        stats.append(st)
        frames.append(frame.insert_column(2, pl.Series("code", ids)))
    return pl.concat(frames), pl.concat(stats), counts


def _encode_codes(ev: Event, src: pl.DataFrame, book: "CodeBook"
                  ) -> tuple[np.ndarray, pl.DataFrame]:
    """Local code id of every row, and per-combination count, unit and dictionary key.

    Codes are built only once per distinct combination of the code columns: the book keeps a
    table of the combinations seen so far, and rows find theirs by a left join. Joining
    strings per row and hashing them cost 1.6 s on 13M chartevents rows, grouping the raw
    columns of every batch into row lists 1.5 s, the join against the (small, rarely
    growing) combination table 0.4 s. Stats rows come per combination in order of first
    appearance, unit and key read off its first row, as merge_code_stats expects."""
    prefix, *cols = ev.code
    n = src.height
    if not cols:  # one constant code; registered only once a row has it
        codes = pl.Series("code", [prefix] if n else [], pl.String)
        ids = np.full(n, book.ids(codes.to_list())[0] if n else 0, np.uint32)
        lengths = np.array([n] if n else [], np.int64)
        first_rows = [0] if n else []
    else:
        cid = book.combination_ids(ev, src.select(cols))
        combo_code = book.combo_code[ev.name]
        # first row and count of each combination present, in order of first appearance
        first = np.full(len(combo_code), n, np.int64)
        np.minimum.at(first, cid, np.arange(n))
        present = np.flatnonzero(first < n)
        combo = present[np.argsort(first[present], kind="stable")]
        ids = combo_code[cid]
        codes = pl.Series("code", [book.codes[i] for i in combo_code[combo]], pl.String)
        lengths = np.bincount(cid, minlength=len(combo_code))[combo].astype(np.int64)
        first_rows = first[combo]
    first = src[first_rows] if len(first_rows) else src.clear()
    st = pl.DataFrame({"code": codes, "count": lengths}).with_columns(
        (first[ev.unit] if ev.unit else pl.Series([None] * len(codes), dtype=pl.String))
        .alias("unit"),
        first.select(_label_key(ev).alias("k"))["k"].alias("label_key")
        if ev.label else pl.lit(None, pl.String).alias("label_key"),
        pl.lit(ev.label[0] if ev.label else None, pl.String).alias("dictionary"))
    return ids, st


def merge_code_stats(stats: list[pl.DataFrame]) -> pl.DataFrame:
    """Combine per-batch code stats (count summed; unit, key, dictionary first seen)."""
    if not stats:
        return pl.DataFrame(schema={"code": pl.String, "count": pl.Int64, "unit": pl.String,
                                    "label_key": pl.String, "dictionary": pl.String})
    return (pl.concat(stats).group_by("code", maintain_order=True)
            .agg(pl.col("count").sum().cast(pl.Int64), pl.col("unit").drop_nulls().first(),
                 pl.col("label_key").drop_nulls().first(),
                 pl.col("dictionary").drop_nulls().first())
            .sort("code"))


class CodeBook:
    """Code string -> small local integer id, growing as new codes appear. Partition files
    carry the id, not the string: on 4M chartevents rows that cut gather + write + read from
    1.7 s to 0.75 s (strings were most of every copy). Per event, it also keeps the distinct
    combinations of code columns seen so far (`combos`, row i is combination i) and each
    one's code id.

    Rows find their combination by the hash of their code columns, looked up in the hashes
    of the combinations seen (`hashes`, in combination order), and every row is then checked
    against the combination found, so the ids are exact. A polars left join of the batch
    against `combos` did the same in 5.3 ms on 75k chartevents rows (twice when a batch
    brought a new combination, as 176 of 196 did in chartevents cut into 22 units: each unit
    starts a fresh book), against 0.5 ms for the hash, 0.7 ms for the lookup (Arrow's hash
    table, where numpy's searchsorted took 5 ms) and 1.2 ms for the check. Measured by
    process CPU: polars runs a join on its own pool thread, which time.thread_time of the
    caller does not see. Two combinations with one hash fail the check; that event then goes
    on with the join."""

    def __init__(self):
        self.codes: list[str] = []
        self.index: dict[str, int] = {}
        self.combos: dict[str, pl.DataFrame] = {}  # event -> code columns + "_cid"
        self.combo_code: dict[str, np.ndarray] = {}  # event -> code id of each combination
        self.hashes: dict[str, pa.Array] = {}  # event -> row hash of each combination

    def ids(self, codes: list[str]) -> np.ndarray:
        out = np.empty(len(codes), np.uint32)
        for i, c in enumerate(codes):
            j = self.index.get(c)
            if j is None:
                j = self.index[c] = len(self.codes)
                self.codes.append(c)
            out[i] = j
        return out

    def combination_ids(self, ev: Event, key: pl.DataFrame) -> np.ndarray:
        """Combination id of every row of `key` (the event's code columns); combinations not
        seen before get the next ids in order of first appearance, and their code strings
        their code ids. Nulls match nulls, as group_by treats them."""
        if ev.name not in self.combos:
            self.combos[ev.name] = key.clear().with_columns(pl.lit(0, pl.UInt32).alias("_cid"))
            self.combo_code[ev.name] = np.empty(0, np.uint32)
            self.hashes[ev.name] = pa.array([], pa.uint64())
        if ev.name in self.hashes:
            cid = self._hashed_ids(ev, key)
            if cid is not None:
                return cid
            del self.hashes[ev.name]  # a hash collision: exact joins from now on
        combos = self.combos[ev.name]
        cid = self._join(key, combos)
        if cid.null_count():
            self._add(ev, key.filter(cid.is_null()).unique(maintain_order=True))
            cid = self._join(key, self.combos[ev.name])
        return cid.to_numpy()

    def _hashed_ids(self, ev: Event, key: pl.DataFrame) -> np.ndarray | None:
        h = key.hash_rows().to_arrow()
        pos = pc.index_in(h, value_set=self.hashes[ev.name])
        if pos.null_count:
            miss = np.flatnonzero(pos.is_null().to_numpy(zero_copy_only=False))
            # first row of each new hash, in row order: the join path's first appearance
            _, first = np.unique(h.to_numpy()[miss], return_index=True)
            rows = miss[np.sort(first)]
            self._add(ev, key[rows])
            self.hashes[ev.name] = pa.concat_arrays([self.hashes[ev.name], h.take(rows)])
            pos = pc.index_in(h, value_set=self.hashes[ev.name])
        cid = pl.Series(pos.to_numpy(zero_copy_only=False).astype(np.uint32))
        found = self.combos[ev.name].select(key.columns).gather(cid)
        return cid.to_numpy() if key.equals(found, null_equal=True) else None

    def _add(self, ev: Event, new: pl.DataFrame) -> None:
        """Append new (distinct, unseen) combinations and register their codes."""
        combos = self.combos[ev.name]
        start = combos.height
        new = new.with_columns(pl.int_range(start, start + new.height, dtype=pl.UInt32)
                               .alias("_cid"))
        self.combos[ev.name] = pl.concat([combos, new], rechunk=True)  # gathered per batch
        code_ids = self.ids(new.select(_code(ev).alias("code"))["code"].to_list())
        self.combo_code[ev.name] = np.concatenate([self.combo_code[ev.name], code_ids])

    @staticmethod
    def _join(key: pl.DataFrame, combos: pl.DataFrame) -> pl.Series:
        return key.join(combos, on=key.columns, how="left", nulls_equal=True,
                        maintain_order="left")["_cid"]

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame({"local_id": pl.Series(range(len(self.codes)), dtype=pl.UInt32),
                             "code": pl.Series(self.codes, dtype=pl.String)})


def merge_counts(total: dict, part: dict) -> dict:
    """Add nested {event: {rows, written, dropped: {reason: n}}} counters."""
    for name, c in part.items():
        t = total.setdefault(name, {"rows": 0, "written": 0, "dropped": {}})
        t["rows"] += c["rows"]
        t["written"] += c["written"]
        for reason, n in c["dropped"].items():
            t["dropped"][reason] = t["dropped"].get(reason, 0) + n
    return total
