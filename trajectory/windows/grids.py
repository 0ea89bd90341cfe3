"""Per-stay (and optionally per-admission) time grids of one patient, for the record.

Every concept event of the patient counts, not only those charted with the stay's stay_id: a
creatinine drawn in the ICU is a hospital lab row without a stay_id. Events flagged by a rule
in WINDOW_EXCLUDE (GridSpec.exclude; default `range` and `duplicate`) are left out; events
with other flags count: a statistically extreme (`outlier`) value is often real disease (the
SpO2 of hypoxaemia, the creatinine of renal failure), the signal a mortality model needs,
while a heart rate of 9999 (`range`) or a repeated row (`duplicate`) never is. A grid keeps only
the concepts the patient has, so a stay's block is [T, F_observed, S]; `features` names them
by concept id (dataset.json "concepts").
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .aggregate import STAT_NAMES, compute_windows, grid_for_stay


@dataclass(frozen=True)
class GridSpec:
    step: int  # seconds
    max_windows: int  # per grid
    admissions: bool  # also one grid per hospital admission
    n_concepts: int
    exclude: int  # `flags` bits whose events are left out (flags.rule_mask(WINDOW_EXCLUDE))


def patient_windows(time: np.ndarray, concept: np.ndarray, value: np.ndarray,
                    flags: np.ndarray, stays: dict, admissions: dict, spec: GridSpec) -> list:
    """The patient's grids, per ICU stay (and admission): every value charted in a window
    counts, whenever it became known (a task-cut sample recounts the rows it holds from its
    own events: trajectory.torch)."""
    valid = (flags & np.uint8(spec.exclude)) == 0
    observed = np.unique(concept[(concept >= 0) & valid & ~np.isnan(value)])
    remap = np.full(spec.n_concepts, -1, np.int32)
    remap[observed] = np.arange(observed.size, dtype=np.int32)
    feature = np.where(concept >= 0, remap[np.maximum(concept, 0)], -1).astype(np.int32)
    spans = [("stay", i, a, b) for i, a, b in zip(stays.get("stay_id", []),
                                                  stays.get("intime", []),
                                                  stays.get("outtime", []))]
    if spec.admissions:
        spans += [("admission", i, a, b) for i, a, b in zip(admissions.get("hadm_id", []),
                                                            admissions.get("admittime", []),
                                                            admissions.get("dischtime", []))]
    grids = []
    for kind, ident, begin, end in spans:
        if begin is None:  # no anchor time: nothing to lay a grid on
            continue
        start, n = grid_for_stay(begin, begin if end is None else end, spec.step,
                                 spec.max_windows)
        block = compute_windows(time, feature, value, valid, start, spec.step, n, observed.size)
        grids.append({"kind": kind, "id": ident, "start": start, "step": spec.step,
                      "features": observed.astype(int).tolist(), "stats": list(STAT_NAMES),
                      "shape": list(block.shape), "data": block.tobytes()})
    return grids


# A known time after every grid: an event given it counts in no window (kernels_window).
NEVER_COUNTED = np.iinfo(np.int64).max // 2


def recount_rows(w: dict, time: np.ndarray, known: np.ndarray, concept: np.ndarray,
                 value: np.ndarray, flags: np.ndarray, exclude: int, n: int) -> np.ndarray:
    """The first `n` rows [n, F, S] of grid `w` (a window map of the record) recounted from
    the patient's events (the record's time, concept, concept_value and flags; `exclude` the
    WINDOW_EXCLUDE bits): a row counts the values charted in it and known, by `known`, at its
    end. With known = time these are the stored rows, bit for bit."""
    features = np.asarray(w["features"], np.int64)
    pos = np.clip(np.searchsorted(features, concept), 0, max(len(features) - 1, 0))
    hit = (features[pos] == concept) if len(features) else np.zeros(len(concept), bool)
    feature = np.where(hit & (concept >= 0), pos, -1).astype(np.int32)
    valid = (flags & np.uint8(exclude)) == 0
    return compute_windows(time, feature, value, valid, int(w["start"]), int(w["step"]), n,
                           len(features), known=known)


def rows_known_at(w: dict, ev: dict, cut: int, exclude: int, n: int) -> np.ndarray:
    """The first `n` rows of grid `w` as they stood at `cut`: a row counts the values charted
    in it and known by `cut` (time + known_delta <= cut), so its statistics are those of a
    sample's own events; `ev`: the record's event columns (at least every event with time <=
    cut)."""
    known = ev["time"] + ev["known_delta"]
    return recount_rows(w, ev["time"], np.where(known <= cut, ev["time"], NEVER_COUNTED),
                        ev["concept"], ev["concept_value"], ev["flags"], exclude, n)
