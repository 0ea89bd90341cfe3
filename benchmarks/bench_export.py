"""MEDS export against the build of the same version: wall time and peak RSS, one run.

    python benchmarks/bench_export.py --times 20 --max-cpus 2

For each scale K: replicate the demo K times (trajectory.replicate), build it with MAX_CPUS
Dask workers (timed in this process), then run `build_patient_files.py export meds` as the
user would, in a child process (so its peak RSS is its own, interpreter start included): once
as the CLI chooses (in-process below 10,000 patients) and once with `--runner dask`. Every
process of each export is sampled every 20 ms; the peak is the largest single process and
the largest sum at one instant. The machine is shared: only ratios within a run count.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import config  # noqa: E402
from jobs.driver import run_build  # noqa: E402
from trajectory.replicate import replicate  # noqa: E402


class Peak(threading.Thread):
    """Peak RSS of a process and its descendants: the largest process, and the largest sum."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.one = self.total = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            total = 0
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            for p in procs:
                try:
                    rss = p.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                total += rss
                self.one = max(self.one, rss)
            self.total = max(self.total, total)
            time.sleep(0.02)


def export(vdir: Path, out: Path, extra: list[str]) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, str(REPO / "build_patient_files.py"), "export", "meds", str(vdir),
           str(out), "--quiet", *extra]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = Peak(proc.pid)
    peak.start()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t
    peak.stop.set()
    peak.join()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{stderr}")
    inner = float(re.search(r"runner, ([\d.]+) s", stdout).group(1))
    rows = sum(int(n.replace(",", "")) for n in re.findall(r"([\d,]+) rows", stdout))
    size = sum(p.stat().st_size for p in (out / "data").rglob("*.parquet"))
    return {"wall_s": wall, "export_s": inner, "rows": rows, "mb": size / 2**20,
            "peak_process_mb": peak.one / 2**20, "peak_total_mb": peak.total / 2**20,
            "runner": re.search(r"(\w+) runner", stdout).group(1)}


def run_scale(demo: Path, k: int, cpus: int, scratch: Path) -> list[dict]:
    data = scratch / f"demo_x{k}"
    if not (data / "hosp" / "patients.csv.gz").exists():
        replicate(demo, data, k)
    out = scratch / f"out_x{k}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = config.load({"DATA_DIR": str(data), "OUT_DIR": str(out), "MAX_CPUS": cpus},
                      environ={})
    t = time.perf_counter()
    summary = run_build(cfg, progress=False)
    build = time.perf_counter() - t
    rows = []
    for name, extra in (("cli default", []),
                        (f"dask x{cpus}", ["--runner", "dask", "--max-cpus", str(cpus)])):
        r = export(cfg.version_dir, scratch / f"meds_x{k}", extra)
        rows.append({"K": k, "case": name, "patients": summary["n_patients"],
                     "events": summary["n_events"], "build_s": build, **r,
                     "ratio": r["wall_s"] / build})
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo", default=os.environ.get("MIMIC_DEMO_DIR",
                                                    REPO.parent / "shared/data/mimic-iv-demo"))
    p.add_argument("--times", type=int, nargs="+", default=[20])
    p.add_argument("--max-cpus", type=int, default=2)
    p.add_argument("--scratch", default="/tmp/traj_bench_export")
    args = p.parse_args()
    scratch = Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    rows = [r for k in args.times for r in run_scale(Path(args.demo), k, args.max_cpus, scratch)]
    print(f"{'scale':>6} {'case':>12} {'patients':>9} {'events':>11} {'build s':>8} "
          f"{'export s':>9} {'(inner)':>8} {'ratio':>6} {'runner':>7} {'peak proc MB':>13} "
          f"{'peak all MB':>12} {'files MB':>9}")
    for r in rows:
        print(f"{'x' + str(r['K']):>6} {r['case']:>12} {r['patients']:>9,} {r['events']:>11,} "
              f"{r['build_s']:>8.1f} {r['wall_s']:>9.1f} {r['export_s']:>8.1f} "
              f"{r['ratio']:>6.2f} {r['runner']:>7} {r['peak_process_mb']:>13.0f} "
              f"{r['peak_total_mb']:>12.0f} {r['mb']:>9.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
