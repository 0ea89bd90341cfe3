"""Label files in the MEDS label schema (the tasks command's, or ACES' over a MEDS export),
read and checked once: every error names the file and the column."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl


# MEDS label value columns -> the polars dtypes they may have
LABEL_COLUMNS = {"boolean_value": "boolean", "integer_value": "integer",
                 "float_value": "float", "categorical_value": "string"}
LABEL_IDS = ("hadm_id", "stay_id")  # optional id columns carried into items


def read_labels(path) -> dict:
    """A MEDS label parquet, validated, as numpy arrays: ``subject_id`` int64,
    ``prediction_time`` int64 epoch seconds (floored), ``value`` (bool / int64 / float32 /
    int64 category index), ``column`` (the value column used), ``classes`` (categories, or
    None), and ``hadm_id``/``stay_id`` int64 (-1 when null) when present. Every error names
    the file and the column."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"labels file {path} does not exist")
    try:
        df = pl.read_parquet(path)
    except Exception as e:  # not parquet, truncated, ...
        raise ValueError(f"labels file {path}: not a readable parquet file ({e})") from e
    for col in ("subject_id", "prediction_time"):
        if col not in df.columns:
            raise ValueError(f"labels file {path}: no column {col!r} (MEDS label schema: "
                             f"subject_id, prediction_time, one of {list(LABEL_COLUMNS)}); "
                             f"it has {df.columns}")
        if df[col].null_count():
            raise ValueError(f"labels file {path}: column {col!r} has "
                             f"{df[col].null_count()} null(s)")
    if not df["subject_id"].dtype.is_integer():
        raise ValueError(f"labels file {path}: column 'subject_id' must be an integer, "
                         f"got {df['subject_id'].dtype}")
    if not isinstance(df["prediction_time"].dtype, pl.Datetime):
        raise ValueError(f"labels file {path}: column 'prediction_time' must be a datetime "
                         f"(timestamp[us] in MEDS), got {df['prediction_time'].dtype}")
    present = [c for c in LABEL_COLUMNS if c in df.columns and df[c].null_count() < df.height]
    if df.height and len(present) != 1:
        have = [c for c in LABEL_COLUMNS if c in df.columns]
        raise ValueError(f"labels file {path}: expected exactly one label column with values "
                         f"among {list(LABEL_COLUMNS)}, found {present or have or 'none'}")
    if not df.height:
        present = [next((c for c in LABEL_COLUMNS if c in df.columns), "boolean_value")]
    col = present[0]
    values = df[col] if col in df.columns else pl.Series(col, [], dtype=pl.Boolean)
    if values.null_count():
        raise ValueError(f"labels file {path}: column {col!r} has {values.null_count()} "
                         "null(s) among its values")
    kind, dt = LABEL_COLUMNS[col], values.dtype
    ok = {"boolean": dt == pl.Boolean, "integer": dt.is_integer(), "float": dt.is_float(),
          "string": dt in (pl.String, pl.Categorical) or isinstance(dt, pl.Enum)}[kind]
    if not ok:
        raise ValueError(f"labels file {path}: column {col!r} must be {kind}, got {dt}")
    classes = None
    if kind == "boolean":
        value = values.to_numpy().astype(bool)
    elif kind == "integer":
        value = values.to_numpy().astype(np.int64)
    elif kind == "float":
        value = values.to_numpy().astype(np.float32)
    else:
        strings = values.cast(pl.String)
        classes = sorted(strings.unique().to_list())
        value = np.searchsorted(np.asarray(classes, dtype=object), strings.to_numpy()
                                ).astype(np.int64)
    # epoch seconds, floored: events are whole seconds, so time <= floor(t) <=> time <= t
    secs = df["prediction_time"].dt.epoch("us").to_numpy().astype(np.int64) // 1_000_000
    out = {"subject_id": df["subject_id"].to_numpy().astype(np.int64), "prediction_time": secs,
           "value": value, "column": col, "classes": classes}
    ids = path.with_name(path.name.replace(".parquet", ".ids.parquet"))
    if ids.exists() and not any(c in df.columns for c in LABEL_IDS):
        # the tasks command's sidecar: same rows, same order (a MEDS label file has no room)
        side = pl.read_parquet(ids)
        if (side.height != df.height or not side["subject_id"].equals(df["subject_id"])
                or not side["prediction_time"].equals(df["prediction_time"])):
            raise ValueError(f"{ids}: its rows do not match {path} (rerun the tasks command)")
        df = df.with_columns(side.select([c for c in LABEL_IDS if c in side.columns]))
    for c in LABEL_IDS:
        if c in df.columns:
            if not df[c].dtype.is_integer() and df[c].dtype != pl.Null:
                raise ValueError(f"labels file {path}: column {c!r} must be an integer, "
                                 f"got {df[c].dtype}")
            out[c] = df[c].cast(pl.Int64).fill_null(-1).to_numpy().astype(np.int64)
    return out
