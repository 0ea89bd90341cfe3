"""`tasks`: prediction-task labels from a finished version (never the raw input).

    python build_patient_files.py tasks trajectories/v1 [--task NAME ...]

One unit per shard (the manifest's `shard` column): read that shard's records, only their
headers (`trajectory.use.tasks.read_header`), label every patient for every asked task, and write
one part per task, `tasks/.work/<task>/<shard>.parquet`. The merge then sorts each task's
parts into `tasks/<name>.parquet` (MEDS label schema) and writes `tasks/<name>.json`
(definition, parameters, cohort funnel, the version's config hash). A unit holds one shard's
label rows; the merge holds one task's label rows (a few tens of bytes per sample: full
MIMIC-IV's ~550k admissions are ~15 MB), never records. The records, manifest and
dataset.json are only read. Both files are written under temporary names and renamed, carry
no time of the run, and come out byte-identical on a rerun, with any runner or worker count.
"""
from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import zstandard

from trajectory.atomic import atomic_write_json, atomic_write_parquet, checksum_file
from trajectory.use.store import RecordReader
from trajectory.use.tasks import (CANDIDATE, EVENT_TIMES, Task, funnel, read_header, resolve,
                                  timeline)

from .runners import IN_PROCESS_BELOW, version_runner

STAGE = "tasks"
WORK = ".work"  # under VERSION_DIR/tasks/; removed once the merge has written every task
# row tuple position of each id column (trajectory.use.tasks: subject, time, label, hadm, stay)
ID_POSITION = {"hadm_id": 3, "stay_id": 4}


@dataclass(frozen=True)
class TasksJob:
    """What every unit of one `tasks` run shares (the runners hand it to each unit as `cfg`)."""
    version_dir: Path
    tasks: tuple[str, ...]

    @property
    def work(self) -> Path:
        return self.version_dir / "tasks" / WORK


def part_path(job: TasksJob, task: str, shard: int) -> Path:
    return job.work / task / f"{shard:05d}.parquet"


def label_frame(task: Task, rows: list[tuple]) -> pl.DataFrame:
    """Label rows as a frame in the MEDS label schema: subject_id int64, prediction_time
    timestamp[us] (naive, MIMIC's shifted calendar), the value column, then the task's id
    columns (int64, null where the source has none)."""
    cols = list(zip(*rows)) if rows else [()] * 5
    data = {"subject_id": pl.Series(cols[0], dtype=pl.Int64),
            "prediction_time": (pl.Series(cols[1], dtype=pl.Int64) * 1_000_000)
            .cast(pl.Datetime("us")),
            task.value_column: pl.Series(cols[2], dtype=pl.Boolean)}
    for c in task.id_columns:
        data[c] = pl.Series(cols[ID_POSITION[c]], dtype=pl.Int64)
    return pl.DataFrame(data)


def sort_key(task: Task) -> list[str]:
    """subject_id, prediction_time, then the task's own id (stay_id for ICU tasks, hadm_id
    for readmission): a total order, so the file's bytes do not depend on the shards."""
    return ["subject_id", "prediction_time", *reversed(task.id_columns)]


def run(shard: int, cfg: TasksJob) -> dict:
    """Label one shard's patients for `cfg.tasks`; write one part per task; return the
    shard's funnel counts. `cfg` is the TasksJob (the name is the runners' convention)."""
    job = cfg
    tasks = resolve(job.tasks)
    m = (pl.scan_parquet(job.version_dir / "manifest.parquet")
         .filter(pl.col("shard") == shard)
         .select("subject_id", "path", "offset", "bytes", "last_time").collect())
    sids = m["subject_id"].to_list()
    reader = RecordReader(job.version_dir, sids, m["path"].to_list(), m["offset"].to_list(),
                          m["bytes"].to_list())
    dctx = zstandard.ZstdDecompressor()
    rows = {t.name: [] for t in tasks}
    excluded = {t.name: Counter() for t in tasks}
    candidates = Counter()
    # the manifest's last_time is the record's last event time (events are sorted by time)
    for sid, last in zip(sids, m["last_time"].to_list()):
        tl = timeline(read_header(reader.read_bytes(sid), dctx), last)
        for t in tasks:
            r, x = t.label(tl)
            rows[t.name].extend(r)
            excluded[t.name].update(x)
            candidates[t.name] += t.candidates(tl)
    out = {}
    for t in tasks:
        frame = label_frame(t, rows[t.name])
        atomic_write_parquet(frame, part_path(job, t.name, shard))
        out[t.name] = {"candidates": candidates[t.name], "excluded": dict(excluded[t.name]),
                       "samples": frame.height, "positives": int(frame[t.value_column].sum())}
    return {"shard": shard, "tasks": out}


MEDS_COLUMNS = ("subject_id", "prediction_time")


def ids_path(labels: Path) -> Path:
    """The label file's sidecar of ids: the same rows, in the same order, with hadm_id and
    stay_id. Not in the label file itself: meds' LabelSchema (0.4) allows no extra column,
    and `meds.LabelSchema.validate` rejected the file that carried them, so ACES, MEDS-Tab and
    meds-torch-data would have too."""
    return labels.with_name(labels.name.replace(".parquet", ".ids.parquet"))


def task_document(task: Task, counts: dict, meta: dict, parquet: Path) -> dict:
    """tasks/<name>.json: everything needed to read, check and cite the labels; no wall
    times, so a rerun writes the same bytes."""
    columns = {"subject_id": "int64", "prediction_time": "timestamp[us]",
               task.value_column: "bool"}
    return {
        "task": task.name, "definition": task.definition, "source": task.source,
        "candidate": CANDIDATE[task.unit], "parameters": task.params,
        "boundaries": task.boundaries, "event_times": EVENT_TIMES,
        "exclusion_order": list(task.reasons),
        "funnel": funnel(task, counts["candidates"], counts["excluded"], counts["samples"],
                         counts["positives"]),
        "columns": columns, "sorted_by": sort_key(task),
        "labels": parquet.name, "labels_checksum": checksum_file(parquet),
        "ids": ids_path(parquet).name, "ids_columns": [*MEDS_COLUMNS, *task.id_columns],
        "version": meta.get("version"), "config_hash": meta["config_hash"],
        "record_format": meta.get("record_format"), "n_patients": meta.get("n_patients"),
    }


def merge(job: TasksJob, results: list[dict], meta: dict) -> dict:
    """Every task's parts, sorted, into tasks/<name>.parquet, then tasks/<name>.json."""
    out = {}
    for task in resolve(job.tasks):
        parts = [pl.read_parquet(part_path(job, task.name, r["shard"])) for r in results]
        frame = (pl.concat(parts) if parts else label_frame(task, [])).sort(
            sort_key(task), nulls_last=True)
        path = job.version_dir / "tasks" / f"{task.name}.parquet"
        atomic_write_parquet(frame.select(*MEDS_COLUMNS, task.value_column), path)
        atomic_write_parquet(frame.select(*MEDS_COLUMNS, *task.id_columns), ids_path(path))
        counts = {"candidates": 0, "excluded": Counter(), "samples": 0, "positives": 0}
        for r in results:
            c = r["tasks"][task.name]
            counts["excluded"].update(c["excluded"])
            for k in ("candidates", "samples", "positives"):
                counts[k] += c[k]
        doc = task_document(task, counts, meta, path)
        atomic_write_json(path.with_suffix(".json"), doc)
        out[task.name] = doc["funnel"]
    return out


def run_tasks(version_dir, names=None, cfg=None, progress: bool = True,
              in_process_below: int = IN_PROCESS_BELOW) -> dict:
    """Label a finished version for `names` (all built-in tasks when empty). `cfg` (a
    config.Config) only chooses the runner, as for the build (RUNNER, MAX_CPUS, SCHEDULER,
    CLUSTER); None, or a local Dask cluster for a version of fewer than `in_process_below`
    patients, runs in this process (same bytes either way). Returns each task's funnel, the
    runner used and the wall seconds."""
    t0 = time.perf_counter()
    vdir = Path(version_dir).expanduser().resolve()
    meta_path = vdir / "dataset.json"
    if not meta_path.exists():
        raise ValueError(f"{vdir}: not a finished trajectory version (no dataset.json)")
    meta = json.loads(meta_path.read_text())
    job = TasksJob(vdir, tuple(t.name for t in resolve(names)))
    shard_col = pl.read_parquet(vdir / "manifest.parquet", columns=["shard"])["shard"]
    shards = sorted(shard_col.unique().to_list())
    runner, used = version_runner(cfg, shard_col.len(), in_process_below)
    # parts of a killed run are never merged: each run starts from an empty work dir
    shutil.rmtree(job.work, ignore_errors=True)
    with runner as r:
        results = r.map(run, shards, job, STAGE, progress)
    funnels = merge(job, results, meta)
    shutil.rmtree(job.work)
    return {"version_dir": str(vdir), "tasks": funnels, "shards": len(shards),
            "patients": shard_col.len(), "runner": used,
            "seconds": round(time.perf_counter() - t0, 2)}


def describe(result: dict) -> str:
    lines = []
    for name, f in result["tasks"].items():
        why = ", ".join(f"{r} {n:,}" for r, n in f["excluded"].items() if n) or "none"
        lines.append(f"{name}: {f['candidates']:,} candidates -> {f['samples']:,} samples "
                     f"({f['positives']:,} positive); excluded: {why}")
    lines.append(f"wrote {Path(result['version_dir']) / 'tasks'}: {len(result['tasks'])} "
                 f"task(s), {result['patients']:,} patients in {result['shards']} shards, "
                 f"{result['runner']} runner, {result['seconds']:.1f} s")
    return "\n".join(lines)
