"""Tabular export of the per-stay windows: one parquet row per (grid, window), one column per
concept x statistic, for scikit-learn-style models. Streams patient by patient and writes a
row group every `batch_rows` rows, so memory is one batch whatever the version's size.

Which values a window counts is the `rule`, said in the file's schema metadata
(`window_rule`, `window_rule_text`) and in the result: "charttime" (default), every value
charted in it, whenever resulted: the rows as the record stores them, as MEDS tools
aggregate; "known", only the values charted in it and known by its end, recounted from the
record's events (grids.recount_rows), so no row holds anything resulted after it ended. There
is no prediction time here: a task-cut sample (trajectory.torch) recounts its rows from what
was known at its own."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..cleaning.flags import rule_mask
from ..record import CUT_RULES
from ..windows.grids import recount_rows
from .store import open_version

RULE_TEXT = {
    "charttime": "window rule charttime: a window counts every value charted in it, whenever "
                 "it was resulted (a lab drawn in the window and resulted after a prediction "
                 "time is in it; TrajectoryDataset(task=...) recounts a sample's rows from "
                 "what was known at its prediction time)",
    "known": "window rule known: a window counts the values charted in it and known by its "
             "end (no row holds a value resulted after it ended; with hourly windows most "
             "labs are resulted after their hour and count in no row)",
}


def export_windows(version_dir, out_path=None, batch_rows: int = 65536,
                   rule: str = "charttime") -> dict:
    if rule not in CUT_RULES:
        raise ValueError(f"export windows: rule must be one of {CUT_RULES}, got {rule!r}")
    v = open_version(version_dir)
    concepts, stats = v.meta["concepts"], v.meta["windows"]["stats"]
    exclude = rule_mask(v.meta["windows"]["exclude"])
    n_f, n_s = len(concepts), len(stats)
    count = stats.index("count")
    out = Path(out_path) if out_path else Path(version_dir) / "windows.parquet"
    fields = [("subject_id", pa.int64()), ("kind", pa.string()), ("id", pa.int64()),
              ("window", pa.int32()), ("start", pa.int64())]
    fields += [(f"{c}__{s}", pa.float32()) for c in concepts for s in stats]
    schema = pa.schema(fields, metadata={"window_rule": rule, "window_rule_text": RULE_TEXT[rule]})
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    keys, blocks, buffered, total = [], [], 0, 0

    def flush(writer):
        nonlocal keys, blocks, buffered
        if not blocks:
            return
        data = np.concatenate(blocks).reshape(buffered, n_f * n_s)
        cols = [pa.array(np.concatenate([k[i] for k in keys])) for i in range(5)]
        cols += [pa.array(data[:, j]) for j in range(n_f * n_s)]
        writer.write_table(pa.Table.from_arrays(cols, schema=schema))
        keys, blocks, buffered = [], [], 0

    with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        for sid in v.subject_ids:
            raw = v.raw(sid)
            ev = raw["events"]
            for w in raw["windows"]:
                t = w["shape"][0]
                block = np.full((t, n_f, n_s), np.nan, np.float32)
                block[:, :, count] = 0  # a concept never seen has count 0, not NaN
                block[:, w["features"], :] = w["data"] if rule == "charttime" else \
                    recount_rows(w, ev["time"], ev["time"] + ev["known_delta"], ev["concept"],
                                 ev["concept_value"], ev["flags"], exclude, t)
                blocks.append(block)
                keys.append((np.full(t, sid, np.int64), np.full(t, w["kind"], object),
                             np.full(t, w["id"], np.int64), np.arange(t, dtype=np.int32),
                             w["start"] + w["step"] * np.arange(t, dtype=np.int64)))
                buffered += t
                total += t
                if buffered >= batch_rows:
                    flush(writer)
        flush(writer)
    os.replace(tmp, out)
    return {"path": str(out), "rows": total, "columns": len(fields), "rule": rule,
            "rule_text": RULE_TEXT[rule]}
