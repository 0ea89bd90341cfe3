"""The packed sort keys order events exactly as a plain multi-column sort does."""
import numpy as np
import polars as pl
import pytest

from trajectory.assembly.assemble import sort_keys


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("n", [0, 1, 2, 57, 5000])
def test_keys_match_multicolumn_sort(seed, n):
    rng = np.random.default_rng(seed)
    sid = rng.choice(np.array([10000032, 10000033, 19999999, 110000032]), n)
    time = rng.integers(4_100_000_000, 4_100_000_000 + 5_000, n)  # many ties
    source = rng.integers(1, 25, n).astype(np.uint8)
    code = rng.integers(0, 40, n).astype(np.int32)
    value = rng.choice(np.array([np.nan, -2.5, -0.0, 0.0, 1.0, 1e30, -1e30, 3.25],
                                np.float32), n)
    hi, lo = sort_keys(sid, time, source, code, value)
    got = np.lexsort((lo, hi)) if n else np.array([], int)
    df = pl.DataFrame({"s": sid, "t": time, "src": source, "c": code,
                       "v": pl.Series(value).fill_nan(None), "i": np.arange(n)})
    # reference: the five columns, nulls (no value) last, then input order; -0.0 < 0.0
    ref = df.with_columns(neg0=(pl.col("v") == 0) & (pl.Series(np.signbit(value)))).sort(
        ["s", "t", "src", "c", "v", "neg0", "i"], nulls_last=True,
        descending=[False] * 5 + [True, False])["i"].to_numpy()
    assert np.array_equal(got, ref)


def test_too_wide_is_a_clear_error():
    t = np.array([0, 1 << 41], np.int64)
    with pytest.raises(ValueError, match="too wide to sort"):
        sort_keys(np.array([1, 1]), t, np.array([1, 1], np.uint8), np.array([0, 0], np.int32),
                  np.array([1, 1], np.float32))


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("n", [0, 1, 2, 31, 33, 500, 20000])
@pytest.mark.parametrize("n_primary", [1, 3, 200])
def test_sort_order_is_a_stable_lexsort(seed, n, n_primary):
    """Runs short (insertion sort) and long (merge sort), already ordered or not."""
    from trajectory.assembly.kernels_sort import sort_runs_by_secondary

    rng = np.random.default_rng(seed)
    hi = rng.integers(0, n_primary, n).astype(np.uint64)
    lo = rng.integers(0, 7, n).astype(np.uint64)  # many equal secondaries: stability shows
    order = np.argsort(hi, kind="stable")
    secondary = lo[order]
    sort_runs_by_secondary(hi[order], secondary, order)
    ref = np.lexsort((lo, hi)) if n else np.array([], np.int64)
    assert np.array_equal(order, ref)
    assert np.array_equal(secondary, lo[ref])


def test_sort_order_matches_keys_over_wide_subject_ids():
    """Subject ids spanning more than 2**24 take the rank path; the order is the same."""
    from trajectory.assembly.assemble import sort_order

    rng = np.random.default_rng(3)
    n = 3000
    for ids in (np.array([10000032, 10000033, 19999999]), np.array([1, 10000033, 1 << 40])):
        sid = rng.choice(ids, n)
        time = rng.integers(0, 100, n)
        source = rng.integers(1, 4, n).astype(np.uint8)
        code = rng.integers(0, 5, n).astype(np.int32)
        value = rng.choice(np.array([np.nan, 1.0, 2.0]), n)
        got = sort_order(sid, time, source, code, value)
        v = pl.Series(value).fill_nan(None)
        ref = pl.DataFrame({"s": sid, "t": time, "src": source, "c": code, "v": v,
                            "i": np.arange(n)}).sort(["s", "t", "src", "c", "v", "i"],
                                                     nulls_last=True)["i"].to_numpy()
        assert np.array_equal(got, ref)
