"""What a stage would take on N workers, from the measured seconds of its units.

The scaling model of benchmarks/bench_build.py: a worker that falls idle takes the first
ready unit in priority order (the driver's order: scans, then the biggest tables' units; for
shards, longest first). Greedy list scheduling is what Dask does with one thread per worker,
so the model needs no claim about cores that this machine does not have, only the per-unit
times measured in one run (opening, seeking and indexing included).
"""
from __future__ import annotations

import heapq
import math


def makespan(seconds: list[float], workers: int, deps: list[list[int]] | None = None) -> float:
    """Wall time of units with these durations, listed in priority order, on `workers`
    workers; deps[i] lists the units that unit i waits for (earlier in the list)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    n = len(seconds)
    deps = deps or [[] for _ in range(n)]
    finish = [0.0] * n
    free = [0.0] * workers  # when each worker falls idle (a heap)
    heapq.heapify(free)
    pending = list(range(n))
    while pending:
        t = heapq.heappop(free)
        # the first unit in priority order whose inputs are done by t; else wait for one
        ready = [i for i in pending if all(finish[d] <= t and d not in pending for d in deps[i])]
        if not ready:
            t = min(max(finish[d] for d in deps[i]) for i in pending
                    if all(d not in pending for d in deps[i]))
            ready = [i for i in pending if all(d not in pending and finish[d] <= t
                                               for d in deps[i])]
        i = ready[0]
        pending.remove(i)
        finish[i] = t + seconds[i]
        heapq.heappush(free, finish[i])
    return max(finish, default=0.0)


def longest_first(seconds: list[float], workers: int) -> float:
    return makespan(sorted(seconds, reverse=True), workers)


# The parallel seek-point pass (trajectory.raw.gzindex_parallel) as measured by
# benchmarks/bench_gzindex.py on demo x20's chartevents (89.2 MB gzip, 1.18 GB of text), in
# seconds of this 2-core VM: the one zlib-ng pass; rapidgzip's parallel decode (CPU-s, every
# thread, in its 4 MiB chunks); the zlib-ng re-inflate of its segments (thread-s, one per
# rapidgzip point); what runs on one thread (rapidgzip's index export, the windows read
# back, stitching, the trailer check), and what is fixed (opening and closing rapidgzip).
# Medians of 5 interleaved rounds, 2026-12-04, on a loaded machine (load ~10 on 2 cores).
INDEX_PROFILE = {"gz_bytes": 89_242_946, "sequential": 0.547, "chunks": 22, "rg_cpu": 1.667,
                 "segments": 269, "segment_seconds": 0.875, "serial": 0.049, "fixed": 0.042}


def index_seconds(sequential: float, gz_bytes: int, threads: int,
                  profile: dict = INDEX_PROFILE) -> float:
    """Modeled wall of a scan's seek-point pass over a file of `gz_bytes` on `threads` cores,
    given what its sequential pass took (`sequential`, measured: it sets the machine's
    speed). Each part of the profile is scaled by size and speed: rapidgzip's chunks run
    ceil(chunks / threads) deep, the segments ceil(segments / threads) deep, then the
    serial part. threads <= 1: the sequential pass itself."""
    if threads <= 1:
        return sequential
    size = max(gz_bytes / profile["gz_bytes"], 1e-9)
    speed = sequential / (profile["sequential"] * size)
    chunks = max(1, math.ceil(profile["chunks"] * size))
    segments = max(1, math.ceil(profile["segments"] * size))
    rg = profile["rg_cpu"] * size * speed / chunks * math.ceil(chunks / threads)
    seg = profile["segment_seconds"] * size * speed / segments * math.ceil(segments / threads)
    return rg + seg + profile["serial"] * size * speed + profile["fixed"]
