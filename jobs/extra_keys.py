"""Stage 1's lookup for user tables (EXTRA_TABLES): what resolves a hadm_id or stay_id to its
patient, and the admission, stay and birth times an event can be placed at.

Read straight from the admissions, icustays and patients inputs, not from their partition
outputs: those are split by subject_id, and a user table keyed by hadm_id cannot know which
bucket to look in before it has the subject. The lookup is small and bounded whatever the
user tables' size (full MIMIC-IV: ~550k admissions, ~95k stays, ~365k patients, a few columns
each: ~30 MB in memory), so each user-table unit loads it whole. It is one unit of the stage-1
graph that the user tables' units wait for; a unit that finds it missing (SLURM arrays run the
table units alone) makes it itself: every writer writes the same bytes and renames atomically.
"""
from __future__ import annotations

import functools
import time
from pathlib import Path

import polars as pl

from trajectory.atomic import atomic_write_parquet
from trajectory.events.extra_tables import Keys, UserTable, key_frames, map_user_rows, user_tables
from trajectory.events.map_rows import map_rows
from trajectory.events.plan import load_plan
from trajectory.events.tables import TABLES_BY_NAME
from trajectory.raw.read import iter_batches

from .common import read_done, write_done

STAGE = "extra_keys"
UNIT = "all"
# The columns each lookup needs (types as trajectory/events/tables.py reads them).
COLUMNS = {"patients": ("subject_id", "anchor_age", "anchor_year"),
           "admissions": ("subject_id", "hadm_id", "admittime", "dischtime"),
           "icustays": ("subject_id", "hadm_id", "stay_id", "intime", "outtime")}
NAMES = ("patients", "admissions", "stays")


def keys_dir(cfg) -> Path:
    return cfg.work_dir / "extra_keys"


def _read(plan, cfg, table: str) -> pl.DataFrame | None:
    if table not in plan.tables:
        return None
    columns = {c: TABLES_BY_NAME[table].columns[c] for c in COLUMNS[table]}
    frames = [pl.from_arrow(b) for b in iter_batches(Path(plan.tables[table]["path"]), columns,
                                                      cfg.csv_block_mb << 20)]
    return pl.concat(frames) if frames else None


def run(unit: str, cfg) -> dict:
    done = read_done(cfg, STAGE, unit)
    if done is not None:
        return done
    t0, cpu0 = time.perf_counter(), time.process_time()
    plan = load_plan(cfg)
    keys = key_frames(_read(plan, cfg, "patients"), _read(plan, cfg, "admissions"),
                      _read(plan, cfg, "icustays"))
    rows = {}
    for name in NAMES:
        frame = getattr(keys, name)
        atomic_write_parquet(frame, keys_dir(cfg) / f"{name}.parquet")
        rows[name] = frame.height
    return write_done(cfg, STAGE, unit, {"rows": rows,
                                         "seconds": round(time.perf_counter() - t0, 3),
                                         "cpu_seconds": round(time.process_time() - cpu0, 3)})


def load(cfg) -> Keys:
    """The lookup, made here if the graph's unit has not run."""
    run(UNIT, cfg)
    return Keys(*(pl.read_parquet(keys_dir(cfg) / f"{n}.parquet") for n in NAMES))


def row_mapper(cfg, table):
    """How a partition unit turns the table's rows into events: events.map_rows, or for a
    user table the same after its key is resolved (the lookup loaded once per unit)."""
    if not isinstance(table, UserTable):
        return map_rows
    return functools.partial(map_user_rows, keys=load(cfg))


def with_lookup(plan, tasks: list[tuple]) -> list[tuple]:
    """The stage-1 graph (driver.partition_tasks) with this lookup first and every user
    table's units waiting for it; unchanged without EXTRA_TABLES."""
    users = {t.name for t in user_tables(plan)}
    if not users:
        return tasks
    return [("extra_keys", run, UNIT, [])] + [
        # a partition unit's key is its name, <table>.<part>
        (key, fn, unit, [*deps, "extra_keys"] if key == unit and unit.rpartition(".")[0] in users
         else deps)
        for key, fn, unit, deps in tasks]
