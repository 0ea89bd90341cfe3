"""Whole-build benchmark against the read floor, at one or more scales of the real demo.

    python benchmarks/bench_build.py --times 20 100 --max-cpus 2

For each scale K: replicate the demo K times (trajectory.replicate), measure the read floor
(stream-decompress and parse every input table once with pyarrow, all columns, MAX_CPUS
processes), then build with MAX_CPUS Dask workers while sampling every worker's RSS, then
repack as shards and measure output bytes per event (plain and with a trained zstd
dictionary). Prints one table; the machine is shared, so only ratios within a run count.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import psutil
import pyarrow.csv as pacsv
import zstandard

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import config  # noqa: E402
from jobs.scan import index_threads  # noqa: E402
from jobs.schedule import index_seconds, longest_first, makespan  # noqa: E402
from jobs.driver import partition_tasks, run_build, stage1_marker  # noqa: E402
from trajectory.events.plan import load_plan  # noqa: E402
from trajectory.record import frames  # noqa: E402
from trajectory.replicate import replicate  # noqa: E402
from trajectory.use.store import open_version  # noqa: E402


def _parse(path: str) -> int:
    rows = 0
    opts = pacsv.ParseOptions(newlines_in_values="/note/" in path)
    for batch in pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=16 << 20),
                                parse_options=opts):
        rows += batch.num_rows
    return rows


def read_floor(data_dir: Path, cpus: int) -> tuple[float, int]:
    files = sorted((str(p) for p in data_dir.glob("*/*.csv.gz")),
                   key=lambda p: -os.path.getsize(p))
    t = time.perf_counter()
    with ProcessPoolExecutor(cpus) as ex:
        rows = sum(ex.map(_parse, files))
    return time.perf_counter() - t, rows


class RssSampler(threading.Thread):
    """Peak RSS of every descendant process (the Dask workers), sampled every 50 ms."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak: dict[int, tuple[str, int]] = {}
        self.stop = threading.Event()

    def run(self):
        me = psutil.Process()
        while not self.stop.is_set():
            for p in me.children(recursive=True):
                try:
                    rss = p.memory_info().rss
                    name = " ".join(p.cmdline()[-2:])
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                if rss > self.peak.get(p.pid, ("", 0))[1]:
                    self.peak[p.pid] = (name, rss)
            time.sleep(0.05)

    def worker_peak(self) -> int:
        # Nannies and the scheduler are tiny; workers are the spawned processes that did work.
        return max((rss for _, rss in self.peak.values()), default=0)


def sampled_build(cfg) -> tuple[dict, float, RssSampler]:
    """run_build's summary, its wall seconds, and the RSS sampler that watched its workers."""
    sampler = RssSampler()
    sampler.start()
    t = time.perf_counter()
    try:
        summary = run_build(cfg, progress=False)
    finally:
        sampler.stop.set()
        sampler.join()
    return summary, time.perf_counter() - t, sampler


def dict_gain(version_dir: Path, sample: int = 2000) -> tuple[int, int]:
    """Bytes of all records as built, and their zstd frames re-compressed with a 112 KiB
    dictionary trained on a sample of them (zstd --train's default size)."""
    v = open_version(version_dir)
    dctx = zstandard.ZstdDecompressor()
    raws = [dctx.decompress(f) for s in v.subject_ids for f in frames(v.read_bytes(s))]
    d = zstandard.train_dictionary(112 * 1024, raws[:sample])
    c = zstandard.ZstdCompressor(level=3, dict_data=d)
    return sum(len(v.read_bytes(s)) for s in v.subject_ids), \
        sum(len(c.compress(r)) for r in raws) + len(d.as_bytes())


WORKERS = (2, 4, 8, 16, 32, 64, 128)


def scaling_model(cfg) -> dict:
    """Per stage, the wall time on N workers predicted from this run's measured unit seconds
    (jobs.schedule), next to the ideal unit-seconds / N. Stage 1 is the scan + partition
    graph in the driver's priority order; `warm` is the same with the gzip indexes already
    in INDEX_DIR (as for every build after the first of the same input); `par idx` with each
    cold scan's seek-point pass run by the parallel builder on the threads GZINDEX_THREADS=0
    gives it at N workers (jobs.scan.index_threads), its wall modeled from its measured
    sequential pass (jobs.schedule.index_seconds, parts measured by bench_gzindex.py)."""
    plan = load_plan(cfg)
    done = cfg.work_dir / "done"
    order, deps, secs, warm, markers = [], [], [], [], []
    keys, cold = {}, {}
    for key, _, unit, after in partition_tasks(plan):
        stage = ("scan" if key.startswith("scan-") else
                 "dictionaries" if key == "dictionaries" else "partition")
        m = stage1_marker(cfg, plan, stage, unit)
        markers.append(m)
        keys[key] = len(order)
        order.append(key)
        deps.append([keys[d] for d in after])
        secs.append(m["seconds"])
        warm.append(m["seconds"] - (m.get("index_seconds", 0) if m.get("index_cached") is False
                                    else 0))
        if stage == "scan" and m.get("index_cached") is False and m.get("index_threads") == 1:
            cold[len(order) - 1] = (unit, m["index_seconds"])
    built = [json.loads(p.read_text()) for p in (done / "build").glob("*.json")]
    shards = [m["seconds"] for m in built]
    dataset = json.loads((cfg.version_dir / "dataset.json").read_text())
    timings = dataset["timings"]
    # serial: finalize, and the wall between the stages, when no unit runs: from the last
    # stage-1 unit's end to the first shard's start (the driver's shard map, the workers'
    # restart, dispatch; demo x20: 1.06 s, of which the shard map 0.40). Only for a cold
    # build run by the driver in one go: with reused units or a resume the markers' times
    # are from other runs, and then the driver's shard map alone is counted (a unit makes
    # it, untimed, under SLURM arrays).
    between = timings.get("shard_map", {}).get("wall_seconds", 0.0)
    if between and not dataset.get("stage1_cache", {}).get("reused") and built:
        last = max(m["finished_at"] for m in markers)
        between = max(between, min(m["finished_at"] - m["seconds"] for m in built) - last)
    fin = timings["finalize"]["wall_seconds"] + between
    rows = {}
    for n in WORKERS:
        s1, s1w, s2 = makespan(secs, n, deps), makespan(warm, n, deps), longest_first(shards, n)
        at_n = dataclasses.replace(cfg, max_cpus=n, gzindex_threads=0)
        par, threads = list(secs), {}
        for i, (table, seq) in cold.items():
            threads[table] = index_threads(at_n, plan, table, cores=n)
            par[i] = secs[i] - seq + index_seconds(seq, plan.tables[table]["bytes"],
                                                   threads[table])
        s1p = makespan(par, n, deps)
        rows[n] = {"stage1": s1, "stage1_ideal": sum(secs) / n, "stage1_warm": s1w,
                   "stage1_par": s1p, "build": s2, "build_ideal": sum(shards) / n,
                   "finalize": fin, "total": s1 + s2 + fin, "total_warm": s1w + s2 + fin,
                   "total_par": s1p + s2 + fin, "index_threads": threads}
    for n in WORKERS:
        rows[n]["speedup"] = rows[2]["total"] / rows[n]["total"]
        rows[n]["speedup_warm"] = rows[2]["total_warm"] / rows[n]["total_warm"]
        rows[n]["speedup_par"] = rows[2]["total_par"] / rows[n]["total_par"]
    part = [x for k, x in zip(order, secs) if not k.startswith("scan-") and k != "dictionaries"]
    scan = [x for k, x in zip(order, secs) if k.startswith("scan-")]
    return {"rows": rows, "units": len(part), "scans": len(scan), "shards": len(shards),
            "unit_seconds": sum(part), "scan_seconds": sum(scan),
            "stage1_seconds": sum(secs), "largest_unit": max(part),
            "largest_share": max(part) / (sum(part) + sum(scan)),
            "build_unit_seconds": sum(shards)}


def build_phases(cfg) -> dict[str, float]:
    """Unit-seconds of every build phase (read, place_sort, clean, windows, records, ...),
    summed over the shards' markers."""
    phases: dict = {}
    for marker in (cfg.work_dir / "done" / "build").glob("*.json"):
        for name, sec in json.loads(marker.read_text())["phase_seconds"].items():
            phases[name] = phases.get(name, 0.0) + sec
    return phases


def work_account(cfg, floor_s: float, cpus: int, model: dict) -> dict:
    """Where the build's unit-seconds go, against the read floor's process-seconds (floor_s x
    cpus: every input inflated and parsed once, which any design has to do). With the workers
    busy throughout, a whole build within `ratio` x the floor leaves (ratio - 1) x floor_s x
    cpus unit-seconds for everything beyond parsing: mapping, the shuffle to disk and back,
    placement and sort, cleaning, windows, records, scans and the serial steps."""
    phases = build_phases(cfg)
    build_s = model["build_unit_seconds"]
    parse = floor_s * cpus
    serial = model["rows"][2]["finalize"] * cpus  # no unit runs then: every worker waits
    total = model["stage1_seconds"] + build_s + serial
    return {
        "floor_process_s": round(parse, 1),
        "stage1": {"partition_units": round(model["unit_seconds"], 1),
                   "beyond_parse": round(model["unit_seconds"] - parse, 1),
                   "scans": round(model["scan_seconds"], 1),
                   "dictionaries": round(model["stage1_seconds"] - model["unit_seconds"]
                                         - model["scan_seconds"], 1)},
        "build": {"total": round(build_s, 1),
                  **{k: round(v, 1) for k, v in sorted(phases.items(), key=lambda kv: -kv[1])},
                  "outside_phases": round(build_s - sum(phases.values()), 1)},
        "serial_x_workers": round(serial, 1),
        "total": round(total, 1),
        "beyond_parse": round(total - parse, 1),
        "beyond_parse_allowed_at_1_5x": round(0.5 * parse, 1),
        "beyond_parse_over_allowed": round((total - parse) / (0.5 * parse), 2),
    }


def print_account(k: int, a: dict) -> None:
    s1, b = a["stage1"], a["build"]
    phases = ", ".join(f"{n} {v:,.1f}" for n, v in b.items() if n != "total")
    print(f"\nwork account, demo x{k} (unit-seconds; the floor: {a['floor_process_s']:,.1f} "
          f"process-seconds of parsing)\n"
          f"  stage 1: partition units {s1['partition_units']:,.1f} (beyond the floor's parse: "
          f"{s1['beyond_parse']:,.1f}), scans {s1['scans']:,.1f}, dictionaries "
          f"{s1['dictionaries']:,.1f}\n"
          f"  build: {b['total']:,.1f} = {phases}\n"
          f"  serial steps x workers: {a['serial_x_workers']:,.1f}; all: {a['total']:,.1f}\n"
          f"  beyond parsing: {a['beyond_parse']:,.1f}; a whole build within 1.5x the floor "
          f"leaves {a['beyond_parse_allowed_at_1_5x']:,.1f} ({a['beyond_parse_over_allowed']}x "
          "over)", flush=True)


def print_model(k: int, plan_workers: int, m: dict) -> None:
    print(f"\nscaling model, demo x{k}, plan cut for {plan_workers} workers: {m['units']} "
          f"partition units ({m['unit_seconds']:.1f} unit-s), {m['scans']} scans "
          f"({m['scan_seconds']:.1f} s), largest unit {m['largest_unit']:.2f} s "
          f"({m['largest_share']:.1%} of stage 1), {m['shards']} shards "
          f"({m['build_unit_seconds']:.1f} unit-s)")
    print(f"{'workers':>8} {'stage1':>8} {'ideal':>7} {'build':>7} {'ideal':>7} {'serial':>6} "
          f"{'total':>7} {'speedup':>8} | {'warm idx':>8} {'speedup':>8} | {'par idx':>8} "
          f"{'stage1':>7} {'speedup':>8}  index threads")
    for n, r in m["rows"].items():
        print(f"{n:>8} {r['stage1']:>8.2f} {r['stage1_ideal']:>7.2f} {r['build']:>7.2f} "
              f"{r['build_ideal']:>7.2f} {r['finalize']:>6.2f} {r['total']:>7.2f} "
              f"{r['speedup']:>7.2f}x | {r['total_warm']:>8.2f} {r['speedup_warm']:>7.2f}x | "
              f"{r['total_par']:>8.2f} {r['stage1_par']:>7.2f} {r['speedup_par']:>7.2f}x  "
              + " ".join(f"{t}:{k}" for t, k in r["index_threads"].items()))


def run_scale(demo: Path, k: int, cpus: int, scratch: Path, plan_workers: int = 0,
              unit_mb: float = 0.0, sizes: bool = True) -> dict:
    data = scratch / f"demo_x{k}"
    if not (data / "hosp" / "patients.csv.gz").exists():
        replicate(demo, data, k)
    floor, rows = read_floor(data, cpus)
    out = scratch / f"out_x{k}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = config.load({"DATA_DIR": str(data), "OUT_DIR": str(out), "MAX_CPUS": cpus,
                       "PLAN_WORKERS": plan_workers, "PARTITION_UNIT_MB": unit_mb},
                      environ={})
    summary, wall, sampler = sampled_build(cfg)
    model = scaling_model(cfg)
    n = summary["n_events"]
    plain = with_dict = shard_bytes = float("nan")
    if sizes:
        packed = config.load({"DATA_DIR": str(data), "OUT_DIR": str(out), "MAX_CPUS": cpus,
                              "TRAJECTORY_VERSION": "packed", "LAYOUT": "shards",
                              "PLAN_WORKERS": plan_workers, "PARTITION_UNIT_MB": unit_mb},
                             environ={})
        run_build(packed, progress=False)
        plain, with_dict = dict_gain(cfg.version_dir)
        shard_bytes = sum(p.stat().st_size for p in
                          (packed.version_dir / "patients").glob("*.pack"))
    w = summary["driver_wall_seconds"]
    phases = build_phases(cfg)
    build_cpu = sum(phases.values())
    return {"K": k, "rows": rows, "events": n, "floor_s": floor, "build_s": wall,
            "ratio": wall / floor, "partition_s": w["partition"], "build_stage_s": w["build"],
            "finalize_s": w["finalize"], "rows_per_s": rows / wall,
            "peak_worker_mb": sampler.worker_peak() / 2**20,
            "bytes_per_event_files": plain / n,
            "bytes_per_event_shards": shard_bytes / n,
            "bytes_per_event_dict": with_dict / n,
            "clean_s_per_Mevent": phases["clean"] / n * 1e6,
            "clean_share": phases["clean"] / build_cpu,
            "windows_share": phases["windows"] / build_cpu,
            "window_events_per_s": n / phases["windows"],
            "partition_unit_s": model["unit_seconds"] + model["scan_seconds"],
            "phases": {k: round(v, 2) for k, v in sorted(phases.items())}, "model": model,
            "plan_workers": cfg.plan_workers}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo", default=os.environ.get("MIMIC_DEMO_DIR",
                                                    REPO.parent / "shared/data/mimic-iv-demo"))
    p.add_argument("--times", type=int, nargs="+", default=[20, 100])
    p.add_argument("--max-cpus", type=int, default=2)
    p.add_argument("--scratch", default="/tmp/traj_bench")
    p.add_argument("--plan-workers", type=int, nargs="+", default=None,
                   help="workers each scale's plan is cut for (default MAX_CPUS); e.g. 16 64")
    p.add_argument("--no-sizes", action="store_true",
                   help="skip the packed-layout build and the dictionary (output sizes)")
    p.add_argument("--model-only", action="store_true",
                   help="print the scaling model of the builds already in --scratch (out_xK) "
                        "without building again")
    p.add_argument("--partition-unit-mb", type=float, default=0.0,
                   help="force a unit size (1e6: every table whole, as before units were cut)")
    args = p.parse_args()
    scratch = Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    plan_workers = args.plan_workers or [0] * len(args.times)
    if len(plan_workers) != len(args.times):
        p.error("--plan-workers takes one count per --times scale")
    if args.model_only:
        for k, w in zip(args.times, plan_workers):
            cfg = config.load({"DATA_DIR": str(scratch / f"demo_x{k}"),
                               "OUT_DIR": str(scratch / f"out_x{k}"), "MAX_CPUS": args.max_cpus,
                               "PLAN_WORKERS": w, "PARTITION_UNIT_MB": args.partition_unit_mb},
                              environ={})
            print_model(k, cfg.plan_workers, scaling_model(cfg))
        return 0
    results = [run_scale(Path(args.demo), k, args.max_cpus, scratch, w, args.partition_unit_mb,
                         not args.no_sizes) for k, w in zip(args.times, plan_workers)]
    cols = [c for c in results[0] if c not in ("phases", "model")]
    for c in cols:
        print(f"{c:>24} " + " ".join(f"{r[c]:>14.3f}" if isinstance(r[c], float)
                                     else f"{r[c]:>14}" for r in results))
    for r in results:
        print(f"build phases (unit-seconds, all shards) x{r['K']}: {r['phases']}")
    for r in results:
        print_model(r["K"], r["plan_workers"], r["model"])
    if len(results) > 1:
        a, b = results[0], results[-1]
        print(f"\nscale x{b['K'] / a['K']:.0f}: time x{b['build_s'] / a['build_s']:.2f}, "
              f"peak worker RSS x{b['peak_worker_mb'] / a['peak_worker_mb']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
