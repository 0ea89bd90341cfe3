"""Windowed aggregation of one stay's events: validation and the time grid around the kernel.

The numba kernel (`kernels_window.window_stats`) trusts its inputs; this wrapper checks them
once per call with messages that name the argument and the offending value, converts to the
kernel's dtypes, and allocates the output. Statistic conventions are in kernels_window.
"""
from __future__ import annotations

import operator

import numpy as np

from .kernels_window import N_STATS, STAT_NAMES, window_stats

__all__ = ["STAT_NAMES", "compute_windows", "grid_for_stay"]


def _int(name: str, x, fn: str = "compute_windows") -> int:
    # operator.index accepts Python and numpy integers but not floats, so 3600.5 is not
    # silently truncated into a different grid.
    try:
        return operator.index(x)
    except TypeError:
        raise ValueError(f"{fn}: {name!r} must be an integer, got {x!r}") from None


def _array(name: str, x, kinds: str, dtype, what: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"compute_windows: {name!r} must be 1-D, got shape {a.shape}")
    # An empty list becomes float64; let it through whatever the kind, nothing to misread.
    if a.size and a.dtype.kind not in kinds:
        raise ValueError(f"compute_windows: {name!r} must be {what}, got dtype {a.dtype}")
    if a.dtype.kind in "iu" and np.dtype(dtype).kind in "iu" and a.size:
        info = np.iinfo(dtype)
        lo, hi = a.min(), a.max()
        if lo < info.min or hi > info.max:
            raise ValueError(f"compute_windows: {name!r} values [{lo}, {hi}] do not fit {np.dtype(dtype)}")
    return np.ascontiguousarray(a, dtype=dtype)


def compute_windows(time, feature, value, valid, start, step, n_windows, n_features,
                    known=None) -> np.ndarray:
    """Statistics of each feature over fixed windows: float32 array [n_windows, n_features, S].

    time: epoch seconds, sorted ascending (integers). feature: ids in [0, n_features), or -1
    for an event that is not a windowed feature. value: NaN = no value. valid: bool, False =
    left out (grids.py: flagged by a WINDOW_EXCLUDE rule). known: epoch seconds each value
    became known (integers), or None: known when charted. Window w covers
    [start + w*step, start + (w+1)*step) and counts the values charted in it and known by
    its end; the last axis follows STAT_NAMES. NaN values, invalid rows and feature -1 are
    skipped.
    """
    start, step = _int("start", start), _int("step", step)
    n_windows, n_features = _int("n_windows", n_windows), _int("n_features", n_features)
    if step <= 0:
        raise ValueError(f"compute_windows: 'step' must be > 0 seconds, got {step}")
    if n_windows < 0:
        raise ValueError(f"compute_windows: 'n_windows' must be >= 0, got {n_windows}")
    if n_features < 0:
        raise ValueError(f"compute_windows: 'n_features' must be >= 0, got {n_features}")

    time = _array("time", time, "iu", np.int64, "integer epoch seconds")
    feature = _array("feature", feature, "iu", np.int32, "integer feature ids")
    value = _array("value", value, "fiu", np.float32, "numeric")
    # Only bool: an integer array here is most likely the QC `flags` bitmask, where nonzero
    # means flagged, i.e. the opposite of valid.
    valid = _array("valid", valid, "b", np.bool_, "bool (True = keep)")

    known = time if known is None else _array("known", known, "iu", np.int64,
                                              "integer epoch seconds")
    n = time.shape[0]
    for name, a in (("feature", feature), ("value", value), ("valid", valid), ("known", known)):
        if a.shape[0] != n:
            raise ValueError(f"compute_windows: {name!r} has length {a.shape[0]}, 'time' has {n}")
    if n:
        bad = np.flatnonzero(time[1:] < time[:-1])
        if bad.size:
            i = int(bad[0]) + 1
            raise ValueError(f"compute_windows: 'time' must be sorted ascending, first decrease at "
                             f"index {i} ({time[i - 1]} > {time[i]})")
        bad = np.flatnonzero((feature < -1) | (feature >= n_features))
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"compute_windows: 'feature' ids must be -1 or in [0, {n_features}), "
                             f"got {feature[i]} at index {i}")

    out = np.empty((n_windows, n_features, N_STATS), dtype=np.float32)
    window_stats(time, known, feature, value, valid, np.int64(start), np.int64(step),
                 np.int64(n_windows), out)
    return out


def grid_for_stay(intime, outtime, step, max_windows) -> tuple[int, int]:
    """(start, n_windows) of the grid covering [intime, outtime), all in epoch seconds.

    start is intime floored to a multiple of step counted from 1970-01-01 (whole hours for
    step 3600), so windows of different stays line up on the clock. n_windows =
    ceil((outtime - start) / step), capped at max_windows and at least 1, so a stay whose
    outtime is missing-and-filled or not after intime still gets its first window.
    """
    g = "grid_for_stay"
    intime, outtime = _int("intime", intime, g), _int("outtime", outtime, g)
    step, max_windows = _int("step", step, g), _int("max_windows", max_windows, g)
    if step <= 0:
        raise ValueError(f"grid_for_stay: 'step' must be > 0 seconds, got {step}")
    if max_windows < 1:
        raise ValueError(f"grid_for_stay: 'max_windows' must be >= 1, got {max_windows}")
    start = intime - intime % step  # Python's % floors, so this is right before 1970 too
    n = -(-(outtime - start) // step)
    return start, max(1, min(n, max_windows))
