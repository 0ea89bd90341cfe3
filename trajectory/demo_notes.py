"""A MIMIC-IV-Note-shaped `note/` module for a MIMIC-IV tree that has none (the shared demo).

The demo release ships no notes, so the availability rule (README "What was known when") and
the note links of detail rows could not be measured on it. This writes `note/discharge`,
`note/radiology` and their `_detail` tables for the tree's own admissions, with the headers of
MIMIC-IV-Note v2.2 and its timing shape, not its text:

- one discharge summary (note_type DS) for 95% of admissions, charted at 00:00 of the day of
  discharge and stored 1 h to 3 days after the discharge (3% without storetime); 10% get an
  addendum (note_seq 2) stored later still; discharge_detail names each one's author ("___").
- 0-6 radiology reports (RR) per admission at exam times inside it, stored 20 min to 10 h
  after the exam (5% without storetime); 20% of exams come with a second study ordered at the
  same minute (a CT chest with a CT abdomen, as MIMIC-IV-Note has), so two reports share a
  subject, admission and charttime; 5% get an addendum (AR) at the same charttime.
  radiology_detail gives each report's exam_code, exam_name and CPT code(s), and an
  addendum's parent_note_id.

Deterministic: one numpy Generator from `seed`, gzip with mtime 0. The hosp/ and icu/ files
are hard-linked (copied across file systems) into the output tree, never changed.

    python -m trajectory.demo_notes ../shared/data/mimic-iv-demo /tmp/demo_notes
"""
from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import numpy as np
import polars as pl

from .synth.catalog import EXAM_CODES, EXAMS, HEADERS
from .synth.common import _gzip_write

DAY, HOUR, MIN = 86400, 3600, 60


def _link_tree(src: Path, dst: Path) -> None:
    """hosp/ and icu/ of `src` into `dst`, file by file (hard links where possible)."""
    for module in ("hosp", "icu"):
        (dst / module).mkdir(parents=True, exist_ok=True)
        for f in sorted((src / module).iterdir()):
            target = dst / module / f.name
            if target.exists():
                continue
            try:
                os.link(f, target)
            except OSError:
                shutil.copy2(f, target)


def _admissions(src: Path) -> pl.DataFrame:
    return (pl.read_csv(src / "hosp" / "admissions.csv.gz",
                        columns=["subject_id", "hadm_id", "admittime", "dischtime"],
                        schema_overrides={"admittime": pl.String, "dischtime": pl.String})
            .with_columns(pl.col(c).str.to_datetime("%Y-%m-%d %H:%M:%S").dt.epoch("s")
                          for c in ("admittime", "dischtime"))
            .sort("subject_id", "admittime", "hadm_id"))


def _ts(seconds: np.ndarray, null: np.ndarray | None = None) -> pl.Series:
    s = pl.Series(np.asarray(seconds, np.int64) * 1000).cast(pl.Datetime("ms"))
    return s if null is None else pl.select(pl.when(pl.Series(~null)).then(s)).to_series()


def _write(out: Path, table: str, cols: dict) -> None:
    names = HEADERS[table].split(",")
    frame = pl.DataFrame([pl.Series(c, cols[c]) for c in names])
    buf = frame.write_csv(datetime_format="%Y-%m-%d %H:%M:%S")
    path = out / f"{table}.csv.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    _gzip_write(path, buf.encode())


def _seq(subject: np.ndarray) -> np.ndarray:
    """1, 2, ... within each subject, in row order (rows grouped by subject)."""
    out = np.ones(len(subject), np.int64)
    for i in range(1, len(subject)):
        if subject[i] == subject[i - 1]:
            out[i] = out[i - 1] + 1
    return out


def discharge_notes(adm: pl.DataFrame, r: np.random.Generator) -> pl.DataFrame:
    """One summary for 95% of admissions, an addendum for 10% of those."""
    a = adm.filter(pl.Series(r.random(adm.height) < 0.95))
    addendum = r.random(a.height) < 0.10
    rows = np.r_[np.arange(a.height), np.flatnonzero(addendum)]
    kind = np.r_[np.zeros(a.height, int), np.ones(int(addendum.sum()), int)]
    order = np.lexsort((kind, rows))
    rows, kind = rows[order], kind[order]
    d = a[rows]
    disch = d["dischtime"].to_numpy()
    chart = disch - disch % DAY  # 00:00 of the day of discharge
    store = disch + r.integers(HOUR, 3 * DAY, len(rows)) + kind * r.integers(DAY, 4 * DAY,
                                                                            len(rows))
    sid = d["subject_id"].to_numpy()
    seq = _seq(sid)
    text = [f"Discharge {'addendum' if k else 'summary'} of admission {h}.\n"
            f"Discharge Diagnosis: ___\nDischarge Condition: stable."
            for h, k in zip(d["hadm_id"].to_list(), kind.tolist())]
    return pl.DataFrame({
        "note_id": [f"{s}-DS-{q}" for s, q in zip(sid.tolist(), seq.tolist())],
        "subject_id": sid, "hadm_id": d["hadm_id"], "note_type": "DS", "note_seq": seq,
        "charttime": _ts(chart), "storetime": _ts(store, r.random(len(rows)) < 0.03),
        "text": text})


def radiology_notes(adm: pl.DataFrame, r: np.random.Generator
                    ) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
    """The reports (RR) and addenda (AR), with each one's exam index and its parent row (-1
    for a report)."""
    n_exam = r.choice(7, adm.height, p=[.25, .25, .2, .12, .08, .06, .04])
    which = np.repeat(np.arange(adm.height), n_exam)
    start, end = adm["admittime"].to_numpy()[which], adm["dischtime"].to_numpy()[which]
    t = start + (r.random(len(which)) * np.maximum(end - start, MIN)).astype(np.int64)
    t -= t % MIN
    exam = r.integers(0, len(EXAMS), len(which))
    pair = r.random(len(which)) < 0.20  # a second study at the same minute
    which = np.r_[which, which[pair]]
    t = np.r_[t, t[pair]]
    exam = np.r_[exam, (exam[pair] + 1 + r.integers(0, len(EXAMS) - 1, int(pair.sum())))
                 % len(EXAMS)]
    parent = np.full(len(which), -1)
    add = np.flatnonzero(r.random(len(which)) < 0.05)
    which, t, exam = np.r_[which, which[add]], np.r_[t, t[add]], np.r_[exam, exam[add]]
    parent = np.r_[parent, add]
    order = np.lexsort((np.arange(len(which)), t, adm["subject_id"].to_numpy()[which]))
    back = np.empty_like(order)
    back[order] = np.arange(len(order))
    which, t, exam = which[order], t[order], exam[order]
    parent = np.where(parent[order] >= 0, back[np.maximum(parent[order], 0)], -1)
    sid = adm["subject_id"].to_numpy()[which]
    seq = _seq(sid)
    report = parent < 0
    store = t + r.integers(20 * MIN, 10 * HOUR, len(t))
    store = np.where(report, store, store + r.integers(HOUR, DAY, len(t)))
    text = [f"EXAMINATION: {EXAMS[e][0]}\nFINDINGS: {EXAMS[e][2]}\nIMPRESSION: {EXAMS[e][3]}"
            if p < 0 else f"ADDENDUM to {EXAMS[e][0]}: the findings were discussed with ___."
            for e, p in zip(exam.tolist(), parent.tolist())]
    notes = pl.DataFrame({
        "note_id": [f"{s}-{'RR' if p < 0 else 'AR'}-{q}"
                    for s, q, p in zip(sid.tolist(), seq.tolist(), parent.tolist())],
        "subject_id": sid, "hadm_id": adm["hadm_id"].to_numpy()[which],
        "note_type": np.where(report, "RR", "AR"), "note_seq": seq, "charttime": _ts(t),
        "storetime": _ts(store, r.random(len(t)) < 0.05), "text": text})
    return notes, exam, parent


def radiology_details(notes: pl.DataFrame, exam: np.ndarray, parent: np.ndarray,
                      r: np.random.Generator) -> pl.DataFrame:
    """exam_code, exam_name, cpt_code (a second one for 10%) of every report and addendum,
    and an addendum's parent_note_id; a note's fields together."""
    ids, sid = notes["note_id"].to_list(), notes["subject_id"].to_list()
    rows = []
    for i, (e, p) in enumerate(zip(exam.tolist(), parent.tolist())):
        code, cpt = EXAM_CODES[e]
        fields = [("exam_code", code, 1), ("exam_name", EXAMS[e][0], 1), ("cpt_code", cpt, 1)]
        if r.random() < 0.10:
            fields.append(("cpt_code", str(int(cpt) + 1), 2))
        if p >= 0:
            fields.append(("parent_note_id", ids[p], 1))
        rows += [(ids[i], sid[i], name, value, k) for name, value, k in fields]
    return pl.DataFrame(rows, orient="row", schema={
        "note_id": pl.String, "subject_id": pl.Int64, "field_name": pl.String,
        "field_value": pl.String, "field_ordinal": pl.Int64})


def write_note_module(src: str | Path, out: str | Path, seed: int = 0) -> Path:
    """`out` = `src`'s hosp/ and icu/ plus a generated note/ module; returns `out`."""
    src, out = Path(src), Path(out)
    if not (src / "hosp" / "admissions.csv.gz").exists():
        raise ValueError(f"{src}: no hosp/admissions.csv.gz; expected a MIMIC-IV tree")
    if (src / "note").exists():
        raise ValueError(f"{src} already has a note/ module")
    _link_tree(src, out)
    r = np.random.default_rng([int(seed), 25])
    adm = _admissions(src)
    ds = discharge_notes(adm, r)
    rr, exam, parent = radiology_notes(adm, r)
    _write(out, "note/discharge", {c: ds[c] for c in ds.columns})
    _write(out, "note/radiology", {c: rr[c] for c in rr.columns})
    _write(out, "note/discharge_detail", {
        "note_id": ds["note_id"], "subject_id": ds["subject_id"],
        "field_name": ["author"] * ds.height, "field_value": ["___"] * ds.height,
        "field_ordinal": [1] * ds.height})
    det = radiology_details(rr, exam, parent, r)
    _write(out, "note/radiology_detail", {c: det[c] for c in det.columns})
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m trajectory.demo_notes",
                                 description="A MIMIC-IV tree plus a MIMIC-IV-Note-shaped note/ "
                                             "module for its admissions.")
    ap.add_argument("src", help="a MIMIC-IV tree without note/ (e.g. the shared demo)")
    ap.add_argument("out", help="where to write the tree with notes")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out = write_note_module(args.src, args.out, args.seed)
    print(f"wrote {out} (hosp/, icu/ linked from {args.src}; note/ generated)")


if __name__ == "__main__":
    main()
