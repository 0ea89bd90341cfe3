"""Ontology parents of the project's codes, as data: the `parent_codes` column of a version's
codes.parquet and of the MEDS export's metadata/codes.parquet.

    parent_codes(["LAB//50912//mg/dL", "DX//ICD//10//I10"])  # [["LOINC/2160-0"], ["ICD10CM/I10"]]

Two kinds. ICD codes name their ontology themselves (`ICD_PARENTS`). Item families (labs,
chart items, infusions, outputs, ICU procedures) are linked through MIT-LCP/mimic-code's
concept maps (`ITEM_PARENTS`), vendored in data/mimic_code_mapping/ (MIT; SOURCE.md there says
why a copy): the maps the community's MIMIC-IV -> MEDS conversion (MIMIC_IV_MEDS,
configs/event_configs.yaml) joins on itemid. Every parent is spelled as that conversion writes
it, `<OMOP vocabulary_id>/<code>` (its template "{omop_vocabulary_id}/{omop_concept_code}";
ICD "ICD{icd_version}CM/{icd_code}"): ICD9CM/4019, ICD10PCS/0BH17EZ, LOINC/2160-0,
RxNorm/1745276, SNOMED/77477000. A code no rule covers has none (null).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

import polars as pl

MAP_DIR = "mimic_code_mapping"  # under trajectory/data/


@dataclass(frozen=True)
class ItemMap:
    """One mimic-code map file: which column holds the MIMIC-IV itemid and which the parent.
    Two layouts: OMOP (`omop_vocabulary_id`, `omop_concept_code` columns) and SSSOM
    (`subject_id` "mimic:<itemid>", `object_id` "<vocabulary>:<code>", vocabulary lower case,
    spelled here as OMOP spells it)."""
    file: str
    layout: str = "omop"  # "omop" or "sssom"


# SSSOM prefix -> OMOP vocabulary_id, the spelling of the community's parents
SSSOM_VOCABULARY = {"loinc": "LOINC", "snomed": "SNOMED"}


@dataclass(frozen=True)
class ItemParents:
    families: tuple[str, ...]  # project code families `<family>//<itemid>//...`
    maps: tuple[ItemMap, ...]  # an itemid takes the parents of the first map that covers it
    why: str = ""


ITEM_PARENTS: tuple[ItemParents, ...] = (
    # 1,400 of d_labitems' 1,630 itemids have a LOINC code; the rest (and the itemids the map
    # lacks) get none. lab_itemid_to_loinc.csv, mimic-code's older map, covers 34 of the same
    # itemids and adds none: not read.
    ItemParents(("LAB",), (ItemMap("d_labitems_to_loinc.csv"),),
                why="hosp/labevents itemid -> LOINC, the community's map"),
    # The community's chartevents block has this map commented out (a TODO in its config), so
    # its chart codes have no parents; ours do. meas_chartevents_main covers 169 items (153
    # LOINC, 16 SNOMED), chartevents_to_loinc 55, 22 of them not in the first.
    ItemParents(("CHART",), (ItemMap("meas_chartevents_main.csv"),
                             ItemMap("chartevents_to_loinc.csv", "sssom")),
                why="icu/chartevents itemid -> LOINC / SNOMED"),
    # An infusion itemid maps to one RxNorm clinical drug form, 15 to two (the map has a row
    # per amount unit, e.g. Vancomycin "dose" and "mg"): joined on itemid alone, as the
    # community does, such a code gets both. The start and the end of an infusion are the
    # same drug. Ingredient itemids (Free Water, calories) are in no map.
    ItemParents(("INPUT_START", "INPUT_END"), (ItemMap("inputevents_to_rxnorm.csv"),),
                why="icu/inputevents itemid -> RxNorm, the community's map"),
    ItemParents(("OUTPUT",), (ItemMap("outputevents_to_loinc.csv"),),
                why="icu/outputevents itemid -> LOINC, the community's map"),
    # proc_itemid is the community's map (113 items); procedureevents_to_snomed covers 169,
    # and names another SNOMED concept for 2 of the 113: the first map's wins, the second
    # fills the 56 items the first lacks. procedureevents_to_omop.csv names the same concepts
    # by OMOP concept_id, which is no vocabulary's code: not read.
    ItemParents(("PROCEDURE_START", "PROCEDURE_END"),
                (ItemMap("proc_itemid.csv"), ItemMap("procedureevents_to_snomed.csv", "sssom")),
                why="icu/procedureevents itemid -> SNOMED"),
)

# `<family>//<icd_version>//<icd_code>` -> `<vocabulary>/<icd_code>` (MIMIC's undotted code),
# as MIMIC_IV_MEDS's `_metadata` templates write them: diagnoses "ICD{icd_version}CM/...",
# procedures ICD9Proc / ICD10PCS. A code whose version or code part is missing (UNK) has none.
ICD_PARENTS: dict[str, dict[str, str]] = {
    "DX//ICD": {"9": "ICD9CM", "10": "ICD10CM"},
    "PX//ICD": {"9": "ICD9Proc", "10": "ICD10PCS"},
}


def read_map(m: ItemMap) -> dict[str, str]:
    """{itemid: parent} of one map file; rows without an itemid or a code (the blank rows
    at the end of outputevents_to_loinc.csv, d_labitems without LOINC) are skipped. A map
    with two parents for one itemid keeps both, in file order, joined by '\\n' here."""
    path = resources.files("trajectory") / "data" / MAP_DIR / m.file
    df = pl.read_csv(path.open("rb"), infer_schema_length=0)
    if m.layout == "omop":
        pairs = df.select(pl.col("itemid (omop_source_code)").alias("itemid"),
                          pl.concat_str(["omop_vocabulary_id", "omop_concept_code"],
                                        separator="/").alias("parent"))
    elif m.layout == "sssom":
        obj = pl.col("object_id").str.split_exact(":", 1)
        vocab = obj.struct.field("field_0").replace_strict(SSSOM_VOCABULARY, default=None)
        pairs = df.select(pl.col("subject_id").str.strip_prefix("mimic:").alias("itemid"),
                          pl.concat_str([vocab, obj.struct.field("field_1")], separator="/")
                          .alias("parent"))
    else:
        raise ValueError(f"{m.file}: layout must be 'omop' or 'sssom', got {m.layout!r}")
    pairs = pairs.drop_nulls().unique(maintain_order=True)
    return dict(pairs.group_by("itemid", maintain_order=True)
                .agg(pl.col("parent").str.join("\n")).iter_rows())


@functools.lru_cache(maxsize=1)
def item_parents() -> dict[str, dict[str, list[str]]]:
    """family -> {itemid: parents}, the first map covering an itemid winning."""
    out = {}
    for rule in ITEM_PARENTS:
        merged: dict[str, str] = {}
        for m in rule.maps:
            for itemid, parents in read_map(m).items():
                merged.setdefault(itemid, parents)
        table = {k: v.split("\n") for k, v in merged.items()}
        out.update(dict.fromkeys(rule.families, table))
    return out


def code_parents(code: str) -> list[str] | None:
    """The parents of one project code (module docstring), None when it has none."""
    parts = code.split("//")
    if len(parts) >= 2:
        table = item_parents().get(parts[0])
        if table is not None:
            return table.get(parts[1])
        vocab = ICD_PARENTS.get(f"{parts[0]}//{parts[1]}")
        if vocab is not None and len(parts) == 4 and parts[3] not in ("", "UNK"):
            name = vocab.get(parts[2])
            return [f"{name}/{parts[3]}"] if name else None
    return None


def parent_codes(codes) -> list[list[str] | None]:
    """`code_parents` of each code, in order."""
    return [code_parents(c) for c in codes]
