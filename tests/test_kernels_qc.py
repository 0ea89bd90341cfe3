"""Every cleaning kernel against a slow, obvious reference over a grid of seeded inputs with
NaNs, empty inputs, single-element groups and codes without observations."""
import numpy as np
import pytest

from trajectory.cleaning import kernels_qc as k

SEEDS = range(5)
SIZES = [0, 1, 2, 17, 500]


def rand_values(rng, n):
    v = rng.normal(50, 30, n)
    v[rng.random(n) < 0.15] = np.nan
    return v


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", SIZES)
def test_convert_units(seed, n):
    rng = np.random.default_rng(seed)
    n_codes = 6
    code = rng.integers(0, n_codes, n).astype(np.int32)
    value = rand_values(rng, n)
    value[rng.random(n) < 0.1] = 0.5  # fractions for the FiO2 rule
    concept_of_code = np.array([-1, 0, 1, 1, 2, -1], np.int32)
    scale = np.array([1, 5 / 9, 2.54, 1, 1, 1], np.float64)
    offset = np.array([0, -160 / 9, 0, 0, 0, 0], np.float64)
    frac = np.array([0, 0, 0, 0, 1, 0], np.bool_)
    out_c, out_v = np.empty(n, np.int32), np.empty(n, np.float32)
    k.convert_units(code, value, concept_of_code, scale, offset, frac, out_c, out_v)
    for i in range(n):
        c = code[i]
        assert out_c[i] == concept_of_code[c]
        v = value[i]
        if concept_of_code[c] < 0 or np.isnan(v):
            assert np.isnan(out_v[i])
            continue
        if frac[c] and 0 < v <= 1:
            v = v * 100
        assert out_v[i] == pytest.approx(v * scale[c] + offset[c], rel=1e-6, abs=1e-4)


def test_fahrenheit_to_celsius():
    out_c, out_v = np.empty(1, np.int32), np.empty(1, np.float32)
    k.convert_units(np.array([0], np.int32), np.array([98.6]), np.array([0], np.int32),
                    np.array([5 / 9]), np.array([-160 / 9]), np.array([False]), out_c, out_v)
    assert out_v[0] == pytest.approx(37.0, abs=1e-4)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("clip", [False, True])
def test_range_flags(seed, n, clip):
    rng = np.random.default_rng(seed)
    concept = rng.integers(-1, 3, n).astype(np.int32)
    value = rand_values(rng, n).astype(np.float32)
    lo, hi = np.array([0.0, 30, 60]), np.array([40.0, 70, 65])
    flags = rng.integers(0, 2, n).astype(np.uint8)  # pre-set bit 0 must survive
    before = flags.copy()
    out = np.empty(n, np.float32)
    k.range_flags(concept, value, lo, hi, clip, np.uint8(3), flags, out)
    for i in range(n):
        c, v = concept[i], value[i]
        bad = c >= 0 and not np.isnan(v) and (v < lo[c] or v > hi[c])
        assert flags[i] == before[i] | (8 if bad else 0)
        want = np.clip(v, lo[c], hi[c]) if (bad and clip) else v
        assert (np.isnan(out[i]) and np.isnan(want)) or out[i] == np.float32(want)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", SIZES)
def test_outlier_flags(seed, n):
    rng = np.random.default_rng(seed)
    code = rng.integers(0, 4, n).astype(np.int32)
    value = rand_values(rng, n).astype(np.float32)
    lo = np.array([np.nan, 0, 40, -1e9])
    hi = np.array([np.nan, 100, 60, 1e9])
    flags = np.zeros(n, np.uint8)
    k.outlier_flags(code, value, lo, hi, np.uint8(1), flags)
    want = [(not np.isnan(value[i]) and not np.isnan(lo[code[i]])
             and (value[i] < lo[code[i]] or value[i] > hi[code[i]])) for i in range(n)]
    assert flags.tolist() == [2 if w else 0 for w in want]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", SIZES)
def test_duplicate_flags(seed, n):
    rng = np.random.default_rng(seed)
    subject = np.sort(rng.integers(0, 3, n))
    time = rng.integers(0, 3, n)
    code = rng.integers(0, 2, n).astype(np.int32)
    value = rng.choice(np.array([1.0, 2.0, np.nan], np.float32), n)
    text = rng.integers(-1, 2, n).astype(np.int32)
    order = np.lexsort((code, time, subject))
    subject, time, code, value, text = (a[order] for a in (subject, time, code, value, text))
    flags = np.zeros(n, np.uint8)
    k.duplicate_flags(subject, time, code, value, text, np.uint8(2), flags)
    seen, want = set(), []
    for i in range(n):
        key = (subject[i], time[i], code[i], "nan" if np.isnan(value[i]) else value[i], text[i])
        want.append(4 if key in seen else 0)
        seen.add(key)
    assert flags.tolist() == want


def test_duplicate_with_text_between():
    """[a, b, a] inside one run: the third is a duplicate of the first."""
    z = np.zeros(3, np.int64)
    flags = np.zeros(3, np.uint8)
    k.duplicate_flags(z, z, z.astype(np.int32), np.full(3, np.nan, np.float32),
                      np.array([0, 1, 0], np.int32), np.uint8(2), flags)
    assert flags.tolist() == [0, 0, 4]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", SIZES)
def test_time_flags(seed, n):
    rng = np.random.default_rng(seed)
    time = rng.integers(0, 100, n)
    lower = np.where(rng.random(n) < 0.3, np.iinfo(np.int64).min, rng.integers(0, 50, n))
    upper = np.where(rng.random(n) < 0.3, np.iinfo(np.int64).max, rng.integers(50, 100, n))
    flags = np.zeros(n, np.uint8)
    k.time_flags(time, lower, upper, np.uint8(5), flags)
    assert flags.tolist() == [32 if (t < a or t > b) else 0 for t, a, b in zip(time, lower, upper)]


@pytest.mark.parametrize("seed", SEEDS)
def test_sketch_buckets_are_ordered_and_accurate(seed):
    rng = np.random.default_rng(seed)
    v = np.concatenate([rng.normal(0, 100, 1000), rng.lognormal(0, 5, 1000), [0.0, -0.0]])
    b = np.empty(len(v), np.int32)
    k.sketch_bucket(v, b)
    order = np.argsort(v)
    assert np.all(np.diff(b[order]) >= 0)  # bucket order is value order
    rep = np.empty(len(v), np.float64)
    k.bucket_value(b, rep)
    big = np.abs(v) > 1e-6
    assert np.all(np.abs(rep[big] - v[big]) <= k.ALPHA * np.abs(v[big]) * 1.0001)


def reference_fences(sample, method, width):
    """Raw-scale fences of a sample, numpy quantiles; NaN when there is no spread."""
    if method == 0:
        q1, q3 = np.quantile(sample, [0.25, 0.75], method="inverted_cdf")
        if q3 - q1 <= 0:
            return np.nan, np.nan
        return q1 - width * (q3 - q1), q3 + width * (q3 - q1)
    m = np.quantile(sample, 0.5, method="inverted_cdf")
    mad = np.quantile(np.abs(sample - m), 0.5, method="inverted_cdf")
    if mad <= 0:
        return np.nan, np.nan
    return m - width * 1.4826 * mad, m + width * 1.4826 * mad


def reference_thresholds(values, counts, method, width, min_count, log_skewed=False):
    """numpy on the expanded sample of bucket values: (lo, hi, log fences used). A positive,
    right-skewed sample ((q3 - m) - (m - q1) > ALPHA * (q1 + 2m + q3)) gets the wider of its
    raw fences and its log(sample) fences mapped back with exp, side by side."""
    sample = np.repeat(values, counts)
    if len(sample) < min_count or len(sample) == 0:
        return np.nan, np.nan, False
    lo, hi = reference_fences(sample, method, width)
    if np.isnan(lo):
        return np.nan, np.nan, False
    q1, m, q3 = np.quantile(sample, [0.25, 0.5, 0.75], method="inverted_cdf")
    if log_skewed and sample.min() > 0 and (q3 - m) - (m - q1) > k.ALPHA * (q1 + 2.0 * m + q3):
        log_lo, log_hi = reference_fences(np.log(sample), method, width)
        return min(lo, np.exp(log_lo)), max(hi, np.exp(log_hi)), True
    return lo, hi, False


def sketch_groups(rng):
    """Per code: (buckets, counts) of a seeded sample, NaNs dropped as value_sketch drops
    them. Empty and one-value codes, right-skewed positive (lognormal: log fences),
    left-skewed positive (an SpO2-like ceiling), values around zero and a code with zeros
    (never log), one with no spread."""
    raws = [np.round(rng.lognormal(3, 1, size), 1) for size in [0, 1, 3, 60, 400]]
    raws.append(np.round(100 - rng.lognormal(1, 0.8, 300).clip(0, 90), 0))  # left-skewed
    raws.append(rng.normal(0, 10, 200))  # both signs
    raws.append(np.r_[np.zeros(20), rng.lognormal(0, 1, 200)])  # zeros: not all positive
    groups = []
    for raw in raws:
        raw[rng.random(raw.size) < 0.1] = np.nan
        raw = raw[~np.isnan(raw)]
        b = np.empty(raw.size, np.int32)
        k.sketch_bucket(raw, b)
        groups.append(np.unique(b, return_counts=True))
    groups.append((np.array([5], np.int32), np.array([100])))  # no spread
    return groups


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("method", [0, 1])
@pytest.mark.parametrize("log_skewed", [False, True])
def test_thresholds_match_numpy_quantiles(seed, method, log_skewed):
    rng = np.random.default_rng(seed)
    groups = sketch_groups(rng)
    offsets = np.concatenate([[0], np.cumsum([len(g[0]) for g in groups])]).astype(np.int64)
    buckets = np.concatenate([g[0] for g in groups]).astype(np.int32)
    counts = np.concatenate([g[1] for g in groups]).astype(np.int64)
    values = np.empty(len(buckets))
    k.bucket_value(buckets, values)
    lo, hi = np.empty(len(groups)), np.empty(len(groups))
    log = np.full(len(groups), 7, np.uint8)  # every entry must be written
    k.thresholds_from_sketch(offsets, values, counts, method, 3.0, np.int64(2), log_skewed,
                             lo, hi, log)
    for c in range(len(groups)):
        a, b = offsets[c], offsets[c + 1]
        want_lo, want_hi, want_log = reference_thresholds(values[a:b], counts[a:b], method, 3.0,
                                                          2, log_skewed)
        np.testing.assert_allclose([lo[c], hi[c]], [want_lo, want_hi], rtol=1e-9,
                                   equal_nan=True)
        assert log[c] == want_log
    if log_skewed:
        assert log[4] == 1  # the 400-value lognormal code is right-skewed
        assert log[5] == log[6] == log[7] == 0  # left-skewed, signed, with zeros


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("method", [0, 1])
def test_log_fences_only_widen(seed, method):
    """Log fences never flag a value the raw fences keep: lo no higher, hi no lower."""
    rng = np.random.default_rng(seed)
    groups = sketch_groups(rng)
    offsets = np.concatenate([[0], np.cumsum([len(g[0]) for g in groups])]).astype(np.int64)
    buckets = np.concatenate([g[0] for g in groups]).astype(np.int32)
    counts = np.concatenate([g[1] for g in groups]).astype(np.int64)
    values = np.empty(len(buckets))
    k.bucket_value(buckets, values)
    out = {}
    for log_skewed in (False, True):
        lo, hi = np.empty(len(groups)), np.empty(len(groups))
        log = np.empty(len(groups), np.uint8)
        k.thresholds_from_sketch(offsets, values, counts, method, 3.0, np.int64(2), log_skewed,
                                 lo, hi, log)
        out[log_skewed] = (lo, hi, log)
    (lo0, hi0, log0), (lo1, hi1, log1) = out[False], out[True]
    assert not log0.any() and log1.any()
    np.testing.assert_array_equal(np.isnan(lo0), np.isnan(lo1))
    has = ~np.isnan(lo0)
    assert np.all(lo1[has] <= lo0[has]) and np.all(hi1[has] >= hi0[has])
    same = has & (log1 == 0)
    np.testing.assert_array_equal(lo1[same], lo0[same])
    np.testing.assert_array_equal(hi1[same], hi0[same])


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", SIZES)
def test_qc_count(seed, n):
    rng = np.random.default_rng(seed)
    n_codes, rules = 7, 3
    code = rng.integers(0, n_codes - 1, n).astype(np.int32)  # last code never seen
    flags = rng.integers(0, 8, n).astype(np.uint8)
    converted = rng.random(n) < 0.5
    reason = rng.integers(-1, rules, n).astype(np.int8)
    out = np.zeros((n_codes, 2 + 2 * rules), np.int64)
    k.qc_count(code, flags, converted, reason, out)
    for c in range(n_codes):
        m = code == c
        want = [m.sum(), (m & converted).sum()]
        want += [(m & ((flags >> b) & 1 == 1)).sum() for b in range(rules)]
        want += [(m & (reason == r)).sum() for r in range(rules)]
        assert out[c].tolist() == want
