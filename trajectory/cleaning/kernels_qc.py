"""Numba kernels for cleaning: arrays in, `out` arrays filled, explicit dtypes, no I/O.

They run inside Dask worker processes: nogil, never parallel=True. Checks and dtype
conversion live in trajectory/cleaning/flags.py; these trust their inputs.
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
def _weighted_mad(values, counts, total, center):
    """Median of |values - center| over the counted sample (inverted CDF, as _quantile)."""
    dev = np.abs(values - center)
    order = np.argsort(dev, kind="mergesort")
    return _quantile(dev[order], counts[order], total, 0.5)


@numba.njit(cache=True, nogil=True)
def thresholds_from_sketch(offsets, values, counts, method, k, min_count, log_skewed, out_lo,
                           out_hi, out_log):
    """Per code c, values[offsets[c]:offsets[c+1]] (bucket values, ascending) with counts.
    method 0 = IQR fences [q1 - k*IQR, q3 + k*IQR]; 1 = MAD fences [m -/+ k*1.4826*MAD].
    Codes with fewer than min_count observations get NaN (no check), and so do codes with no
    spread (IQR or MAD of 0): scores, counts and set values (GCS, FiO2 21%) would otherwise have
    every value off the mode flagged.

    Skewed codes (log_skewed; out_log[c] = 1): when every value is > 0 and the quartiles are
    right-skewed, the same fences are also computed on log(value), mapped back with exp, and
    the code keeps the wider fence on each side. Right-skewed means q3 - median exceeds
    median - q1 by more than the sketch's own error could make: each quartile is a bucket
    value within ALPHA (1%) of the true one, so the test is
    (q3 - m) - (m - q1) > ALPHA * (q1 + 2m + q3). Without that margin the geometric buckets
    alone make symmetric codes look skewed (SpO2, sodium, temperature: quartiles on three
    consecutive buckets). Why: lab values are close to log-normal, and on the raw scale
    k = 3 cut the demo's creatinine at 4.7 mg/dL and WBC at 35 K/uL (renal failure,
    leukocytosis). A transform to near-normal followed by Tukey fences is the CLSI/IFCC
    screen for lab data (Horn et al., Clin Chem 2001;47:2137-45). For a positive code the IQR
    log fences lie above the raw ones on both sides (q3 * (q3/q1)^k > q3 + k*IQR and
    q1 * (q1/q3)^k > q1 - k*IQR, by convexity), so the wider fence is the log one above and
    the raw one below: the change only ever removes flags, and real lows stay unflagged
    (log's lower fence would flag a WBC of 0.5 K/uL in neutropenia). Symmetric and
    left-skewed codes keep the raw fences, log being the wrong model for them; no wider k
    either, which would also blunt the fences of symmetric vitals.
    Demo, raw -> log-where-skewed (k = 3): outliers flagged, upper fence
      creatinine 50912   135 -> 0 of 3,003   4.67 -> 23.8 mg/dL
      WBC 51301          160 -> 8 of 2,759   35.2 -> 133 K/uL
      BUN 51006           62 -> 0 of 2,973   99.8 -> 657 mg/dL
      ALT 50861           78 -> 8 of 1,159    165 -> 2,560 IU/L
      PTT 51275           59 -> 0 of 1,483   98.5 -> 194 s
      SpO2 220277         35 -> 35 of 13,540 (not skewed: raw fences, lower 82.8 %)
    and 6,527 -> 4,010 outlier flags in the whole demo (161 codes got log fences). SpO2's
    real lows reach the windows through WINDOW_EXCLUDE instead (its default keeps outliers).
    Inverted-CDF quantiles are sample values, so the quantiles of log(value) are the logs of
    the quantiles."""
    for c in range(offsets.shape[0] - 1):
        a, b = offsets[c], offsets[c + 1]
        out_log[c] = 0
        total = 0
        for j in range(a, b):
            total += counts[j]
        if total < min_count or total == 0:
            out_lo[c] = np.nan
            out_hi[c] = np.nan
            continue
        v, n = values[a:b], counts[a:b]
        q1 = _quantile(v, n, total, 0.25)
        m = _quantile(v, n, total, 0.5)
        q3 = _quantile(v, n, total, 0.75)
        if method == 0:
            spread = q3 - q1
        else:
            spread = _weighted_mad(v, n, total, m)
        if not spread > 0:
            out_lo[c] = np.nan
            out_hi[c] = np.nan
            continue
        if method == 0:
            lo = q1 - k * spread
            hi = q3 + k * spread
        else:
            lo = m - k * MAD_SCALE * spread
            hi = m + k * MAD_SCALE * spread
        if log_skewed and v[0] > 0.0 and (q3 - m) - (m - q1) > ALPHA * (q1 + 2.0 * m + q3):
            out_log[c] = 1
            if method == 0:
                l1 = math.log(q1)
                l3 = math.log(q3)
                log_lo = math.exp(l1 - k * (l3 - l1))
                log_hi = math.exp(l3 + k * (l3 - l1))
            else:
                lm = math.log(m)
                lmad = _weighted_mad(np.log(v), n, total, lm)
                log_lo = math.exp(lm - k * MAD_SCALE * lmad)
                log_hi = math.exp(lm + k * MAD_SCALE * lmad)
            lo = min(lo, log_lo)
            hi = max(hi, log_hi)
        out_lo[c] = lo
        out_hi[c] = hi


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
