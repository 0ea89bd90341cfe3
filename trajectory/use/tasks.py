"""Prediction tasks: what each built-in task means, and pure functions that label one patient.

A task reads only what a finished record holds in its header (`static`, `admissions`,
`stays`: docs/FORMAT.md) plus the time of the patient's last event, and gives label rows in
the MEDS label schema (`subject_id`, `prediction_time`, `boolean_value`, with `hadm_id` and
`stay_id` where they apply) and, for every candidate it does not keep, one named reason.
`jobs/tasks.py` runs these over the shards of a version and writes `tasks/<name>.parquet`.

Event times (README "Tasks"), all epoch seconds as the record stores them:

    hospital admission  admissions.admittime      hospital discharge  admissions.dischtime
    ICU admission       stays.intime              ICU discharge       stays.outtime
    death               the earliest admissions.deathtime of the patient (any admission);
                        else patients.dod at 00:00 of that day; else none

The definitions follow the community's task configs, run by ACES (windows with explicit
inclusive/exclusive bounds), from the MEDS-DEV repository (mmcdermott/MEDS-DEV):
`src/MEDS_DEV/tasks/criteria/mortality/in_icu/first_24h.yaml` and
`src/MEDS_DEV/tasks/readmission/general_hospital/30d.yaml`. Where they are silent (an ICU
trigger for in-hospital death, length of stay) a task keeps their shape: one trigger, the
prediction time at the end of the input window, every boundary stated below. A candidate
meets the exclusion checks in the order its task lists `reasons`; the first that applies
names it, so candidates = samples + sum(excluded).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import zstandard

from ..record import read_head

HOUR = 3600
DAY = 86400

EVENT_TIMES = {
    "hospital_admission": "admissions.admittime",
    "hospital_discharge": "admissions.dischtime",
    "icu_admission": "stays.intime (icustays)",
    "icu_discharge": "stays.outtime (icustays)",
    "death": "the earliest admissions.deathtime of any admission of the patient; where none, "
             "patients.dod at 00:00 (a date only); where neither, the patient has no death",
    "last_event": "the latest of the record's last event time (events['time'].max(), the "
                  "manifest's last_time) and every admission, ICU stay and death time",
}


# ---- the patient as the tasks see it -----------------------------------------------------


@dataclass(frozen=True)
class Admission:
    hadm_id: int | None
    admittime: int | None
    dischtime: int | None
    deathtime: int | None


@dataclass(frozen=True)
class Stay:
    stay_id: int | None
    hadm_id: int | None
    intime: int | None
    outtime: int | None


@dataclass(frozen=True)
class Timeline:
    subject_id: int
    death: int | None  # see EVENT_TIMES["death"]
    last_time: int | None  # see EVENT_TIMES["last_event"]
    admissions: tuple[Admission, ...]
    stays: tuple[Stay, ...]


def _column(section: dict, name: str, n: int) -> list:
    values = section.get(name)
    return list(values) if values is not None else [None] * n


def _rows(section: dict, cols: tuple[str, ...]) -> list[tuple]:
    n = max((len(v) for v in section.values()), default=0)
    return list(zip(*[_column(section, c, n) for c in cols])) if n else []


def timeline(header: dict, last_event_time: int | None) -> Timeline:
    """The tasks' view of a record header ({'subject_id', 'static', 'admissions', 'stays'},
    sections as column -> list, times in epoch seconds, None when missing)."""
    adms = tuple(Admission(*r) for r in _rows(header.get("admissions") or {},
                                             ("hadm_id", "admittime", "dischtime", "deathtime")))
    stays = tuple(Stay(*r) for r in _rows(header.get("stays") or {},
                                          ("stay_id", "hadm_id", "intime", "outtime")))
    deaths = [a.deathtime for a in adms if a.deathtime is not None]
    # dod is a date; the record stores it as that day's 00:00, which is what the task uses
    dod = (header.get("static") or {}).get("dod")
    death = min(deaths) if deaths else dod
    times = [t for a in adms for t in (a.admittime, a.dischtime, a.deathtime)]
    times += [t for s in stays for t in (s.intime, s.outtime)]
    times += [death, last_event_time]
    times = [t for t in times if t is not None]
    return Timeline(int(header["subject_id"]), death, max(times) if times else None, adms,
                    stays)


HEADER_KEYS = frozenset({"format", "subject_id", "static", "admissions", "stays"})


def read_header(data: bytes, dctx: zstandard.ZstdDecompressor) -> dict:
    """The header keys of one record's stored bytes: only its small `head` frame is
    inflated, never its events (labelling then costs a fraction of a `record.unpack`)."""
    head = read_head(data, dctx)
    return {k: head[k] for k in HEADER_KEYS if k in head}


# ---- label functions: Timeline -> (rows, excluded by reason) ----------------------------
# A row is (subject_id, prediction_time seconds, boolean label, hadm_id, stay_id).


def _in(t: int | None, lo: int, hi: int) -> bool:
    """t in (lo, hi]: ACES' windows here start exclusive and end inclusive."""
    return t is not None and lo < t <= hi


def _stay_times(s: Stay) -> str | None:
    if s.intime is None or s.outtime is None:
        return "missing_icu_time"
    if s.outtime <= s.intime:
        return "icu_outtime_not_after_intime"
    return None


def mortality_in_icu(tl: Timeline, input_hours: int, gap_hours: int):
    """One candidate per ICU stay; trigger T = its intime; prediction at T + input_hours.

    Excluded, in this order: `missing_icu_time`, `icu_outtime_not_after_intime`;
    `death_at_or_before_icu_admission` (death <= T: a date-only dod of the day of admission,
    or an inconsistent record; ACES would label it negative, we keep no such label);
    `death_in_gap`, `icu_discharge_in_gap`, `icu_admission_in_gap`: a death, any ICU outtime
    of the patient (this stay's included), or any other ICU intime in (T, T + gap_hours].
    Label: death in (T + gap_hours, E], E = the first ICU outtime or death after
    T + gap_hours (inclusive: a death at the ICU discharge time is positive). A death in a
    later ICU stay of the same hospital admission is negative (MEDS-DEV says so)."""
    rows, out = [], Counter()
    for s in tl.stays:
        reason = _stay_times(s)
        if reason is None:
            t, gap_end = s.intime, s.intime + gap_hours * HOUR
            if tl.death is not None and tl.death <= t:
                reason = "death_at_or_before_icu_admission"
            elif _in(tl.death, t, gap_end):
                reason = "death_in_gap"
            elif any(_in(o.outtime, t, gap_end) for o in tl.stays):
                reason = "icu_discharge_in_gap"
            elif any(_in(o.intime, t, gap_end) for o in tl.stays):
                reason = "icu_admission_in_gap"
        if reason:
            out[reason] += 1
            continue
        # this stay's outtime is after gap_end (not in the gap, after intime), so E exists
        end = min(o.outtime for o in tl.stays if o.outtime is not None and o.outtime > gap_end)
        label = tl.death is not None and gap_end < tl.death <= end
        rows.append((tl.subject_id, s.intime + input_hours * HOUR, label, s.hadm_id,
                     s.stay_id))
    return rows, out


def mortality_in_hospital_icu(tl: Timeline, hours: int):
    """One candidate per ICU stay that lasts at least `hours`; prediction at intime + hours.

    Excluded, in this order: `missing_icu_time`, `icu_outtime_not_after_intime`,
    `icu_stay_under_48h` (outtime - intime < hours; exactly `hours` is kept),
    `admission_not_found` (the stay's hadm_id is not among the record's admissions),
    `missing_admission_time` (its admittime or dischtime is missing),
    `death_at_or_before_prediction`, `discharged_at_or_before_prediction` (dischtime <= the
    prediction time).
    Label: death in (prediction, dischtime] of the stay's hospital admission (inclusive: a
    death at the discharge time, MIMIC-IV's usual in-hospital death, is positive), or the
    admission itself records a deathtime: MIMIC-IV sets deathtime only for deaths in that
    admission, and in a few admissions dischtime is truncated to 00:00 while deathtime is
    later that day (4 of the demo's 15 deaths)."""
    rows, out = [], Counter()
    by_hadm = {a.hadm_id: a for a in tl.admissions}
    for s in tl.stays:
        reason = _stay_times(s)
        pred = s.intime + hours * HOUR if reason is None else 0
        adm = by_hadm.get(s.hadm_id)
        if reason is None:
            if s.outtime - s.intime < hours * HOUR:
                reason = f"icu_stay_under_{hours}h"
            elif adm is None or s.hadm_id is None:
                reason = "admission_not_found"
            elif adm.admittime is None or adm.dischtime is None:
                reason = "missing_admission_time"
            elif tl.death is not None and tl.death <= pred:
                reason = "death_at_or_before_prediction"
            elif adm.dischtime <= pred:
                reason = "discharged_at_or_before_prediction"
        if reason:
            out[reason] += 1
            continue
        label = adm.deathtime is not None or (tl.death is not None and tl.death <= adm.dischtime)
        rows.append((tl.subject_id, pred, label, s.hadm_id, s.stay_id))
    return rows, out


def long_los_icu(tl: Timeline, input_hours: int, days: int):
    """One candidate per ICU stay; prediction at intime + input_hours, only for a stay still
    in the ICU then, and the patient alive.

    Excluded, in this order: `missing_icu_time`, `icu_outtime_not_after_intime`,
    `death_at_or_before_prediction` (death <= intime + input_hours),
    `icu_discharge_at_or_before_prediction` (outtime <= intime + input_hours: still in the
    ICU means out strictly later).
    Label: outtime - intime > days (strictly: a stay of exactly `days` days is negative)."""
    rows, out = [], Counter()
    for s in tl.stays:
        reason = _stay_times(s)
        pred = s.intime + input_hours * HOUR if reason is None else 0
        if reason is None:
            if tl.death is not None and tl.death <= pred:
                reason = "death_at_or_before_prediction"
            elif s.outtime <= pred:
                reason = "icu_discharge_at_or_before_prediction"
        if reason:
            out[reason] += 1
            continue
        rows.append((tl.subject_id, pred, s.outtime - s.intime > days * DAY, s.hadm_id,
                     s.stay_id))
    return rows, out


def readmission(tl: Timeline, days: int):
    """One candidate per hospital admission; prediction at its dischtime D.

    Excluded, in this order: `missing_admission_time` (admittime or dischtime missing),
    `discharge_before_admission` (dischtime < admittime), `died_in_admission` (the admission
    records a deathtime, or the patient's death is at or before D: no discharge alive),
    `censored` (the patient's last event, EVENT_TIMES["last_event"], is at or before
    D + days: no event of any kind strictly after the target window, MEDS-DEV's
    censoring-protection window; so deaths within `days` of discharge leave the cohort).
    Label: some admission of the patient has admittime in (D, D + days] (an admission that
    starts at D itself, a transfer, is not a readmission; one at exactly D + days is)."""
    rows, out = [], Counter()
    admits = [a.admittime for a in tl.admissions if a.admittime is not None]
    for a in tl.admissions:
        reason = None
        if a.admittime is None or a.dischtime is None:
            reason = "missing_admission_time"
        elif a.dischtime < a.admittime:
            reason = "discharge_before_admission"
        elif a.deathtime is not None or (tl.death is not None and tl.death <= a.dischtime):
            reason = "died_in_admission"
        elif tl.last_time is None or tl.last_time <= a.dischtime + days * DAY:
            reason = "censored"
        if reason:
            out[reason] += 1
            continue
        label = any(_in(t, a.dischtime, a.dischtime + days * DAY) for t in admits)
        rows.append((tl.subject_id, a.dischtime, label, a.hadm_id, None))
    return rows, out


# ---- the built-in tasks -------------------------------------------------------------------

STAY_REASONS = ("missing_icu_time", "icu_outtime_not_after_intime")


@dataclass(frozen=True)
class Task:
    name: str
    fn: Callable
    params: dict
    unit: str  # "stays" or "admissions": the Timeline entries that are the candidates
    id_columns: tuple[str, ...]  # beside subject_id and prediction_time
    reasons: tuple[str, ...]  # exclusion reasons, in the order they are checked
    definition: str
    source: str
    value_column: str = "boolean_value"
    boundaries: dict = field(default_factory=dict)

    def candidates(self, tl: Timeline) -> int:
        return len(getattr(tl, self.unit))

    def label(self, tl: Timeline) -> tuple[list[tuple], Counter]:
        rows, excluded = self.fn(tl, **self.params)
        unknown = set(excluded) - set(self.reasons)
        if unknown:  # a reason the funnel would not list: a bug in the task, not the data
            raise RuntimeError(f"task {self.name}: unlisted exclusion reason(s) {unknown}")
        return rows, excluded


CANDIDATE = {"stays": "ICU stay", "admissions": "hospital admission (its discharge)"}
MEDS_DEV = "mmcdermott/MEDS-DEV, src/MEDS_DEV/tasks/"
ICU_REASONS = STAY_REASONS + ("death_at_or_before_icu_admission", "death_in_gap",
                              "icu_discharge_in_gap", "icu_admission_in_gap")

TASKS: dict[str, Task] = {t.name: t for t in [
    Task("mortality_in_icu_first_24h", mortality_in_icu, {"input_hours": 24, "gap_hours": 48},
         "stays", ("hadm_id", "stay_id"), ICU_REASONS,
         "Will the patient die in this ICU stay, predicted from its first 24 hours? "
         "Prediction at ICU admission + 24 h. Stays where a death, an ICU discharge or another "
         "ICU admission falls in (admission, admission + 48 h] are excluded. Label: death in "
         "(admission + 48 h, the first ICU discharge or death after that].",
         MEDS_DEV + "criteria/mortality/in_icu/first_24h.yaml (trigger icu_admission; input "
         "ends trigger + 24h inclusive; gap (trigger, trigger + 48h] has no icu_admission, "
         "icu_discharge or death; target (gap.end, next icu_discharge or death], label death)."
         " Departures: a death at or before the ICU admission (date-only dod) is excluded "
         "rather than labelled negative; the newer criteria file also ends the target at a "
         "hospital discharge, which the issue's definition does not.",
         boundaries={"gap": "(intime, intime + 48h]", "target": "(intime + 48h, E], E = first "
                     "ICU outtime or death after intime + 48h", "prediction": "intime + 24h"}),
    Task("mortality_in_hospital_first_48h_icu", mortality_in_hospital_icu, {"hours": 48},
         "stays", ("hadm_id", "stay_id"),
         STAY_REASONS + ("icu_stay_under_48h", "admission_not_found", "missing_admission_time",
                         "death_at_or_before_prediction", "discharged_at_or_before_prediction"),
         "Will the patient die before leaving the hospital, predicted from the first 48 hours "
         "of an ICU stay? One sample per ICU stay of at least 48 h; prediction at ICU admission "
         "+ 48 h. Label: death in (prediction, dischtime] of the stay's hospital admission, or "
         "that admission records a deathtime.",
         "No MEDS-DEV config has an ICU trigger for in-hospital death; the shape follows "
         + MEDS_DEV + "criteria/mortality/in_icu/first_24h.yaml (trigger, prediction at the end "
         "of the input window) with the target ending at the hospital discharge.",
         boundaries={"cohort": "outtime - intime >= 48h", "prediction": "intime + 48h",
                     "target": "(intime + 48h, dischtime], or the admission has a deathtime"}),
    *[Task(f"long_los_icu_{d}d", long_los_icu, {"input_hours": 24, "days": d}, "stays",
           ("hadm_id", "stay_id"),
           STAY_REASONS + ("death_at_or_before_prediction",
                           "icu_discharge_at_or_before_prediction"),
           f"Will this ICU stay last more than {d} days, predicted from its first 24 hours? One "
           "sample per ICU stay still in the ICU, the patient alive, at ICU admission + 24 h; "
           f"prediction then. Label: outtime - intime > {d} days.",
           f"ICU length of stay > {d} d (thresholds of the mimic3-benchmarks / YAIB LOS "
           "tasks); window shape as " + MEDS_DEV + "criteria/mortality/in_icu/first_24h.yaml.",
           boundaries={"cohort": "outtime > intime + 24h and death > intime + 24h",
                       "prediction": "intime + 24h", "label": f"outtime - intime > {d} d"})
      for d in (3, 7)],
    Task("readmission_30d", readmission, {"days": 30}, "admissions",
         ("hadm_id",),
         ("missing_admission_time", "discharge_before_admission", "died_in_admission",
          "censored"),
         "Will the patient be admitted to the hospital again within 30 days of this discharge? "
         "One sample per hospital discharge alive; prediction at the discharge. Excluded when "
         "the patient has no event of any kind more than 30 days after the discharge "
         "(censoring). Label: an admission with admittime in (discharge, discharge + 30 d].",
         MEDS_DEV + "readmission/general_hospital/30d.yaml (trigger hospital_discharge; target "
         "(trigger, trigger + 30d] labelled by hospital_admission; censoring protection: an "
         "event in (trigger + 30d, end of record]). Departure: discharges of admissions in "
         "which the patient died are excluded by name (in ACES they fall to censoring).",
         boundaries={"prediction": "dischtime", "target": "(dischtime, dischtime + 30d]",
                     "censoring": "last event > dischtime + 30d"}),
]}


def funnel(task: Task, candidates: int, excluded: Counter, samples: int,
           positives: int) -> dict:
    """The cohort funnel as written to tasks/<name>.json: every reason listed, 0 included."""
    if candidates != samples + sum(excluded.values()):
        raise RuntimeError(f"task {task.name}: {candidates} candidates != {samples} samples + "
                           f"{sum(excluded.values())} excluded")
    return {"candidates": candidates, "excluded": {r: int(excluded.get(r, 0))
                                                   for r in task.reasons},
            "samples": samples, "positives": positives, "negatives": samples - positives}


def resolve(names) -> list[Task]:
    """Tasks by name, all built-in ones when `names` is empty; an unknown name is an error."""
    if not names:
        return list(TASKS.values())
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; built-in tasks: {', '.join(TASKS)}")
    return [TASKS[n] for n in dict.fromkeys(names)]
