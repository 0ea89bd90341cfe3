"""Loader throughput against the format's floor (zstd decompression of the same records).

    python benchmarks/bench_loader.py [--version-dir trajectories/v1]

Prints records/s and events/s for: plain zstd decompression (the floor), single-process decode
through TrajectoryDataset, and DataLoader with 0, 1 and 2 workers (padded collate), plus the
peak RSS of each worker process. Without --version-dir it builds the real demo first.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import zstandard

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from trajectory.store import open_version  # noqa: E402
from trajectory.torch import TrajectoryDataset, collate_trajectories  # noqa: E402


def _rss_mb() -> float:
    # current RSS, sampled per batch: ru_maxrss would include the parent's high-water mark,
    # which Linux copies into a forked worker
    return psutil.Process().memory_info().rss / 2**20


def collate_with_rss(batch):
    """Runs in the worker: the batch plus that worker process's RSS now."""
    return collate_trajectories(batch), _rss_mb()


def drain(items) -> None:
    for _ in items:  # nothing kept: memory stays one item (or batch) deep
        pass


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version-dir", default=None)
    p.add_argument("--repeat", type=int, default=3, help="passes over the version per case")
    args = p.parse_args()
    vdir = args.version_dir
    if vdir is None:
        out = Path("/tmp/bench_loader")
        demo = os.environ.get("MIMIC_DEMO_DIR", REPO.parent / "shared/data/mimic-iv-demo")
        if not (out / "v1" / "dataset.json").exists():
            subprocess.run([sys.executable, str(REPO / "build_patient_files.py"), "--data-dir",
                            str(demo), "--out-dir", str(out), "--quiet"], check=True)
        vdir = out / "v1"
    v = open_version(vdir)
    sids = v.subject_ids
    n_events = int(v.manifest["n_events"].sum())
    blobs = [v.read_bytes(s) for s in sids]  # warm the page cache; the floor excludes I/O too
    rows = []

    def case(name, fn):
        t = time.perf_counter()
        for _ in range(args.repeat):
            fn()
        dt = (time.perf_counter() - t) / args.repeat
        rows.append((name, len(sids) / dt, n_events / dt))

    dctx = zstandard.ZstdDecompressor()
    case("zstd decompress (floor)", lambda: drain(dctx.decompress(b) for b in blobs))
    del blobs  # forked workers would inherit them and count them in their RSS
    ds = TrajectoryDataset(vdir, with_windows=True)
    case("dataset[i], 1 process", lambda: drain(ds[i] for i in range(len(ds))))
    peaks = {}
    for workers in (0, 1, 2):
        dl = DataLoader(ds, batch_size=16, num_workers=workers, collate_fn=collate_with_rss,
                        persistent_workers=workers > 0)
        seen = []
        case(f"DataLoader workers={workers}", lambda dl=dl: seen.extend(r for _, r in dl))
        peaks[workers] = max(seen)
        del dl
    floor = rows[0][1]
    print(f"{len(sids)} records, {n_events:,} events, torch {torch.__version__}")
    print(f"{'case':<28}{'records/s':>12}{'events/s':>16}{'vs floor':>10}")
    for name, rps, eps in rows:
        print(f"{name:<28}{rps:>12,.0f}{eps:>16,.0f}{rps / floor:>10.2f}")
    for workers, mb in peaks.items():
        print(f"peak RSS per loading process, workers={workers}: {mb:,.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
