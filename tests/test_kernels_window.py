"""Windowed statistics against a plain per-(window, feature) reference, plus wrapper errors."""
from __future__ import annotations

import itertools

import numpy as np
import polars as pl
import pytest

from trajectory.windows.aggregate import compute_windows, grid_for_stay
from trajectory.windows.kernels_window import N_STATS, STAT_NAMES, window_stats

S = {name: i for i, name in enumerate(STAT_NAMES)}
START = 1_700_000_000 - 1_700_000_000 % 7200  # a realistic epoch, on the hour


def make_events(rng, n, start, step, n_windows, n_features):
    """Sorted events spread from two steps before the grid to one step after it, with the
    awkward cases mixed in: duplicate times, exact window boundaries, NaN values, invalid
    rows and feature -1."""
    lo, hi = start - 2 * step, start + (n_windows + 1) * step
    t = rng.integers(lo, hi, size=n)
    # Snap a third of the times onto a coarse grid (duplicates) and some onto boundaries.
    snap = rng.random(n) < 0.3
    t[snap] = lo + (t[snap] - lo) // max(step // 4, 1) * max(step // 4, 1)
    edge = rng.random(n) < 0.05
    t[edge] = start + rng.integers(-1, n_windows + 2, size=edge.sum()) * step
    t.sort()
    feature = rng.integers(-1, n_features, size=n).astype(np.int32)
    value = (100 + 20 * rng.standard_normal(n)).astype(np.float32)
    value[rng.random(n) < 0.1] = np.nan
    valid = rng.random(n) > 0.1
    return t.astype(np.int64), feature, value, valid


def make_known(rng, time, step):
    """When each event became known: at its time (half), minutes to a few steps later, or
    before its time (a planned end: the kernel then takes its time)."""
    n = len(time)
    late = rng.integers(0, 3 * step + 1, size=n)
    late[rng.random(n) < 0.5] = 0
    early = rng.random(n) < 0.05
    late[early] = -rng.integers(1, step + 1, size=int(early.sum()))
    edge = rng.random(n) < 0.05  # known exactly at a window end
    late[edge] = 0
    known = time + late
    known[edge] = (time[edge] // step + rng.integers(1, 3, size=int(edge.sum()))) * step
    return known.astype(np.int64)


def reference(time, feature, value, valid, start, step, n_windows, n_features, known=None):
    """The obvious loop: select each (window, feature)'s events and compute every stat. A
    window counts the events charted in it and known by its end (`known`; None: when
    charted); time_since_last looks back to the latest one charted and known by its end."""
    known = time if known is None else known
    out = np.full((n_windows, n_features, N_STATS), np.nan)
    use = (feature >= 0) & valid & ~np.isnan(value)
    for w, f in itertools.product(range(n_windows), range(n_features)):
        w0, w1 = start + w * step, start + (w + 1) * step
        sel = use & (feature == f) & (time >= w0) & (time < w1) & (known <= w1)
        t, v = time[sel], value[sel].astype(np.float64)
        out[w, f, S["count"]] = len(v)
        if len(v):
            out[w, f, S["mean"]] = v.mean()
            out[w, f, S["min"]] = v.min()
            out[w, f, S["max"]] = v.max()
            out[w, f, S["last"]] = v[np.flatnonzero(t == t.max())[-1]]  # tie: later in input
            out[w, f, S["std"]] = v.std()  # ddof=0
            if len(v) >= 2 and t.min() != t.max():
                out[w, f, S["slope"]] = np.polyfit((t - w0) / 3600.0, v, 1)[0]
        before = time[use & (feature == f) & (time < w1) & (known <= w1)]
        if len(before):
            out[w, f, S["time_since_last"]] = (w1 - before.max()) / 3600.0
    return out


def assert_stats_close(got, want):
    assert got.dtype == np.float32 and got.shape == want.shape
    for name, s in S.items():
        g, r = got[..., s].astype(np.float64), want[..., s]
        np.testing.assert_array_equal(np.isnan(g), np.isnan(r), err_msg=f"NaN pattern of {name}")
        atol = 1e-3 if name in ("std", "slope") else 0.0
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=atol, equal_nan=True, err_msg=name)


CASES = list(itertools.product([60, 3600, 7200], [0, 1, 5, 48], [1, 3], [0, 1, 2, 50, 1000]))


@pytest.mark.parametrize("step,n_windows,n_features,n", CASES)
def test_matches_reference(step, n_windows, n_features, n):
    rng = np.random.default_rng([step, n_windows, n_features, n])
    ev = make_events(rng, n, START, step, n_windows, n_features)
    got = compute_windows(*ev, START, step, n_windows, n_features)
    assert_stats_close(got, reference(*ev, START, step, n_windows, n_features))
    # known = time is the charttime rule, to the bit
    same = compute_windows(*ev, START, step, n_windows, n_features, known=ev[0])
    assert same.tobytes() == got.tobytes()


@pytest.mark.parametrize("step,n_windows,n_features,n", CASES)
def test_known_rule_matches_reference(step, n_windows, n_features, n):
    rng = np.random.default_rng([step, n_windows, n_features, n, 1])
    ev = make_events(rng, n, START, step, n_windows, n_features)
    known = make_known(rng, ev[0], step)
    got = compute_windows(*ev, START, step, n_windows, n_features, known=known)
    assert_stats_close(got, reference(*ev, START, step, n_windows, n_features, known))


def test_known_rule_by_hand():
    """A lab drawn at 0:50 and resulted at 2:10 is in no window's statistics (its window ended
    at 1:00 before it was known) and counts for time_since_last from the window ending at 3:00;
    one known exactly at its window's end counts in that window."""
    h = 3600
    time = np.array([10, 50 * 60, 2 * h + 30 * 60], np.int64)
    known = np.array([10, 2 * h + 10 * 60, 3 * h], np.int64)
    out = compute_windows(time, np.zeros(3, np.int32), np.array([1, 2, 3], np.float32),
                          np.ones(3, bool), 0, h, 4, 1, known=known)
    assert out[:, 0, S["count"]].tolist() == [1, 0, 1, 0]
    assert out[0, 0, S["mean"]] == 1 and out[2, 0, S["mean"]] == 3
    tsl = out[:, 0, S["time_since_last"]]
    assert tsl[0] == pytest.approx((h - 10) / h)  # only the first value known by 1:00
    assert tsl[1] == pytest.approx((2 * h - 10) / h)  # the 0:50 lab is not known by 2:00
    assert tsl[2] == pytest.approx(0.5)  # by 3:00: the value at 2:30
    assert tsl[3] == pytest.approx(1.5)
    plain = compute_windows(time, np.zeros(3, np.int32), np.array([1, 2, 3], np.float32),
                            np.ones(3, bool), 0, h, 4, 1)
    assert plain[:, 0, S["count"]].tolist() == [2, 0, 1, 0]


def test_hand_computed():
    # Feature 0: three points in window 0; feature 1: one point in window 1 and one before
    # the grid; feature -1 and an invalid row are ignored.
    time = np.array([-100, 0, 10, 20, 20, 3600, 4000], dtype=np.int64)
    feature = np.array([1, 0, 0, 0, -1, 1, 0], dtype=np.int32)
    value = np.array([9, 1, 2, 4, 99, 5, 7], dtype=np.float32)
    valid = np.array([1, 1, 1, 1, 1, 1, 0], dtype=bool)
    out = compute_windows(time, feature, value, valid, 0, 3600, 3, 2)
    f0w0 = dict(zip(STAT_NAMES, out[0, 0].tolist()))
    assert f0w0["count"] == 3 and f0w0["min"] == 1 and f0w0["max"] == 4 and f0w0["last"] == 4
    assert f0w0["mean"] == pytest.approx(7 / 3)
    assert f0w0["std"] == pytest.approx(np.std([1, 2, 4]))
    assert f0w0["slope"] == pytest.approx(540.0)  # 0.15 per second
    assert f0w0["time_since_last"] == pytest.approx((3600 - 20) / 3600)
    # Single observation: std 0 (ddof=0), slope NaN.
    f1w1 = dict(zip(STAT_NAMES, out[1, 1].tolist()))
    assert f1w1["count"] == 1 and f1w1["std"] == 0 and np.isnan(f1w1["slope"])
    assert f1w1["time_since_last"] == pytest.approx(1.0)
    # Empty window: count 0, stats NaN, time_since_last from the observation before the grid.
    assert out[0, 1, S["count"]] == 0
    assert np.isnan(out[0, 1, S["mean"] : S["time_since_last"]]).all()
    assert out[0, 1, S["time_since_last"]] == pytest.approx(3700 / 3600)
    assert out[2, 0, S["count"]] == 0  # the event at 4000 was invalid
    assert out[2, 0, S["time_since_last"]] == pytest.approx((3 * 3600 - 20) / 3600)


def test_edges_and_ties():
    # An event exactly at a window end belongs to the next window, and does not count for the
    # earlier window's time_since_last; equal times: slope NaN, last = later in input order.
    time = np.array([3600, 3600, 3600, 7200], dtype=np.int64)
    feature = np.zeros(4, dtype=np.int32)
    value = np.array([1, 3, 2, 8], dtype=np.float32)
    out = compute_windows(time, feature, value, np.ones(4, bool), 0, 3600, 2, 1)
    assert out[0, 0, S["count"]] == 0 and np.isnan(out[0, 0, S["time_since_last"]])
    assert out[1, 0, S["count"]] == 3 and out[1, 0, S["last"]] == 2
    assert np.isnan(out[1, 0, S["slope"]])
    assert out[1, 0, S["time_since_last"]] == pytest.approx(1.0)


def test_stable_for_large_offsets():
    # Values with a large common offset and tiny spread: naive sum-of-squares would cancel.
    rng = np.random.default_rng(0)
    time = np.sort(rng.integers(0, 3600, 500)).astype(np.int64)
    value = (1e6 + rng.standard_normal(500)).astype(np.float32)
    out = compute_windows(time, np.zeros(500, np.int32), value, np.ones(500, bool), 0, 3600, 1, 1)
    v = value.astype(np.float64)
    assert out[0, 0, S["std"]] == pytest.approx(v.std(), rel=1e-4)
    assert out[0, 0, S["slope"]] == pytest.approx(np.polyfit(time / 3600, v, 1)[0], abs=1e-3)


def test_polars_cross_check():
    step, n_windows, n_features = 3600, 48, 3
    rng = np.random.default_rng(7)
    time, feature, value, valid = make_events(rng, 1000, START, step, n_windows, n_features)
    got = compute_windows(time, feature, value, valid, START, step, n_windows, n_features)
    df = (
        pl.DataFrame({"t": time, "f": feature, "v": value, "ok": valid})
        .filter((pl.col("f") >= 0) & pl.col("ok") & pl.col("v").is_not_nan())
        .filter((pl.col("t") >= START) & (pl.col("t") < START + n_windows * step))
        .with_columns(w=(pl.col("t") - START) // step)
        .group_by("w", "f")
        .agg(pl.len().alias("count"), pl.col("v").mean().alias("mean"),
             pl.col("v").min().alias("min"), pl.col("v").max().alias("max"),
             pl.col("v").last().alias("last"))  # group_by keeps row order within a group
    )
    assert len(df) > 50
    for row in df.iter_rows(named=True):
        cell = got[row["w"], row["f"]]
        assert cell[S["count"]] == row["count"]
        for name in ("mean", "min", "max", "last"):
            assert cell[S[name]] == pytest.approx(row[name], rel=1e-5), name
    seen = np.zeros((n_windows, n_features), bool)
    seen[df["w"].to_numpy(), df["f"].to_numpy()] = True
    assert (got[~seen][:, S["count"]] == 0).all()


def test_kernel_direct_guards_feature_range():
    out = np.empty((1, 1, N_STATS), np.float32)
    with pytest.raises(ValueError):
        window_stats(np.array([0], np.int64), np.array([0], np.int64), np.array([1], np.int32),
                     np.array([1], np.float32), np.array([True]), 0, 60, 1, out)


def _good(n=3):
    return (np.arange(n, dtype=np.int64), np.zeros(n, np.int32), np.ones(n, np.float32),
            np.ones(n, bool))


@pytest.mark.parametrize("patch,match", [
    ({"time": np.array([0, 1200, 1100, 1300])}, r"'time' must be sorted.*index 2 \(1200 > 1100\)"),
    ({"step": 0}, r"'step' must be > 0.*got 0"),
    ({"step": 3600.0}, r"'step' must be an integer"),
    ({"n_windows": -1}, r"'n_windows' must be >= 0, got -1"),
    ({"feature": np.array([0, 5, 0])}, r"'feature' ids .* \[0, 2\), got 5 at index 1"),
    ({"feature": np.array([0, -2, 0])}, r"got -2 at index 1"),
    ({"value": np.ones(2, np.float32)}, r"'value' has length 2, 'time' has 3"),
    ({"valid": np.ones(3, np.uint8)}, r"'valid' must be bool"),
    ({"time": np.arange(3, dtype=np.float64)}, r"'time' must be integer"),
    ({"time": np.zeros((3, 1), np.int64)}, r"'time' must be 1-D"),
    ({"known": np.zeros(2, np.int64)}, r"'known' has length 2, 'time' has 3"),
    ({"known": np.zeros(3, np.float64)}, r"'known' must be integer epoch seconds"),
])
def test_wrapper_errors(patch, match):
    time, feature, value, valid = _good()
    args = dict(time=time, feature=feature, value=value, valid=valid,
                start=0, step=60, n_windows=2, n_features=2)
    if "time" in patch and len(patch["time"]) == 4:  # keep the lengths consistent
        args.update(dict(zip(("time", "feature", "value", "valid"), _good(4))))
    args.update(patch)
    with pytest.raises(ValueError, match=match):
        compute_windows(**args)


def test_wrapper_converts_dtypes():
    out = compute_windows([0, 30], np.array([0, 0], np.int64), [1.0, 3.0], [True, True],
                          np.int64(0), np.int32(60), 1, 1)
    assert out.dtype == np.float32 and out.shape == (1, 1, N_STATS)
    assert out[0, 0, S["mean"]] == 2.0
    empty = compute_windows([], [], [], [], 0, 60, 0, 1)
    assert empty.shape == (0, 1, N_STATS)


def test_grid_for_stay():
    h = 3600
    assert grid_for_stay(10 * h + 5, 12 * h + 1, h, 72) == (10 * h, 3)
    assert grid_for_stay(10 * h, 12 * h, h, 72) == (10 * h, 2)  # outtime on a boundary
    assert grid_for_stay(10 * h, 200 * h, h, 72) == (10 * h, 72)  # capped
    assert grid_for_stay(10 * h + 5, 10 * h + 5, h, 72) == (10 * h, 1)  # at least one
    assert grid_for_stay(-5, 10, h, 72) == (-h, 2)  # floors before 1970 too
    with pytest.raises(ValueError, match="'step' must be > 0"):
        grid_for_stay(0, 1, 0, 72)
    with pytest.raises(ValueError, match="'max_windows' must be >= 1"):
        grid_for_stay(0, 1, h, 0)
