"""The MIMIC-IV table -> event mapping, as data: one block per table.

Each `Table` names the columns read (with explicit types: nothing is inferred) and the events
one source row becomes. An `Event` is: a code (a literal prefix joined with "//" to the listed
columns, a null part written "UNK" as MIMIC_IV_MEDS does), a time (first non-null of the listed
columns), an optional numeric value and text, and when its content became known (`known`: the
row's store time where MIMIC-IV has one, else the table's rule, never before the time; a task
sample at a prediction time keeps only what was known by then). Per (table, event) every row read is either
written or dropped by a named reason, which `qc_report.json` shows. A detail table (`parent`)
has no time of its own: its events take their parent row's (emar_detail from emar, ...).

Column types: "int" int64, "float" float64, "str" utf8, "time" timestamp (seconds; a date-only
column parses as midnight), "time_ms" a timestamp written with milliseconds. Column names are matched case-insensitively.
"""
from __future__ import annotations

from dataclasses import dataclass

import polars as pl


@dataclass(frozen=True)
class Event:
    name: str  # QC stream name, unique within the table
    code: tuple[str, ...]  # literal prefix, then the columns whose values complete the code
    time: tuple[str, ...] = ()  # first non-null of these; () = the admission's discharge time
    value: str | None = None  # numeric value (a text column is parsed, non-numbers -> text)
    text: tuple[str, ...] = ()  # first non-null of these is the event's text...
    text_always: bool = False  # ...kept always (notes), else only where value is null
    unit: str | None = None  # unit column reported in codes.parquet
    label: tuple[str, tuple[str, ...]] | None = None  # (dictionary, key columns) for the label
    # Source row identifier. Notes keep it in the record (note_id); elsewhere it only tells
    # apart rows that map to identical events (two orders of the same kind at the same minute
    # are two orders, not a duplicate).
    ref: str | None = None
    # Rows where this column is null give no event of this kind, counted as "null_<column>"
    # (a detail table's rows each fill only some fields: a dose row has no infusion rate).
    require: str | None = None
    # When the row's content became known (available to a clinician, so to a model): the
    # first non-null of these columns (a store time), never before `time`; () = at `time`
    # itself; AT_DISCHARGE = at its admission's dischtime (billing codes). A detail table's
    # events are known when their parent row is.
    known: tuple[str, ...] = ()
    # Where every `known` column is null: "time" (known when it happened) or "never" (the
    # availability is unknown and cannot be assumed: never known at a prediction time).
    known_else: str = "time"


# `Event.known` of codes assigned for billing after discharge: the admission's dischtime,
# resolved in the build stage as the diagnoses' time is (MIMIC-IV gives no coding time).
AT_DISCHARGE = ("@dischtime",)
KNOWN_ELSE = ("time", "never")


@dataclass(frozen=True)
class Parent:
    """A detail table's link to the table whose rows it details. Its rows carry no time: each
    event gets the time and hadm_id of its parent row's first event, in the build stage (both
    tables are split by subject_id, so a parent row is in the same shard as its details); a
    row whose parent is not there is dropped as "parent_not_found"."""
    table: str  # the parent table; its first event's `ref` column is `key`
    key: str  # the parent row's id (emar_id, poe_id, note_id)
    row: tuple[str, ...] = ()  # with `key`, tells apart the detail rows of one parent


@dataclass(frozen=True)
class Table:
    name: str
    module: str  # hosp / icu / note
    columns: dict  # column -> type, exactly the columns read
    events: tuple[Event, ...]
    required: bool = False  # a missing required table is an error, others a recorded warning
    meta: bool = False  # also kept whole (narrow) for the record's static/admissions/stays
    multiline: bool = False  # quoted fields hold newlines (notes): slower CSV parser mode
    parent: Parent | None = None  # a detail table: its events take their parent row's time


def _birth_time(df: pl.DataFrame) -> pl.DataFrame:
    # MIMIC-IV shifts dates per patient and gives only anchor_age in anchor_year; the birth
    # year is anchor_year - anchor_age, placed on Jan 1 as MIMIC_IV_MEDS does (MEDS_BIRTH).
    year = (pl.col("anchor_year") - pl.col("anchor_age")).cast(pl.Int32)
    return df.with_columns(pl.date(year, 1, 1).cast(pl.Datetime("ms")).alias("birth_time"))


def _day_end(column: str):
    """A date-only column's day end (its midnight + 1 day - 1 s) as `<column>_end`: something
    dated by the day only is known by that day's end at the latest, never at its midnight.
    A frame without the column (the header tables' lookups) is left as it is."""
    def add(df: pl.DataFrame) -> pl.DataFrame:
        if column not in df.columns:
            return df
        end = pl.col(column) + pl.duration(days=1) - pl.duration(seconds=1)
        return df.with_columns(end.alias(f"{column}_end"))
    return add


def _patients(df: pl.DataFrame) -> pl.DataFrame:
    return _day_end("dod")(_birth_time(df))


# Derived columns a table needs before its events are formed (pure frame -> frame).
PREPARE = {"patients": _patients, "microbiologyevents": _day_end("storedate"),
           "omr": _day_end("chartdate")}

TABLES: tuple[Table, ...] = (
    Table("patients", "hosp", required=True, meta=True,
          columns={"subject_id": "int", "gender": "str", "anchor_age": "int",
                   "anchor_year": "int", "anchor_year_group": "str", "dod": "time"},
          events=(
              Event("birth", ("BIRTH",), time=("birth_time",)),
              # Gender also sits in `static`; as an event at birth sequence models see it.
              Event("gender", ("GENDER", "gender"), time=("birth_time",)),
              # dod is the out-of-hospital death date from state records (date only) or the
              # in-hospital deathtime truncated to the day; null for the living. Known by the
              # end of that day at the earliest (the death may be at 23:59).
              Event("death", ("DEATH",), time=("dod",), known=("dod_end",)),
          )),
    # Admission, transfer, service and ICU stay events are known when they happen: `time`.
    Table("admissions", "hosp", required=True, meta=True,
          columns={"subject_id": "int", "hadm_id": "int", "admittime": "time",
                   "dischtime": "time", "deathtime": "time", "admission_type": "str",
                   "admission_location": "str", "discharge_location": "str",
                   "insurance": "str", "language": "str", "marital_status": "str",
                   "race": "str", "edregtime": "time", "edouttime": "time",
                   "hospital_expire_flag": "int"},
          events=(
              Event("admit", ("ADMISSION", "admission_type", "admission_location"),
                    time=("admittime",)),
              Event("discharge", ("DISCHARGE", "discharge_location"), time=("dischtime",)),
              # ED times are null for direct admissions: those rows drop as "null_time".
              Event("ed_registration", ("ED_REGISTRATION",), time=("edregtime",)),
              Event("ed_out", ("ED_OUT",), time=("edouttime",)),
              # In-hospital death to the minute; patients.dod keeps the day (kept apart:
              # MIMIC_IV_MEDS merges them, we keep both so no precision is lost).
              Event("death", ("HOSPITAL_DEATH",), time=("deathtime",)),
          )),
    Table("transfers", "hosp",
          columns={"subject_id": "int", "hadm_id": "int", "transfer_id": "int",
                   "eventtype": "str", "careunit": "str", "intime": "time", "outtime": "time"},
          events=(Event("transfer", ("TRANSFER", "eventtype", "careunit"), time=("intime",)),)),
    Table("services", "hosp",
          columns={"subject_id": "int", "hadm_id": "int", "transfertime": "time",
                   "prev_service": "str", "curr_service": "str"},
          events=(Event("service", ("SERVICE", "curr_service"), time=("transfertime",)),)),
    Table("labevents", "hosp",
          columns={"subject_id": "int", "hadm_id": "int", "itemid": "int", "charttime": "time",
                   "storetime": "time", "value": "str", "valuenum": "float", "valueuom": "str",
                   "comments": "str"},
          events=(
              # The unit is part of the code: MIMIC-IV reports some itemids in several units.
              # Text results (">100", "NEG") and result comments are kept where valuenum is
              # null; numeric rows' `value` text repeats valuenum and is not stored twice.
              # charttime is when the specimen was drawn, storetime when the result was stored
              # (demo: median 1.1 h later, 10% over 3 h). A row without storetime (0.9% of the
              # demo's, nearly all held specimens: "HOLD.", no result) is taken as known when
              # drawn.
              Event("lab", ("LAB", "itemid", "valueuom"), time=("charttime",), value="valuenum",
                    text=("value", "comments"), unit="valueuom",
                    label=("d_labitems", ("itemid",)), known=("storetime",)),
          )),
    Table("microbiologyevents", "hosp",
          columns={"microevent_id": "int", "subject_id": "int", "hadm_id": "int",
                   "chartdate": "time", "charttime": "time", "storedate": "time",
                   "storetime": "time", "spec_type_desc": "str", "test_name": "str",
                   "org_name": "str", "ab_name": "str", "dilution_value": "float",
                   "interpretation": "str", "comments": "str"},
          events=(
              # charttime is null when only the day is known: fall back to chartdate.
              # A row is one (specimen, test, organism, antibiotic); names not itemids because
              # MIMIC-IV 2.x ships no d_micro dictionary.
              # A result is known when stored (demo: median 73 h after the specimen), or by the
              # end of its storedate when only the day is given. A row with neither is a
              # result whose availability is unknown (the demo's 16 are acid-fast cultures,
              # "NO MYCOBACTERIA ISOLATED", final after weeks): never taken as known.
              Event("micro", ("MICRO", "spec_type_desc", "test_name", "org_name", "ab_name"),
                    time=("charttime", "chartdate"), value="dilution_value",
                    text=("interpretation", "comments"), ref="microevent_id",
                    known=("storetime", "storedate_end"), known_else="never"),
          )),
    Table("diagnoses_icd", "hosp",
          columns={"subject_id": "int", "hadm_id": "int", "seq_num": "int",
                   "icd_code": "str", "icd_version": "int"},
          events=(
              # Billing diagnoses carry no time: they are known at discharge, so they go at the
              # admission's dischtime (as MIMIC_IV_MEDS); placing them at admittime would leak
              # the future into models. value = seq_num (1 = principal diagnosis). Known at
              # that time too: coders finish days after discharge, but MIMIC-IV does not say
              # when, and a readmission sample at discharge sees them as in MEDS-DEV.
              Event("diagnosis", ("DX//ICD", "icd_version", "icd_code"), value="seq_num",
                    label=("d_icd_diagnoses", ("icd_version", "icd_code"))),
          )),
    Table("procedures_icd", "hosp",
          columns={"subject_id": "int", "hadm_id": "int", "seq_num": "int",
                   "chartdate": "time", "icd_code": "str", "icd_version": "int"},
          events=(
              # At the procedure's date; but an ICD procedure code is a billing code, coded
              # after discharge like the diagnoses: known at the admission's dischtime.
              Event("procedure", ("PX//ICD", "icd_version", "icd_code"), time=("chartdate",),
                    value="seq_num", label=("d_icd_procedures", ("icd_version", "icd_code")),
                    known=AT_DISCHARGE),)),
    Table("hcpcsevents", "hosp",
          columns={"subject_id": "int", "hadm_id": "int", "chartdate": "time",
                   "hcpcs_cd": "str", "seq_num": "int"},
          events=(
              # Billed events (CPT/HCPCS) at their date, coded for billing: known at discharge.
              Event("hcpcs", ("HCPCS", "hcpcs_cd"), time=("chartdate",), value="seq_num",
                    label=("d_hcpcs", ("hcpcs_cd",)), known=AT_DISCHARGE),)),
    Table("drgcodes", "hosp",
          columns={"subject_id": "int", "hadm_id": "int", "drg_type": "str",
                   "drg_code": "str", "description": "str", "drg_severity": "float"},
          events=(
              # DRGs are assigned for billing after discharge: admission dischtime, as diagnoses,
              # and known then.
              Event("drg", ("DRG", "drg_type", "drg_code"), value="drg_severity",
                    text=("description",), text_always=True),
          )),
    Table("prescriptions", "hosp",
          columns={"subject_id": "int", "hadm_id": "int", "pharmacy_id": "int",
                   "starttime": "time", "stoptime": "time", "drug": "str", "dose_val_rx": "str",
                   "dose_unit_rx": "str", "route": "str"},
          events=(
              # dose_val_rx is text ("1-2", "0.5-1"): numeric doses become the value, ranges
              # stay as text. The dose unit is part of the code so values are comparable.
              # No store time: an order is written at or before its start, and its planned
              # stop is part of it, so each is known at its own time (a safe, late bound).
              Event("start", ("RX_START", "drug", "route", "dose_unit_rx"), time=("starttime",),
                    value="dose_val_rx", text=("dose_val_rx",), unit="dose_unit_rx",
                    ref="pharmacy_id"),
              Event("stop", ("RX_STOP", "drug", "route"), time=("stoptime",), ref="pharmacy_id"),
          )),
    Table("pharmacy", "hosp",
          columns={"subject_id": "int", "hadm_id": "int", "pharmacy_id": "int",
                   "starttime": "time", "entertime": "time", "medication": "str", "proc_type": "str",
                   "status": "str", "route": "str", "frequency": "str", "stoptime": "time"},
          events=(
              # starttime is null on some non-administered entries; entertime is always set.
              # Known when entered (demo: 92% entered before their start, known at the start).
              Event("pharmacy", ("PHARMACY", "medication", "route"),
                    time=("starttime", "entertime"), text=("frequency",), ref="pharmacy_id",
                    known=("entertime",)),
              # The order's stop (MIMIC_IV_MEDS's MEDICATION//STOP): null for an open-ended
              # order (demo: 81 of 15,306), dropped as null_time. Known at its own time, as
              # RX_STOP: a planned stop is entered with the order, an early one when it
              # happens, and MIMIC-IV does not tell them apart.
              Event("stop", ("PHARMACY_STOP", "medication", "route"), time=("stoptime",),
                    ref="pharmacy_id"),
          )),
    Table("emar", "hosp",
          columns={"subject_id": "int", "hadm_id": "int", "emar_id": "str",
                   "charttime": "time", "storetime": "time", "medication": "str",
                   "event_txt": "str"},
          events=(
              # An administration is known once charted (storetime; demo: 3% stored before
              # charttime, up to 12 h ahead, known at charttime then).
              Event("emar", ("EMAR", "event_txt", "medication"), time=("charttime",),
                    ref="emar_id", known=("storetime",)),)),
    Table("poe", "hosp",
          columns={"subject_id": "int", "hadm_id": "int", "poe_id": "str", "ordertime": "time",
                   "order_type": "str", "order_subtype": "str", "transaction_type": "str"},
          # An order is known when ordered: its time.
          events=(Event("order", ("POE", "order_type", "order_subtype"), time=("ordertime",),
                        text=("transaction_type",), ref="poe_id"),)),
    Table("omr", "hosp",
          columns={"subject_id": "int", "chartdate": "time", "seq_num": "int",
                   "result_name": "str", "result_value": "str"},
          events=(
              # Outpatient measurements with a date only. Blood pressure is "120/80": kept as
              # text (the numeric part would be misleading as one value). Placed at the day's
              # midnight, known by its end: the visit may be at any hour of it.
              Event("omr", ("OMR", "result_name"), time=("chartdate",), value="result_value",
                    text=("result_value",), known=("chartdate_end",)),
          )),
    Table("icustays", "icu", meta=True,
          columns={"subject_id": "int", "hadm_id": "int", "stay_id": "int",
                   "first_careunit": "str", "last_careunit": "str", "intime": "time",
                   "outtime": "time", "los": "float"},
          events=(
              Event("icu_admission", ("ICU_ADMISSION", "first_careunit"), time=("intime",)),
              Event("icu_discharge", ("ICU_DISCHARGE", "last_careunit"), time=("outtime",)),
          )),
    Table("chartevents", "icu",
          columns={"subject_id": "int", "hadm_id": "int", "stay_id": "int",
                   "charttime": "time", "storetime": "time", "itemid": "int", "value": "str",
                   "valuenum": "float", "valueuom": "str"},
          events=(
              # About 60% of chartevents rows are text-only (rhythm, alarms): value is null and
              # the text is kept. Known when stored: a nurse validates monitor values in
              # batches (in the shared demo storetime equals charttime: SOURCE.md).
              Event("chart", ("CHART", "itemid", "valueuom"), time=("charttime",),
                    value="valuenum", text=("value",), unit="valueuom",
                    label=("d_items", ("itemid",)), known=("storetime",)),
          )),
    Table("datetimeevents", "icu",
          columns={"subject_id": "int", "hadm_id": "int", "stay_id": "int",
                   "charttime": "time", "storetime": "time", "itemid": "int", "value": "str"},
          events=(
              # The value is itself a date (e.g. last dialysis): kept as text, exact. Known
              # when stored (demo: 10% over 2 h after charttime).
              Event("datetime", ("DATETIME", "itemid"), time=("charttime",), text=("value",),
                    label=("d_items", ("itemid",)), known=("storetime",)),
          )),
    Table("inputevents", "icu",
          columns={"subject_id": "int", "hadm_id": "int", "stay_id": "int",
                   "starttime": "time", "endtime": "time", "storetime": "time", "itemid": "int",
                   "amount": "float", "amountuom": "str", "rate": "float", "rateuom": "str",
                   "patientweight": "float"},
          events=(
              # Start carries the amount given over the interval, end carries the rate (null for
              # boluses), as MIMIC_IV_MEDS's INFUSION_START/INFUSION_END. The amount is known
              # once the row is stored (demo: 10% over 4.3 h after the start); the end, stored
              # before it for 63% of rows (the planned end), at the end itself.
              Event("start", ("INPUT_START", "itemid", "amountuom"), time=("starttime",),
                    value="amount", unit="amountuom", label=("d_items", ("itemid",)),
                    known=("storetime",)),
              Event("end", ("INPUT_END", "itemid", "rateuom"), time=("endtime",), value="rate",
                    unit="rateuom", label=("d_items", ("itemid",)), known=("storetime",)),
              # The patient's weight (kg) the row was dosed by, at its start, named as
              # MIMIC_IV_MEDS names it. Every row carries it, so infusions started together
              # repeat one weight: those repeats are flagged `duplicate` (demo: 20,404 rows,
              # 11,826 distinct (subject, start, weight), which is what the community's
              # conversion writes) and windows leave them out. Concept `weight`
              # (concept_map.csv). Known once the row is stored, as its amount.
              Event("weight", ("SUBJECT_WEIGHT_AT_INFUSION//KG",), time=("starttime",),
                    value="patientweight", require="patientweight", known=("storetime",)),
          )),
    Table("ingredientevents", "icu",
          columns={"subject_id": "int", "hadm_id": "int", "stay_id": "int",
                   "starttime": "time", "storetime": "time", "itemid": "int", "amount": "float",
                   "amountuom": "str"},
          # The ingredients of an input row: known when stored, as its amount.
          events=(Event("ingredient", ("INGREDIENT", "itemid", "amountuom"),
                        time=("starttime",), value="amount", unit="amountuom",
                        label=("d_items", ("itemid",)), known=("storetime",)),)),
    Table("outputevents", "icu",
          columns={"subject_id": "int", "hadm_id": "int", "stay_id": "int",
                   "charttime": "time", "storetime": "time", "itemid": "int", "value": "float",
                   "valueuom": "str"},
          # Known when stored (demo: median 17 min after charttime).
          events=(Event("output", ("OUTPUT", "itemid", "valueuom"), time=("charttime",),
                        value="value", unit="valueuom", label=("d_items", ("itemid",)),
                        known=("storetime",)),)),
    Table("procedureevents", "icu",
          columns={"subject_id": "int", "hadm_id": "int", "stay_id": "int",
                   "starttime": "time", "endtime": "time", "storetime": "time_ms",
                   "itemid": "int", "value": "float", "valueuom": "str"},
          events=(
              # value is the duration (min/hour/day) or count, its unit in the code: known
              # once stored (demo: median 3 h after the start; lines and tubes are charted
              # when removed, days later).
              Event("start", ("PROCEDURE_START", "itemid", "valueuom"), time=("starttime",),
                    value="value", unit="valueuom", label=("d_items", ("itemid",)),
                    known=("storetime",)),
              Event("end", ("PROCEDURE_END", "itemid"), time=("endtime",),
                    label=("d_items", ("itemid",)), known=("storetime",)),
          )),
    # Notes are known when stored (signed), not when charted: a discharge summary is charted
    # at the day of discharge and stored up to days later, a radiology report hours after its
    # exam. A note without storetime is taken as known at its charttime.
    Table("discharge", "note", multiline=True,
          columns={"note_id": "str", "subject_id": "int", "hadm_id": "int", "note_type": "str",
                   "charttime": "time", "storetime": "time", "text": "str"},
          events=(Event("note", ("NOTE", "note_type"), time=("charttime",), text=("text",),
                        text_always=True, ref="note_id", known=("storetime",)),)),
    Table("radiology", "note", multiline=True,
          columns={"note_id": "str", "subject_id": "int", "hadm_id": "int", "note_type": "str",
                   "charttime": "time", "storetime": "time", "text": "str"},
          events=(Event("note", ("NOTE", "note_type"), time=("charttime",), text=("text",),
                        text_always=True, ref="note_id", known=("storetime",)),)),
    # ---- detail tables: events of their parent's rows, at the parent's time, known when the
    # parent row is. Appended after every other table: `source` is the position in TABLES,
    # and the others keep theirs.
    Table("emar_detail", "hosp", parent=Parent("emar", "emar_id", ("parent_field_ordinal",)),
          columns={"subject_id": "int", "emar_id": "str", "parent_field_ordinal": "str",
                   "administration_type": "str", "product_code": "str", "dose_due": "str",
                   "dose_due_unit": "str", "dose_given": "str", "dose_given_unit": "str",
                   "infusion_rate": "str", "infusion_rate_unit": "str"},
          events=(
              # An administration has one summary row (parent_field_ordinal null: what was
              # due, the infusion rate) and one row per product given (1.1, 1.2, ...: the
              # dose of that product). The drug is the parent eMAR event's (EMAR//...//
              # medication, same time, sorted just before); the codes name what the detail
              # rows themselves hold, so the vocabulary stays that of the products.
              # Dose due: numeric doses are the value, ranges ("0.125-0.25") stay text; the
              # unit is in the code so values are comparable, the administration type
              # ("IV Infusion", "Standard Maintenance Medication") tells scheduled from drips.
              Event("dose_due", ("EMAR_DOSE_DUE", "administration_type", "dose_due_unit"),
                    value="dose_due", text=("dose_due",), unit="dose_due_unit",
                    require="dose_due"),
              # Dose given, per product: its pharmacy product code and unit in the code. A
              # de-identified dose ("___") is kept as text.
              Event("dose_given", ("EMAR_DOSE_GIVEN", "product_code", "dose_given_unit"),
                    value="dose_given", text=("dose_given",), unit="dose_given_unit",
                    require="dose_given"),
              # Infusion rate set at this administration (drips only; the rate's unit, e.g.
              # mcg/kg/min, in the code). prior_infusion_rate is the previous row's and not
              # repeated.
              Event("infusion_rate", ("EMAR_INFUSION_RATE", "infusion_rate_unit"),
                    value="infusion_rate", text=("infusion_rate",), unit="infusion_rate_unit",
                    require="infusion_rate"),
          )),
    Table("poe_detail", "hosp", parent=Parent("poe", "poe_id", ("field_name",)),
          columns={"poe_id": "str", "subject_id": "int", "field_name": "str",
                   "field_value": "str"},
          events=(
              # Order fields (Admit to, Transfer to, Code status, Tubes & Drains type,
              # Discharge When, ...), one row per field, at the order's ordertime. The field
              # name is the code and its value the text: some values are free (Consult Status
              # Time holds a timestamp) and as code parts would add one code per order.
              Event("field", ("POE_DETAIL", "field_name"), text=("field_value",),
                    text_always=True),
          )),
    Table("discharge_detail", "note",
          parent=Parent("discharge", "note_id", ("field_name", "field_ordinal")),
          columns={"note_id": "str", "subject_id": "int", "field_name": "str",
                   "field_value": "str", "field_ordinal": "int"},
          events=(
              # The note's author (field_name "author"), at the note's charttime. Kept as text:
              # an author is a person, not a clinical category.
              Event("field", ("DISCHARGE_DETAIL", "field_name"), text=("field_value",),
                    text_always=True),
          )),
    Table("radiology_detail", "note",
          parent=Parent("radiology", "note_id", ("field_name", "field_ordinal")),
          columns={"note_id": "str", "subject_id": "int", "field_name": "str",
                   "field_value": "str", "field_ordinal": "int"},
          events=(
              # Exam name and code, CPT code(s), and the parent/addendum note ids, at the
              # report's charttime. The field name is the code and the value text: note ids
              # are unique, and exam names as code parts would split one exam into as many
              # codes as its spellings; the exact value stays in the record.
              Event("field", ("RADIOLOGY_DETAIL", "field_name"), text=("field_value",),
                    text_always=True),
          )),
)

TABLES_BY_NAME = {t.name: t for t in TABLES}
# uint8 `source` in records: position in TABLES, 1-based (0 is reserved for "unknown").
SOURCE_ID = {t.name: i + 1 for i, t in enumerate(TABLES)}
# Tables whose events carry the row id a detail table joins on (their ref strings are kept
# through the build stage), and the detail tables themselves.
JOINED = frozenset(x for t in TABLES if t.parent for x in (t.name, t.parent.table))
for _t in TABLES:  # `known` is () for the detail tables (their parent's), a rule value known
    for _e in _t.events:
        if _e.known_else not in KNOWN_ELSE or (_t.parent and _e.known):
            raise ValueError(f"table {_t.name}, event {_e.name}: known_else must be one of "
                             f"{KNOWN_ELSE} and a detail table's known (), got "
                             f"{_e.known_else!r}, {_e.known!r}")
for _t in TABLES:  # a detail table's key must be its parent's first event's ref
    if _t.parent and TABLES_BY_NAME[_t.parent.table].events[0].ref != _t.parent.key:
        raise ValueError(f"table {_t.name}: parent {_t.parent.table}'s first event has ref "
                         f"{TABLES_BY_NAME[_t.parent.table].events[0].ref!r}, expected "
                         f"{_t.parent.key!r}")


@dataclass(frozen=True)
class Dictionary:
    name: str
    module: str
    columns: dict
    key: tuple[str, ...]  # joined with "//" exactly as the events' label key columns
    label: tuple[str, ...]  # first non-null is the label
    unit: str | None = None


DICTIONARIES: tuple[Dictionary, ...] = (
    Dictionary("d_labitems", "hosp", {"itemid": "int", "label": "str", "fluid": "str"},
               key=("itemid",), label=("label",)),
    Dictionary("d_items", "icu", {"itemid": "int", "label": "str", "unitname": "str"},
               key=("itemid",), label=("label",), unit="unitname"),
    Dictionary("d_icd_diagnoses", "hosp",
               {"icd_code": "str", "icd_version": "int", "long_title": "str"},
               key=("icd_version", "icd_code"), label=("long_title",)),
    Dictionary("d_icd_procedures", "hosp",
               {"icd_code": "str", "icd_version": "int", "long_title": "str"},
               key=("icd_version", "icd_code"), label=("long_title",)),
    Dictionary("d_hcpcs", "hosp", {"code": "str", "short_description": "str"},
               key=("code",), label=("short_description",)),
)
