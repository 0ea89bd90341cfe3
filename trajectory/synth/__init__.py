"""Deterministic synthetic MIMIC-IV-shaped raw data: the zero-set-up demo and scale input.

`generate(out_dir, n_patients, seed)` writes hosp/, icu/ and note/ as .csv.gz with the exact
MIMIC-IV v2.2 (and MIMIC-IV-Note) headers, real itemids, codes and units, and plausible values.
All randomness comes from one numpy Generator drawn in a fixed order and gzip is written with
mtime=0, so the same (seed, n) gives byte-identical files. Values are realistic in shape and
range, not clinically coherent beyond the basics: times nest (ICU stays inside admissions,
charting inside stays, deaths after the last discharge) and every code is in its dictionary.

One planted, learnable signal (for `examples/train_mortality.py` and its test): a patient who
dies in the ICU (the last stay of an admission that ends in death, its outtime set to the
death time: 60 % of deaths) deteriorates over the first 24 h of that stay. Its systolic
pressure falls linearly by `SIGNAL_SBP_DROP` mmHg from ICU admission to admission + 24 h and
stays down (diastolic and mean pressure follow: mean arterial pressure, concepts
`mbp_invasive`/`mbp_noninvasive`, falls ~14 mmHg), and its ICU lactate (labevents 50813,
concept `lactate`) rises linearly from ~1.8 to ~3.5 mmol/L. Every ICU stay gets those
lactates, a blood gas every 4 h over its first 24 h, so survivors' stays have them too, near
1.4 mmol/L with a per-stay spread: only the values carry the signal, not their presence.
The lactates draw from their own random stream, so every other value is the same as without
the signal; `death_rate` (default 0.06, the share of patients whose last admission ends in
death) can be raised for a set with more positives (the example's test uses 0.5).
Each table's generator is a method in its module: hosp.py, icu.py, note.py, and details.py
(the tables on their own random stream); catalog.py holds the codes, itemids and headers they
draw from, common.py the writer and column formats. `generate` calls them in a fixed order.
CLI: python -m trajectory.synth OUT_DIR --patients N --seed S [--death-rate P]
"""
from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl

from .catalog import DAY
from .common import _ts, _voc
from .details import DetailTables
from .hosp import HospTables
from .icu import IcuTables
from .note import NoteTables


class _Synth(HospTables, IcuTables, NoteTables, DetailTables):
    """One generator: each table's method lives in its module (hosp, icu, note, details)."""


def generate(out_dir: str | Path, n_patients: int = 300, seed: int = 0,
             death_rate: float = 0.06) -> Path:
    """Write a synthetic MIMIC-IV v2.2 (+ MIMIC-IV-Note) tree under out_dir; return out_dir.
    `death_rate`: share of patients whose last admission ends in death (module docstring)."""
    if n_patients < 1:
        raise ValueError(f"n_patients must be >= 1, got {n_patients}")
    if not 0 <= death_rate <= 1:
        raise ValueError(f"death_rate must be in [0, 1], got {death_rate}")
    out = Path(out_dir)
    # gzip (zlib releases the GIL) runs on threads while the next tables are generated.
    with ThreadPoolExecutor(max_workers=2) as pool:
        g = _Synth(out, int(n_patients), seed, pool, death_rate)
        for step in (g.admissions, g.adt, g.chart, g.icu_events, g.labs, g.micro, g.coding,
                     g.meds, g.omr, g.notes, g.dictionaries, g.details, g.id_lists):
            step()
        for job in g.jobs:
            job.result()
    generate_extra(out, seed)
    return out



# The outcome registry an EXTRA_TABLES build joins (README "Your own tables"): written beside
# hosp/, icu/, note/ (never inside them: those hold MIMIC-IV's own files), with its spec.
EXTRA_SPEC = "extra/tables.toml"
EXTRA_TOML = """\
# The synthetic outcome registry (trajectory/synth/): follow-up contacts after a hospital
# stay, linked by hadm_id. A few rows name admissions that do not exist (counted as
# hadm_not_found), one has no contact time (null_time).
[[table]]
name = "outcome_registry"
file = "outcomes.csv"
key = "hadm_id"

# The contact itself: status in the code, the EQ-5D index (0-1) as its value, at the contact.
[[table.event]]
name = "followup"
code = ["REGISTRY_FOLLOWUP", "status"]
time = ["contact_time"]
value = "eq5d_index"

# That the admission is in the registry, known at its discharge.
[[table.event]]
name = "enrolled"
code = ["REGISTRY_ENROLLED", "site"]
at = "admission_end"
"""


def generate_extra(out_dir: str | Path, seed: int = 0) -> Path:
    """The outcome registry (extra/outcomes.csv, keyed by hadm_id) and its EXTRA_TABLES spec,
    from the admissions already written under out_dir. Its own random stream: every other
    file is the same with or without it. Returns the spec's path."""
    out = Path(out_dir)
    adm = pl.read_csv(out / "hosp" / "admissions.csv.gz", columns=["hadm_id", "dischtime"],
                      schema_overrides={"hadm_id": pl.Int64, "dischtime": pl.String})
    r = np.random.default_rng([int(seed), 19])
    rows = np.flatnonzero(r.random(adm.height) < 0.7)  # 70% of admissions are followed up
    disch = adm["dischtime"].str.to_datetime("%Y-%m-%d %H:%M:%S")[rows].dt.epoch("s").to_numpy()
    contact = disch + r.integers(7 * DAY, 90 * DAY, len(rows))
    n_bad = max(2, len(rows) // 20)  # admissions that do not exist: hadm_not_found
    hadm = np.r_[adm["hadm_id"].to_numpy()[rows], 90_000_000 + np.arange(n_bad)]
    contact = np.r_[contact, contact[:n_bad] if len(rows) >= n_bad else np.full(n_bad, 0)]
    status = _voc(["home", "rehab", "readmitted", "deceased"],
                  r.choice(4, len(hadm), p=[.7, .15, .1, .05]))
    eq5d = np.round(r.uniform(0.2, 1.0, len(hadm)), 3)
    null_time = np.zeros(len(hadm), bool)
    null_time[0] = True  # one contact with no time: dropped as null_time, counted
    frame = pl.DataFrame({
        "hadm_id": hadm, "contact_time": _ts(contact, null_time), "status": status,
        "eq5d_index": eq5d, "site": _voc(["north", "south"], r.integers(0, 2, len(hadm)))})
    (out / "extra").mkdir(parents=True, exist_ok=True)
    frame.write_csv(out / "extra" / "outcomes.csv", datetime_format="%Y-%m-%d %H:%M:%S")
    (out / EXTRA_SPEC).write_text(EXTRA_TOML)
    return out / EXTRA_SPEC



def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m trajectory.synth",
                                 description="Write synthetic MIMIC-IV-shaped raw data.")
    ap.add_argument("out_dir")
    ap.add_argument("--patients", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--death-rate", type=float, default=0.06,
                    help="share of patients whose last admission ends in death [0.06]")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    out = generate(args.out_dir, args.patients, args.seed, args.death_rate)
    print(f"{args.patients} synthetic patients -> {out} ({time.perf_counter() - start:.1f} s)")
