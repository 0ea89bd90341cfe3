"""A second version that changes only a stage-2 setting, against a cold build (one run).

    python benchmarks/bench_rebuild.py --times 20 --max-cpus 2

Replicates the demo K times, builds version `a` cold (empty OUT_DIR: no cache, no gzip
index), then version `b` with OUTLIER_K changed in the same OUT_DIR (stage 1 from the cache),
then `b` cold in a second OUT_DIR, and checks that both `b`s hold the same bytes (record
checksums, codes.parquet, qc_report.json). Prints the wall times and the ratio. The machine is
shared, so only ratios within one run count.
"""
from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import time
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import config  # noqa: E402
from jobs.driver import run_build  # noqa: E402
from trajectory.replicate import replicate  # noqa: E402


def build(data: Path, out: Path, version: str, cpus: int, **settings) -> tuple[float, dict]:
    cfg = config.load({"DATA_DIR": str(data), "OUT_DIR": str(out), "MAX_CPUS": cpus,
                       "TRAJECTORY_VERSION": version, **settings}, environ={})
    t = time.perf_counter()
    summary = run_build(cfg, progress=False)
    return time.perf_counter() - t, summary


def same_bytes(a: Path, b: Path) -> bool:
    cols = ["subject_id", "n_events", "checksum"]
    same = pl.read_parquet(a / "manifest.parquet").select(cols).equals(
        pl.read_parquet(b / "manifest.parquet").select(cols))
    return same and all(filecmp.cmp(a / f, b / f, shallow=False)
                        for f in ("codes.parquet", "qc_report.json"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", default=str(REPO.parent / "shared" / "data" / "mimic-iv-demo"))
    ap.add_argument("--times", type=int, default=20)
    ap.add_argument("--max-cpus", type=int, default=2)
    ap.add_argument("--scratch", default="/tmp/traj_bench")
    ap.add_argument("--outlier-k", type=float, default=2.5, help="version b's OUTLIER_K")
    args = ap.parse_args()
    scratch = Path(args.scratch)
    data = scratch / f"demo_x{args.times}"
    if not (data / "hosp" / "patients.csv.gz").exists():
        replicate(Path(args.demo), data, args.times)
    out, cold = scratch / "rebuild_out", scratch / "rebuild_cold"
    for d in (out, cold):
        shutil.rmtree(d, ignore_errors=True)
    t_a, s_a = build(data, out, "a", args.max_cpus)
    t_b, s_b = build(data, out, "b", args.max_cpus, OUTLIER_K=args.outlier_k)
    t_c, _ = build(data, cold, "b", args.max_cpus, OUTLIER_K=args.outlier_k)
    same = same_bytes(out / "b", cold / "b")
    c = s_b["stage1_cache"]
    print(f"demo x{args.times}, MAX_CPUS={args.max_cpus}, {s_a['n_events']:,} events")
    print(f"{'build':<44} {'wall s':>7} {'x cold':>7}")
    print(f"{'a: cold (empty OUT_DIR)':<44} {t_a:7.1f} {1:7.2f}")
    print(f"{'b: OUTLIER_K=' + str(args.outlier_k) + ', stage 1 from the cache':<44} {t_b:7.1f} "
          f"{t_b / t_a:7.2f}")
    print(f"{'b: cold, for the byte check':<44} {t_c:7.1f} {t_c / t_a:7.2f}")
    print(f"b reused {c['reused']} of {c['units']} stage-1 units; b's records, codes and QC "
          f"report {'equal' if same else 'DIFFER FROM'} the cold build's")
    print("stage seconds, a:", s_a["driver_wall_seconds"])
    print("stage seconds, b:", s_b["driver_wall_seconds"])
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
