"""What every table generator uses: the random draws and the writer (one table, one .csv.gz,
gzip with mtime=0 on a worker thread), ids of a row's admission or stay, and the column
formats (times, dates, nulls, numbers as MIMIC-IV writes them)."""
from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
import polars as pl

from .catalog import DAY, HEADERS


def _rep(counts):
    return np.repeat(np.arange(len(counts)), counts)


def _cumcount(g):
    """Position of each row within its run of equal labels (g must be grouped)."""
    if len(g) == 0:
        return np.zeros(0, np.int64)
    starts = np.r_[0, np.flatnonzero(g[1:] != g[:-1]) + 1]
    return np.arange(len(g)) - np.repeat(starts, np.diff(np.r_[starts, len(g)]))


def _ids(rng, base, span, k):
    """k distinct ids in [base, base + span), in random order (sorted random gaps, shuffled)."""
    return rng.permutation(base + np.cumsum(rng.integers(1, max(2, span // max(k, 1)), k)))


def _null(s, null):
    return s if null is None else s.scatter(np.flatnonzero(null), None)


def _ts(sec, null=None):
    return _null(pl.Series(np.asarray(sec, np.int64) * 1000).cast(pl.Datetime("ms")), null)


def _date(sec, null=None):
    days = (np.asarray(sec, np.int64) // DAY).astype(np.int32)
    return _null(pl.Series(days).cast(pl.Date), null)


def _num(a, null=None):
    return _null(pl.Series(a), null)


def _voc(vocab, idx):
    return pl.Series([v or None for v in vocab], dtype=pl.String).gather(np.asarray(idx))


def _text_num(v, dec0):
    """MIMIC's text `value` of a number: "88" for whole-number items, "7.35" otherwise."""
    v = pl.Series(v)
    return pl.select(pl.when(pl.Series(dec0)).then(v.round(0).cast(pl.Int64).cast(pl.String))
                     .otherwise(v.cast(pl.String))).to_series()


def _join(*parts):
    out = pl.Series(parts[0]).cast(pl.String)
    for p in parts[1:]:
        out = out + "-" + (pl.Series(p).cast(pl.String) if not isinstance(p, str) else p)
    return out


def _gzip_write(path, data):
    with open(path, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", compresslevel=1, mtime=0,
                                               filename="") as gz:
        gz.write(data)


class Generator:
    """State shared by the table generators: the random streams, the patients and
    admissions drawn first, the pending gzip writes."""

    def __init__(self, out, n, seed, pool, death_rate=0.06):
        self.out, self.n, self.pool, self.jobs = Path(out), n, pool, []
        self.r = r = np.random.default_rng(seed)
        self.death_rate = float(death_rate)
        # the planted signal's own stream: the main stream's draws stay as they were
        self.signal_rng = np.random.default_rng([int(seed), 13])
        # the detail and id-list tables' own stream, for the same reason
        self.detail_rng = np.random.default_rng([int(seed), 17])
        chars = np.array(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
        self.providers = ["P" + "".join(c) for c in chars[r.integers(0, 36, (500, 5))]]

    def u(self, lo, hi, n):
        return self.r.uniform(lo, hi, n)

    def pick(self, k, n, p=None):
        return self.r.choice(k, n, p=p)

    def prov(self, n, p_null):
        """Provider ids (P + 5 characters), null with probability p_null."""
        r = self.r
        return _voc(self.providers + [None], np.where(r.random(n) < p_null, 500,
                                                      r.integers(0, 500, n)))

    def during(self, rows, lo=0.0, hi=1.0):
        """A time inside each row's admission, at a uniform fraction in [lo, hi) of its stay."""
        los = self.disch[rows] - self.admit[rows]
        return self.admit[rows] + (los * self.u(lo, hi, len(rows))).astype(np.int64)

    def emit(self, table, cols):
        """Write one table; columns missing from `cols` are empty, scalars are broadcast."""
        names = HEADERS[table].split(",")
        assert set(cols) <= set(names), set(cols) - set(names)
        n = next(len(v) for v in cols.values() if isinstance(v, (pl.Series, np.ndarray)))
        series = [pl.Series(c, cols[c]) if isinstance(cols.get(c), (pl.Series, np.ndarray))
                  else pl.repeat(cols.get(c), n, eager=True, dtype=None if isinstance(
                      cols.get(c), int) else pl.String).alias(c) for c in names]
        buf = io.BytesIO()
        pl.DataFrame(series).write_csv(buf, datetime_format="%Y-%m-%d %H:%M:%S",
                                       date_format="%Y-%m-%d")
        path = self.out / f"{table}.csv.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.jobs.append(self.pool.submit(_gzip_write, path, buf.getvalue()))

    def ids(self, adm):
        return {"subject_id": self.sid[self.P[adm]], "hadm_id": self.hadm[adm]}

    def stay_ids(self, stays):
        return {**self.ids(self.sa[stays]), "stay_id": self.stay_id[stays],
                "caregiver_id": self.r.integers(100, 99999, len(stays))}
