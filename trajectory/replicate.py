"""Scale an existing MIMIC-IV folder K times: fresh ids, shifted times, same schemas.

    python -m trajectory.replicate SRC DST --times 20

Copy k (0..K-1) adds k*10^8 to every subject_id, hadm_id and stay_id (real ids are 8 digits,
so copies never collide), rewrites the subject prefix of string ids built from it (emar_id,
poe_id, note_id: "<subject_id>-<seq>"), and shifts every timestamp by k*7 days so copies do not
line up to the second. Dictionaries (d_*) and id-less tables are copied once. Streams one copy
of one table at a time: memory is one source table, whatever K.
"""
from __future__ import annotations

import argparse
import gzip
import io
import shutil
from pathlib import Path

import polars as pl

ID_STEP = 100_000_000
SHIFT_DAYS = 7
ID_COLUMNS = ("subject_id", "hadm_id", "stay_id")
PREFIXED_IDS = ("emar_id", "poe_id", "note_id", "discontinue_of_poe_id",
                "discontinued_by_poe_id")


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
        elif _is_time(name):
            t = pl.col(col)
            full = (t.str.to_datetime("%Y-%m-%d %H:%M:%S", strict=False)
                    + pl.duration(days=k * SHIFT_DAYS)).dt.strftime("%Y-%m-%d %H:%M:%S")
            day = (t.str.to_date("%Y-%m-%d", strict=False)
                   + pl.duration(days=k * SHIFT_DAYS)).dt.strftime("%Y-%m-%d")
            exprs.append(pl.when(t.str.len_chars() == 10).then(day).otherwise(full)
                         .fill_null(t).alias(col))
    return df.with_columns(exprs)


def replicate(src: Path, dst: Path, times: int) -> Path:
    src, dst = Path(src), Path(dst)
    if times < 1:
        raise ValueError(f"--times must be >= 1, got {times}")
    for path in sorted(src.glob("*/*.csv.gz")):
        out = dst / path.parent.name / path.name
        out.parent.mkdir(parents=True, exist_ok=True)
        df = pl.read_csv(path, infer_schema=False)
        if path.name.startswith("d_") or "subject_id" not in {c.lower() for c in df.columns}:
            shutil.copyfile(path, out)
            continue
        with gzip.open(out, "wb", compresslevel=1) as f:
            for k in range(times):
                buf = io.BytesIO()
                copy_frame(df, k).write_csv(buf, include_header=k == 0, null_value="")
                f.write(buf.getvalue())
    return dst


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="MIMIC-IV root with hosp/, icu/ (note/)")
    p.add_argument("dst", help="output root")
    p.add_argument("--times", type=int, required=True, help="number of copies K")
    args = p.parse_args(argv)
    replicate(Path(args.src), Path(args.dst), args.times)
    print(f"wrote {args.times} copies of {args.src} to {args.dst}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
