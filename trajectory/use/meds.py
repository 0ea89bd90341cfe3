"""A finished version's records as MEDS rows: the code mapping (data) and pure transforms.

    lookup = code_lookup(version_codes)                 # once per version
    part = patient_rows(record, lookup)                 # one record -> its rows (numpy)
    table = rows_table([part, ...], lookup, concepts)   # rows of many patients -> pyarrow

`jobs/export_meds.py` runs these over the shards of a version (docs/MEDS.md). Nothing here
reads files.

Codes. Every event keeps the project's code (docs/FORMAT.md) except those `CODE_RULES`
renames: the families that published MEDS tasks (MEDS-DEV's MIMIC-IV predicates, ACES) look
for, written as the community's MIMIC-IV conversion (MIMIC_IV_MEDS) writes them. The rename
is of the prefix only: the parts after it are already built as that conversion builds them
(source columns joined with "//", a null part "UNK": trajectory/events/tables.py). One row is added
per patient who died: `MEDS_DEATH` (`ADDED_ROWS`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ..record import KNOWN_NEVER
from .tasks import timeline

SPLITS = {"train": "train", "val": "tuning", "test": "held_out"}  # trajectory.splits -> MEDS
STATIC_TIME = np.iinfo(np.int64).min  # sort key of a static (time-null) row: before all


@dataclass(frozen=True)
class CodeRule:
    prefix: str  # the project's code family (the code, or its first "//" parts)
    meds: str  # the prefix written instead
    static: bool = False  # written with a null time (a static row), first in the subject
    why: str = ""


CODE_RULES: tuple[CodeRule, ...] = (
    # MIMIC_IV_MEDS places birth on Jan 1 of anchor_year - anchor_age, as the build does (the
    # shared demo's 100 MEDS_BIRTH rows have exactly these times).
    CodeRule("BIRTH", "MEDS_BIRTH", why="meds.birth_code"),
    CodeRule("ADMISSION", "HOSPITAL_ADMISSION",
             why="HOSPITAL_ADMISSION//<admission_type>//<admission_location> at admittime"),
    CodeRule("DISCHARGE", "HOSPITAL_DISCHARGE",
             why="HOSPITAL_DISCHARGE//<discharge_location> at dischtime"),
    # MIMIC_IV_MEDS writes every chartevents row (text-only ones too) as LAB//itemid//unit, and
    # MEDS-DEV's predicates name vitals so (LAB//220052//mmHg: mean arterial pressure).
    # labevents itemids are < 220000 and chartevents ones >= 220000: the two never collide.
    CodeRule("CHART", "LAB", why="LAB//<itemid>//<valueuom> of icu/chartevents"),
    # Not used by the published tasks; renamed only because the rest of the code is already
    # the community's, so tools and vocabularies built on MIMIC_IV_MEDS find them.
    CodeRule("DX//ICD", "DIAGNOSIS//ICD", why="DIAGNOSIS//ICD//<version>//<icd_code>"),
    CodeRule("PX//ICD", "PROCEDURE//ICD", why="PROCEDURE//ICD//<version>//<icd_code>"),
    CodeRule("TRANSFER", "TRANSFER_TO", why="TRANSFER_TO//<eventtype>//<careunit>"),
    CodeRule("OUTPUT", "SUBJECT_FLUID_OUTPUT",
             why="SUBJECT_FLUID_OUTPUT//<itemid>//<valueuom> of icu/outputevents"),
    # Gender has no time; the build places it at birth so sequence models see it, MEDS (and
    # MIMIC_IV_MEDS) make it a static row, which MEDS-Tab reads as a static feature.
    CodeRule("GENDER", "GENDER", static=True, why="GENDER//<gender>, time null"),
)
# Unchanged, already the community's code: ICU_ADMISSION//<first_careunit>,
# ICU_DISCHARGE//<last_careunit>, ED_REGISTRATION, ED_OUT, LAB//<itemid>//<valueuom>
# (labevents), DRG//..., HCPCS//...; every other family keeps the project's name.

# metadata/codes.parquet `parent_codes`: the ontology code a MEDS code stands for, where
# MIMIC-IV itself names one. As MIMIC_IV_MEDS's `_metadata` templates write them
# ("ICD{icd_version}CM/{icd_code}"; procedures ICD9Proc / ICD10PCS), with MIMIC's undotted
# codes, so vocabularies joined on that conversion's parents find ours. Labs and chart items
# link to LOINC only through an external mapping file, which MIMIC-IV does not ship: none.
PARENT_RULES: tuple[tuple[str, str], ...] = (
    ("DIAGNOSIS//ICD//9//", "ICD9CM/"),
    ("DIAGNOSIS//ICD//10//", "ICD10CM/"),
    ("PROCEDURE//ICD//9//", "ICD9Proc/"),
    ("PROCEDURE//ICD//10//", "ICD10PCS/"),
)

DEATH_CODE = "MEDS_DEATH"  # meds.death_code
ADDED_ROWS = {
    # The record keeps both MIMIC-IV death times as events (DEATH: patients.dod, a date;
    # HOSPITAL_DEATH: admissions.deathtime, to the minute); MEDS has one death, chosen by the
    # rule the project's tasks use (trajectory.use.tasks.timeline), as MIMIC_IV_MEDS prefers
    # deathtime over dod.
    DEATH_CODE: "the earliest admissions.deathtime of the patient, else patients.dod at 00:00; "
                "none for the living",
}

# Data columns, in file order: the MEDS schema's five, then the project's extras. `time` stays
# the clinical time (charttime), as the community's conversion and ACES read it; `known_time`
# is when the row's content became known (the record's time + known_delta; null when never,
# and for static rows), and `note_id` the MIMIC-IV note a note row or its detail row is of.
COLUMNS = ("subject_id", "time", "code", "numeric_value", "text_value",
           "hadm_id", "stay_id", "flags", "concept", "concept_value", "known_time", "note_id")
EXTRA_TYPES = {"hadm_id": pa.int64(), "stay_id": pa.int64(), "flags": pa.uint8(),
               "concept": pa.string(), "concept_value": pa.float32(),
               "known_time": pa.timestamp("us"), "note_id": pa.string()}
# What the extra columns hold, written into metadata/dataset.json (`extension_columns`).
EXTRA_MEANING = {
    "hadm_id": "MIMIC-IV hospital admission (raw id), null when none",
    "stay_id": "MIMIC-IV ICU stay (raw id), null when none",
    "note_id": "MIMIC-IV-Note note_id of a note row (NOTE//...) or of one of its detail rows "
               "(DISCHARGE_DETAIL//..., RADIOLOGY_DETAIL//...), null otherwise",
    "flags": "QC bits of the row (the `flags` map below); 0 = clean",
    "concept": "canonical variable of the row (e.g. temperature), null when none",
    "concept_value": "the value in the concept's unit (converted), null when none",
    "known_time": "when the row's content became known (a lab's storetime, a note's storetime, "
                  "a billing code's discharge; trajectory/events/tables.py has each table's rule), at "
                  "or after `time`; null for static rows and where never known. `time` is the "
                  "clinical time: a cut on `known_time <= prediction_time` keeps only what was "
                  "known then",
}


def meds_code(code: str) -> tuple[str, bool]:
    """(MEDS code, static) of one project code, by the first rule whose prefix it has."""
    for r in CODE_RULES:
        if code == r.prefix or code.startswith(r.prefix + "//"):
            return r.meds + code[len(r.prefix):], r.static
    return code, False


@dataclass(frozen=True)
class CodeLookup:
    codes: pa.Array  # MEDS code string of each project code_id, then the added codes
    static: np.ndarray  # bool per code_id: written as a static row
    death_id: int  # index of DEATH_CODE in `codes`


def code_lookup(project_codes: list[str]) -> CodeLookup:
    """The MEDS code of every code_id of a version (`codes.parquet`'s `code`, in code_id
    order), with MEDS_DEATH appended."""
    mapped = [meds_code(c) for c in project_codes]
    strings = [m for m, _ in mapped] + [DEATH_CODE]
    static = np.array([s for _, s in mapped] + [False], dtype=bool)
    return CodeLookup(pa.array(strings, pa.string()), static, len(project_codes))


def patient_rows(record: dict, lookup: CodeLookup) -> dict:
    """One decoded record (`trajectory.record.unpack`) as MEDS rows in file order: numpy
    columns (times in seconds, `STATIC_TIME` for static rows; code as index into
    `lookup.codes`; -1 / NaN for none) and the record's `texts`.

    Order: static rows first, then by time; ties keep the record's order, and the added
    death row follows the events of its time (a death at discharge comes after it)."""
    ev = record["events"]
    code = ev["code"].astype(np.int32)
    static = lookup.static[code]
    time = np.where(static, STATIC_TIME, ev["time"])
    never = ev["known_delta"] == KNOWN_NEVER
    known = np.where(static | never, STATIC_TIME, ev["time"] + ev["known_delta"])
    # each note event's index into the patient's distinct note ids, -1 for other events
    note_ids = list(dict.fromkeys(record["notes"]["note_id"]))
    note = np.full(len(code), -1, np.int32)
    note[np.asarray(record["notes"]["event"], np.int64)] = [
        note_ids.index(n) for n in record["notes"]["note_id"]] if note_ids else []
    cols = {"time": time, "code": code, "value": ev["value"], "text": ev["text"],
            "hadm_id": ev["hadm_id"], "stay_id": ev["stay_id"], "flags": ev["flags"],
            "concept": ev["concept"], "concept_value": ev["concept_value"], "known": known,
            "note": note}
    death = timeline(record, None).death
    if death is not None:
        added = {"time": death, "code": lookup.death_id, "value": np.nan, "text": -1,
                 "hadm_id": -1, "stay_id": -1, "flags": 0, "concept": -1,
                 "concept_value": np.nan, "known": death, "note": -1}
        cols = {k: np.append(v, np.array(added[k], dtype=v.dtype)) for k, v in cols.items()}
    order = np.argsort(cols["time"], kind="stable")  # sorted input: a linear pass
    out = {k: v[order] for k, v in cols.items()}
    out["subject_id"] = int(record["subject_id"])
    out["texts"] = record["texts"]
    out["note_ids"] = [None if n is None else str(n) for n in note_ids]
    return out


def _nullable(values: np.ndarray, none: np.ndarray, type_: pa.DataType) -> pa.Array:
    return pa.array(values, type_, mask=none)


def rows_table(parts: list[dict], lookup: CodeLookup, concepts: list[str]) -> pa.Table:
    """Patients' rows (`patient_rows`, in the order given) as one table of `COLUMNS`, typed
    as `meds.DataSchema` (code string, text_value large_string) plus the extra columns."""
    cat = {k: np.concatenate([p[k] for p in parts]) if parts else np.empty(0, t)
           for k, t in (("time", np.int64), ("code", np.int32), ("value", np.float32),
                        ("hadm_id", np.int64), ("stay_id", np.int64), ("flags", np.uint8),
                        ("concept", np.int16), ("concept_value", np.float32),
                        ("known", np.int64), ("note", np.int32))}
    subject = np.repeat(np.array([p["subject_id"] for p in parts], np.int64),
                        [len(p["time"]) for p in parts])
    # text indexes are per patient: shift each into one list of every patient's texts
    offsets = np.cumsum([0] + [len(p["texts"]) for p in parts])
    text = (np.concatenate([np.where(p["text"] >= 0, p["text"] + o, -1)
                            for p, o in zip(parts, offsets)]) if parts else np.empty(0, int))
    texts = pa.array([t for p in parts for t in p["texts"]], pa.large_string())
    # note indexes too: into one list of every patient's note ids
    offsets = np.cumsum([0] + [len(p["note_ids"]) for p in parts])
    note = (np.concatenate([np.where(p["note"] >= 0, p["note"] + o, -1)
                            for p, o in zip(parts, offsets)]) if parts else np.empty(0, int))
    note_ids = pa.array([n for p in parts for n in p["note_ids"]], pa.string())
    static = cat["time"] == STATIC_TIME
    unknown = cat["known"] == STATIC_TIME
    concept = cat["concept"].astype(np.int64)
    arrays = {
        "subject_id": pa.array(subject, pa.int64()),
        "time": _nullable(np.where(static, 0, cat["time"]) * 1_000_000, static,
                          pa.timestamp("us")),
        "code": lookup.codes.take(pa.array(cat["code"])),
        "numeric_value": _nullable(cat["value"], np.isnan(cat["value"]), pa.float32()),
        "text_value": texts.take(_nullable(text, text < 0, pa.int64())),
        "hadm_id": _nullable(cat["hadm_id"], cat["hadm_id"] < 0, pa.int64()),
        "stay_id": _nullable(cat["stay_id"], cat["stay_id"] < 0, pa.int64()),
        "flags": pa.array(cat["flags"], pa.uint8()),
        "concept": pa.array(concepts, pa.string()).take(
            _nullable(concept, concept < 0, pa.int64())),
        "concept_value": _nullable(cat["concept_value"], np.isnan(cat["concept_value"]),
                                   pa.float32()),
        "known_time": _nullable(np.where(unknown, 0, cat["known"]) * 1_000_000, unknown,
                                pa.timestamp("us")),
        "note_id": note_ids.take(_nullable(note, note < 0, pa.int64())),
    }
    return pa.table(arrays)


def _meds():
    try:
        import meds
    except ImportError as e:
        raise ImportError("export meds needs the `meds` package, 0.4.x (pip install "
                          "'meds>=0.4,<0.5'; the test extra has it)") from e
    return meds


def data_schema() -> pa.Schema:
    """The data files' schema: meds.DataSchema's columns and types, then the extras."""
    base = _meds().DataSchema.schema()
    return pa.schema([*(base.field(c) for c in base.names),
                      *(pa.field(c, t) for c, t in EXTRA_TYPES.items())])


def split_names(subject_ids) -> np.ndarray:
    """MEDS split of each subject: trajectory.splits' default split (seed 0, 80/10/10),
    the one `trajectory.torch` datasets use, renamed train / tuning / held_out."""
    from ..splits import split_of

    ours = split_of(np.asarray(subject_ids, np.int64))
    return np.vectorize(SPLITS.__getitem__, otypes=[object])(ours) if len(ours) else ours


def parent_codes(code: str) -> list[str] | None:
    """`parent_codes` of one MEDS code (PARENT_RULES), None when it has none; a code whose
    ICD part is missing (UNK) has none."""
    for prefix, parent in PARENT_RULES:
        if code.startswith(prefix):
            rest = code[len(prefix):]
            return None if rest in ("", "UNK") or "//" in rest else [parent + rest]
    return None


def code_metadata(project_codes, labels, units, tables) -> pa.Table:
    """metadata/codes.parquet: one row per MEDS code, `description` the `d_*` label of its
    project code (first non-null where several project codes share a MEDS code),
    `parent_codes` by PARENT_RULES (null for other codes), plus the project's `unit` and
    `table`."""
    import polars as pl

    lk = code_lookup(list(project_codes))
    frame = pl.DataFrame({
        "code": lk.codes.to_pylist(),
        "description": [*labels, ADDED_ROWS[DEATH_CODE]],
        "unit": [*units, None], "table": [*tables, None]}, schema={
        "code": pl.String, "description": pl.String, "unit": pl.String, "table": pl.String})
    frame = (frame.group_by("code", maintain_order=True)
             .agg(pl.all().drop_nulls().first()).sort("code"))
    return pa.table({
        "code": pa.array(frame["code"].to_list(), pa.string()),
        "description": pa.array(frame["description"].to_list(), pa.string()),
        "parent_codes": pa.array([parent_codes(c) for c in frame["code"].to_list()],
                                 pa.list_(pa.string())),
        "unit": pa.array(frame["unit"].to_list(), pa.string()),
        "table": pa.array(frame["table"].to_list(), pa.string()),
    })


def dataset_metadata(meta: dict) -> dict:
    """metadata/dataset.json (meds.DatasetMetadataSchema) from the version's dataset.json.
    `created_at` is the version's build time, not the export's: a rerun writes the same
    bytes."""
    import datetime

    created = datetime.datetime.strptime(meta["created_at"], "%Y-%m-%dT%H:%M:%S%z")
    return {
        "dataset_name": "MIMIC-IV", "dataset_version": str(meta["version"]),
        "etl_name": "mimic-trajectory", "etl_version": str(meta["code_version"]),
        "meds_version": _meds().__version__, "created_at": created.isoformat(),
        "raw_source_id_columns": ["hadm_id", "stay_id", "note_id"],
        "other_extension_columns": ["flags", "concept", "concept_value", "known_time"],
        # not in the MEDS schema (it allows more keys): what each extra column holds
        "extension_columns": EXTRA_MEANING,
        # not in the MEDS schema (it allows more keys): what the extra columns mean
        "config_hash": meta["config_hash"], "record_format": meta.get("record_format"),
        "flags": meta.get("flags", {}), "n_patients": meta.get("n_patients"),
    }
