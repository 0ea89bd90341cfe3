"""Every file under DATA_DIR/{hosp,icu,note}, accounted for: read as events (a table of
trajectory/events/tables.py), or not read, with the reason. Nothing in DATA_DIR is ignored in
silence: the list goes into dataset.json (`not_read`) and the build's printed summary, and a
file this build does not know is also a warning.
"""
from __future__ import annotations

from pathlib import Path

from ..raw.read import SUFFIXES, find_table
from .tables import DICTIONARIES, TABLES

MODULES = ("hosp", "icu", "note")

# MIMIC-IV files that hold no patient events: the reason each is not read. Keyed by
# module/name (any of the readable formats).
NO_EVENTS = {
    # One column, provider_id: the de-identified ids that emar, poe, admissions and labevents
    # rows refer to. No subject and no time, so nothing to place in a trajectory.
    "hosp/provider": "no events: the list of de-identified provider ids (no subject, no time)",
    # One column, caregiver_id: the ids ICU charting rows carry; likewise nothing to place.
    "icu/caregiver": "no events: the list of de-identified caregiver ids (no subject, no time)",
}

# d_* files read for code labels only (codes.parquet `label`, `unit`), never as events.
DICTIONARY_USE = {
    "d_labitems": "lab codes (LAB//itemid//unit)",
    "d_items": "ICU codes (CHART, DATETIME, INPUT, INGREDIENT, OUTPUT, PROCEDURE)",
    "d_icd_diagnoses": "diagnosis codes (DX//ICD)",
    "d_icd_procedures": "procedure codes (PX//ICD)",
    "d_hcpcs": "HCPCS codes",
}


def _table_name(path: Path) -> str | None:
    """`labevents` of labevents.csv.gz (a readable suffix), None for any other file."""
    for suffix in SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[:-len(suffix)]
    return None


def account(data_dir: Path) -> list[dict]:
    """Every file under DATA_DIR/{hosp,icu,note} (subfolders included), in path order, as
    {"file": "<module>/<name>", "read": "events" | "labels" | None, "kind", "reason"}, where
    kind is "table", "dictionary", "no_events", "duplicate" or "unknown"."""
    tables = {(t.module, t.name) for t in TABLES}
    dicts = {(d.module, d.name) for d in DICTIONARIES}
    out = []
    for module in MODULES:
        folder = data_dir / module
        if not folder.is_dir():
            continue
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            rel = path.relative_to(data_dir).as_posix()
            name = _table_name(path) if path.parent == folder else None
            key = (module, name)
            # The one file of a table the build reads (find_table: .csv.gz, .csv, .parquet in
            # that order); a second copy in another format is not read.
            chosen = find_table(data_dir, module, name) if name else None
            if chosen is not None and chosen != path:
                out.append({"file": rel, "read": None, "kind": "duplicate",
                            "reason": f"another copy of {module}/{name}: "
                                      f"{chosen.relative_to(data_dir).as_posix()} is read"})
            elif key in tables:
                out.append({"file": rel, "read": "events", "kind": "table",
                            "reason": "mapped to events (trajectory/events/tables.py)"})
            elif key in dicts:
                out.append({"file": rel, "read": "labels", "kind": "dictionary",
                            "reason": f"dictionary: labels of {DICTIONARY_USE[name]} in "
                                      "codes.parquet, no events"})
            elif f"{module}/{name}" in NO_EVENTS:
                out.append({"file": rel, "read": None, "kind": "no_events",
                            "reason": NO_EVENTS[f"{module}/{name}"]})
            else:
                out.append({"file": rel, "read": None, "kind": "unknown",
                            "reason": "unknown file: not a MIMIC-IV table this build maps "
                                      "(expected <table>.csv.gz, .csv or .parquet of "
                                      "trajectory/events/tables.py)"})
    return out


def not_read(data_dir: Path) -> list[dict]:
    """The files not read as events, with why: dictionaries (labels only), tables with no
    events, second copies and unknown files."""
    return [{k: f[k] for k in ("file", "kind", "reason")}
            for f in account(data_dir) if f["read"] != "events"]


def warnings(not_read_files: list[dict]) -> list[str]:
    """dataset.json warnings for the files a user would not expect to be skipped."""
    return [f"file {f['file']} not read: {f['reason']}" for f in not_read_files
            if f["kind"] in ("unknown", "duplicate")]
