"""Per-stay (and optionally per-admission) time grids of one patient, for the record.

Every concept event of the patient counts, not only those charted with the stay's stay_id: a
creatinine drawn in the ICU is a hospital lab row without a stay_id. Events flagged by a rule
in WINDOW_EXCLUDE (GridSpec.exclude; default `range` and `duplicate`) are left out; events
with other flags count: a statistically extreme (`outlier`) value is often real disease (the
SpO2 of hypoxaemia, the creatinine of renal failure), the signal a mortality model needs,
while a heart rate of 9999 (`range`) or a repeated row (`duplicate`) never is. A grid keeps only
the concepts the patient has, so a stay's block is [T, F_observed, S]; `features` names them
by concept id (dataset.json "concepts").

Two rules, one grid: `data` counts every value charted in a window (the retrospective view,
what MEDS tools compute); a task-cut sample uses the rows that end by its prediction time,
where a value charted in the window but resulted after its end (a lab drawn at 10:50, known
at 12:10) would leak. So each grid also carries the rows that differ when a window counts
only the values known by its end (`known_rows`, `known_data`): few rows, since a value is
late only for the windows between its charting and its result.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .windows import STAT_NAMES, compute_windows, grid_for_stay


@dataclass(frozen=True)
class GridSpec:
    step: int  # seconds
    max_windows: int  # per grid
    admissions: bool  # also one grid per hospital admission
    n_concepts: int
    exclude: int  # `flags` bits whose events are left out (cleaning.rule_mask(WINDOW_EXCLUDE))


def known_rows(charted: np.ndarray, known: np.ndarray) -> tuple[list, bytes]:
    """The rows of two [T, F, S] blocks that differ (bit for bit: NaN equals NaN), and the
    second block's bytes of those rows."""
    rows = np.flatnonzero((charted.view(np.uint32) != known.view(np.uint32))
                          .reshape(len(charted), -1).any(axis=1))
    return rows.tolist(), np.ascontiguousarray(known[rows]).tobytes()


def _late(time: np.ndarray, known: np.ndarray, use: np.ndarray, start: int, step: int) -> bool:
    """Whether any used value is known after the end of the window it is charted in (then
    the known rule gives another block)."""
    t, k = time[use], known[use]
    return bool((k > start + ((t - start) // step + 1) * step).any())


def patient_windows(time: np.ndarray, concept: np.ndarray, value: np.ndarray,
                    flags: np.ndarray, stays: dict, admissions: dict, spec: GridSpec,
                    known: np.ndarray | None = None) -> list:
    """The patient's grids: per ICU stay (and admission), `data` under the charttime rule
    and the rows that differ under the known rule (`known` epoch seconds per event; None:
    known when charted, no rows differ)."""
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
        late_rows, late_data = [], b""
        if known is not None and _late(time, known, (feature >= 0) & valid & ~np.isnan(value),
                                       start, spec.step):
            late_rows, late_data = known_rows(block, compute_windows(
                time, feature, value, valid, start, spec.step, n, observed.size, known))
        grids.append({"kind": kind, "id": ident, "start": start, "step": spec.step,
                      "features": observed.astype(int).tolist(), "stats": list(STAT_NAMES),
                      "shape": list(block.shape), "data": block.tobytes(),
                      "known_rows": late_rows, "known_data": late_data})
    return grids
