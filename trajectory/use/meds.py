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
per patient who died: `MEDS_DEATH` (`ADDED_ROWS`). With codes="community" the families of
`COMMUNITY_CODES` are also written with that conversion's code strings (parts dropped or
reordered, a label or the row's text as a part), so a config written for its codes finds
ours (docs/MEDS.md has the table).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..events.tables import TABLES
from ..record import KNOWN_NEVER
from .ontology import parent_codes as ontology_parents
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
# (labevents), SUBJECT_WEIGHT_AT_INFUSION//KG; every other family keeps the project's name,
# unless codes="community" gives it the community's (COMMUNITY_CODES).

CODES = ("project", "community")  # export meds --codes: the code strings written


@dataclass(frozen=True)
class CommunityCode:
    """One family as MIMIC_IV_MEDS (configs/event_configs.yaml) writes it, for codes="community".
    `template` names the parts of the project code by the source columns they hold
    (trajectory/events/tables.py, e.g. {itemid}), {label} the code's d_* label (codes.parquet) and
    {text} the row's own text; a null label or text is written UNK, as that conversion does."""
    prefix: str  # the project's code family
    template: str
    why: str = ""
    # columns that conversion reads as integers: a code of digits loses its leading zeros
    integers: tuple[str, ...] = ()


COMMUNITY_CODES: tuple[CommunityCode, ...] = (
    # The unit goes: one code per drug. numeric_value stays ours (start: the amount; end: the
    # rate); the community's start carries the rate and its end the amount, which the export
    # cannot swap: a record does not pair an infusion's end with its start.
    CommunityCode("INPUT_START", "INFUSION_START//{itemid}", why="icu/inputevents starttime"),
    CommunityCode("INPUT_END", "INFUSION_END//{itemid}", why="icu/inputevents endtime"),
    CommunityCode("PROCEDURE_START", "PROCEDURE//START//{itemid}",
                  why="icu/procedureevents starttime; the value's unit goes"),
    CommunityCode("PROCEDURE_END", "PROCEDURE//END//{itemid}", why="icu/procedureevents endtime"),
    # eMAR administrations and pharmacy orders share the MEDICATION family there: the drug
    # first, then what happened (an eMAR event_txt, or START / STOP of a pharmacy order).
    CommunityCode("EMAR", "MEDICATION//{medication}//{event_txt}", why="hosp/emar charttime"),
    CommunityCode("PHARMACY", "MEDICATION//START//{medication}",
                  why="hosp/pharmacy starttime; the route goes"),
    CommunityCode("PHARMACY_STOP", "MEDICATION//STOP//{medication}",
                  why="hosp/pharmacy stoptime; the route goes"),
    # The DRG's description is in the code there (ours keeps it as the row's text), and its
    # drg_code is read as a number: "021" is written 21 (ours keeps MIMIC's "021").
    CommunityCode("DRG", "DRG//{drg_type}//{drg_code}//{text}", why="hosp/drgcodes",
                  integers=("drg_code",)),
    # HCPCS by its short description (hcpcsevents.short_description, which is d_hcpcs'
    # short_description, our label: the same on all 61 demo rows), not by the code.
    CommunityCode("HCPCS", "HCPCS//{label}", why="hosp/hcpcsevents chartdate"),
    # OMR results by their bare name ("Weight (Lbs)", "Blood Pressure").
    CommunityCode("OMR", "{result_name}", why="hosp/omr chartdate"),
)
# The source columns of each project code family, in code order (tables.py), which name the
# parts `COMMUNITY_CODES` templates use.
CODE_COLUMNS = {ev.code[0]: ev.code[1:] for t in TABLES for ev in t.events}
TEXT = "{text}"

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


def _has_prefix(code: str, prefix: str) -> bool:
    return code == prefix or code.startswith(prefix + "//")


def community_code(code: str, label: str | None = None) -> str | None:
    """The code COMMUNITY_CODES gives one project code, None when no rule covers it. {text}
    is left in place: each row fills it (`fill_text`)."""
    for r in COMMUNITY_CODES:
        if not _has_prefix(code, r.prefix):
            continue
        cols = CODE_COLUMNS[r.prefix]
        # the last column takes any "//" inside its value (a drug name), as it was joined
        parts = code[len(r.prefix) + 2:].split("//", len(cols) - 1) if cols else []
        if len(parts) != len(cols):
            return None
        values = {c: str(int(v)) if c in r.integers and v.isdigit() else v
                  for c, v in zip(cols, parts)}
        return r.template.format(**values, label=label or "UNK", text=TEXT)
    return None


def meds_code(code: str, codes: str = "project", label: str | None = None
              ) -> tuple[str, bool]:
    """(MEDS code, static) of one project code: its COMMUNITY_CODES code when `codes` is
    "community" and a rule covers it, else by the first CODE_RULES prefix it has."""
    static = False
    for r in CODE_RULES:
        if _has_prefix(code, r.prefix):
            code, static = r.meds + code[len(r.prefix):], r.static
            break
    else:
        if codes == "community":
            code = community_code(code, label) or code
    return code, static


@dataclass(frozen=True)
class CodeLookup:
    codes: pa.Array  # MEDS code string of each project code_id, then the added codes
    static: np.ndarray  # bool per code_id: written as a static row
    death_id: int  # index of DEATH_CODE in `codes`
    # code_id -> (before, after) the row's text, for codes a {text} rule makes per row
    text_codes: dict = field(default_factory=dict)


def code_lookup(project_codes: list[str], codes: str = "project",
                labels: list | None = None) -> CodeLookup:
    """The MEDS code of every code_id of a version (`codes.parquet`'s `code`, in code_id
    order, and its `label` for {label} rules), with MEDS_DEATH appended."""
    if codes not in CODES:
        raise ValueError(f"codes must be one of {CODES}, got {codes!r}")
    labels = labels if labels is not None else [None] * len(project_codes)
    mapped = [meds_code(c, codes, lab) for c, lab in zip(project_codes, labels)]
    strings = [m for m, _ in mapped] + [DEATH_CODE]
    static = np.array([s for _, s in mapped] + [False], dtype=bool)
    text = {i: tuple(m.split(TEXT, 1)) for i, (m, _) in enumerate(mapped) if TEXT in m}
    return CodeLookup(pa.array(strings, pa.string()), static, len(project_codes), text)


def fill_text(code: pa.Array, code_ids: np.ndarray, text: pa.Array, lookup: CodeLookup,
              written: dict | None = None) -> pa.Array:
    """The MEDS codes of rows, with each {text} rule's code completed by the row's text
    (UNK when it has none); each code so made is added to `written` (code -> code_id)."""
    if not lookup.text_codes:
        return code
    rows = np.flatnonzero(np.isin(code_ids, list(lookup.text_codes)))
    if not len(rows):
        return code
    texts = text.take(pa.array(rows)).to_pylist()
    filled = [lookup.text_codes[int(c)][0] + (t if t is not None else "UNK")
              + lookup.text_codes[int(c)][1] for c, t in zip(code_ids[rows], texts)]
    if written is not None:
        written.update(zip(filled, code_ids[rows].tolist()))
    mask = np.zeros(len(code), bool)
    mask[rows] = True
    return pc.replace_with_mask(code, pa.array(mask), pa.array(filled, pa.string()))


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


def rows_table(parts: list[dict], lookup: CodeLookup, concepts: list[str],
               written: dict | None = None) -> pa.Table:
    """Patients' rows (`patient_rows`, in the order given) as one table of `COLUMNS`, typed
    as `meds.DataSchema` (code string, text_value large_string) plus the extra columns.
    `written` collects the codes {text} rules made (`fill_text`)."""
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
    arrays["code"] = fill_text(lookup.codes.take(pa.array(cat["code"])), cat["code"],
                               arrays["text_value"], lookup, written)
    return pa.table({c: arrays[c] for c in COLUMNS})


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


def file_plan(subject_ids, record_bytes, max_subjects: int, max_bytes: float) -> list[dict]:
    """The data files of an export: per split (`split_names`), subjects in subject_id order,
    a file closed before the subject that would take it past `max_subjects` subjects or
    `max_bytes` bytes of records (the manifest's `bytes`; 0: no limit of that kind), so a
    subject larger alone gets a file of its own. Each file: split, number (0 up per split),
    its first and last subject_id and its subject count. From the manifest alone: every unit
    knows its subjects before any record is read, and the plan is the same on any runner."""
    order = np.argsort(np.asarray(subject_ids, np.int64), kind="stable")
    sids = np.asarray(subject_ids, np.int64)[order]
    sizes = np.asarray(record_bytes, np.int64)[order]
    splits = split_names(sids)
    files = []
    for split in SPLITS.values():
        mine = splits == split
        runs: list[list[int]] = []  # subject_ids of each file
        size = 0
        for sid, b in zip(sids[mine].tolist(), sizes[mine].tolist()):
            if not runs or (max_subjects and len(runs[-1]) >= max_subjects) \
                    or (max_bytes and size + b > max_bytes):
                runs.append([])
                size = 0
            runs[-1].append(sid)
            size += b
        files += [{"split": split, "number": k, "first": r[0], "last": r[-1],
                   "subjects": len(r)} for k, r in enumerate(runs)]
    return files


def code_metadata(lookup: CodeLookup, labels, units, tables, parents,
                  written: list | tuple = ()) -> pa.Table:
    """metadata/codes.parquet: one row per MEDS code written, `description` the `d_*` label
    of its project code, `parent_codes` its ontology parents (the version's codes.parquet,
    trajectory/use/ontology.py), plus the project's `unit` and `table`. Where several project
    codes share a MEDS code: the first non-null description, unit and table, every parent
    once. `written`: (project code_id, MEDS code) of the codes {text} rules made per row, as
    the export wrote them (the rule's own code_id is no code of the data)."""
    import polars as pl

    made = set(lookup.text_codes)
    ids = [i for i in range(lookup.death_id) if i not in made]
    strings = lookup.codes.to_pylist()
    frame = pl.DataFrame({
        "code": [strings[i] for i in ids] + [DEATH_CODE] + [c for _, c in written],
        "description": [labels[i] for i in ids] + [ADDED_ROWS[DEATH_CODE]]
        + [labels[i] for i, _ in written],
        "parent_codes": [parents[i] for i in ids] + [None] + [parents[i] for i, _ in written],
        "unit": [units[i] for i in ids] + [None] + [units[i] for i, _ in written],
        "table": [tables[i] for i in ids] + [None] + [tables[i] for i, _ in written]},
        schema={"code": pl.String, "description": pl.String,
                "parent_codes": pl.List(pl.String), "unit": pl.String, "table": pl.String})
    frame = (frame.group_by("code", maintain_order=True)
             .agg(pl.col("description", "unit", "table").drop_nulls().first(),
                  pl.col("parent_codes").list.explode(keep_nulls=False, empty_as_null=False)
                  .drop_nulls().unique(maintain_order=True))
             .with_columns(pl.when(pl.col("parent_codes").list.len() > 0)
                           .then("parent_codes").alias("parent_codes"))
             .sort("code"))
    return pa.table({
        "code": pa.array(frame["code"].to_list(), pa.string()),
        "description": pa.array(frame["description"].to_list(), pa.string()),
        "parent_codes": pa.array(frame["parent_codes"].to_list(), pa.list_(pa.string())),
        "unit": pa.array(frame["unit"].to_list(), pa.string()),
        "table": pa.array(frame["table"].to_list(), pa.string()),
    })


def version_parents(codes) -> list:
    """`parent_codes` of a version's codes.parquet frame, in code_id order; computed from the
    codes (trajectory/use/ontology.py) for a version built before the column existed."""
    if "parent_codes" in codes.columns:
        return codes["parent_codes"].to_list()
    return ontology_parents(codes["code"].to_list())


# metadata/dataset.json's source keys (meds.DatasetMetadataSchema): MIMIC-IV's licence, its
# PhysioNet page and its documentation. The MIMIC-IV demo is published under ODbL instead;
# the export cannot tell a demo build from the full data, and says MIMIC-IV's.
LICENSE = ("PhysioNet Credentialed Health Data License 1.5.0 "
           "(https://physionet.org/about/licenses/physionet-credentialed-health-data-license-150/)")
LOCATION_URI = "https://physionet.org/content/mimiciv/"
DESCRIPTION_URI = "https://mimic.mit.edu/docs/iv/"


def dataset_metadata(meta: dict, codes: str = "project") -> dict:
    """metadata/dataset.json (meds.DatasetMetadataSchema) from the version's dataset.json.
    `created_at` is the version's build time, not the export's: a rerun writes the same
    bytes. `codes`: the code strings written (CODES), kept beside the MEDS keys."""
    import datetime

    created = datetime.datetime.strptime(meta["created_at"], "%Y-%m-%dT%H:%M:%S%z")
    return {
        "dataset_name": "MIMIC-IV", "dataset_version": str(meta["version"]),
        "etl_name": "mimic-trajectory", "etl_version": str(meta["code_version"]),
        "meds_version": _meds().__version__, "created_at": created.isoformat(),
        "license": LICENSE, "location_uri": LOCATION_URI, "description_uri": DESCRIPTION_URI,
        "raw_source_id_columns": ["hadm_id", "stay_id", "note_id"],
        "other_extension_columns": ["flags", "concept", "concept_value", "known_time"],
        # not in the MEDS schema (it allows more keys): what each extra column holds
        "extension_columns": EXTRA_MEANING,
        # not in the MEDS schema (it allows more keys): what the extra columns mean
        "config_hash": meta["config_hash"], "record_format": meta.get("record_format"),
        "flags": meta.get("flags", {}), "n_patients": meta.get("n_patients"),
        "codes": codes,
    }
