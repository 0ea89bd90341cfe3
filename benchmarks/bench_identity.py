"""What whole-file input identity (trajectory.raw.read.fingerprint) costs: the first hash of every
input, and a later build's stat-only memo hit, against the plan step before the change.

    python benchmarks/bench_identity.py DATA_DIR [--old-repo ../main] [--drop-caches]
        [--build-seconds S] [--out benchmarks/identity_figures.txt]

Each make_plan runs in a fresh process (imports not timed) with a fresh OUT_DIR, so the memo
(INDEX_DIR/_hashes) is empty unless the row says otherwise. `--old-repo` times the same
make_plan in another checkout (the code before the change: a hash of the first and last MiB).
`--drop-caches` (root) also times the cold memo with the page cache dropped, so the inputs
come from disk. `--build-seconds`: the wall time of a whole build of the same input, measured
elsewhere (bench_build.py), to give the first hash as a share of it.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from trajectory.raw.read import fingerprints  # noqa: E402

PLAN_SNIPPET = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import config
from trajectory.events.plan import make_plan
cfg = config.load({"DATA_DIR": sys.argv[2], "OUT_DIR": sys.argv[3]}, environ={})
t = time.perf_counter()
make_plan(cfg)
print(json.dumps({"seconds": time.perf_counter() - t}))
"""


def plan_seconds(repo: Path, data: Path, out: Path) -> float:
    run = subprocess.run([sys.executable, "-c", PLAN_SNIPPET, str(repo), str(data), str(out)],
                         check=True, capture_output=True, text=True, cwd=repo)
    return json.loads(run.stdout.strip().splitlines()[-1])["seconds"]


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def warm(files: list[Path]) -> None:
    for f in files:
        with open(f, "rb") as fh:
            while fh.read(1 << 24):
                pass


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--old-repo", type=Path)
    ap.add_argument("--drop-caches", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--build-seconds", type=float)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "identity_figures.txt")
    args = ap.parse_args()
    data = args.data.resolve()
    files = sorted(p for p in data.rglob("*") if p.is_file() and p.name.endswith(
        (".csv.gz", ".csv", ".parquet")))
    total = sum(p.stat().st_size for p in files)
    rows = [f"input: {data}, {len(files)} files, {total:,} bytes ({total / 2**20:,.0f} MiB)",
            f"machine: {os.cpu_count()} CPUs; best of {args.repeat} runs unless said"]
    tmp = Path(tempfile.mkdtemp(prefix="bench_identity-"))
    try:
        warm(files)
        best = lambda fn: min(timed(fn) for _ in range(args.repeat))  # noqa: E731
        seq = best(lambda: [fingerprints([p], None) for p in files])
        pool = best(lambda: fingerprints(files, None))
        rows.append(f"hash every input, no memo, page cache warm: {seq:.3f} s one at a time, "
                    f"{pool:.3f} s in threads ({total / pool / 1e9:.1f} GB/s)")
        memo = tmp / "memo"
        fingerprints(files, memo)
        hit = best(lambda: fingerprints(files, memo))
        rows.append(f"fingerprint every input, memo hit (stat + memo read): {hit * 1e3:.1f} ms")

        def new_plan(label: str, cold_memo: bool, cold_disk: bool = False) -> float:
            out = tmp / f"out-{label}"
            if cold_memo:
                shutil.rmtree(out, ignore_errors=True)
            if cold_disk:
                drop_caches()
            return plan_seconds(REPO, data, out)

        if args.old_repo:
            warm(files)
            old = min(plan_seconds(args.old_repo.resolve(), data, tmp / "old")
                      for _ in range(args.repeat))
            rows.append(f"make_plan before (first and last MiB hashed), page cache warm: "
                        f"{old:.3f} s")
        warm(files)
        cold = min(new_plan("cold", True) for _ in range(args.repeat))
        rows.append(f"make_plan after, memo empty (every input hashed), page cache warm: "
                    f"{cold:.3f} s")
        if args.drop_caches:
            disk = min(new_plan("disk", True, True) for _ in range(args.repeat))
            rows.append(f"make_plan after, memo empty, page cache dropped (inputs from disk): "
                        f"{disk:.3f} s ({total / disk / 1e6:,.0f} MB/s)")
            if args.old_repo:
                old_disk = []
                for _ in range(args.repeat):
                    drop_caches()
                    old_disk.append(plan_seconds(args.old_repo.resolve(), data, tmp / "old"))
                rows.append(f"make_plan before, page cache dropped: {min(old_disk):.3f} s")
        warm(files)
        new_plan("memo", True)
        again = min(new_plan("memo", False) for _ in range(args.repeat))
        rows.append(f"make_plan after, memo filled by an earlier build (stat only): "
                    f"{again:.3f} s")
        if args.build_seconds:
            worst = disk if args.drop_caches else cold
            rows.append(f"first hash against a {args.build_seconds:.0f} s build of this input "
                        f"(given, not measured here): +{worst - again:.2f} s, "
                        f"{(worst - again) / args.build_seconds:.2%} of it, once")
            if args.old_repo:
                rows.append(f"later builds: make_plan {again:.3f} s, {old - again:.3f} s less "
                            "than before (a stat against reading 2 MiB of every input)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = "\n".join(rows) + "\n"
    print(text, end="")
    args.out.write_text(text)


if __name__ == "__main__":
    main()
