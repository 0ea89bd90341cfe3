"""Your own tables (EXTRA_TABLES): a TOML file of `Table`/`Event` mappings, as data.

Each `[[table]]` entry names a file (.csv, .csv.gz, .parquet; relative to the spec file), the
key that finds the patient (`subject_id`, or `hadm_id` / `stay_id` resolved through
admissions / ICU stays) and its events, with exactly the fields of trajectory/events/tables.py's
`Event` (code = a literal prefix then columns, time = first non-null of columns, value, text,
unit, ref, require); `at` instead of `time` places an event at its admission's or stay's
start or end, or at birth for static facts. docs/EXTRA_TABLES.md has the format.

The spec is checked once, by the plan (`plan_spec`: every name, key and column, and a sample
of every file parsed with the types the build will use), and kept in plan.json with each
file's fingerprint: every unit rebuilds the same tables from that snapshot (`user_tables`),
never from the TOML again.

User tables go through the built-in tables' stages. Their partition units first resolve the
key (`resolve`): rows whose key matches nothing are dropped there, counted per event by
reason (`null_<key>`, `hadm_not_found`, `stay_not_found`, `subject_not_in_patients`), so
reconciliation holds as for every table and `match_report` reads the per-table match counts
back from the QC counts.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from ..raw.read import SUFFIXES, fingerprint, iter_batches, read_header, resolve_columns
from .map_rows import map_rows
from .tables import PREPARE, SOURCE_ID, TABLES, TABLES_BY_NAME, Event, Table

KEYS = ("subject_id", "hadm_id", "stay_id")
# `at` -> the resolved column the event's time is read from. "static": a fact with no time
# of its own, placed at the patient's birth as the built-in GENDER event is, so a model (and
# a task-cut sample) sees it from the first event on.
ANCHORS = {"admission_start": "__admission_start", "admission_end": "__admission_end",
           "stay_start": "__stay_start", "stay_end": "__stay_end", "static": "__birth"}
# Keys an anchor can be reached from: a stay belongs to one admission, not the reverse.
ANCHOR_KEYS = {"admission_start": ("hadm_id", "stay_id"), "admission_end": ("hadm_id", "stay_id"),
               "stay_start": ("stay_id",), "stay_end": ("stay_id",), "static": KEYS}
UNMATCHED = {"hadm_id": "hadm_not_found", "stay_id": "stay_not_found"}
# Records' uint8 `source` sorts in kernels_sort.SOURCE_BITS (7) bits: ids up to 127.
MAX_SOURCE = 127
# Stage-1 units and cache entries named like tables (jobs/dictionaries, jobs/extra_keys).
RESERVED = frozenset({"dictionaries", "extra_keys"})
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_TABLE_FIELDS = {"name", "file", "key", "event", "multiline"}
_EVENT_FIELDS = {"name", "code", "time", "at", "value", "text", "text_always", "unit", "ref",
                 "require"}


@dataclass(frozen=True)
class UserTable(Table):
    source: int = 0  # the records' `source` id: after the built-in tables, in spec order
    key: str = "subject_id"  # the column that finds the patient
    file: str = ""  # the input file, absolute


def _fail(spec: Path, where: str, what: str) -> ValueError:
    return ValueError(f"EXTRA_TABLES {spec}: {where}: {what}")


def _strings(value, spec, where, field) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _fail(spec, where, f"{field} must be a string or a list of strings, got {value!r}")
    return value


def _event(raw: dict, key: str, spec: Path, where: str) -> tuple[Event, set]:
    """One [[table.event]] -> (Event, columns it reads)."""
    unknown = sorted(set(raw) - _EVENT_FIELDS)
    if unknown:
        raise _fail(spec, where, f"unknown field(s) {unknown}; known: {sorted(_EVENT_FIELDS)}")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise _fail(spec, where, f"name must be a lower-case identifier, got {name!r}")
    code = _strings(raw.get("code"), spec, where, "code")
    prefix, *code_cols = code
    code_cols = [c.lower() for c in code_cols]
    if ("time" in raw) == ("at" in raw):
        raise _fail(spec, where, "give exactly one of time (columns) or at (one of "
                                 f"{', '.join(ANCHORS)})")
    if "at" in raw:
        at = raw["at"]
        if at not in ANCHORS:
            raise _fail(spec, where, f"at must be one of {', '.join(ANCHORS)}, got {at!r}")
        if key not in ANCHOR_KEYS[at]:
            raise _fail(spec, where, f"at = {at!r} needs key {' or '.join(ANCHOR_KEYS[at])}, "
                                     f"the table's key is {key!r}")
        time_cols, time = [], (ANCHORS[at],)
    else:
        time_cols = [c.lower() for c in _strings(raw["time"], spec, where, "time")]
        time = tuple(time_cols)
    single = {}
    for field in ("value", "unit", "ref", "require"):
        v = raw.get(field)
        if v is not None and (not isinstance(v, str) or not v):
            raise _fail(spec, where, f"{field} must be a column name, got {v!r}")
        single[field] = v.lower() if v else None
    text = [c.lower() for c in _strings(raw["text"], spec, where, "text")] if "text" in raw else []
    if not isinstance(raw.get("text_always", False), bool):
        raise _fail(spec, where, f"text_always must be true or false, got {raw['text_always']!r}")
    ev = Event(name, (prefix, *code_cols), time=time, value=single["value"], text=tuple(text),
               text_always=raw.get("text_always", False), unit=single["unit"],
               ref=single["ref"], require=single["require"])
    cols = {*code_cols, *time_cols, *text, *(v for v in single.values() if v)}
    return ev, cols


def parse_entry(raw: dict, index: int, spec: Path, source: int) -> tuple[UserTable, dict]:
    """One [[table]] -> (UserTable, the file's columns by lower-case name -> type); no I/O."""
    where = f"table {index + 1}"
    if not isinstance(raw, dict):
        raise _fail(spec, where, f"expected a table, got {raw!r}")
    name = raw.get("name")
    if isinstance(name, str):
        where = f"table {index + 1} ({name!r})"
    unknown = sorted(set(raw) - _TABLE_FIELDS)
    if unknown:
        raise _fail(spec, where, f"unknown field(s) {unknown}; known: {sorted(_TABLE_FIELDS)}")
    if not isinstance(name, str) or not _NAME.match(name):
        raise _fail(spec, where, f"name must be a lower-case identifier ([a-z][a-z0-9_]*), "
                                 f"got {name!r}")
    if name in TABLES_BY_NAME or name in RESERVED:
        raise _fail(spec, where, f"name {name!r} is a built-in table's "
                                 "(trajectory/events/tables.py) or a stage-1 unit's; "
                                 "choose another")
    key = raw.get("key")
    if key not in KEYS:
        raise _fail(spec, where, f"key must be one of {', '.join(KEYS)}, got {key!r}")
    file = raw.get("file")
    if not isinstance(file, str) or not file:
        raise _fail(spec, where, f"file must be a path, got {file!r}")
    path = (spec.parent / file).resolve()
    if not any(path.name.endswith(s) for s in SUFFIXES):
        raise _fail(spec, where, f"file {file!r}: expected {', '.join(SUFFIXES)}")
    multiline = raw.get("multiline", False)
    if not isinstance(multiline, bool):
        raise _fail(spec, where, f"multiline must be true or false, got {multiline!r}")
    events_raw = raw.get("event")
    if not isinstance(events_raw, list) or not events_raw:
        raise _fail(spec, where, "no events: add at least one [[table.event]]")
    events, cols = [], {key}
    for k, e in enumerate(events_raw):
        if not isinstance(e, dict):
            raise _fail(spec, f"{where}, event {k + 1}", f"expected a table, got {e!r}")
        ev, used = _event(e, key, spec, f"{where}, event {k + 1}")
        if ev.name in {x.name for x in events}:
            raise _fail(spec, f"{where}, event {k + 1}", f"duplicate event name {ev.name!r}")
        events.append(ev)
        cols |= used
    times = {c for ev in events for c in ev.time if not c.startswith("__")}
    if times & set(KEYS):
        raise _fail(spec, where, f"id column(s) {sorted(times & set(KEYS))} used as a time")
    columns = {c: "int" if c in KEYS else "time" if c in times else "str" for c in sorted(cols)}
    table = UserTable(name, "extra", columns=columns, events=tuple(events), multiline=multiline,
                      source=source, key=key, file=str(path))
    return table, columns


def _entries(spec: Path) -> list:
    try:
        doc = tomllib.loads(spec.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"EXTRA_TABLES {spec}: cannot read: {e}") from e
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"EXTRA_TABLES {spec}: not valid TOML: {e}") from e
    unknown = sorted(set(doc) - {"table"})
    if unknown or not isinstance(doc.get("table"), list) or not doc["table"]:
        raise ValueError(f"EXTRA_TABLES {spec}: expected one or more [[table]] entries and "
                         f"nothing else at the top level (found {sorted(doc) or 'nothing'})")
    return doc["table"]


def plan_spec(spec_path: Path, present: dict, memo_dir: Path | None) -> dict:
    """The user tables, checked against their files before any work starts, as plan.tables
    entries: the file's fingerprint plus `extra` (the spec entry, its source id, the id
    columns carried, and what else decides its events: the fingerprints of the lookup's
    inputs and of this code). Resuming a work directory and the stage-1 cache compare
    fingerprints, so a changed spec or lookup input is a changed input. {} without
    EXTRA_TABLES. `present`: the built-in tables' fingerprints (a stay_id key needs
    icustays). Each file's header is matched and its first block parsed with the build's
    types, so a time column that does not parse fails here, not in a worker an hour in.
    `memo_dir`: where file hashes are remembered (read.fingerprint; None: not remembered)."""
    if not is_set(spec_path):
        return {}
    spec = Path(spec_path)
    entries = _entries(spec)
    if len(TABLES) + len(entries) > MAX_SOURCE:
        raise ValueError(f"EXTRA_TABLES {spec}: {len(entries)} tables; at most "
                         f"{MAX_SOURCE - len(TABLES)} fit beside the built-in ones")
    lookup = {t: {k: v for k, v in present[t].items() if k != "path"}
              for t in ("patients", "admissions", "icustays") if t in present}
    out = {}
    for i, raw in enumerate(entries):
        table, columns = parse_entry(raw, i, spec, len(TABLES) + 1 + i)
        where = f"table {i + 1} ({table.name!r})"
        if table.name in out:
            raise _fail(spec, where, f"duplicate table name {table.name!r}")
        for need, by in (("admissions", "hadm_id"), ("icustays", "stay_id")):
            if table.key == by and need not in present:
                raise _fail(spec, where, f"key {by} is resolved through {need}, which is not "
                                         "in DATA_DIR")
        path = Path(table.file)
        if not path.is_file():
            raise _fail(spec, where, f"file {path} not found")
        try:
            header = read_header(path)
            resolve_columns(path, header, columns)
            carry = sorted(carried(table, {h.strip().lower() for h in header}))
            next(iter_batches(path, {**columns, **{c: "int" for c in carry}}, 1 << 20,
                              table.multiline), None)
        except ValueError as e:
            raise _fail(spec, where, str(e)) from e
        out[table.name] = {**fingerprint(path, memo_dir), "extra": {
            "entry": raw, "source": table.source, "carry": carry, "keys": lookup,
            "code": _code_hash()}}
    return out


def is_set(spec_path) -> bool:
    """EXTRA_TABLES names a file ("" is none; Config keeps it as Path(""), which prints ".")."""
    return str(spec_path or "") not in ("", ".")


@functools.lru_cache(maxsize=1)
def _code_hash() -> str:
    """This module's and the lookup job's source: what turns a user row into events."""
    root = Path(__file__).resolve().parents[2]
    h = hashlib.blake2b(digest_size=8)
    for rel in ("trajectory/events/extra_tables.py", "jobs/extra_keys.py"):
        h.update((root / rel).read_bytes())
    return h.hexdigest()


def carried(table: UserTable, header: set) -> set:
    """Id columns the file has and the events carry besides the key: a subject-keyed table's
    hadm_id and stay_id, a hadm-keyed table's stay_id. A stay-keyed table takes its hadm_id
    from icustays, and the key always decides the patient."""
    want = {"subject_id": ("hadm_id", "stay_id"), "hadm_id": ("stay_id",), "stay_id": ()}
    return {c for c in want[table.key] if c in header}


@functools.lru_cache(maxsize=8)
def _tables(snapshot: str) -> tuple[UserTable, ...]:
    out = []
    for name, fp in json.loads(snapshot):
        x = fp["extra"]
        # `file` is already resolved: the entry is parsed against the file's own folder
        entry = {**x["entry"], "file": fp["path"]}
        table, columns = parse_entry(entry, x["source"] - len(TABLES) - 1, Path(fp["path"]),
                                     x["source"])
        out.append(dataclasses.replace(table, columns={**columns,
                                                       **{c: "int" for c in x["carry"]}}))
    return tuple(sorted(out, key=lambda t: t.source))


def user_tables(plan) -> tuple[UserTable, ...]:
    """The plan's user tables (plan.tables entries with `extra`), in source order."""
    mine = sorted((n, fp) for n, fp in plan.tables.items() if "extra" in fp)
    return _tables(json.dumps(mine, sort_keys=True)) if mine else ()


def all_tables(plan) -> tuple[Table, ...]:
    """Built-in tables, then the user tables: the fixed order records are assembled in."""
    return (*TABLES, *user_tables(plan))


def table_of(plan, name: str) -> Table:
    if name in TABLES_BY_NAME:
        return TABLES_BY_NAME[name]
    for t in user_tables(plan):
        if t.name == name:
            return t
    raise ValueError(f"table {name!r} is neither built in nor in the plan's EXTRA_TABLES")


def source_names(plan) -> dict[int, str]:
    """source id -> table name, built-in and user tables."""
    return {**{i: n for n, i in SOURCE_ID.items()}, **{t.source: t.name for t in user_tables(plan)}}


def streams(plan) -> dict:
    """(source, kind) -> (table, event) of the user tables (assemble's names for the rest)."""
    return {(t.source, k): (t.name, e.name) for t in user_tables(plan)
            for k, e in enumerate(t.events)}


# ---- key resolution (partition stage) -------------------------------------------------------

@dataclass(frozen=True)
class Keys:
    """What resolves a user table's key, from the whole input (jobs/extra_keys.py)."""
    patients: pl.DataFrame  # subject_id, __birth
    admissions: pl.DataFrame  # hadm_id, subject_id, __admission_start, __admission_end
    stays: pl.DataFrame  # stay_id, subject_id, hadm_id, __stay_start, __stay_end


def key_frames(patients: pl.DataFrame, admissions: pl.DataFrame,
               stays: pl.DataFrame | None) -> Keys:
    """The lookups from the raw columns of patients, admissions and icustays: one row per id
    (the first, as the build's own joins keep), so a join never multiplies a user row."""
    p = (PREPARE["patients"](patients.filter(pl.col("subject_id").is_not_null()))
         .select("subject_id", pl.col("birth_time").alias("__birth"))
         .unique("subject_id", keep="first", maintain_order=True).sort("subject_id"))
    a = (admissions.filter(pl.col("hadm_id").is_not_null())
         .select("hadm_id", "subject_id", pl.col("admittime").alias("__admission_start"),
                 pl.col("dischtime").alias("__admission_end"))
         .unique("hadm_id", keep="first", maintain_order=True).sort("hadm_id"))
    schema = {"stay_id": pl.Int64, "subject_id": pl.Int64, "hadm_id": pl.Int64,
              "intime": pl.Datetime("ms"), "outtime": pl.Datetime("ms")}
    s = (stays if stays is not None else pl.DataFrame(schema=schema))
    s = (s.filter(pl.col("stay_id").is_not_null())
         .select("stay_id", "subject_id", "hadm_id", pl.col("intime").alias("__stay_start"),
                 pl.col("outtime").alias("__stay_end"))
         .unique("stay_id", keep="first", maintain_order=True).sort("stay_id"))
    return Keys(p, a, s)


def resolve(table: UserTable, df: pl.DataFrame, keys: Keys) -> tuple[pl.DataFrame, dict]:
    """Rows of a user table -> (the rows whose key matched, with subject_id, hadm_id,
    stay_id and the anchor times filled from the key; {reason: rows} of the others). Row
    order is kept. Reasons, in the order checked: a null key (`null_<key>`), an unknown
    admission or stay (`hadm_not_found`, `stay_not_found`), a subject not in patients
    (`subject_not_in_patients`, as the build names it)."""
    key = table.key
    n = df.height
    dropped = {}
    ok = df[key].is_not_null()
    if not ok.all():
        dropped[f"null_{key}"] = int((~ok).sum())
    df = df.filter(ok)
    if key == "hadm_id":
        df = df.drop("subject_id", strict=False).join(
            keys.admissions, on="hadm_id", how="left", maintain_order="left")
    elif key == "stay_id":
        df = df.drop("subject_id", "hadm_id", strict=False).join(
            keys.stays, on="stay_id", how="left", maintain_order="left").join(
            keys.admissions.drop("subject_id"), on="hadm_id", how="left", maintain_order="left")
    if key != "subject_id":
        found = df["subject_id"].is_not_null()
        if not found.all():
            dropped[UNMATCHED[key]] = int((~found).sum())
            df = df.filter(found)
    df = df.join(keys.patients, on="subject_id", how="left", maintain_order="left")
    known = df["__birth"].is_not_null()
    if not known.all():
        dropped["subject_not_in_patients"] = int((~known).sum())
        df = df.filter(known)
    if df.height + sum(dropped.values()) != n:  # a join multiplied rows: never with unique keys
        raise RuntimeError(f"{table.name}: {n} rows resolved into {df.height} + {dropped}")
    return df, dropped


def map_user_rows(table: UserTable, df: pl.DataFrame, book, keys: Keys):
    """map_rows for a user table: the key resolved first, the unmatched rows counted as
    dropped by every event of the table (rows read = written + dropped, per event)."""
    matched, dropped = resolve(table, df, keys)
    ev, st, counts = map_rows(table, matched, book)
    for c in counts.values():
        c["rows"] += sum(dropped.values())
        for reason, n in dropped.items():
            c["dropped"][reason] = c["dropped"].get(reason, 0) + n
    return ev, st, counts


# ---- the match report (finalize) --------------------------------------------------------------

def match_reasons(key: str) -> tuple[str, ...]:
    return (f"null_{key}", *((UNMATCHED[key],) if key in UNMATCHED else ()),
            "subject_not_in_patients")


def match_report(plan, tables_report: dict) -> dict:
    """Per user table: rows read, rows whose key matched a patient, the others by reason
    (from qc_report's counts of its first event: every event of a row shares its match)."""
    out = {}
    for t in user_tables(plan):
        rep = tables_report.get(t.name)
        if rep is None:
            continue
        first = rep["events"].get(t.events[0].name, {"dropped": {}})  # {}: an empty file
        unmatched = {r: first["dropped"][r] for r in match_reasons(t.key)
                     if first["dropped"].get(r)}
        out[t.name] = {"file": t.file, "key": t.key, "source": t.source,
                       "rows_read": rep["rows_read"],
                       "matched": rep["rows_read"] - sum(unmatched.values()),
                       "unmatched": unmatched,
                       "events_written": {e: c["written"] for e, c in rep["events"].items()}}
    return out


def describe(report: dict) -> list[str]:
    """Build-summary lines of the match report."""
    lines = []
    for name, r in report.items():
        why = ", ".join(f"{k} {v:,}" for k, v in r["unmatched"].items()) or "none"
        lines.append(f"extra table {name} (key {r['key']}): {r['rows_read']:,} rows read, "
                     f"{r['matched']:,} matched; unmatched: {why}; events written "
                     + ", ".join(f"{e} {n:,}" for e, n in r["events_written"].items()))
    return lines
