"""Numba kernels for cleaning: arrays in, `out` arrays filled, explicit dtypes, no I/O.

They run inside Dask worker processes: nogil, never parallel=True. Checks and dtype
conversion live in trajectory/cleaning.py; these trust their inputs.
NaN is "no value" everywhere: never flagged, never converted.
"""
import math

import numba
import numpy as np

# DDSketch-style buckets (Masson et al., VLDB 2019): relative accuracy 1% on every quantile,
# mergeable by adding counts, so per-table sketches combine into exact whole-dataset ones.
ALPHA = 0.01
GAMMA = (1 + ALPHA) / (1 - ALPHA)
LOG_GAMMA = math.log(GAMMA)
MIN_ABS = 1e-9  # |v| below this is bucket 0 (the value zero)
MAD_SCALE = 1.4826  # MAD of a normal distribution times this is its standard deviation


@numba.njit(cache=True, nogil=True)
def convert_units(code, value, concept_of_code, scale, offset, frac_to_pct, out_concept,
                  out_value):
    for i in range(code.shape[0]):
        c = code[i]
        cid = concept_of_code[c]
        out_concept[i] = cid
        v = value[i]
        if cid < 0 or np.isnan(v):
            out_value[i] = np.nan
            continue
        if frac_to_pct[c] and 0.0 < v <= 1.0:  # FiO2 charted as a fraction
            v = v * 100.0
        out_value[i] = v * scale[c] + offset[c]


@numba.njit(cache=True, nogil=True)
def range_flags(concept, value, lo, hi, clip, bit, flags, out_value):
    mask = np.uint8(1 << bit)
    for i in range(concept.shape[0]):
        v = value[i]
        out_value[i] = v
        c = concept[i]
        if c < 0 or np.isnan(v):
            continue
        if v < lo[c]:
            flags[i] |= mask
            if clip:
                out_value[i] = lo[c]
        elif v > hi[c]:
            flags[i] |= mask
            if clip:
                out_value[i] = hi[c]


@numba.njit(cache=True, nogil=True)
def outlier_flags(code, value, lo, hi, bit, flags):
    mask = np.uint8(1 << bit)
    for i in range(code.shape[0]):
        v = value[i]
        c = code[i]
        if np.isnan(v) or np.isnan(lo[c]):
            continue
        if v < lo[c] or v > hi[c]:
            flags[i] |= mask


@numba.njit(cache=True, nogil=True)
def duplicate_flags(subject, time, code, value, text, bit, flags):
    """Events sorted so exact duplicates share a run of equal (subject, time, code); within a
    run, an event equal in value (NaN == NaN: both mean "no value") and text (any integer
    identity: an id or a hash) to an earlier one is flagged. Runs are a handful of events, so
    the look-back is cheap."""
    mask = np.uint8(1 << bit)
    start = 0
    for i in range(subject.shape[0]):
        if i > 0 and (subject[i] != subject[i - 1] or time[i] != time[i - 1]
                      or code[i] != code[i - 1]):
            start = i
        for j in range(start, i):
            same_value = value[j] == value[i] or (np.isnan(value[j]) and np.isnan(value[i]))
            if same_value and text[j] == text[i]:
                flags[i] |= mask
                break


@numba.njit(cache=True, nogil=True)
def time_flags(time, lower, upper, bit, flags):
    mask = np.uint8(1 << bit)
    for i in range(time.shape[0]):
        if time[i] < lower[i] or time[i] > upper[i]:
            flags[i] |= mask


@numba.njit(cache=True, nogil=True)
def sketch_bucket(value, out):
    """Signed bucket: 0 for |v| < MIN_ABS, +k for positive, -k for negative, k growing with
    |v|, so bucket order is value order."""
    for i in range(value.shape[0]):
        v = value[i]
        a = abs(v)
        if a < MIN_ABS:
            out[i] = 0
            continue
        k = np.int32(math.ceil(math.log(a / MIN_ABS) / LOG_GAMMA))
        if k < 1:
            k = 1
        out[i] = k if v > 0 else -k


@numba.njit(cache=True, nogil=True)
def bucket_value(bucket, out):
    """Representative value of each bucket: within ALPHA of every value that fell in it."""
    for i in range(bucket.shape[0]):
        b = bucket[i]
        if b == 0:
            out[i] = 0.0
            continue
        k = abs(b)
        v = MIN_ABS * 2.0 * GAMMA ** k / (GAMMA + 1.0)
        out[i] = v if b > 0 else -v


@numba.njit(cache=True, nogil=True)
def _quantile(values, counts, total, q):
    """Inverted-CDF quantile of sorted values with counts: the first value whose cumulative
    count reaches q * total (numpy's method="inverted_cdf")."""
    target = q * total
    cum = 0
    for j in range(values.shape[0]):
        cum += counts[j]
        if cum >= target:
            return values[j]
    return values[values.shape[0] - 1]


@numba.njit(cache=True, nogil=True)
def thresholds_from_sketch(offsets, values, counts, method, k, min_count, out_lo, out_hi):
    """Per code c, values[offsets[c]:offsets[c+1]] (bucket values, ascending) with counts.
    method 0 = IQR fences [q1 - k*IQR, q3 + k*IQR]; 1 = MAD fences [m -/+ k*1.4826*MAD].
    Codes with fewer than min_count observations get NaN (no check), and so do codes with no
    spread (IQR or MAD of 0): scores, counts and set values (GCS, FiO2 21%) would otherwise have
    every value off the mode flagged."""
    for c in range(offsets.shape[0] - 1):
        a, b = offsets[c], offsets[c + 1]
        total = 0
        for j in range(a, b):
            total += counts[j]
        if total < min_count or total == 0:
            out_lo[c] = np.nan
            out_hi[c] = np.nan
            continue
        v, n = values[a:b], counts[a:b]
        if method == 0:
            q1 = _quantile(v, n, total, 0.25)
            q3 = _quantile(v, n, total, 0.75)
            spread = q3 - q1
            out_lo[c] = q1 - k * spread if spread > 0 else np.nan
            out_hi[c] = q3 + k * spread if spread > 0 else np.nan
        else:
            m = _quantile(v, n, total, 0.5)
            dev = np.abs(v - m)
            order = np.argsort(dev, kind="mergesort")
            mad = _quantile(dev[order], n[order], total, 0.5)
            out_lo[c] = m - k * MAD_SCALE * mad if mad > 0 else np.nan
            out_hi[c] = m + k * MAD_SCALE * mad if mad > 0 else np.nan


@numba.njit(cache=True, nogil=True)
def qc_count(code, flags, converted, reason, out):
    """out[c] (zeroed, int64 [n_codes, 2 + 2R]): events, converted, flagged by bit 0..R-1,
    dropped with reason 0..R-1 (reason -1 = kept)."""
    r_bits = (out.shape[1] - 2) // 2
    for i in range(code.shape[0]):
        c = code[i]
        out[c, 0] += 1
        if converted[i]:
            out[c, 1] += 1
        f = flags[i]
        for b in range(r_bits):
            if (f >> b) & 1:
                out[c, 2 + b] += 1
        if reason[i] >= 0:
            out[c, 2 + r_bits + reason[i]] += 1


@numba.njit(cache=True, nogil=True)
def concept_histogram(concept, value, flags, lo, hi, out):
    """out[c, bin, 0] counts every value of concept c, out[c, bin, 1] only unflagged ones.
    Bins: 0 below lo, 1..B-2 equal widths over [lo, hi], B-1 above hi."""
    n_bins = out.shape[1]
    inner = n_bins - 2
    for i in range(concept.shape[0]):
        c = concept[i]
        v = value[i]
        if c < 0 or np.isnan(v):
            continue
        if v < lo[c]:
            b = 0
        elif v > hi[c]:
            b = n_bins - 1
        else:
            b = 1 + min(inner - 1, int((v - lo[c]) / (hi[c] - lo[c]) * inner))
        out[c, b, 0] += 1
        if flags[i] == 0:
            out[c, b, 1] += 1
