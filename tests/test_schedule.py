"""The scaling model's scheduler (jobs.schedule) against hand-worked cases and an event-by-event
reference simulation."""
import random

import pytest

from jobs.schedule import longest_first, makespan


def reference(seconds, workers, deps):
    """Slow, obvious list scheduling: advance time unit by unit of 0.5 s (durations here are
    multiples of 0.5); at each tick every idle worker takes the first ready unit."""
    n, t = len(seconds), 0.0
    start, finish = [None] * n, [None] * n
    busy_until = [0.0] * workers
    while any(f is None for f in finish) or any(s is None for s in start):
        for w in range(workers):
            if busy_until[w] <= t:
                for i in range(n):
                    if start[i] is None and all(finish[d] is not None and finish[d] <= t
                                                for d in deps[i]):
                        start[i], finish[i] = t, t + seconds[i]
                        busy_until[w] = finish[i]
                        break
        t += 0.5
        if t > 1e4:
            raise RuntimeError("no progress")
    return max(finish, default=0.0)


def test_hand_worked_cases():
    assert longest_first([3, 3, 2, 2, 2], 2) == 7  # 3+2+2 | 3+2
    assert makespan([1, 5, 1, 1], 2, [[], [], [0], [1]]) == 6  # unit 3 waits for unit 1
    assert makespan([2, 1, 1], 4, [[], [0], [0]]) == 3  # a scan, then its two parts
    assert makespan([], 3) == 0.0
    with pytest.raises(ValueError, match="workers"):
        makespan([1.0], 0)


@pytest.mark.parametrize("seed", range(20))
def test_matches_reference_and_bounds(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 25)
    seconds = [rng.randint(1, 8) / 2 for _ in range(n)]
    deps = [[d for d in range(i) if rng.random() < 0.15] for i in range(n)]
    for workers in (1, 2, 3, 8):
        got = makespan(seconds, workers, deps)
        assert got == reference(seconds, workers, deps)
        assert got >= sum(seconds) / workers - 1e-9 and got >= max(seconds)
    assert makespan(seconds, 1, deps) == pytest.approx(sum(seconds))
