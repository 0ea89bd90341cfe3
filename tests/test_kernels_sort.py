"""The packed sort keys order events exactly as a plain multi-column sort does."""
import numpy as np
import polars as pl
import pytest

from trajectory.assemble import sort_keys


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
