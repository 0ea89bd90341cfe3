"""Scale an existing MIMIC-IV folder K times: fresh ids, shifted times, same schemas.

    python -m trajectory.replicate SRC DST --times 20 [--no-notes] [--heavy-events 2000000]

Copy k (0..K-1) adds k*10^8 to every subject_id, hadm_id and stay_id (real ids are 8 digits,
so copies never collide), rewrites the subject prefix of string ids built from it (emar_id,
poe_id, note_id: "<subject_id>-<seq>"), and shifts every timestamp by k*7 days so copies do not
line up to the second. Dictionaries (d_*) and id-less tables are copied once. Streams one copy
of one table at a time: memory is one source table, whatever K.

A source without a note/ module (the shared demo) gets one first, MIMIC-IV-Note-shaped
(trajectory.demo_notes: real columns, rates, lengths), scaled with the rest; --no-notes skips
it. --heavy-events N adds one patient with a months-long ICU stay charted every minute, N
chartevents rows (MIMIC-IV's heaviest patients have millions of events), to find out whether a
build and a reader stay within their budgets for one very large record.
"""
from __future__ import annotations

import argparse
import io
import multiprocessing as mp
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from datetime import timedelta
from pathlib import Path

import numpy as np
from isal import igzip

import polars as pl

from .demo_notes import note_tables, write_notes

ID_STEP = 100_000_000
SHIFT_DAYS = 7
ID_COLUMNS = ("subject_id", "hadm_id", "stay_id")
PREFIXED_IDS = ("emar_id", "poe_id", "note_id", "discontinue_of_poe_id",
                "discontinued_by_poe_id")
# detail rows whose field_value is a prefixed id (radiology_detail's links between notes)
PREFIXED_FIELDS = ("parent_note_id", "addendum_note_id")


def _is_time(name: str) -> bool:
    return name.endswith(("time", "date")) or name in ("dod", "intime", "outtime")


def copy_frame(df: pl.DataFrame, k: int) -> pl.DataFrame:
    """The k-th copy of a table read with every column as text."""
    if k == 0:
        return df
    exprs = []
    lower = {c.lower(): c for c in df.columns}
    for name, col in lower.items():
        if name in ID_COLUMNS:
            exprs.append((pl.col(col).cast(pl.Int64) + k * ID_STEP).cast(pl.String).alias(col))
        elif name in PREFIXED_IDS and "subject_id" in lower:
            sid = (pl.col(lower["subject_id"]).cast(pl.Int64) + k * ID_STEP).cast(pl.String)
            rest = pl.col(col).str.replace(r"^\d+", "")
            exprs.append(pl.when(pl.col(col).is_null()).then(None)
                         .otherwise(pl.concat_str([sid, rest])).alias(col))
        elif name == "field_value" and "field_name" in lower:
            v = pl.col(col)
            shifted = pl.concat_str([(v.str.extract(r"^(\d+)").cast(pl.Int64) + k * ID_STEP)
                                     .cast(pl.String), v.str.replace(r"^\d+", "")])
            exprs.append(pl.when(pl.col(lower["field_name"]).is_in(PREFIXED_FIELDS))
                         .then(shifted).otherwise(v).alias(col))
        elif _is_time(name):
            t = pl.col(col)
            full = (t.str.to_datetime("%Y-%m-%d %H:%M:%S", strict=False)
                    + pl.duration(days=k * SHIFT_DAYS)).dt.strftime("%Y-%m-%d %H:%M:%S")
            day = (t.str.to_date("%Y-%m-%d", strict=False)
                   + pl.duration(days=k * SHIFT_DAYS)).dt.strftime("%Y-%m-%d")
            exprs.append(pl.when(t.str.len_chars() == 10).then(day).otherwise(full)
                         .fill_null(t).alias(col))
    return df.with_columns(exprs)


def typed(df: pl.DataFrame) -> pl.DataFrame:
    """`df` (all text) with its id columns as integers and each time column as a datetime or
    date, where every value round-trips exactly; `copy_typed` then shifts them with integer
    adds and the CSV writer formats them: ~5x faster per copy than `copy_frame`'s parse of
    every copy (chartevents of the demo: 1.1 s a copy, 800 copies). A column that does not
    round-trip stays text and is copied by `copy_frame`'s rules."""
    out = {}
    lower = {c.lower(): c for c in df.columns}
    for name, col in lower.items():
        s = df[col]
        if name in ID_COLUMNS:
            cand = s.cast(pl.Int64, strict=False)
            back = cand.cast(pl.String)
        elif _is_time(name):
            n = s.str.len_chars()
            if (n.drop_nulls() == 10).all():
                cand = s.str.to_date("%Y-%m-%d", strict=False)
                back = cand.dt.strftime("%Y-%m-%d")
            else:
                cand = s.str.to_datetime("%Y-%m-%d %H:%M:%S", strict=False)
                back = cand.dt.strftime("%Y-%m-%d %H:%M:%S")
        else:
            continue
        if back.equals(s, check_names=False, null_equal=True):
            out[col] = cand
    return df.with_columns(**out) if out else df


def copy_typed(df: pl.DataFrame, k: int) -> pl.DataFrame:
    """The k-th copy of a `typed` frame: the rules of `copy_frame`, typed columns shifted."""
    if k == 0:
        return df
    text = [c for c in df.columns if df.schema[c] == pl.String]
    # the subject id goes along as text: prefixed ids (emar_id, note_id) are rebuilt from it
    sid = next((c for c in df.columns if c.lower() == "subject_id"), None)
    helper = [pl.col(sid).cast(pl.String)] if sid is not None and sid not in text else []
    rest = (copy_frame(df.select(*text, *helper), k).select(text) if text else None)
    exprs = []
    for c in df.columns:
        dtype = df.schema[c]
        if dtype == pl.Int64:
            exprs.append((pl.col(c) + k * ID_STEP).alias(c))
        elif dtype in (pl.Date, pl.Datetime("us")) or isinstance(dtype, pl.Datetime):
            exprs.append((pl.col(c) + pl.duration(days=k * SHIFT_DAYS)).alias(c))
    out = df.with_columns(exprs)
    return out.with_columns(rest) if rest is not None else out


DONE = ".replicate-done"  # written last: the tree is whole
HEAVY_SUBJECT = 90_000_001  # no copy's ids collide: copy k's are k*10^8 + 8-digit real ids
HEAVY_START = "2150-01-01 08:00:00"
# Minute-by-minute monitor values of an arterial line and pulse oximetry (itemid, unit, level,
# minute-to-minute spread, lowest, highest): a months-long ICU stay's charted vitals.
HEAVY_ITEMS = ((220045, "bpm", 85, 2.0, 30, 180), (220210, "insp/min", 18, 1.0, 6, 45),
               (220277, "%", 96, 0.5, 70, 100), (220050, "mmHg", 120, 2.5, 60, 220),
               (220051, "mmHg", 65, 1.5, 30, 120), (220052, "mmHg", 82, 1.8, 40, 150),
               (220179, "mmHg", 122, 2.5, 60, 220), (220180, "mmHg", 66, 1.5, 30, 120),
               (220181, "mmHg", 84, 1.8, 40, 150))


def heavy_patient(columns: dict[str, list[str]], n_events: int, seed: int = 0
                  ) -> dict[str, pl.DataFrame]:
    """One patient with `n_events` chartevents rows over one ICU stay (9 vitals a minute, so
    2,000,000 events are ~154 days), with the patients, admissions, icustays and transfers
    rows that make them a patient's; keyed by table path, in each source table's columns (all
    text, as replicate reads them)."""
    minutes = -(-n_events // len(HEAVY_ITEMS))
    t0 = pl.Series([HEAVY_START]).str.to_datetime("%Y-%m-%d %H:%M:%S")[0]
    fmt = "%Y-%m-%d %H:%M:%S"
    intime = t0 + timedelta(hours=2)
    outtime = intime + timedelta(minutes=minutes + 1)
    disch = outtime + timedelta(days=2)
    sid, ids = str(HEAVY_SUBJECT), {"subject_id": str(HEAVY_SUBJECT),
                                   "hadm_id": str(HEAVY_SUBJECT), "stay_id": str(HEAVY_SUBJECT)}
    r = np.random.default_rng([int(seed), 26])
    items = np.tile(np.arange(len(HEAVY_ITEMS)), minutes)[:n_events]
    minute = np.repeat(np.arange(minutes), len(HEAVY_ITEMS))[:n_events]
    level = np.array([x[2] for x in HEAVY_ITEMS], float)
    spread = np.array([x[3] for x in HEAVY_ITEMS], float)
    walk = np.cumsum(r.normal(0, 1, (minutes, len(HEAVY_ITEMS))) * spread * 0.3, axis=0)
    walk -= np.linspace(0, 1, minutes)[:, None] * walk[-1]  # ends where it began
    noise = r.normal(0, 1, (minutes, len(HEAVY_ITEMS))) * spread
    value = np.round(np.clip(level + walk + noise, [x[4] for x in HEAVY_ITEMS],
                             [x[5] for x in HEAVY_ITEMS]))[minute, items]
    chart = pl.Series((intime + timedelta(minutes=1)).timestamp() * 1000
                      + minute.astype(np.int64) * 60_000).cast(pl.Datetime("ms"))
    store = chart + pl.Series(r.integers(0, 6, n_events) * 60_000).cast(pl.Duration("ms"))
    text = pl.Series(value).cast(pl.Int64).cast(pl.String)
    rows = {
        "hosp/patients.csv.gz": {"subject_id": sid, "gender": "F", "anchor_age": "67",
                                 "anchor_year": "2150", "anchor_year_group": "2008 - 2010"},
        "hosp/admissions.csv.gz": {
            **ids, "admittime": t0.strftime(fmt), "dischtime": disch.strftime(fmt),
            "admission_type": "EW EMER.", "admission_location": "EMERGENCY ROOM",
            "discharge_location": "CHRONIC/LONG TERM ACUTE CARE", "insurance": "Medicare",
            "language": "ENGLISH", "marital_status": "MARRIED", "race": "WHITE",
            "hospital_expire_flag": "0"},
        "icu/icustays.csv.gz": {
            **ids, "first_careunit": "Medical Intensive Care Unit (MICU)",
            "last_careunit": "Medical Intensive Care Unit (MICU)",
            "intime": intime.strftime(fmt), "outtime": outtime.strftime(fmt),
            "los": f"{(outtime - intime).total_seconds() / 86400:.6f}"},
    }
    out = {t: pl.DataFrame({c: [row.get(c)] for c in columns[t]}, schema={
        c: pl.String for c in columns[t]}) for t, row in rows.items() if t in columns}
    if "hosp/transfers.csv.gz" in columns:
        out["hosp/transfers.csv.gz"] = pl.DataFrame({
            "subject_id": [sid] * 2, "hadm_id": [sid] * 2,
            "transfer_id": [str(HEAVY_SUBJECT), str(HEAVY_SUBJECT + 1)],
            "eventtype": ["admit", "discharge"],
            "careunit": ["Medical Intensive Care Unit (MICU)", None],
            "intime": [intime.strftime(fmt), disch.strftime(fmt)],
            "outtime": [outtime.strftime(fmt), None]}).select(columns["hosp/transfers.csv.gz"])
    unit = pl.Series([x[1] for x in HEAVY_ITEMS])
    item = pl.Series([str(x[0]) for x in HEAVY_ITEMS])
    chartevents = pl.DataFrame({
        **{k: pl.repeat(v, n_events, eager=True) for k, v in ids.items()},
        "caregiver_id": pl.repeat(None, n_events, dtype=pl.String, eager=True),
        "charttime": chart.dt.strftime(fmt), "storetime": store.dt.strftime(fmt),
        "itemid": item.gather(items), "value": text, "valuenum": text,
        "valueuom": unit.gather(items), "warning": pl.repeat("0", n_events, eager=True)})
    out["icu/chartevents.csv.gz"] = chartevents.select(columns["icu/chartevents.csv.gz"])
    return out


def _sources(src: Path, scratch: Path, notes: bool, seed: int) -> list[Path]:
    """`src`'s tables, plus a generated note/ module under `scratch` when `src` has none."""
    paths = sorted(src.glob("*/*.csv.gz"))
    if notes and not (src / "note").is_dir():
        write_notes(note_tables(src, seed), scratch)
        paths += sorted(scratch.glob("note/*.csv.gz"))
    return paths


_FRAME = None  # the table a formatting process copies (set once per process)


def _set_frame(df: pl.DataFrame) -> None:
    global _FRAME
    _FRAME = df


def _copy_csv(k: int, df: pl.DataFrame | None = None) -> bytes:
    buf = io.BytesIO()
    copy_typed(_FRAME if df is None else df, k).write_csv(
        buf, include_header=k == 0, null_value="", datetime_format="%Y-%m-%d %H:%M:%S",
        date_format="%Y-%m-%d")
    return buf.getvalue()


def _copies(df: pl.DataFrame, times: int, workers: int):
    """The CSV text of copies 0..times-1, in order."""
    if workers <= 1 or times < 4:
        yield from (_copy_csv(k, df) for k in range(times))
        return
    ctx = mp.get_context("spawn")  # polars is not fork-safe
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_set_frame,
                             initargs=(df,)) as ex:
        yield from ex.map(_copy_csv, range(times), chunksize=1)


def replicate(src: Path, dst: Path, times: int, notes: bool = True, heavy_events: int = 0,
              seed: int = 0, workers: int = 1) -> Path:
    src, dst = Path(src), Path(dst)
    if times < 1:
        raise ValueError(f"--times must be >= 1, got {times}")
    if heavy_events < 0:
        raise ValueError(f"--heavy-events must be >= 0, got {heavy_events}")
    scratch = dst / ".replicate-notes"
    try:
        paths = _sources(src, scratch, notes, seed)
        heavy = {}
        if heavy_events:
            columns = {f"{p.parent.name}/{p.name}": pl.read_csv(p, n_rows=0).columns
                       for p in paths}
            if "icu/chartevents.csv.gz" not in columns:
                raise ValueError(f"{src}: no icu/chartevents.csv.gz for --heavy-events")
            heavy = heavy_patient(columns, heavy_events, seed)
        for path in paths:
            name = f"{path.parent.name}/{path.name}"
            out = dst / name
            out.parent.mkdir(parents=True, exist_ok=True)
            df = pl.read_csv(path, infer_schema=False)
            if path.name.startswith("d_") or "subject_id" not in {c.lower() for c in df.columns}:
                shutil.copyfile(path, out)  # small, and the marker comes last
                continue
            # ISA-L's level 1 deflate: as small as zlib's level 1 at ~8x its speed (chartevents
            # of demo x800 is ~47 GB of text). One gzip member, mtime 0: the same source, K
            # and seed give the same bytes. Copies are formatted by `workers` processes, in
            # order, and compressed here.
            # written under a temporary name: a killed run leaves no table that looks whole
            tmp = out.with_name(f".{out.name}.tmp")
            with open(tmp, "wb") as raw, igzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1,
                                                        mtime=0) as f:
                for text in _copies(typed(df), times, workers):
                    f.write(text)
                if name in heavy:
                    buf = io.BytesIO()
                    heavy[name].write_csv(buf, include_header=False, null_value="")
                    f.write(buf.getvalue())
            os.replace(tmp, out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    (dst / DONE).write_text(f"{times} copies of {src}, heavy_events={heavy_events}, "
                            f"notes={notes}, seed={seed}\n")
    return dst


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="MIMIC-IV root with hosp/, icu/ (note/)")
    p.add_argument("dst", help="output root")
    p.add_argument("--times", type=int, required=True, help="number of copies K")
    p.add_argument("--no-notes", action="store_true",
                   help="no generated note/ module for a source without one")
    p.add_argument("--heavy-events", type=int, default=0, metavar="N",
                   help="add one patient with N chartevents rows (one long ICU stay)")
    p.add_argument("--seed", type=int, default=0, help="of the generated notes and patient")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="processes formatting copies (default: every core)")
    args = p.parse_args(argv)
    replicate(Path(args.src), Path(args.dst), args.times, notes=not args.no_notes,
              heavy_events=args.heavy_events, seed=args.seed, workers=args.workers)
    print(f"wrote {args.times} copies of {args.src} to {args.dst}"
          + (f", with one patient of {args.heavy_events:,} events" if args.heavy_events else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
