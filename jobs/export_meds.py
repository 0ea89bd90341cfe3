"""`export meds`: a finished version as a MEDS dataset (docs/MEDS.md), never the raw input.

    python build_patient_files.py export meds trajectories/v1 meds/v1 [--codes community]

The data files are planned from the manifest first (`trajectory.use.meds.file_plan`): per split,
subjects in subject_id order, at most MEDS_SHARD_SUBJECTS subjects (the community's 1,000)
and, when set, MEDS_SHARD_MB of records a file. One unit per file: it decodes its subjects'
records (from whichever shards hold them), turns each into MEDS rows (`trajectory.use.meds`) and
writes them as row groups of at most `ROW_GROUP_ROWS` rows, so a unit holds one row group
whatever the file's size: memory is flat in the number of patients. A file goes to
`OUT_DIR/.work/<split>/<n>.parquet` under a temporary name, then a done-marker
`.work/done/<split>-<n>.json`; a rerun skips units whose marker is there. The merge renames
them to `data/<split>/<n>.parquet`, writes `metadata/codes.parquet`,
`metadata/subject_splits.parquet` and, last, `metadata/dataset.json` (an export is finished
once it exists), then removes `.work`. Nothing carries the time of the run: a rerun, any
runner or worker count, writes the same bytes.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

import config as config_module
from trajectory.atomic import atomic_write_json, tmp_name
from trajectory.use.meds import COLUMNS, CodeLookup, code_lookup, code_metadata, data_schema, \
    dataset_metadata, file_plan, patient_rows, rows_table, split_names, version_parents
from .runners import IN_PROCESS_BELOW, version_runner
from trajectory.use.store import RecordReader

STAGE = "export_meds"
WORK = ".work"
# 1M rows: ~3 MB of parquet on the demo, ~100 MB in memory: the most a unit holds at once.
# Readers take a file whole or by row group, so the group size changes nothing they see.
ROW_GROUP_ROWS = 1_000_000
SPLIT_DIRS = ("train", "tuning", "held_out")  # meds.train_split, tuning_split, held_out_split
COMPRESSION = "zstd"
# Data files: dictionary pages for every column but `time`, which is sorted per subject and
# unique-ish, so delta-encoded (as `known_time`, which stays close to it); min/max statistics on subject_id and time only (what readers
# filter on). On demo x20 this wrote 35% faster and 15% smaller than pyarrow's defaults.
WRITE_OPTIONS = {"use_dictionary": [c for c in COLUMNS if c not in ("time", "known_time")],
                 "column_encoding": {"time": "DELTA_BINARY_PACKED",
                                     "known_time": "DELTA_BINARY_PACKED"},
                 "write_statistics": ["subject_id", "time"]}


@dataclass(frozen=True)
class MedsJob:
    """What every unit of one export shares (the runners hand it to each unit as `cfg`)."""
    version_dir: Path
    out_dir: Path
    lookup: CodeLookup
    concepts: tuple[str, ...]
    files: dict  # unit ("<split>/<n>") -> (first subject_id, last subject_id, subjects)
    row_group_rows: int
    key: str  # the version's config_hash, the codes and the plan: another export's differs

    @property
    def work(self) -> Path:
        return self.out_dir / WORK


def run(unit: str, cfg: MedsJob) -> dict:
    """Write one data file; return its split, number, rows, subjects and the codes {text}
    rules made in it (`trajectory.use.meds.code_metadata`'s `written`)."""
    job = cfg
    split, number = unit.split("/")[0], int(unit.split("/")[1])
    first, last, n_subjects = job.files[unit]
    marker = job.work / "done" / f"{split}-{number}.json"
    path = job.work / split / f"{number}.parquet"
    if marker.exists():
        done = json.loads(marker.read_text())
        if done["key"] == job.key and path.exists():
            return done
    m = (pl.scan_parquet(job.version_dir / "manifest.parquet")
         .filter(pl.col("subject_id").is_between(first, last)).sort("subject_id")
         .select("subject_id", "path", "offset", "bytes").collect())
    m = m.filter(pl.Series(split_names(m["subject_id"].to_numpy()) == split))
    if m.height != n_subjects:
        raise ValueError(f"{job.version_dir / 'manifest.parquet'}: {m.height} subjects of "
                         f"split {split} in [{first}, {last}], the plan counted {n_subjects}: "
                         "the version changed under the export; rerun it")
    sids = m["subject_id"].to_list()
    reader = RecordReader(job.version_dir, sids, m["path"].to_list(), m["offset"].to_list(),
                          m["bytes"].to_list())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    buffer, rows, total, written = [], 0, 0, {}
    with pq.ParquetWriter(tmp, data_schema(), compression=COMPRESSION, **WRITE_OPTIONS) as w:
        def flush() -> None:
            table = rows_table(buffer, job.lookup, list(job.concepts), written)
            w.write_table(table.cast(data_schema()), row_group_size=max(table.num_rows, 1))

        for sid in sids:
            part = patient_rows(reader.raw(sid), job.lookup)
            if buffer and rows + len(part["time"]) > job.row_group_rows:
                flush()
                buffer, rows = [], 0
            buffer.append(part)
            rows += len(part["time"])
            total += len(part["time"])
        flush()
    os.replace(tmp, path)
    done = {"unit": unit, "split": split, "number": number, "key": job.key,
            "rows": total, "subjects": len(sids),
            "written": sorted([i, c] for c, i in written.items())}
    atomic_write_json(marker, done)
    return done


def merge(job: MedsJob, results: list[dict], meta: dict, codes: pl.DataFrame,
          subject_ids: np.ndarray, code_set: str) -> dict:
    """Files to data/<split>/<n>.parquet, then the metadata files, dataset.json last."""
    out = job.out_dir
    shutil.rmtree(out / "data", ignore_errors=True)
    files = dict.fromkeys(SPLIT_DIRS, 0)
    rows = dict.fromkeys(SPLIT_DIRS, 0)
    written = set()
    for r in sorted(results, key=lambda r: (SPLIT_DIRS.index(r["split"]), r["number"])):
        dest = out / "data" / r["split"] / f"{r['number']}.parquet"
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(job.work / r["split"] / f"{r['number']}.parquet", dest)
        files[r["split"]] += 1
        rows[r["split"]] += r["rows"]
        written |= {tuple(x) for x in r["written"]}
    order = np.argsort(subject_ids, kind="stable")
    sids = subject_ids[order]
    splits = pa.table({"subject_id": pa.array(sids, pa.int64()),
                       "split": pa.array(split_names(sids).tolist(), pa.string())})
    _write_meta(splits, out / "metadata" / "subject_splits.parquet")
    _write_meta(code_metadata(job.lookup, codes["label"].to_list(), codes["unit"].to_list(),
                              codes["table"].to_list(), version_parents(codes),
                              sorted(written)),
                out / "metadata" / "codes.parquet")
    atomic_write_json(out / "metadata" / "dataset.json", dataset_metadata(meta, code_set))
    counts = splits.group_by("split").aggregate([("subject_id", "count")]).to_pylist()
    subjects = {c["split"]: c["subject_id_count"] for c in counts}
    return {s: {"files": files[s], "rows": rows[s], "subjects": subjects.get(s, 0)}
            for s in SPLIT_DIRS}


def _write_meta(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    pq.write_table(table, tmp, compression=COMPRESSION)
    os.replace(tmp, path)


def _prepare(out: Path) -> None:
    """An OUT_DIR is empty, a finished export (rewritten) or an interrupted one (resumed);
    anything else is refused rather than overwritten."""
    finished = out / "metadata" / "dataset.json"
    if out.exists() and any(out.iterdir()) and not finished.exists() \
            and not (out / WORK).exists():
        raise ValueError(f"{out}: not empty and not a MEDS export of this tool (no "
                         f"metadata/dataset.json, no {WORK}/): choose an empty folder")
    (out / WORK).mkdir(parents=True, exist_ok=True)
    # from here the folder reads as unfinished until the merge writes dataset.json again
    finished.unlink(missing_ok=True)


def export_meds(version_dir, out_dir, cfg=None, progress: bool = True, codes: str = "project",
                shard_subjects: int | None = None, shard_mb: float | None = None,
                row_group_rows: int = ROW_GROUP_ROWS,
                in_process_below: int = IN_PROCESS_BELOW) -> dict:
    """Write the MEDS dataset of a finished version to `out_dir`. `codes`: "project" or
    "community" (trajectory.use.meds.CODES). `shard_subjects`, `shard_mb`: the data files' size
    (None: MEDS_SHARD_SUBJECTS, MEDS_SHARD_MB of `cfg`, else config.py's). `cfg` (a
    config.Config) also chooses the runner, as for `tasks` (RUNNER, MAX_CPUS, SCHEDULER,
    CLUSTER); None, or a local Dask cluster for a version of fewer than `in_process_below`
    patients, runs in this process (same bytes either way). Returns per split files, rows and
    subjects, the runner used and the wall seconds."""
    t0 = time.perf_counter()
    vdir = Path(version_dir).expanduser().resolve()
    out = Path(out_dir).expanduser().resolve()
    meta_path = vdir / "dataset.json"
    if not meta_path.exists():
        raise ValueError(f"{vdir}: not a finished trajectory version (no dataset.json)")
    if shard_subjects is None:
        shard_subjects = (cfg.meds_shard_subjects if cfg is not None
                          else config_module.MEDS_SHARD_SUBJECTS)
    if shard_mb is None:
        shard_mb = cfg.meds_shard_mb if cfg is not None else config_module.MEDS_SHARD_MB
    for name, value in (("shard_subjects (MEDS_SHARD_SUBJECTS)", shard_subjects),
                        ("shard_mb (MEDS_SHARD_MB)", shard_mb)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0 (0 = no limit), got {value}")
    if row_group_rows < 1:
        raise ValueError(f"row_group_rows must be >= 1, got {row_group_rows}")
    if out == vdir:
        raise ValueError(f"{out}: the export must not be written into the version itself")
    meta = json.loads(meta_path.read_text())
    code_table = pl.read_parquet(vdir / "codes.parquet").sort("code_id")
    if code_table["code_id"].to_list() != list(range(code_table.height)):
        raise ValueError(f"{vdir / 'codes.parquet'}: code_id is not 0..{code_table.height - 1}")
    manifest = pl.read_parquet(vdir / "manifest.parquet", columns=["subject_id", "bytes"])
    plan = file_plan(manifest["subject_id"].to_numpy(), manifest["bytes"].to_numpy(),
                     shard_subjects, shard_mb * 1e6)
    units = {f"{f['split']}/{f['number']:05d}": (f["first"], f["last"], f["subjects"])
             for f in plan}
    lookup = code_lookup(code_table["code"].to_list(), codes, code_table["label"].to_list())
    key = json.dumps([meta["config_hash"], codes, shard_subjects, shard_mb, row_group_rows])
    job = MedsJob(vdir, out, lookup, tuple(meta.get("concepts", [])), units, row_group_rows,
                  key)
    runner, used = version_runner(cfg, manifest.height, in_process_below)
    _prepare(out)
    with runner as r:
        results = r.map(run, list(units), job, STAGE, progress)
    splits = merge(job, results, meta, code_table, manifest["subject_id"].to_numpy(), codes)
    shutil.rmtree(job.work)
    return {"version_dir": str(vdir), "out_dir": str(out), "splits": splits,
            "files": len(units), "codes": codes, "patients": manifest.height,
            "runner": used, "seconds": round(time.perf_counter() - t0, 2)}


def describe(result: dict) -> str:
    lines = [f"{s}: {c['subjects']:,} subjects, {c['rows']:,} rows in {c['files']} file(s)"
             for s, c in result["splits"].items()]
    lines.append(f"wrote MEDS {result['out_dir']}: {result['patients']:,} patients of "
                 f"{result['version_dir']} in {result['files']} file(s), {result['codes']} "
                 f"codes, {result['runner']} runner, {result['seconds']:.1f} s")
    return "\n".join(lines)
