"""The driver: plan the units of each stage and hand them to a runner, in order."""
from __future__ import annotations

import dataclasses
import json
import shutil
import time

import config
from trajectory.atomic import atomic_write_json
from trajectory.events import extra_tables
from trajectory.events.plan import (input_differences, load_plan, make_plan, plan_path,
                                    same_inputs, split_unit)

from . import build, cache, dictionaries, extra_keys, finalize, lease, partition, scan
from .runners import open_runner


def finished_differences(cfg, plan, summary: dict) -> list[str]:
    """What differs between a finished version's dataset.json and this run's config and
    inputs (empty: the version is up to date). Changed settings are named from the config
    dataset.json keeps."""
    was = config.stored_hash_values(summary.get("config") or {}, summary.get("record_format"))
    return input_differences(summary.get("config_hash"), cfg.output_hash(),
                             (summary.get("inputs") or {}, summary.get("dictionaries") or {}),
                             (plan.tables, plan.dictionaries),
                             config.setting_differences(was, cfg.hash_values()))


def prepare(cfg):
    """Validate inputs and outputs, write (or check) the plan; returns it, or None when the
    version is already built from these inputs with this config (nothing to do)."""
    vdir = cfg.version_dir
    plan = make_plan(cfg)
    plan = dataclasses.replace(plan, cache_keys=cache.table_keys(plan))
    # held before anything is looked at: a prune from now on keeps this build's entries
    cache.hold(cfg, *(cache.entry_dir(cfg, plan, t) for t in plan.cache_keys))
    if (vdir / "dataset.json").exists():
        if not cfg.overwrite:
            problems = finished_differences(cfg, plan,
                                            json.loads((vdir / "dataset.json").read_text()))
            if not problems:
                return None
            raise ValueError(f"{vdir} is a finished version of other inputs or config "
                             f"({'; '.join(problems)}); choose another TRAJECTORY_VERSION or "
                             "pass --overwrite to rebuild it")
        shutil.rmtree(vdir)
        shutil.rmtree(cfg.work_dir, ignore_errors=True)
    elif cfg.overwrite:
        # an unfinished build of this version started again, whatever its WORK_DIR holds
        # (a done-marker of other settings or inputs, a map): stage 1's cache still serves it
        shutil.rmtree(cfg.work_dir, ignore_errors=True)
    path = plan_path(cfg)
    if path.exists():
        try:
            old = load_plan(cfg)
            named = config.setting_differences(old.config, plan.config) if old.config else None
            problems = same_inputs(old, plan, named)
            # The keys hash the code that decides stage 1's bytes: a build started by other
            # code would mix its units with this code's (a resume after an upgrade reused 12
            # units made by the older code).
            stale = sorted(t for t, k in cache.table_keys(old).items()
                           if old.cache_keys and old.cache_keys.get(t) != k)
            if stale:
                problems.append("the code or the polars/pyarrow versions that decide stage "
                                "1's bytes changed since it started (cache keys of "
                                f"{', '.join(stale[:5])}{' ...' if len(stale) > 5 else ''})")
        except ValueError as e:  # a work dir left by an older release of this tool
            problems = [str(e)]
        if problems:
            if not cfg.overwrite:
                raise ValueError(f"{cfg.work_dir} holds an unfinished build of different "
                                 f"inputs or config ({'; '.join(problems)}); pass --overwrite "
                                 "to discard it, or use another WORK_DIR")
            shutil.rmtree(cfg.work_dir)
    if not path.exists():
        atomic_write_json(path, plan.to_json())
    cache.sweep(cfg)  # what killed runs left in this version, its work folder and the caches
    cache.register(cfg)
    # a resumed build keeps the cut it started with (same output whatever the cut)
    plan = load_plan(cfg)
    if not plan.cache_keys:  # a plan written by hand (tests force a cut this way)
        plan = dataclasses.replace(plan, cache_keys=cache.table_keys(plan))
        atomic_write_json(path, plan.to_json())
    return plan


def partition_tasks(plan) -> list[tuple]:
    """Stage 1 as one graph: the scans first (chartevents' index is the longest single step),
    then every partition unit, largest table first; a cut table's units wait for its scan.
    Last, the d_* dictionaries' labels, which would otherwise be read by finalize alone."""
    scans = set(plan.scan_tables())
    tasks = [(f"scan-{t}", scan.run, t, []) for t in plan.scan_tables()]
    for unit in plan.partition_units():
        table = split_unit(unit)[0]
        tasks.append((unit, partition.run, unit, [f"scan-{table}"] if table in scans else []))
    tasks.append(("dictionaries", dictionaries.run, dictionaries.UNIT, []))
    return extra_keys.with_lookup(plan, tasks)  # user tables wait for their key lookup


def run_build(cfg, progress: bool = True) -> dict:
    with lease.building(cfg.cache_dir):
        return _run_build(cfg, progress)


def _run_build(cfg, progress: bool) -> dict:
    t0 = time.perf_counter()
    plan = prepare(cfg)
    if plan is None:
        summary = json.loads((cfg.version_dir / "dataset.json").read_text())
        return {**summary, "up_to_date": True}
    if progress:
        print(plan.describe(cfg), flush=True)
    reused = cached_units(cfg, plan)
    wall = {}
    with open_runner(cfg) as runner:
        t = time.perf_counter()
        runner.graph(partition_tasks(plan), cfg, "partition", progress)
        # The vocabulary and thresholds are left to the build units (each calls ensure_vocab;
        # concurrent creators write identical bytes): made here, they kept every worker
        # idle while this process paid numba's start-up (0.3 of 0.43 s on demo x20).
        started = time.perf_counter()
        runner.recycle()
        # made, or checked against the markers on a resume: a shards.json damaged, edited or
        # copied from a build of other inputs is replaced here, before any shard reads it
        build.checked_map(cfg, plan, build.partition_markers(cfg, plan), started)
        wall["partition"] = time.perf_counter() - t
        t = time.perf_counter()
        runner.map(build.run, range(plan.n_shards), cfg, "build", progress)
        wall["build"] = time.perf_counter() - t
    t = time.perf_counter()
    summary = finalize.run("all", cfg)
    wall["finalize"] = time.perf_counter() - t
    wall["total"] = time.perf_counter() - t0
    summary["driver_wall_seconds"] = {k: round(v, 2) for k, v in wall.items()}
    # stage-1 units found in CACHE_DIR when this build started (built by an earlier version)
    summary["stage1_cache"] = {"dir": str(cfg.cache_dir), "units": len(stage1_units(plan)),
                               "reused": len(reused)}
    summary["plan"] = {"n_shards": plan.n_shards, "shard_input_mb": plan.shard_input_mb,
                       "est_peak_mb": plan.est_peak_mb, "set_by": plan.why,
                       "worker_memory_gb": cfg.worker_memory_gb}
    atomic_write_json(cfg.version_dir / "dataset.json", summary)
    return summary


def stage1_units(plan) -> list[tuple[str, str]]:
    return ([("scan", t) for t in plan.scan_tables()]
            + [("partition", u) for u in plan.partition_units()]
            + [("dictionaries", dictionaries.UNIT)])


def stage1_marker(cfg, plan, stage: str, unit: str) -> dict | None:
    if stage == "scan":
        return scan.read(cfg, plan, unit)
    if stage == "partition":
        return partition.read(cfg, plan, unit)
    return dictionaries.read(cfg, plan)


def cached_units(cfg, plan) -> list[str]:
    return [u for stage, u in stage1_units(plan) if stage1_marker(cfg, plan, stage, u)]


def describe(summary: dict, cfg) -> str:
    if summary.get("up_to_date"):
        return (f"{summary['version']} is up to date: built {summary['created_at']} from these "
                f"inputs with this config (config hash {summary['config_hash']}); nothing to do "
                f"(output: {cfg.version_dir})")
    w = summary["driver_wall_seconds"]
    lines = [
        f"built {summary['version']}: {summary['n_patients']:,} patients, "
        f"{summary['n_events']:,} events, {summary['n_codes']:,} codes, "
        f"{summary['record_bytes'] / 1e6:,.1f} MB of records in {summary['n_shards']} shards",
        "seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in w.items()),
        f"plan: {summary['plan']['n_shards']} shards of ~{summary['plan']['shard_input_mb']:,.0f}"
        f" MB of input (set by {summary['plan']['set_by']}), estimated peak "
        f"{summary['plan']['est_peak_mb']:,.0f} MB per worker",
        f"output: {cfg.version_dir}",
    ]
    c = summary.get("stage1_cache")
    if c and c["reused"]:
        lines.insert(2, f"stage 1: {c['reused']} of {c['units']} units reused from {c['dir']}")
    lines += [f"not read: {f['file']} ({f['reason']})" for f in summary.get("not_read", ())
              if f["kind"] not in ("unknown", "duplicate")]  # those are warnings, below
    lines += extra_tables.describe(summary.get("extra_tables", {}))
    lines += [f"warning: {x}" for x in summary["warnings"]]
    return "\n".join(lines)


def status(cfg) -> dict:
    """Done / pending units per stage, from the done-markers alone."""
    plan = load_plan(cfg)
    stages = {"scan": plan.scan_tables(), "partition": plan.partition_units(),
              "build": [build.shard_name(s) for s in range(plan.n_shards)]}
    out = {}
    for stage, units in stages.items():
        if stage == "build":
            done = [u for u in units if (cfg.work_dir / "done" / stage / f"{u}.json").exists()]
        else:
            done = [u for u in units if stage1_marker(cfg, plan, stage, u)]
        out[stage] = {"done": len(done), "pending": sorted(set(units) - set(done))}
    out["published"] = (cfg.version_dir / "dataset.json").exists()
    return json.loads(json.dumps(out))
