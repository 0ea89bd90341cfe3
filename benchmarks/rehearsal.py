"""The full-size rehearsal: demo x800 with notes and one 2,000,000-event patient, built cold.

    python benchmarks/rehearsal.py [--times 20 800] [--plan-workers 64] [--max-cpus 2]
                                   [--heavy-events 2000000] [--scratch /tmp/rehearsal]

For each scale K (demo x20 first: the reference for "memory flat in input size"; both carry the
same heavy patient, so that only the input size differs): replicate the real demo K times with
a MIMIC-IV-Note-shaped note/ module (trajectory.replicate), then in one run

- input rows (parsed) and bytes, and the read floor: every table stream-inflated and parsed
  with pyarrow by MAX_CPUS processes (benchmarks/bench_build.read_floor);
- a cold build (empty CACHE_DIR, WORK_DIR, INDEX_DIR) at MAX_CPUS workers with the plan cut
  for --plan-workers, every worker's RSS sampled every 50 ms, and each unit's own peak from its
  marker (jobs.common.fresh_unit_memory): wall per stage next to the floor;
- disk used by CACHE_DIR, WORK_DIR, INDEX_DIR and the version, against the input; bytes per
  event;
- the scaling model (benchmarks/bench_build.scaling_model) on 2, 16, 64 and 128 workers,
  cold index, warm index and the parallel index builder;
- the work account (benchmarks/bench_build.work_account): the build's unit-seconds by stage
  and phase against the floor's process-seconds, and what a whole build within 1.5x the
  floor would leave for everything beyond parsing (`--account-only` prints it again for
  the builds already in SCRATCH, from their markers and SCRATCH/rehearsal.json's floors);
- the heavy patient: its record against its input rows, and `TrajectoryDataset(task=...)`
  reading the last 2,048 events before a prediction time 100 days into its ICU stay;
- the loader in random order over all patients (benchmarks/bench_loader.random_cases), next
  to the real demo's.

Prints every figure and writes them to SCRATCH/rehearsal.json. Needs ~30 GB of scratch for
x800 (checked first). The machine is shared: ratios within one run are what count.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import config  # noqa: E402
from bench_build import (print_account, print_model, read_floor, sampled_build,  # noqa: E402
                         scaling_model, work_account)
from bench_loader import print_random, random_cases  # noqa: E402
from jobs.driver import run_build  # noqa: E402
from trajectory.replicate import DONE, HEAVY_SUBJECT, heavy_patient, replicate  # noqa: E402
from trajectory import open_version  # noqa: E402

MODEL_WORKERS = (2, 16, 64, 128)
PROBE_TASK = "heavy_patient_probe"
PROBE_DAYS = 100  # prediction time: this far into the heavy patient's ICU stay


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) \
        if Path(path).exists() else 0


def unit_peaks(cfg) -> dict:
    """Per stage: units, the largest own peak (MiB) and its unit, the largest starting RSS."""
    out: dict = {}
    for root in (cfg.cache_dir, cfg.work_dir):
        for p in Path(root).rglob("*.json"):
            try:
                m = json.loads(p.read_text())
            except (OSError, ValueError):
                continue
            if not isinstance(m, dict) or m.get("peak_rss_mb") is None:
                continue
            s = out.setdefault(m["stage"], {"units": 0, "peak_mb": 0.0, "unit": None,
                                            "start_mb": 0.0, "peaks": []})
            s["units"] += 1
            s["peaks"].append(m["peak_rss_mb"])
            s["start_mb"] = max(s["start_mb"], m.get("start_rss_mb") or 0.0)
            if m["peak_rss_mb"] > s["peak_mb"]:
                s["peak_mb"], s["unit"] = m["peak_rss_mb"], m["unit"]
    for s in out.values():
        s["median_mb"] = statistics.median(s.pop("peaks"))
    return out


def heavy_checks(vdir: Path, data: Path, heavy_events: int) -> dict:
    """The heavy patient's record against its input, and a task read of its last 2,048 events
    before a prediction time PROBE_DAYS into its stay."""
    from trajectory.torch import TrajectoryDataset

    v = open_version(vdir)
    # the patient's chartevents rows, made again from the same seed (not read back out of a
    # 47 GB table): the values its record must hold
    columns = {t: pl.read_csv(data / t, n_rows=0).columns for t in (
        "icu/chartevents.csv.gz", "hosp/patients.csv.gz", "hosp/admissions.csv.gz",
        "icu/icustays.csv.gz")}
    source = heavy_patient(columns, heavy_events)["icu/chartevents.csv.gz"]["valuenum"].cast(
        pl.Float64).to_numpy()
    row = v.manifest.filter(pl.col("subject_id") == HEAVY_SUBJECT)
    t = time.perf_counter()
    p = v.patient(HEAVY_SUBJECT)
    decode_s = time.perf_counter() - t
    chart = np.char.startswith(p.codes.astype(str), "CHART//")
    stay = pl.read_csv(data / "icu" / "icustays.csv.gz", try_parse_dates=True).filter(
        pl.col("subject_id") == HEAVY_SUBJECT)
    cut = stay["intime"][0] + dt.timedelta(days=PROBE_DAYS)
    labels = pl.DataFrame({"subject_id": [HEAVY_SUBJECT, int(v.subject_ids[0])],
                           "prediction_time": [cut, cut], "boolean_value": [True, False]},
                          schema={"subject_id": pl.Int64, "prediction_time": pl.Datetime("us"),
                                  "boolean_value": pl.Boolean})
    (vdir / "tasks").mkdir(exist_ok=True)
    labels.write_parquet(vdir / "tasks" / f"{PROBE_TASK}.parquet")
    ds = TrajectoryDataset(vdir, task=PROBE_TASK, max_events=2048)
    times, item = [], None
    for _ in range(21):
        ds[1]  # another patient in between: the dataset keeps the last record it read
        t = time.perf_counter()
        item = ds[0]
        times.append(time.perf_counter() - t)
    cut_s = int(cut.replace(tzinfo=dt.timezone.utc).timestamp())
    # the item's rule (cut_rule "known"): events charted and known by the prediction time
    known = (p.events["time"].astype(np.int64)
             + p.events["known_delta"].astype(np.int64)) <= cut_s
    return {"record_bytes": int(row["bytes"][0]), "n_events": int(row["n_events"][0]),
            "chart_events": int(chart.sum()), "chart_events_expected": heavy_events,
            "chart_values_match": bool(np.array_equal(
                np.sort(p.events["value"][chart]), np.sort(source))),
            "decode_whole_s": round(decode_s, 3),
            "task_item_events": int(item["length"]),
            "task_item_last_time_ok": bool(int(item["time"][-1]) <= cut_s),
            "task_item_matches_record": bool(np.array_equal(
                item["time"].numpy(), p.events["time"][known][-2048:])),
            "task_read_ms_first": round(times[0] * 1e3, 2),
            "task_read_ms_median": round(statistics.median(times[1:]) * 1e3, 2),
            "task_read_ms_max": round(max(times[1:]) * 1e3, 2)}


def run_scale(demo: Path, k: int, args, scratch: Path) -> dict:
    data = scratch / f"demo_x{k}"
    if not (data / DONE).exists():  # a replicate killed half-way is redone
        t = time.perf_counter()
        replicate(demo, data, k, heavy_events=args.heavy_events, workers=args.max_cpus)
        print(f"replicated x{k} in {time.perf_counter() - t:.0f} s", flush=True)
    input_bytes = sum(f.stat().st_size for f in data.glob("*/*.csv.gz"))
    earlier = {r["K"]: r for r in args.floors}
    if k in earlier and earlier[k]["input_bytes"] == input_bytes:  # --reuse-floor
        floor, rows = earlier[k]["floor_s"], earlier[k]["input_rows"]
    else:
        floor, rows = read_floor(data, args.max_cpus)
    print(f"x{k}: read floor {floor:.1f} s, {rows:,} rows, {input_bytes / 1e9:.2f} GB",
          flush=True)
    out = scratch / f"out_x{k}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = config.load({"DATA_DIR": str(data), "OUT_DIR": str(out), "MAX_CPUS": args.max_cpus,
                       "PLAN_WORKERS": args.plan_workers}, environ={})
    summary, wall, sampler = sampled_build(cfg)
    model = scaling_model(cfg)
    meta = json.loads((cfg.version_dir / "dataset.json").read_text())
    disk = {"cache": du(cfg.cache_dir), "work": du(cfg.work_dir), "index": du(cfg.index_dir),
            "version": du(cfg.version_dir)}
    n = summary["n_events"]
    workers = sorted((rss for _, rss in sampler.peak.values()), reverse=True)
    res = {"K": k, "input_rows": rows, "input_bytes": input_bytes, "events": n,
           "patients": meta["n_patients"], "shards": meta["n_shards"],
           "floor_s": round(floor, 1), "build_s": round(wall, 1),
           "ratio_to_floor": round(wall / floor, 3),
           "stages_s": {s: round(x, 1) for s, x in summary["driver_wall_seconds"].items()},
           "worker_peaks_mb": [round(x / 2**20) for x in workers[:args.max_cpus + 2]],
           "unit_peaks": unit_peaks(cfg), "disk_bytes": disk,
           "disk_over_input": round(sum(disk.values()) / input_bytes, 3),
           "bytes_per_event": round(disk["version"] / n, 2),
           "record_bytes_per_event": round(meta["record_bytes"] / n, 2),
           "model": {w: {key: round(model["rows"][w][key], 2) for key in (
               "total", "total_warm", "total_par", "speedup", "speedup_warm", "speedup_par",
               "stage1", "stage1_par", "build")} for w in MODEL_WORKERS}}
    print_model(k, args.plan_workers, model)
    res["work"] = work_account(cfg, floor, args.max_cpus, model)
    print_account(k, res["work"])
    if args.heavy_events:
        res["heavy"] = heavy_checks(cfg.version_dir, data, args.heavy_events)
    res["version_dir"] = str(cfg.version_dir)
    print(json.dumps({k2: v for k2, v in res.items() if k2 != "model"}, indent=1), flush=True)
    return res


def account_only(args) -> int:
    scratch = Path(args.scratch)
    runs = {r["K"]: r for r in json.loads((scratch / "rehearsal.json").read_text())["scales"]}
    for k in args.times:
        if k not in runs:
            raise SystemExit(f"{scratch / 'rehearsal.json'}: no run of x{k} (its floor)")
        cfg = config.load({"DATA_DIR": str(scratch / f"demo_x{k}"),
                           "OUT_DIR": str(scratch / f"out_x{k}"), "MAX_CPUS": args.max_cpus,
                           "PLAN_WORKERS": args.plan_workers}, environ={})
        print_account(k, work_account(cfg, runs[k]["floor_s"], args.max_cpus,
                                      scaling_model(cfg)))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo", default=os.environ.get("MIMIC_DEMO_DIR",
                                                    REPO.parent / "shared/data/mimic-iv-demo"))
    p.add_argument("--times", type=int, nargs="+", default=[20, 800])
    p.add_argument("--plan-workers", type=int, default=64)
    p.add_argument("--max-cpus", type=int, default=2)
    p.add_argument("--heavy-events", type=int, default=2_000_000)
    p.add_argument("--scratch", default="/tmp/rehearsal")
    p.add_argument("--loader-items", type=int, default=20_000,
                   help="items timed per loader case (bench_loader --min-items)")
    p.add_argument("--no-loader", action="store_true", help="skip the loader cases")
    p.add_argument("--reuse-floor", default=None, metavar="JSON",
                   help="an earlier run's rehearsal.json: its read floors, for the same input")
    p.add_argument("--account-only", action="store_true",
                   help="print the work account of the builds already in --scratch (out_xK, "
                        "the floors from rehearsal.json) without building again")
    args = p.parse_args()
    if args.account_only:
        return account_only(args)
    args.floors = (json.loads(Path(args.reuse_floor).read_text())["scales"]
                   if args.reuse_floor else [])
    scratch = Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    need = 30e9 if max(args.times) >= 800 else 5e9
    free = shutil.disk_usage(scratch).free
    print(f"scratch {scratch}: {free / 1e9:.0f} GB free", flush=True)
    if free < need and not (scratch / f"out_x{max(args.times)}").exists():
        p.error(f"{scratch} has {free / 1e9:.0f} GB free; the rehearsal needs ~{need / 1e9:.0f}")
    results = [run_scale(Path(args.demo), k, args, scratch) for k in args.times]
    if args.no_loader:
        (scratch / "rehearsal.json").write_text(json.dumps({"scales": results}, indent=1,
                                                           default=str))
        return 0
    # the loader: the real demo (built here) and every scale, random order over all patients
    demo_out = scratch / "out_demo"
    if not (demo_out / "v1" / "dataset.json").exists():
        cfg = config.load({"DATA_DIR": str(args.demo), "OUT_DIR": str(demo_out),
                           "MAX_CPUS": args.max_cpus}, environ={})
        run_build(cfg, progress=False)
    loader = [random_cases(Path(v), args.loader_items, 0, None)
              for v in [demo_out / "v1", *(r["version_dir"] for r in results)]]
    print_random(loader)
    a, b = results[0], results[-1]
    peak = lambda r: max(r["worker_peaks_mb"])  # noqa: E731
    summary = {
        "build_over_floor": b["ratio_to_floor"], "build_s": b["build_s"],
        "peak_worker_mb": peak(b), "peak_worker_mb_ref": peak(a),
        "peak_vs_ref": round(peak(b) / peak(a), 3),
        "speedup_2_to_64": b["model"][64]["speedup"],
        "speedup_2_to_64_par_index": b["model"][64]["speedup_par"],
        "speedup_2_to_16": b["model"][16]["speedup"],
        "disk_over_input": b["disk_over_input"],
        "loader_items_s_vs_demo": {c: round(loader[-1][c] / loader[0][c], 3) for c in (
            "dataset[i], 1 process", "DataLoader workers=2")},
    }
    print("\nsummary (last scale):", json.dumps(summary, indent=1))
    (scratch / "rehearsal.json").write_text(json.dumps(
        {"scales": results, "loader": loader, "summary": summary}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
