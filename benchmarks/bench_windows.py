"""Windowing throughput on one core: events/second through compute_windows, called per stay.

Synthetic: N_STAYS stays, each on an hourly grid of N_WINDOWS windows with N_FEATURES features,
~10M events in all (some before the grid, some not features, some NaN or flagged), sorted by
time within a stay as the pipeline hands them over. Compile time is excluded (one warm-up call).

    python benchmarks/bench_windows.py [--stays 2000] [--windows 72] [--features 30] [--events 10000000]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trajectory.windows.aggregate import compute_windows, grid_for_stay  # noqa: E402
from trajectory.windows.kernels_window import N_STATS, window_stats  # noqa: E402


def make_stays(rng, n_stays, n_windows, n_features, n_events, step):
    per = n_events // n_stays
    stays = []
    for s in range(n_stays):
        intime = 1_600_000_000 + s * 97 * 3600 + int(rng.integers(0, 3600))
        start, n_win = grid_for_stay(intime, intime + n_windows * step - 1, step, n_windows)
        t = np.sort(rng.integers(start - 6 * step, start + n_win * step, per)).astype(np.int64)
        f = rng.integers(-3, n_features, per).astype(np.int32)  # ~10% "not a feature"
        f[f < 0] = -1
        v = (100 + 20 * rng.standard_normal(per)).astype(np.float32)
        v[rng.random(per) < 0.05] = np.nan
        ok = rng.random(per) > 0.05
        stays.append((t, f, v, ok, start, n_win))
    return stays


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stays", type=int, default=2000)
    p.add_argument("--windows", type=int, default=72)
    p.add_argument("--features", type=int, default=30)
    p.add_argument("--events", type=int, default=10_000_000)
    p.add_argument("--step", type=int, default=3600)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()

    stays = make_stays(np.random.default_rng(0), a.stays, a.windows, a.features, a.events, a.step)
    n_ev = sum(len(s[0]) for s in stays)

    t0 = time.perf_counter()
    compute_windows(*stays[0][:4], stays[0][4], a.step, stays[0][5], a.features)  # compile / load cache
    print(f"first call (compile or cache load): {time.perf_counter() - t0:.2f} s")

    def wrapper():
        for t, f, v, ok, start, n_win in stays:
            compute_windows(t, f, v, ok, start, a.step, n_win, a.features)

    def kernel_only():
        # The inputs already have the kernel's dtypes; this is the floor without validation.
        for t, f, v, ok, start, n_win in stays:
            out = np.empty((n_win, a.features, N_STATS), np.float32)
            window_stats(t, t, f, v, ok, start, a.step, n_win, out)  # known = time

    print(f"{a.stays} stays x {a.windows} windows x {a.features} features, {n_ev:,} events")
    for name, fn in (("compute_windows (validated)", wrapper), ("window_stats kernel only", kernel_only)):
        best = min(_timed(fn) for _ in range(a.repeat))
        print(f"{name:28s} {best:6.3f} s  {n_ev / best / 1e6:6.1f} M events/s  "
              f"{best / a.stays * 1e6:6.1f} us/stay")


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
