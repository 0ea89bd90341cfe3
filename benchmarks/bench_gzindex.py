"""The seek-point pass over one .csv.gz: today's zlib-ng pass against the parallel builder
(trajectory.raw.gzindex_parallel) at 1 and 2 threads, interleaved, several rounds, medians; the
index bytes of both compared; and the wall on 16/64/128 cores modeled from the measured
parts (never from this 2-core machine's wall clock).

    python benchmarks/bench_gzindex.py [--input FILE.csv.gz] [--rounds 5] [--scale-text-gb 47]

Default input: demo x20's chartevents (made with trajectory.replicate if missing). The model
(jobs.schedule.index_seconds takes the same parts): rapidgzip's decode costs its measured
CPU-s (every thread, in parallel mode: P = 2) per 4 MiB chunk, ceil(chunks / N) deep; the
zlib-ng segments (one per rapidgzip point, each's thread-seconds measured) go longest-first
on N threads; the export and stitching run on one thread. --scale-text-gb scales every part
by text size to a bigger file of the same kind (x800's chartevents: ~47 GB of text).
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import xxhash  # noqa: E402

import heapq  # noqa: E402
from trajectory.raw import gzindex  # noqa: E402
from trajectory.raw import gzindex_parallel as par  # noqa: E402
from trajectory.replicate import replicate  # noqa: E402

DEFAULT = Path("/tmp/traj_bench/demo_x20/icu/chartevents.csv.gz")
CORES = (2, 16, 64, 128)


def cpu() -> float:
    return par._cpu()


def sequential(path: Path) -> dict:
    t, c = time.perf_counter(), cpu()
    size, points = gzindex.scan_points(path)
    return {"wall": time.perf_counter() - t, "cpu": cpu() - c, "points": points, "size": size}


def parallel(path: Path, threads: int) -> dict:
    timings: dict = {}
    t, c = time.perf_counter(), cpu()
    # per_thread=0: a segment per rapidgzip point, the finest cut (what >= 64 cores use)
    size, points = par.scan_points_parallel(path, threads, gzindex.SPACING, timings=timings,
                                            per_thread=0)
    return {"wall": time.perf_counter() - t, "cpu": cpu() - c, "points": points, "size": size,
            **timings}


def longest_first(seconds: list[float], n: int) -> float:
    """Longest-first on n threads (jobs.schedule.longest_first without dependencies, in
    O(k log n): the x800 profile has ~10,000 segments)."""
    free = [0.0] * n
    for s in sorted(seconds, reverse=True):
        heapq.heappush(free, heapq.heappop(free) + s)
    return max(free)


def model(p: dict, n: int) -> float:
    """Modeled wall on n cores from the measured parts in p."""
    if n <= 1:
        return p["sequential"]
    rg = p["rg_cpu"] / p["chunks"] * math.ceil(p["chunks"] / n)
    return rg + longest_first(p["segment_list"], n) + p["serial"] + p["fixed"]


def scaled(p: dict, f: float) -> dict:
    """The profile of a file f times bigger (chunks, segments and serial work grow with it)."""
    k = max(1, round(f))
    return {"sequential": p["sequential"] * f, "chunks": math.ceil(p["chunks"] * f),
            "rg_cpu": p["rg_cpu"] * f, "segment_list": p["segment_list"] * k,
            "serial": p["serial"] * f, "fixed": p["fixed"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", type=Path, default=DEFAULT)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--demo", default=os.environ.get("MIMIC_DEMO_DIR",
                                                     REPO.parent / "shared/data/mimic-iv-demo"))
    ap.add_argument("--scale-text-gb", type=float, default=47.0,
                    help="also model a file of this much text (x800 chartevents: ~47)")
    args = ap.parse_args()
    path = args.input
    if not path.exists() and path == DEFAULT:
        replicate(Path(args.demo), DEFAULT.parent.parent, 20)
    csize = path.stat().st_size
    if not par.available():
        print("rapidgzip or zlib-ng is missing: nothing to compare")
        return 1

    runs = {"zlib-ng": [], "parallel P=1": [], "parallel P=2": []}
    jobs = {"zlib-ng": lambda: sequential(path), "parallel P=1": lambda: parallel(path, 1),
            "parallel P=2": lambda: parallel(path, 2)}
    names = list(jobs)
    reference = None
    for r in range(args.rounds):
        for name in names[r % 3:] + names[:r % 3]:  # rotate who goes first
            got = jobs[name]()
            if reference is None:
                reference = (got["size"], got["points"])
            assert (got["size"], got["points"]) == reference, f"{name}: other points"
            del got["points"]
            runs[name].append(got)

    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        a, b = Path(tmp) / "seq.gzidx", Path(tmp) / "par.gzidx"
        gzindex.build_index(path, a)
        gzindex.build_index(path, b, threads=2)
        same = a.read_bytes() == b.read_bytes()
        digest = xxhash.xxh3_64_hexdigest(a.read_bytes())
        index_bytes = a.stat().st_size

    med = {name: {k: statistics.median(x[k] for x in rs) for k in ("wall", "cpu")}
           for name, rs in runs.items()}
    size, npoints = reference[0], len(reference[1])
    print(f"input {path}: {csize / 1e6:,.1f} MB gzip, {size / 1e9:.3f} GB text, "
          f"{npoints} seek points; {args.rounds} interleaved rounds (medians; min in brackets)")
    print(f"{'':>14} {'wall s':>8} {'cpu s':>8}  rapidgzip wall/cpu  export  windows  "
          "open+close  segments wall/thread-s  stitch")
    for name, rs in runs.items():
        line = (f"{name:>14} {med[name]['wall']:>8.3f} {med[name]['cpu']:>8.3f} "
                f"[{min(x['wall'] for x in rs):.3f} {min(x['cpu'] for x in rs):.3f}]")
        if name != "zlib-ng":
            m = {k: statistics.median(x[k] for x in rs)
                 for k in ("rapidgzip", "rapidgzip_cpu", "export", "windows", "fixed", "segments",
                           "rest")}
            seg = statistics.median(sum(x["segment_seconds"]) for x in rs)
            line += (f"  {m['rapidgzip']:.3f}/{m['rapidgzip_cpu']:.3f}  {m['export']:.3f}  "
                     f"{m['windows']:.3f}  {m['fixed']:.3f}  {m['segments']:.3f}/{seg:.3f}  "
                     f"{m['rest']:.3f}")
        print(line)
    print(f"index bytes: sequential and parallel (P=2) builds {'IDENTICAL' if same else 'DIFFER'}"
          f" ({index_bytes:,} bytes, XXH3-64 {digest}); every round's points equal")

    # The model's parts: rapidgzip in parallel mode (P=2), median over rounds; the segments
    # of the round with the median total; the serial part from P=2's rounds.
    p2 = runs["parallel P=2"]
    mid = sorted(p2, key=lambda x: sum(x["segment_seconds"]))[len(p2) // 2]
    chunks = math.ceil(csize / par.CHUNK)
    prof = {"sequential": med["zlib-ng"]["cpu"], "chunks": chunks,
            "rg_cpu": statistics.median(x["rapidgzip_cpu"] for x in p2),
            "segment_list": mid["segment_seconds"],
            # grows with the file: the export (every rapidgzip point's window), the windows
            # read back (one per segment), stitching; fixed: opening and closing rapidgzip
            "serial": statistics.median(x["export"] + x["windows"] + x["rest"] for x in p2),
            "fixed": statistics.median(x["fixed"] for x in p2)}
    print(f"\nmodel parts: sequential zlib-ng pass {prof['sequential']:.3f} CPU-s; rapidgzip "
          f"{prof['rg_cpu']:.3f} CPU-s over {chunks} chunks ({prof['rg_cpu'] / chunks * 1e3:.1f}"
          f" ms each; min round {min(x['rapidgzip_cpu'] for x in p2):.3f}); "
          f"{len(prof['segment_list'])} zlib-ng segments, {sum(prof['segment_list']):.3f} "
          f"thread-s (max {max(prof['segment_list']) * 1e3:.1f} ms); serial "
          f"{prof['serial']:.3f} s (grows with the file) + {prof['fixed']:.3f} s (fixed)")
    print("jobs.schedule.INDEX_PROFILE = "
          f"{{'gz_bytes': {csize}, 'sequential': {prof['sequential']:.3f}, 'chunks': {chunks}, "
          f"'rg_cpu': {prof['rg_cpu']:.3f}, 'segments': {len(prof['segment_list'])}, "
          f"'segment_seconds': {sum(prof['segment_list']):.3f}, 'serial': {prof['serial']:.3f}, "
          f"'fixed': {prof['fixed']:.3f}}}")
    f = args.scale_text_gb * 1e9 / size
    for label, p in (("this file", prof), (f"{args.scale_text_gb:g} GB of text (x{f:.1f})",
                                            scaled(prof, f))):
        print(f"\nmodeled wall, {label}: sequential {p['sequential']:.2f} s")
        print(f"{'cores':>6} {'parallel s':>11} {'vs sequential':>14}")
        for n in CORES:
            w = model(p, n)
            print(f"{n:>6} {w:>11.3f} {p['sequential'] / w:>13.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
