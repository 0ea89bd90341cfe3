"""Numba kernels for windowed aggregation: arrays in, preallocated `out`, no I/O.

They run inside Dask worker processes that are each one core, so they are `nogil` and never
`parallel=True` (a thread pool per worker would oversubscribe the machine). Callers should go
through `trajectory.windows.aggregate.compute_windows`, which validates and converts the inputs.

Statistic conventions (the order of the last axis of `out` is STAT_NAMES):

- count: observations in the window; 0 (not NaN) when empty. Every other statistic except
  time_since_last is NaN for an empty window.
- mean, min, max: of the values in the window.
- last: value of the latest observation in the window; ties on time go to the one later in
  input order (the record's event order is deterministic, so this is too).
- std: population standard deviation (ddof=0). Chosen so a window with a single observation
  has std 0 rather than NaN: the statistic is then defined whenever mean is, which keeps the
  NaN pattern of a window simple (NaN <=> count == 0) and matches numpy's default; count sits
  alongside, so a model can still tell "one observation" from "no spread".
- slope: least-squares slope of value against time in HOURS (value units per hour) within the
  window; NaN when count < 2 or when all its observations share one time.
- time_since_last: hours from the window's END to the most recent usable observation of that
  feature strictly before the end, looking back through earlier windows and before the grid
  start; NaN if there is none. Windows are half-open [s, e): an observation at exactly e
  belongs to the next window, so counting it here would leak the next window's data into this
  one. Thus it lies in (0, step/3600] when the window has an observation.

An observation is used when feature >= 0, valid is True and value is not NaN; anything else is
skipped everywhere, time_since_last included.

Known by the window's end: each observation also has the time it became known (`known`, >=
its time; a lab's result time). A window counts only the values known by its end: one
charted in window w but known after w's end is in no window's statistics, and counts for
time_since_last from the first window whose end is at or after its known time. With known =
time (the charttime rule) every value counts in the window it was charted in, and the
statistics are those of the plain rule above. So a window row that ends by a prediction time
holds only what was known then, whatever is resulted later (trajectory/windows/grids.py keeps both).

Accumulation is one pass over the events into a float64 scratch block per (window, feature),
then one pass over the output. Mean, variance and the time/value covariance use Welford's
updates (numerically stable, no catastrophic cancellation for values far from zero), with t in
seconds relative to the window start (exact in float64). The kernel does not itself rely on
sorted input (the window of each event is computed, and `last` compares times), but the
wrapper requires it because the tie rule for `last` is defined by input order.
"""
from __future__ import annotations

import numba
import numpy as np

STAT_NAMES = ("count", "mean", "min", "max", "last", "std", "slope", "time_since_last")
N_STATS = len(STAT_NAMES)
(S_COUNT, S_MEAN, S_MIN, S_MAX, S_LAST, S_STD, S_SLOPE, S_TSL) = range(N_STATS)

# Slots of the float64 scratch block acc[w, f, :].
_A_N, _A_MEAN_V, _A_M2_V, _A_MEAN_T, _A_M2_T, _A_C_TV, _A_MIN, _A_MAX, _A_LAST, _A_LAST_T = range(10)
_N_ACC = 10

_SECONDS_PER_HOUR = 3600.0


@numba.njit(cache=True, nogil=True)
def window_stats(time, known, feature, value, valid, start, step, n_windows, out):
    """Fill out[n_windows, n_features, N_STATS] (float32) with per-window statistics.

    time int64[n] epoch seconds, known int64[n] when each value became known (`time` itself
    for the charttime rule), feature int32[n] (-1 = not a feature), value float32[n] (NaN =
    skip), valid bool_[n] (False = left out, e.g. flagged by QC: skip). Window w covers
    [start + w*step, start + (w+1)*step) and counts only the values known by its end. See
    the module docstring for the statistics.
    """
    n_features = out.shape[1]
    nan = np.float32(np.nan)
    acc = np.zeros((n_windows, n_features, _N_ACC), dtype=np.float64)
    # Latest usable observation time per feature known before the grid's first end (if
    # has_pre), and per (window, feature) the latest one that first becomes known by the end
    # of that window (if has_vis): time_since_last is a running max over both.
    pre_t = np.zeros(n_features, dtype=np.int64)
    has_pre = np.zeros(n_features, dtype=np.bool_)
    vis_t = np.zeros((n_windows, n_features), dtype=np.int64)
    has_vis = np.zeros((n_windows, n_features), dtype=np.bool_)

    for i in range(time.shape[0]):
        f = feature[i]
        if f < 0 or not valid[i]:
            continue
        v = value[i]
        if np.isnan(v):
            continue
        if f >= n_features:
            # The wrapper rejects this with a precise message; here it only guards memory.
            raise ValueError("window_stats: feature id >= n_features")
        t = time[i]
        w = (t - start) // step  # the window charted in (floor: negative before the grid)
        # the first window whose end is at or after `known`: ceil((known - start) / step) - 1
        wk = -((start - known[i]) // step) - 1
        wv = max(w, wk)  # the first window whose end sees this value
        if wv < 0:
            if not has_pre[f] or t > pre_t[f]:
                pre_t[f] = t
                has_pre[f] = True
            continue
        if wv >= n_windows:
            continue
        if not has_vis[wv, f] or t > vis_t[wv, f]:
            vis_t[wv, f] = t
            has_vis[wv, f] = True
        if w != wv:  # known only after its own window ended: in no window's statistics
            continue
        tr = np.float64(t - (start + w * step))  # seconds since the window start
        vv = np.float64(v)
        a = acc[w, f]
        n = a[_A_N] + 1.0
        a[_A_N] = n
        dt = tr - a[_A_MEAN_T]
        dv = vv - a[_A_MEAN_V]
        a[_A_MEAN_T] += dt / n
        a[_A_MEAN_V] += dv / n
        a[_A_M2_T] += dt * (tr - a[_A_MEAN_T])
        a[_A_M2_V] += dv * (vv - a[_A_MEAN_V])
        a[_A_C_TV] += dt * (vv - a[_A_MEAN_V])
        if n == 1.0:
            a[_A_MIN] = vv
            a[_A_MAX] = vv
            a[_A_LAST] = vv
            a[_A_LAST_T] = tr
        else:
            if vv < a[_A_MIN]:
                a[_A_MIN] = vv
            if vv > a[_A_MAX]:
                a[_A_MAX] = vv
            if tr >= a[_A_LAST_T]:  # >=: a tie goes to the later event in input order
                a[_A_LAST] = vv
                a[_A_LAST_T] = tr

    for f in range(n_features):
        seen = has_pre[f]
        last_t = pre_t[f]  # the latest usable observation known so far, if seen
        for w in range(n_windows):
            a = acc[w, f]
            o = out[w, f]
            n = a[_A_N]
            if has_vis[w, f] and (not seen or vis_t[w, f] > last_t):
                last_t = vis_t[w, f]
                seen = True
            o[S_COUNT] = np.float32(n)
            if n == 0.0:
                for s in range(S_MEAN, S_TSL):
                    o[s] = nan
            else:
                o[S_MEAN] = np.float32(a[_A_MEAN_V])
                o[S_MIN] = np.float32(a[_A_MIN])
                o[S_MAX] = np.float32(a[_A_MAX])
                o[S_LAST] = np.float32(a[_A_LAST])
                o[S_STD] = np.float32(np.sqrt(a[_A_M2_V] / n))
                if n >= 2.0 and a[_A_M2_T] > 0.0:
                    # value per second -> value per hour
                    o[S_SLOPE] = np.float32(a[_A_C_TV] / a[_A_M2_T] * _SECONDS_PER_HOUR)
                else:
                    o[S_SLOPE] = nan
            if seen:
                w_end = start + (w + 1) * step
                o[S_TSL] = np.float32(np.float64(w_end - last_t) / _SECONDS_PER_HOUR)
            else:
                o[S_TSL] = nan
