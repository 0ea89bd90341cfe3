"""CPU seconds of stage 1 (scans and partition units), one process, one unit after another:
the work cutting costs, without the waits for a core that a Dask unit's seconds also hold.

    python benchmarks/bench_stage1_cpu.py --data-dir /tmp/traj_bench/demo_x20 \\
        --plan-workers 2 16 --rounds 3 [--tree /path/to/another/checkout]

Each round runs, in a fresh process per case, every partition unit of the tables all cases
read (the gzip seek points and cut scans rebuilt cold first), for this checkout at each
--plan-workers and for every --tree given (another checkout of this project, e.g. the pre-cut
commit 58858f3, whose tables are one unit each). Cases alternate within a round, so a slow
minute of a shared machine falls on all of them. Prints CPU seconds (user + system, both
threads of a unit: parse and map) per case and round, and each case's median against the
first case's.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# worker settings: one core each, as runners.WORKER_ENV gives Dask and SLURM workers
ENV = {"POLARS_MAX_THREADS": "1", "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
       "_RJEM_MALLOC_CONF": "dirty_decay_ms:30000,muzzy_decay_ms:30000"}

# Runs inside the case's own process, with the checkout's own modules first on the path.
CHILD = r'''
import json, os, shutil, sys, time
tree, data, out, pw, tables = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
sys.path.insert(0, tree)
import config
from jobs import partition
if os.path.exists(os.path.join(tree, "jobs", "driver.py")):
    from jobs.driver import run_build
else:  # the pre-cut layout kept the driver in trajectory/
    from trajectory.driver import run_build
over = {"DATA_DIR": data, "OUT_DIR": out, "MAX_CPUS": 1, "RUNNER": "serial"}
if pw:
    over["PLAN_WORKERS"] = pw
cfg = config.load(over, environ={})
if not (cfg.work_dir / "plan.json").exists():
    run_build(cfg, progress=False)  # plan, outputs to measure over, warm numba caches
from trajectory.events.plan import load_plan
plan = load_plan(cfg)
tables = sorted(plan.tables) if tables == "*" else tables.split(",")
cpu = lambda: sum(os.times()[:2])
scans = 0.0
cut = hasattr(plan, "parts")  # the pre-cut code reads every table as one unit
if cut:
    from jobs import cache, scan
    from trajectory.events.plan import unit_name
    for t in tables:
        if plan.parts[t] > 1 and t not in plan.row_groups:
            marker = scan.read(cfg, plan, t)
            if marker and marker["index"]:
                os.remove(marker["index"])
            cache.scan_marker_path(cfg, plan, t).unlink(missing_ok=True)
            c0 = cpu()
            scan.run(t, cfg)
            scans += cpu() - c0
units = 0
c0 = cpu()
for t in tables:
    if cut:
        for k in range(plan.parts[t]):
            shutil.rmtree(partition.part_dir(cfg, plan, t, k), ignore_errors=True)
            partition.run(unit_name(t, k), cfg)
            units += 1
    else:
        (cfg.work_dir / "done" / "partition" / f"{t}.json").unlink(missing_ok=True)
        partition.run(t, cfg)
        units += 1
print(json.dumps({"units": units, "unit_cpu": cpu() - c0, "scan_cpu": scans,
                  "tables": sorted(plan.tables)}))
'''


def run_case(tree: Path, data: Path, out: Path, pw: int, tables: str) -> dict:
    r = subprocess.run([sys.executable, "-c", CHILD, str(tree), str(data), str(out), str(pw),
                        tables], capture_output=True, text=True, cwd=tree,
                       env={**os.environ, **ENV, "PYTHONPATH": str(tree)})
    if r.returncode:
        raise SystemExit(f"case {tree} plan {pw or '-'} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, type=Path)
    p.add_argument("--plan-workers", type=int, nargs="+", default=[2, 16])
    p.add_argument("--tree", type=Path, nargs="*", default=[],
                   help="other checkouts to measure the same way (the first is the baseline)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--scratch", type=Path, default=None)
    args = p.parse_args()
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="stage1_cpu_"))
    cases = [(t.resolve(), 0, f"{t.name}") for t in args.tree]
    cases += [(REPO, pw, f"plan {pw}") for pw in args.plan_workers]
    outs = {name: scratch / f"out{i}" for i, (_, _, name) in enumerate(cases)}
    # the tables every case reads (a tree without the detail tables reads fewer)
    common = None
    for tree, pw, name in cases:
        got = run_case(tree, args.data_dir, outs[name], pw, "procedures_icd")["tables"]
        common = set(got) if common is None else common & set(got)
    tables = ",".join(sorted(common))
    rows: dict[str, list[float]] = {name: [] for _, _, name in cases}
    for r in range(args.rounds):
        for tree, pw, name in cases:
            m = run_case(tree, args.data_dir, outs[name], pw, tables)
            rows[name].append(m["unit_cpu"] + m["scan_cpu"])
            print(f"round {r + 1}  {name:>12}  {m['units']:4d} units  "
                  f"units {m['unit_cpu']:7.2f}  scans {m['scan_cpu']:5.2f} CPU-s", flush=True)
    base = statistics.median(rows[cases[0][2]])
    print(f"\nstage 1 CPU-s of {len(common)} tables ({args.data_dir}), median of "
          f"{args.rounds} rounds, against {cases[0][2]}:")
    for _, _, name in cases:
        med = statistics.median(rows[name])
        print(f"  {name:>12}  {med:7.2f}  {med / base - 1:+6.1%}   "
              f"rounds {' '.join(f'{v:.2f}' for v in rows[name])}")
    if not args.scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
