"""What a stage would take on N workers, from the measured seconds of its units.

The scaling model of benchmarks/bench_build.py: a worker that falls idle takes the first
ready unit in priority order (the driver's order: scans, then the biggest tables' units; for
shards, longest first). Greedy list scheduling is what Dask does with one thread per worker,
so the model needs no claim about cores that this machine does not have, only the per-unit
times measured in one run (opening, seeking and indexing included).
"""
from __future__ import annotations

import heapq


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
