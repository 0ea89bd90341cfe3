"""A MIMIC-IV-Note-shaped `note/` module for a MIMIC-IV tree that has none (the shared demo).

The demo release ships no notes, so the availability rule (README "What was known when"), the
note links of detail rows and the cost of notes at scale could not be measured on it. This
writes `note/discharge`, `note/radiology` and their `_detail` tables for the tree's own
admissions, with the headers, id scheme, rates, timing and lengths of MIMIC-IV-Note v2.2 (its
text is synthetic: section headings and sentences drawn from a small bank):

- a discharge summary (note_type DS) for 57% of admissions and an addendum (AD) for 5% of
  those, ~0.6 per admission (the release: 331,794 notes over MIMIC-IV 3.1's 546,028
  admissions); charted at 00:00 of the day of discharge, stored 1 h to 3 days after the
  discharge (3% without storetime), an addendum later still; discharge_detail names each
  one's author ("___").
- ~4.2 radiology reports (RR) and addenda (AR) per admission (2,321,355 over 546,028): exams
  inside an admission, stored 20 min to 10 h after the exam (5% without storetime), and 1 in
  10 an outpatient exam before it, without hadm_id. 20% of exams come with a second study
  ordered at the same minute (a CT chest with a CT abdomen), so two reports share a subject
  and charttime; 5% get an addendum (AR) at the same charttime. radiology_detail gives each
  report's exam_code, exam_name and CPT code(s), an addendum's parent_note_id and its
  parent's addendum_note_id.
- lengths as the release's: discharge ~10,000 characters on average (1,500 to ~60,000),
  radiology ~1,500 (200 to ~15,000), log-normal, the longest of each kind at the cap;
  multi-line, with blank lines, commas, double quotes and non-ASCII (°, µ, ≥).

Deterministic: one numpy Generator from `seed`, gzip with mtime 0. The hosp/ and icu/ files
are hard-linked (copied across file systems) into the output tree, never changed.
`python -m trajectory.replicate` scales the same module with the tree (`note_tables`).

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


def _seq(subject: np.ndarray) -> np.ndarray:
    """1, 2, ... within each subject, in row order (rows grouped by subject)."""
    out = np.ones(len(subject), np.int64)
    for i in range(1, len(subject)):
        if subject[i] == subject[i - 1]:
            out[i] = out[i - 1] + 1
    return out


# (mean, shortest, longest) characters per note: MIMIC-IV-Note 2.2's discharge notes average
# ~10,500 characters (the longest ~60,000), its radiology reports ~1,500 (up to ~15,000).
DISCHARGE_CHARS = (10_000, 1_500, 60_000)
RADIOLOGY_CHARS = (1_500, 200, 15_000)
SIGMA = 0.55  # log-normal spread of lengths

DISCHARGE_SECTIONS = ("Chief Complaint", "History of Present Illness", "Past Medical History",
                      "Physical Exam", "Pertinent Results", "Brief Hospital Course",
                      "Medications on Admission", "Discharge Medications",
                      "Discharge Diagnosis", "Discharge Condition", "Discharge Instructions")
ADDENDUM_SECTIONS = ("Addendum", "Pertinent Results", "Discharge Medications")
RADIOLOGY_SECTIONS = ("EXAMINATION", "INDICATION", "TECHNIQUE", "COMPARISON", "FINDINGS",
                      "IMPRESSION")
SENTENCES = (
    "Patient is a ___ y/o woman with a history of CHF, COPD, and AFib on warfarin.",
    "Per the patient, \"it started 3 days ago, and it has been getting worse.\"",
    "In the ED, initial vitals were T 38.4°C, HR 112, BP 96/58, RR 24, SpO2 91% on RA.",
    "Vancomycin trough was 18.2 µg/mL; dosing was held, then resumed at 1 g q12h.",
    "Lactate ≥ 4 mmol/L on arrival, improved to 1.9 after 3 L of IV fluids.",
    "Cr 1.8 (baseline 1.1), thought to be pre-renal; it improved with fluids.",
    "Lungs: crackles at the bases bilaterally, no wheezes, rales, or rhonchi.",
    "No pleural effusion or pneumothorax. Heart size is at the upper limit of normal.",
    "She was transferred to the MICU for closer monitoring, then back to the floor.",
    "Metoprolol was uptitrated to 50 mg PO BID, with rate control < 100 bpm.",
    "Temperature max 39.1 °C overnight; blood and urine cultures were sent.",
    "Discussed with the family, who agree with the plan; code status: \"Full code\".",
    "Insulin sliding scale, goal glucose 140-180 mg/dL, with A1c 8.2%.",
    "Follow up with Dr. ___ in 1-2 weeks, and with cardiology (___) in 1 month.",
    "CBC: WBC 14.2, Hgb 9.8, Hct 29.7, Plt 212; Na 134, K 4.9, Cl 101, HCO3 19.",
    "Comparison is made to the prior study of ___, which showed a small effusion.",
    "Interval increase in the right lower lobe opacity, concerning for pneumonia.",
    "Heparin drip at 18 units/kg/h, PTT goal 60-80 s, titrated per protocol.",
    "Please call your doctor if you develop fever ≥ 38.5°C, chest pain, or dyspnea.",
    "Tubes and lines: right IJ central line terminates in the low SVC.",
)


def note_lengths(r: np.random.Generator, n: int, chars: tuple[int, int, int]) -> np.ndarray:
    """`n` lengths, log-normal around the mean, clipped; the longest set to the cap, so a
    module of any size has a note as long as the release's longest."""
    mean, lo, hi = chars
    out = np.clip(r.lognormal(np.log(mean) - SIGMA ** 2 / 2, SIGMA, n), lo, hi).astype(np.int64)
    if n:
        out[np.argmax(out)] = hi
    return out


def _vocabulary() -> list[str]:
    """1,600 made-up words of 2-4 syllables: free text that compresses like the release's
    (gzip ~3x; sentences from the bank alone compress ~18x and would understate the input's
    bytes and its inflate time)."""
    onsets = ("b", "c", "d", "f", "g", "h", "l", "m", "n", "p", "r", "s", "t", "v", "ch", "st",
              "pr", "tr", "gl", "sc")
    vowels = ("a", "e", "i", "o", "u", "ae", "io", "ou")
    r = np.random.default_rng(2026)
    syll = [o + v for o in onsets for v in vowels]
    return ["".join(syll[j] for j in r.integers(0, len(syll), r.integers(2, 5)))
            for _ in range(1600)]


VOCABULARY = _vocabulary()


def note_text(r: np.random.Generator, sections: tuple[str, ...], length: int, tag: str) -> str:
    """`length` characters of multi-line text under `sections`' headings, blank lines between
    them (MIMIC-IV-Note writes them as " \n"): sentences from the bank, each followed by a
    clause of made-up words with a number."""
    parts = [f"{sections[0]}: {tag}\n"]
    n, k, i = len(parts[0]), 0, 0
    draws = r.integers(0, len(SENTENCES), length // 60 + 8)
    words = r.integers(0, len(VOCABULARY), length // 5 + 16)
    numbers = r.integers(0, 1000, length // 60 + 8)
    w = 0
    while n < length:
        if i % 8 == 7:
            k = (k + 1) % len(sections)
            piece = f" \n{sections[k]}:\n"
        else:
            m = 4 + (numbers[i % len(numbers)] % 9)
            clause = " ".join(VOCABULARY[j] for j in words[w % len(words):][:m])
            w += m
            piece = (SENTENCES[draws[i % len(draws)]] + f" {clause.capitalize()}, "
                     f"{numbers[i % len(numbers)] / 10:g}." + ("\n" if i % 3 == 2 else " "))
        parts.append(piece)
        n += len(piece)
        i += 1
    return "".join(parts)[:length]


def discharge_notes(adm: pl.DataFrame, r: np.random.Generator) -> pl.DataFrame:
    """A summary (DS) for 57% of admissions, an addendum (AD) for 5% of those; addenda share
    the `-DS-` id infix, as in the release."""
    a = adm.filter(pl.Series(r.random(adm.height) < 0.57))
    addendum = r.random(a.height) < 0.05
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
    lengths = note_lengths(r, len(rows), DISCHARGE_CHARS)
    text = [note_text(r, ADDENDUM_SECTIONS if k else DISCHARGE_SECTIONS, n, "___")
            for k, n in zip(kind.tolist(), lengths.tolist())]
    return pl.DataFrame({
        "note_id": [f"{s}-DS-{q}" for s, q in zip(sid.tolist(), seq.tolist())],
        "subject_id": sid, "hadm_id": d["hadm_id"], "note_type": np.where(kind, "AD", "DS"),
        "note_seq": seq, "charttime": _ts(chart),
        "storetime": _ts(store, r.random(len(rows)) < 0.03), "text": text})


def radiology_notes(adm: pl.DataFrame, r: np.random.Generator
                    ) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
    """The reports (RR) and addenda (AR), with each one's exam index and its parent row (-1
    for a report). Exams per admission: negative binomial, mean 3.0 inside it and 0.33 as an
    outpatient in the 180 days before it; x1.2 for paired studies, x1.05 for addenda: 4.2."""
    n_in = r.negative_binomial(1.5, 1.5 / 4.5, adm.height)
    n_out = r.poisson(1 / 3, adm.height)
    which = np.r_[np.repeat(np.arange(adm.height), n_in), np.repeat(np.arange(adm.height), n_out)]
    outpatient = np.r_[np.zeros(n_in.sum(), bool), np.ones(n_out.sum(), bool)]
    start, end = adm["admittime"].to_numpy()[which], adm["dischtime"].to_numpy()[which]
    t = np.where(outpatient, start - r.integers(DAY, 180 * DAY, len(which)),
                 start + (r.random(len(which)) * np.maximum(end - start, MIN)).astype(np.int64))
    t -= t % MIN
    exam = r.integers(0, len(EXAMS), len(which))
    pair = r.random(len(which)) < 0.20  # a second study at the same minute
    which, t, outpatient = np.r_[which, which[pair]], np.r_[t, t[pair]], np.r_[outpatient,
                                                                               outpatient[pair]]
    exam = np.r_[exam, (exam[pair] + 1 + r.integers(0, len(EXAMS) - 1, int(pair.sum())))
                 % len(EXAMS)]
    parent = np.full(len(which), -1)
    add = np.flatnonzero(r.random(len(which)) < 0.05)
    which, t, exam = np.r_[which, which[add]], np.r_[t, t[add]], np.r_[exam, exam[add]]
    outpatient, parent = np.r_[outpatient, outpatient[add]], np.r_[parent, add]
    order = np.lexsort((np.arange(len(which)), t, adm["subject_id"].to_numpy()[which]))
    back = np.empty_like(order)
    back[order] = np.arange(len(order))
    which, t, exam, outpatient = which[order], t[order], exam[order], outpatient[order]
    parent = np.where(parent[order] >= 0, back[np.maximum(parent[order], 0)], -1)
    sid = adm["subject_id"].to_numpy()[which]
    seq = _seq(sid)
    report = parent < 0
    store = t + r.integers(20 * MIN, 10 * HOUR, len(t))
    store = np.where(report, store, store + r.integers(HOUR, DAY, len(t)))
    lengths = note_lengths(r, len(t), RADIOLOGY_CHARS)
    text = [note_text(r, RADIOLOGY_SECTIONS, n, EXAMS[e][0]) if p < 0 else
            note_text(r, ("ADDENDUM",) + RADIOLOGY_SECTIONS[4:], n, EXAMS[e][0])
            for e, p, n in zip(exam.tolist(), parent.tolist(), lengths.tolist())]
    hadm = pl.Series(adm["hadm_id"].to_numpy()[which])
    notes = pl.DataFrame({
        "note_id": [f"{s}-RR-{q}" for s, q in zip(sid.tolist(), seq.tolist())],
        "subject_id": sid,
        "hadm_id": pl.select(pl.when(pl.Series(~outpatient)).then(hadm)).to_series(),
        "note_type": np.where(report, "RR", "AR"), "note_seq": seq, "charttime": _ts(t),
        "storetime": _ts(store, r.random(len(t)) < 0.05), "text": text})
    return notes, exam, parent


def radiology_details(notes: pl.DataFrame, exam: np.ndarray, parent: np.ndarray,
                      r: np.random.Generator) -> pl.DataFrame:
    """exam_code, exam_name, cpt_code (a second one for 10%) of every report and addendum, an
    addendum's parent_note_id and its parent's addendum_note_id; a note's fields together."""
    ids, sid = notes["note_id"].to_list(), notes["subject_id"].to_list()
    addendum_of = {p: i for i, p in enumerate(parent.tolist()) if p >= 0}
    rows = []
    for i, (e, p) in enumerate(zip(exam.tolist(), parent.tolist())):
        code, cpt = EXAM_CODES[e]
        fields = [("exam_code", code, 1), ("exam_name", EXAMS[e][0], 1), ("cpt_code", cpt, 1)]
        if r.random() < 0.10:
            fields.append(("cpt_code", str(int(cpt) + 1), 2))
        if p >= 0:
            fields.append(("parent_note_id", ids[p], 1))
        if i in addendum_of:
            fields.append(("addendum_note_id", ids[addendum_of[i]], 1))
        rows += [(ids[i], sid[i], name, value, k) for name, value, k in fields]
    return pl.DataFrame(rows, orient="row", schema={
        "note_id": pl.String, "subject_id": pl.Int64, "field_name": pl.String,
        "field_value": pl.String, "field_ordinal": pl.Int64})


def note_tables(src: str | Path, seed: int = 0) -> dict[str, pl.DataFrame]:
    """The four note/ tables for `src`'s admissions, keyed "note/<table>", in HEADERS' column
    order."""
    src = Path(src)
    if not (src / "hosp" / "admissions.csv.gz").exists():
        raise ValueError(f"{src}: no hosp/admissions.csv.gz; expected a MIMIC-IV tree")
    r = np.random.default_rng([int(seed), 25])
    adm = _admissions(src)
    ds = discharge_notes(adm, r)
    rr, exam, parent = radiology_notes(adm, r)
    tables = {
        "note/discharge": ds, "note/radiology": rr,
        "note/discharge_detail": pl.DataFrame({
            "note_id": ds["note_id"], "subject_id": ds["subject_id"],
            "field_name": ["author"] * ds.height, "field_value": ["___"] * ds.height,
            "field_ordinal": [1] * ds.height}),
        "note/radiology_detail": radiology_details(rr, exam, parent, r)}
    return {name: t.select(HEADERS[name].split(",")) for name, t in tables.items()}


def write_notes(tables: dict[str, pl.DataFrame], out: Path) -> None:
    """`note_tables`' frames as `out`/note/*.csv.gz (MIMIC-IV's timestamp format)."""
    for name, frame in tables.items():
        path = out / f"{name}.csv.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        _gzip_write(path, frame.write_csv(datetime_format="%Y-%m-%d %H:%M:%S").encode())


def write_note_module(src: str | Path, out: str | Path, seed: int = 0) -> Path:
    """`out` = `src`'s hosp/ and icu/ plus a generated note/ module; returns `out`."""
    src, out = Path(src), Path(out)
    if (src / "note").exists():
        raise ValueError(f"{src} already has a note/ module")
    tables = note_tables(src, seed)
    _link_tree(src, out)
    write_notes(tables, out)
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
