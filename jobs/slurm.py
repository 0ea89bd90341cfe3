"""Run the build on a SLURM cluster as job arrays (the other way, Dask workers as SLURM jobs,
is `jobs.runners.slurm_cluster`, behind `--cluster slurm`).

`submit(cfg, ...)`: one job array per stage (scan -> partition -> build -> finalize) chained with
`--dependency=afterok`, each array task running a few units through `python -m jobs.array`.
Nothing stays running on the login node; units write done-markers, so a resubmit after a
failure, a timeout or `scancel` reruns only what is missing, and stages already complete are
not submitted at all.
"""
from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

from trajectory.atomic import atomic_write_bytes, atomic_write_json

from .common import done_path

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "slurm" / "stage.sbatch.tmpl"
STAGES = ("scan", "partition", "build", "finalize")
DEFAULT_MAX_ARRAY_SIZE = 1001  # SLURM's default MaxArraySize


def _sbatch_bin() -> str:
    exe = shutil.which("sbatch")
    if exe is None:
        raise ValueError("sbatch not found: SLURM client tools are not installed or not on "
                         "PATH (for a local test cluster: bash slurm/start_cluster.sh)")
    return exe


def max_array_size() -> int:
    """MaxArraySize from `scontrol show config` (array indices must be below it)."""
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return DEFAULT_MAX_ARRAY_SIZE
    m = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.M)
    return int(m.group(1)) if m else DEFAULT_MAX_ARRAY_SIZE


def render(template: str, values: dict) -> str:
    """Fill {{name}} placeholders; an #SBATCH line left with an empty value is disabled."""
    lines = []
    for line in template.splitlines(keepends=True):
        names = re.findall(r"\{\{\s*(\w+)\s*\}\}", line)
        for name in names:
            if name not in values:
                raise ValueError(f"{TEMPLATE}: unknown placeholder {{{{{name}}}}}")
        empty = any(values[n] in (None, "") for n in names)
        line = re.sub(r"\{\{\s*(\w+)\s*\}\}",
                      lambda m: "" if values[m.group(1)] is None else str(values[m.group(1)]),
                      line)
        if empty and line.startswith("#SBATCH"):
            line = "#" + line
        lines.append(line)
    return "".join(lines)


def stage_units(stage: str, plan) -> list:
    from .array import stage_units as units

    return units(stage, plan)


def pending_units(cfg, stage: str, plan) -> list:
    from .build import shard_name

    if stage == "finalize":
        return [] if (cfg.version_dir / "dataset.json").exists() else ["all"]
    from .driver import stage1_marker

    units = stage_units(stage, plan)
    if stage == "build":
        return [u for u in units if not done_path(cfg, stage, shard_name(u)).exists()]
    return [u for u in units if stage1_marker(cfg, plan, stage, u) is None]


def _parse_job_id(out: str) -> str:
    job = out.strip().splitlines()[-1].split(";")[0].strip() if out.strip() else ""
    if not job.isdigit():
        raise ValueError(f"sbatch gave no job id: {out!r}")
    return job


def submit(cfg, partition=None, account=None, time=None, mem=None, cpus_per_task=None,
           array_parallelism=None, dry_run=False, progress: bool = True) -> dict:
    """Plan the build, then submit scan -> partition -> build -> finalize as dependent job arrays.

    Returns {"jobs": {stage: job_id}, "scripts": {stage: path}, "commands": {stage: argv},
    "skipped": [stages already complete], "follow": text}."""
    from .driver import prepare

    plan = prepare(cfg)
    if plan is None:
        if progress:
            print(f"{cfg.version_dir} is up to date (same inputs and config): nothing to submit")
        return {"jobs": {}, "scripts": {}, "commands": {}, "skipped": list(STAGES),
                "follow": "", "up_to_date": True}
    sdir = cfg.work_dir / "slurm"
    log_dir = sdir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    config_path = cfg.work_dir / "config.json"
    # overwrite was handled by prepare(); tasks must never discard each other's work.
    atomic_write_json(config_path, {**cfg.to_json(), "overwrite": False})

    if mem is None:
        mem = f"{max(1, math.ceil(cfg.worker_memory_gb * 1024))}M"
    cpus_per_task = cpus_per_task or 1
    parallelism = array_parallelism or cfg.max_cpus
    limit = max_array_size()
    template = TEMPLATE.read_text()
    sbatch = None if dry_run else _sbatch_bin()

    jobs, scripts, commands, skipped = {}, {}, {}, []
    previous = None
    for stage in STAGES:
        n = len(stage_units(stage, plan))
        if not pending_units(cfg, stage, plan):
            skipped.append(stage)
            continue
        per_task = max(1, math.ceil(n / limit))
        n_tasks = math.ceil(n / per_task)
        values = {"job_name": f"traj-{cfg.trajectory_version}-{stage}", "partition": partition,
                  "account": account, "time": time, "mem": mem,
                  "cpus_per_task": (scan_cpus(cfg, plan, cpus_per_task) if stage == "scan"
                                    else cpus_per_task),
                  "log_dir": log_dir, "repo": REPO, "python": sys.executable, "stage": stage,
                  "per_task": per_task, "config": config_path}
        script = sdir / f"{stage}.sbatch"
        atomic_write_bytes(script, render(template, values).encode())
        script.chmod(0o755)
        array = f"0-{n_tasks - 1}" + (f"%{parallelism}" if n_tasks > 1 and parallelism else "")
        argv = [sbatch or "sbatch", "--parsable", f"--array={array}"]
        if previous is not None:
            argv.append(f"--dependency=afterok:{previous}")
        argv.append(str(script))
        scripts[stage], commands[stage] = str(script), argv
        if dry_run:
            previous = f"<{stage}-job-id>"
            continue
        res = subprocess.run(argv, capture_output=True, text=True)
        if res.returncode != 0:
            submitted = ", ".join(f"{s} {j}" for s, j in jobs.items())
            raise ValueError(f"sbatch for stage {stage} failed (rc {res.returncode}): "
                             f"{res.stderr.strip() or res.stdout.strip()}"
                             + (f"; already submitted: {submitted} (scancel them or let them "
                                "run)" if jobs else ""))
        previous = jobs[stage] = _parse_job_id(res.stdout)

    ids = ",".join(jobs.values())
    follow = []
    if jobs:
        follow.append(f"squeue -j {ids}")
    follow.append(f"{sys.executable} {REPO / 'build_patient_files.py'} status "
                  f"--out-dir {cfg.out_dir} --version {cfg.trajectory_version} "
                  f"--work-dir {cfg.work_dir}")
    follow.append(f"logs: {log_dir}")
    result = {"jobs": jobs, "scripts": scripts, "commands": commands, "skipped": skipped,
              "dry_run": dry_run, "n_shards": plan.n_shards, "config": str(config_path),
              "plan": plan.describe(cfg), "follow": "\n".join(follow)}
    if progress:
        print(describe(result))
    return result


def scan_cpus(cfg, plan, cpus_per_task: int) -> int:
    """CPUs each scan task asks for: the scan stage runs alone (the partition array waits for
    it), so a task may take the threads its seek-point pass would get on a node of MAX_CPUS
    workers (jobs.scan.index_threads); an array has one shape, so every scan task asks for
    the largest table's (the others' passes are shorter and the stage is short)."""
    from .scan import index_threads

    want = [index_threads(cfg, plan, t, cores=cfg.max_cpus) for t in plan.scan_tables()]
    return max([cpus_per_task, *want])


def describe(result: dict) -> str:
    lines = [result["plan"]]
    if result["skipped"]:
        lines.append(f"already complete, not submitted: {', '.join(result['skipped'])}")
    for stage, argv in result["commands"].items():
        job = result["jobs"].get(stage)
        head = f"{stage}: job {job}" if job else f"{stage}: (dry run)"
        lines.append(f"{head}  <- {' '.join(argv)}")
    if not result["commands"]:
        lines.append("nothing to submit: every stage is complete")
    lines.append("follow with:")
    lines += [f"  {x}" for x in result["follow"].splitlines()]
    return "\n".join(lines)
