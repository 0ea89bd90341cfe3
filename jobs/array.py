"""One SLURM array task: run a slice of one stage's units.

    python -m jobs.array --stage build --task $SLURM_ARRAY_TASK_ID --per-task 2 \\
        --config WORK_DIR/config.json

Task I runs units[I*K:(I+1)*K] of the stage (K = --per-task), each with the stage's own
`run(unit, cfg)`, so done-markers make a resubmitted array skip what already finished. The unit
lists come from the plan written by `jobs.slurm.submit` (via `driver.prepare`), so every
task sees the same, ordered list.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

STAGES = ("scan", "partition", "build", "finalize")


def stage_units(stage: str, plan) -> list:
    if stage == "scan":
        return plan.scan_tables()
    if stage == "partition":
        return plan.partition_units()
    if stage == "build":
        return list(range(plan.n_shards))
    if stage == "finalize":
        return ["all"]
    raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")


def stage_fn(stage: str):
    from . import build, finalize, partition, scan

    return {"scan": scan.run, "partition": partition.run, "build": build.run,
            "finalize": finalize.run}[stage]


def load_config(path) -> "object":
    import config

    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"config file {path} not found (written by `submit`)") from None
    return config.from_json(d)


def run_task(stage: str, task: int, per_task: int, cfg) -> list:
    from trajectory.events.plan import load_plan

    if per_task < 1 or task < 0:
        raise ValueError(f"--task must be >= 0 and --per-task >= 1, got {task}, {per_task}")
    units = stage_units(stage, load_plan(cfg))
    mine = units[task * per_task:(task + 1) * per_task]
    fn = stage_fn(stage)
    results = []
    for unit in mine:
        t0 = time.perf_counter()
        print(f"[{stage}] unit {unit} ...", flush=True)
        results.append(fn(unit, cfg))
        print(f"[{stage}] unit {unit} done in {time.perf_counter() - t0:.1f}s", flush=True)
    if not mine:
        print(f"[{stage}] task {task}: no units (stage has {len(units)})", flush=True)
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m jobs.array", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", required=True, choices=STAGES)
    p.add_argument("--task", required=True, type=int, help="array task id ($SLURM_ARRAY_TASK_ID)")
    p.add_argument("--per-task", type=int, default=1, help="units per array task [1]")
    p.add_argument("--config", required=True, help="WORK_DIR/config.json written by submit")
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config)
        run_task(args.stage, args.task, args.per_task, cfg)
    except Exception as e:  # noqa: BLE001 - one clear line for the SLURM log, then the trace
        traceback.print_exc()
        print(f"error: stage {args.stage} task {args.task} (per-task {args.per_task}) failed: "
              f"{type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
