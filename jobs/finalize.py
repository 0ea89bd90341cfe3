"""Stage 3, one unit: check every shard, merge indexes into the manifest, write codes.parquet,
qc_report.json, and dataset.json last: a version exists only once dataset.json does.
"""
from __future__ import annotations

import json
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import polars as pl

import trajectory
from trajectory.atomic import (atomic_write_bytes, atomic_write_json, atomic_write_parquet,
                               checksum_file)
from trajectory.cleaning import qc_html
from trajectory.cleaning.flags import BITS, load_concepts
from trajectory.cleaning.qc_report import cleaning_report, rate_failures
from trajectory.cleaning.vocab import read_shard_map, shard_map_path, thresholds_path, vocab_path
from trajectory.events import extra_tables, inputs
from trajectory.events.map_rows import merge_counts
from trajectory.events.plan import load_plan
from trajectory.record import EVENT_DTYPES, FORMAT
from trajectory.use.ontology import code_parents
from trajectory.windows.aggregate import STAT_NAMES

from . import build, cache, dictionaries, lease, scan
from .common import array_from_json, done_path, read_done

STAGE = "finalize"


def shard_markers(cfg, plan) -> tuple[list[dict], pl.DataFrame]:
    """(every shard's done-marker, the manifest: all their index rows), each shard checked
    against the shard map and inputs (`build.shard_basis`), its index file's checksum and its
    records in the version (`build.records_problem`): a shard built from other buckets or
    inputs (a map replaced as damaged after it was built, a marker copied in), or whose index
    or records are not as built, loses its marker, so that the next run builds it again."""
    markers, missing, stale = [], [], []
    shards = read_shard_map(cfg, plan)

    def drop(shard, why):
        done_path(cfg, build.STAGE, build.shard_name(shard)).unlink()
        stale.append(f"{shard} ({why})")

    for shard in range(plan.n_shards):
        m = read_done(cfg, build.STAGE, build.shard_name(shard))
        if m is None:
            missing.append(shard)
            continue
        basis = build.shard_basis(plan, shards[shard])
        index = cfg.work_dir / "index" / m["index"]
        if {k: m.get(k) for k in basis} != basis:
            drop(shard, "built from other buckets or inputs than the shard map and plan give it")
        elif not index.exists() or checksum_file(index) != m["index_checksum"]:
            drop(shard, f"{index} is missing or fails its checksum")
        else:
            markers.append(m)
    # one read_parquet over all shards' files: it reads them in parallel, in list order
    # (0.008 s against 0.03-0.07 s one by one, for 32 shards: finalize is the build's serial
    # tail), and the records are checked against these rows (x800: 0.6 s less than a read
    # per shard)
    manifest = (pl.read_parquet([cfg.work_dir / "index" / m["index"] for m in markers])
                if markers else None)
    if manifest is not None:
        rows = manifest.select("shard", "path", "bytes").partition_by("shard", as_dict=True)
        empty = manifest.select("path", "bytes").clear()
        for m in list(markers):
            why = build.records_problem(cfg, m, rows.get((m["shard"],), empty))
            if why is not None:
                markers.remove(m)
                drop(m["shard"], why)
    if stale:
        raise ValueError(f"cannot publish: {len(stale)} of {plan.n_shards} built shards do "
                         f"not stand (first: {'; '.join(stale[:3])}); their done-markers are "
                         "removed: rerun the build to build them again")
    if missing:
        raise ValueError(f"cannot publish: {len(missing)} of {plan.n_shards} shards not built "
                         f"(first: {missing[:10]}); rerun the build to finish them")
    return markers, manifest.sort("subject_id")


def strays(cfg, plan) -> list[str]:
    """Warnings for what OUT_DIR/<version>/patients holds besides this version's shards (put
    there by hand, or left by a build with more shards): never listed in the manifest, so
    never read, but not this build's either."""
    ours = {f"{build.shard_name(s)}{build.PACK_SUFFIX if cfg.layout == 'shards' else ''}"
            for s in range(plan.n_shards)}
    folder = cfg.version_dir / "patients"
    extra = sorted(p.name for p in folder.iterdir() if p.name not in ours
                   and not p.name.startswith(".")) if folder.is_dir() else []
    return ([f"{folder} holds {len(extra)} entries that are not this version's shards "
             f"({', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}): not in the "
             "manifest, left alone"] if extra else [])


def codes_table(cfg, plan, markers: list[dict]) -> pl.DataFrame:
    vocab = pl.read_parquet(vocab_path(cfg))
    ids = np.concatenate([array_from_json(m["code_ids"]) for m in markers] or [[]]
                         ).astype(np.int64)
    n = np.concatenate([array_from_json(m["code_counts"]) for m in markers] or [[]]
                       ).astype(np.int64)
    total = np.bincount(ids, weights=n, minlength=vocab.height).astype(np.int64)
    present = np.flatnonzero(np.bincount(ids, minlength=vocab.height))
    counts = pl.DataFrame({"code_id": present.astype(np.int32), "count": total[present]},
                          schema={"code_id": pl.Int32, "count": pl.Int64})
    labels = dictionaries.labels(cfg)
    return (vocab.drop("count").join(counts, on="code_id", how="left")
            .join(labels, on=["dictionary", "label_key"], how="left", maintain_order="left")
            .select("code_id", "code", "table",
                    pl.col("label"), pl.coalesce("unit", "dict_unit").alias("unit"),
                    pl.col("count").fill_null(0),
                    # the ontology codes it stands for (trajectory/use/ontology.py), as the MEDS
                    # export writes them: users of the records get them without exporting
                    pl.col("code").map_elements(code_parents, pl.List(pl.String),
                                                skip_nulls=True).alias("parent_codes"))
            .sort("code_id"))


def merge_parts(parts: list[dict]) -> dict:
    """One table's partition markers summed over its parts, in part order. Drop reasons are
    sorted: the order they were first met in depends on where the table was cut."""
    counts: dict = {}
    for m in parts:
        merge_counts(counts, m["counts"])
    for c in counts.values():
        c["dropped"] = dict(sorted(c["dropped"].items()))
    return {"table": parts[0]["table"], "input": parts[0]["input"], "counts": counts,
            "rows_read": sum(m["rows_read"] for m in parts), "parts": len(parts)}


def qc_report(plan, part_markers: dict, markers: list[dict], n_events: int) -> dict:
    """Per table and event: rows read = written + dropped by reason, checked, not assumed."""
    later: dict = {}
    for m in markers:
        for table, evs in m["counts"].items():
            merge_counts(later.setdefault(table, {}),
                         {e: {"rows": 0, "written": 0, "dropped": c["dropped"]}
                          for e, c in evs.items()})
    report, total = {}, 0
    for t in extra_tables.all_tables(plan):
        m = part_markers.get(t.name)
        if m is None:
            continue
        events = json.loads(json.dumps(m["counts"]))
        for name, c in later.get(t.name, {}).items():
            late = sum(c["dropped"].values())
            events[name]["written"] -= late
            for reason, n in c["dropped"].items():
                events[name]["dropped"][reason] = events[name]["dropped"].get(reason, 0) + n
            events[name]["dropped"] = dict(sorted(events[name]["dropped"].items()))
        for name, c in events.items():
            if c["rows"] != c["written"] + sum(c["dropped"].values()):
                raise RuntimeError(f"QC reconciliation failed for {t.name}/{name}: {c}")
            total += c["written"]
        report[t.name] = {"rows_read": m["rows_read"], "input": m["input"]["path"],
                          "events": events}
    if total != n_events:
        raise RuntimeError(f"QC reconciliation failed: tables report {total} events written, "
                           f"records hold {n_events}")
    return report


def _code_version() -> str:
    here = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return trajectory.__version__
    sha = rev.stdout.strip() if rev.returncode == 0 else ""
    return f"{trajectory.__version__}+{sha}" if sha else trajectory.__version__


def scan_markers(cfg, plan) -> list[dict]:
    return [m for m in (scan.read(cfg, plan, t) for t in plan.scan_tables()) if m]


def _stage_timing(markers: list[dict]) -> dict:
    if not markers:
        return {}
    start = min(m["finished_at"] - m["seconds"] for m in markers)
    end = max(m["finished_at"] for m in markers)
    return {"wall_seconds": round(end - start, 3), "unit_seconds": round(
        sum(m["seconds"] for m in markers), 3), "units": len(markers)}


def run(unit: str, cfg) -> dict:
    """`unit` is "all" (finalize has a single unit); the version's dataset.json is the marker."""
    t0 = time.perf_counter()
    plan = load_plan(cfg)
    try:
        part_lists = build.partition_markers(cfg, plan)
    except ValueError as e:
        raise ValueError(f"cannot publish: {e}") from e
    part = {name: merge_parts(ms) for name, ms in part_lists.items()}
    # The map checked against the markers once more, here, where every way of running
    # passes: a SLURM array has no driver between the stages, and a map written after the
    # driver's check (another process) would otherwise be published. A shard built from the
    # replaced map then fails shard_markers.
    build.checked_map(cfg, plan, part_lists)
    markers, manifest = shard_markers(cfg, plan)
    vdir = cfg.version_dir
    n_events = int(manifest["n_events"].sum())
    report = qc_report(plan, part, markers, n_events)
    codes = codes_table(cfg, plan, markers)
    concepts = load_concepts()
    # Summed over shards first, lazily: demo x800's 896 shards give 5.3M rows of 10.7k (code,
    # table, kind); the report's per-table gathers over all of them took 1.2 s of finalize,
    # an eager read and group_by 2.0 s on one thread, this 0.48 s.
    qc = (pl.scan_parquet([cfg.work_dir / "qc" / m["qc"] for m in markers])
          .group_by("code_id", "source", "kind").agg(pl.all().sum()).collect())
    cleaning = cleaning_report(qc, pl.read_parquet(vocab_path(cfg)),
                               pl.read_parquet(thresholds_path(cfg)), concepts,
                               extra_tables.source_names(plan), cfg)
    failures = rate_failures(cleaning, cfg)
    # EXTRA_TABLES: per user table, rows whose key matched and why the others did not
    matches = {"extra_tables": extra_tables.match_report(plan, report)} if any(
        "extra" in fp for fp in plan.tables.values()) else {}
    not_read = inputs.not_read(cfg.data_dir)
    quarantined = []
    if failures and cfg.qc_on_fail == "error":
        atomic_write_json(cfg.work_dir / "qc_report.rejected.json",
                          {"tables": report, "cleaning": cleaning, "failures": failures})
        raise ValueError("QC failed, nothing published:\n  " + "\n  ".join(failures)
                         + f"\n(report: {cfg.work_dir / 'qc_report.rejected.json'}; fix the "
                         "input, raise the limits, or set QC_ON_FAIL=quarantine)")
    if failures:
        quarantined = sorted({f.split(":", 1)[0] for f in failures})
    # a shard's temporary folder left by a worker that died within this run (its retry wrote
    # the shard again): not part of the version
    lease.remove(f["path"] for f in lease.leftovers(vdir, cfg.cache_dir, 2))
    atomic_write_parquet(manifest, vdir / "manifest.parquet")
    atomic_write_parquet(codes, vdir / "codes.parquet")
    atomic_write_json(vdir / "qc_report.json", {"tables": report, "cleaning": cleaning,
                                                "failures": failures,
                                                "quarantined": quarantined, **matches})
    summary = {
        "version": cfg.trajectory_version, "record_format": FORMAT, "layout": cfg.layout,
        "config": cfg.to_json(), "config_hash": cfg.output_hash(),
        "code_version": _code_version(), "python": platform.python_version(),
        "inputs": plan.tables, "dictionaries": plan.dictionaries,
        "cache_keys": plan.cache_keys,
        "sorted_cache": sorted(m["sorted"] for m in markers if m["sorted"]),
        "warnings": [f"table {m} not found in DATA_DIR: skipped" for m in plan.missing]
        + inputs.warnings(not_read) + cache.damage_warnings(cfg) + strays(cfg, plan),
        # every file under DATA_DIR/{hosp,icu,note} not read as events, and why
        "not_read": not_read,
        "n_shards": plan.n_shards, "n_patients": manifest.height, "n_events": n_events,
        "record_bytes": int(manifest["bytes"].sum()), "n_codes": codes.height,
        "sources": {str(i): name for i, name in extra_tables.source_names(plan).items()},
        "event_dtypes": EVENT_DTYPES, "flags": BITS,
        "concepts": concepts.unique("concept_id", maintain_order=True)["concept"].to_list(),
        "quarantined": quarantined, **matches,
        "windows": {"step_seconds": cfg.window_step_minutes * 60, "max": cfg.window_max,
                    "admissions": cfg.window_admissions, "stats": list(STAT_NAMES),
                    "exclude": list(cfg.window_exclude)},
        "timings": {"scan": _stage_timing(scan_markers(cfg, plan)),
                    "partition": _stage_timing([m for ms in part_lists.values() for m in ms]),
                    "build": _stage_timing(markers)},
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    hist = np.sum([array_from_json(m["concept_histogram"]).astype(np.int64) for m in markers],
                  axis=0)
    ranges = concepts.group_by("concept_id", maintain_order=True).agg(
        pl.col("lo").min(), pl.col("hi").max())
    page = qc_html.render(summary, cleaning, hist, summary["concepts"],
                          list(zip(ranges["lo"].to_list(), ranges["hi"].to_list())),
                          manifest["n_events"].to_numpy(), failures)
    atomic_write_bytes(vdir / "qc_report.html", page.encode())
    shard_map = json.loads(shard_map_path(cfg).read_text()).get("seconds")
    if shard_map is not None:  # made by the driver, not by a unit
        summary["timings"]["shard_map"] = {"wall_seconds": shard_map}
    summary["timings"]["finalize"] = {"wall_seconds": round(time.perf_counter() - t0, 3)}
    atomic_write_json(vdir / "dataset.json", summary)
    return summary
