"""What the cache's checks cost: a warm rebuild (a version that reuses every stage-1 and
sorted-shard entry) with and without them, interleaved in one run.

    python benchmarks/bench_cache_checks.py --data-dir /tmp/traj_bench/demo_x20 \\
        --tree /path/to/a/checkout/without/checks --rounds 3 [--runner serial]

Each case is a checkout: this one and every --tree (e.g. 7398837, the last commit before the
checksums). In setup, each builds version `a` cold into its own OUT_DIR. Each round then
builds, for every case in turn and in a fresh process, a new version with another OUTLIER_K
in that OUT_DIR: stage 1 and the sorted shards come from the cache, so what remains is the
stage-2 work plus, in this checkout, the checks (markers, sizes, and the XXH3 of every file
read whole). Prints each case's wall seconds per round, the medians and their ratio, and,
measured directly in this checkout, the seconds spent hashing the files a warm rebuild
verifies (the sorted shards, every unit's codes and sketch, the labels) against its wall.
The machine is shared: only figures of one run count.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CHILD = r'''
import json, resource, sys, time
tree, data, out, version, k, cpus, runner = sys.argv[1:8]
sys.path.insert(0, tree)
import config
from jobs.driver import run_build
cfg = config.load({"DATA_DIR": data, "OUT_DIR": out, "MAX_CPUS": int(cpus), "RUNNER": runner,
                   "TRAJECTORY_VERSION": version, "OUTLIER_K": float(k)}, environ={})
t = time.perf_counter()
s = run_build(cfg, progress=False)
wall = time.perf_counter() - t
hashed = None
try:
    from trajectory.atomic import xxh3_file
except ImportError:
    pass
else:  # what the checks of a warm rebuild hash: files read whole from the cache
    files = [p for d in cfg.cache_dir.glob("sorted-*") for p in d.glob("*.arrow")]
    files += [p for d in cfg.cache_dir.glob("*-*") for p in d.glob("*/*.parquet")]
    t = time.perf_counter()
    for p in files:
        xxh3_file(p)
    hashed = {"seconds": time.perf_counter() - t, "files": len(files),
              "bytes": sum(p.stat().st_size for p in files)}
ru = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall": wall, "cpu": ru.ru_utime + ru.ru_stime,
                  "reused": s["stage1_cache"]["reused"],
                  "units": s["stage1_cache"]["units"], "hashed": hashed}))
'''


def run_case(tree: Path, data: Path, out: Path, version: str, k: float, cpus: int,
             runner: str) -> dict:
    r = subprocess.run([sys.executable, "-c", CHILD, str(tree), str(data), str(out), version,
                        str(k), str(cpus), runner], capture_output=True, text=True, cwd=tree,
                       env={**os.environ, "PYTHONPATH": str(tree)})
    if r.returncode:
        raise SystemExit(f"case {tree} {version} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--tree", type=Path, nargs="*", default=[])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max-cpus", type=int, default=2)
    p.add_argument("--runner", default="dask", choices=("dask", "serial"))
    p.add_argument("--scratch", type=Path, default=Path("/tmp/bench_cache_checks"))
    args = p.parse_args()
    cases = [(REPO, "this")] + [(t.resolve(), t.name) for t in args.tree]
    shutil.rmtree(args.scratch, ignore_errors=True)
    outs = {name: args.scratch / name for _, name in cases}
    for tree, name in cases:  # cold builds: fill each case's caches
        m = run_case(tree, args.data_dir, outs[name], "a", 3.0, args.max_cpus, args.runner)
        print(f"setup {name}: cold build {m['wall']:.1f} s", flush=True)
    walls: dict[str, list[float]] = {name: [] for _, name in cases}
    cpus: dict[str, list[float]] = {name: [] for _, name in cases}
    hashed = []
    for r in range(args.rounds):
        for tree, name in cases:
            k = 2.0 + 0.1 * (r + 1)  # a new version each round: nothing of stage 2 cached
            m = run_case(tree, args.data_dir, outs[name], f"r{r}", k, args.max_cpus,
                         args.runner)
            if m["reused"] != m["units"]:
                raise SystemExit(f"{name} round {r}: only {m['reused']} of {m['units']} "
                                 "stage-1 units reused; not a warm rebuild")
            walls[name].append(m["wall"])
            cpus[name].append(m["cpu"])
            if m["hashed"] and tree == REPO:
                hashed.append((m["hashed"], m["wall"]))
            print(f"round {r} {name}: {m['wall']:.2f} s, process CPU {m['cpu']:.2f} s",
                  flush=True)
    base = statistics.median(walls["this"])
    print(f"\nwarm rebuild of {args.data_dir.name}, MAX_CPUS={args.max_cpus}, "
          f"runner {args.runner}, {args.rounds} interleaved rounds (median wall):")
    for name, w in walls.items():
        med = statistics.median(w)
        rel = f"  this/{name} = {base / med:.3f}" if name != "this" else ""
        print(f"  {name:>12}: {med:7.2f} s  (rounds {', '.join(f'{x:.2f}' for x in w)}){rel}")
    if args.runner == "serial":  # every unit ran in the child: its CPU is the build's
        base = statistics.median(cpus["this"])
        print("process CPU (user + system), serial runner, median:")
        for name, c in cpus.items():
            med = statistics.median(c)
            rel = f"  this/{name} = {base / med:.3f}" if name != "this" else ""
            print(f"  {name:>12}: {med:7.2f} s  (rounds {', '.join(f'{x:.2f}' for x in c)}){rel}")
    if hashed:
        h, wall = hashed[-1]
        print(f"checks' hashing in this checkout: {h['seconds']:.3f} s for {h['files']} files, "
              f"{h['bytes'] / 2**20:,.0f} MB ({h['seconds'] / wall:.1%} of its warm rebuild, "
              "in one process; the build spreads it over its workers)")


if __name__ == "__main__":
    main()
