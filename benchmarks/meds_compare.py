"""A MEDS export against the community's MIMIC-IV conversion of the same data, family by family:
code sets, per-code row counts, and the events (subject, time, code) each has.

    python build_patient_files.py export meds VERSION_DIR MEDS_DIR --codes community
    python benchmarks/meds_compare.py MEDS_DIR \
        --community ../shared/data/mimic-iv-demo-meds/mimic_iv_demo_meds_events.parquet \
        [--predicates .../MEDS_DEV/datasets/MIMIC-IV/predicates.yaml | --tools-python PY]

A family is a code's first "//" part, with LAB told apart by source (itemids from 220000 are
chartevents'), PROCEDURE and MEDICATION by their second part (ICD / START / END / STOP, else
an eMAR drug), and a bare name that is not an upper-case word (`Weight (Lbs)`) an OMR result.
Per family present on both sides: rows and codes on each side and shared, codes whose row
counts differ by more than 1%, and the events (distinct subject_id, time, code) each has and
both have. Events, not rows, are what a code mapping decides: the community's conversion
writes rows identical in all its columns once (drug orders repeated under one poe_id, the
same weight on infusions started together), on columns an export of the records does not
carry; `rows unflagged` counts the export's rows without the `duplicate` flag, which for the
weight rows is the community's count. With predicates (MEDS-DEV's MIMIC-IV file), the rows
each predicate matches on both sides.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

KEY = ["subject_id", "time", "code"]
DUPLICATE_BIT = 4  # trajectory.cleaning.BITS["duplicate"] = 2


def family(code: pl.Expr = pl.col("code")) -> pl.Expr:
    """The comparison family of a code (module docstring)."""
    parts = code.str.split("//")
    first, second = parts.list.get(0), parts.list.get(1, null_on_oob=True)
    return (pl.when(~code.str.contains("//") & ~code.str.contains(r"^[A-Z_]+$"))
            .then(pl.lit("<OMR result name>"))
            .when(first == "LAB")
            .then(pl.when(second.cast(pl.Int64, strict=False) >= 220000)
                  .then(pl.lit("LAB (chartevents)")).otherwise(pl.lit("LAB (labevents)")))
            .when(first.is_in(["PROCEDURE", "MEDICATION"]))
            .then(first + "//" + pl.when(second.is_in(["ICD", "START", "END", "STOP"]))
                  .then(second).otherwise(pl.lit("<drug>")))
            .otherwise(first).alias("family"))


def read_export(meds_dir: Path) -> pl.DataFrame:
    cols = ["subject_id", "time", "code", "flags"]
    return pl.read_parquet(Path(meds_dir) / "data" / "*" / "*.parquet", columns=cols)


def read_community(path: Path) -> pl.DataFrame:
    return pl.read_parquet(path, columns=KEY)


def strip_parts(code: pl.Expr = pl.col("code")) -> pl.Expr:
    """A code with the edge spaces of each "//" part removed, as the build makes its codes
    (trajectory/events/tables.py); the community's conversion keeps them ('LAB//51498// ',
    'MEDICATION//START//OxycoDONE (Immediate Release) ')."""
    return code.str.split("//").list.eval(pl.element().str.strip_chars()).list.join("//")


def compare(export: pl.DataFrame, community: pl.DataFrame) -> pl.DataFrame:
    """One row per family present on both sides (module docstring). `match`: events in both
    / the larger side's events, so 99% bounds what either side has that the other lacks;
    `match, spaces stripped`: the same with the community's codes stripped as ours are."""
    e = export.with_columns(family())
    c = community.with_columns(family(), strip_parts().alias("stripped"))
    fams = sorted(set(e["family"].unique()) & set(c["family"].unique()))
    rows = []
    for f in fams:
        a, b = e.filter(pl.col("family") == f), c.filter(pl.col("family") == f)
        per_code = (a.group_by("code").len("e").join(b.group_by("code").len("c"), on="code",
                                                     how="full", coalesce=True).fill_null(0))
        off = per_code.filter((pl.col("e") - pl.col("c")).abs() > 0.01 * pl.max_horizontal(
            "e", "c"))
        ea, eb = a.select(KEY).unique(), b.select(KEY).unique()
        both = ea.join(eb, on=KEY, how="inner", nulls_equal=True).height
        es = b.select("subject_id", "time", pl.col("stripped").alias("code")).unique()
        both_stripped = ea.join(es, on=KEY, how="inner", nulls_equal=True).height
        unflagged = (a.filter(pl.col("flags") & DUPLICATE_BIT == 0).height
                     if "flags" in a.columns else None)
        rows.append({"family": f, "community rows": b.height, "export rows": a.height,
                     "rows unflagged": unflagged,
                     "community codes": b["code"].n_unique(), "export codes": a["code"].n_unique(),
                     "shared codes": per_code.filter((pl.col("e") > 0) & (pl.col("c") > 0)).height,
                     "shared, spaces stripped": b.filter(pl.col("stripped").is_in(
                         a["code"].unique().implode()))["stripped"].n_unique(),
                     "codes count >1% off": off.height,
                     "community events": eb.height, "export events": ea.height,
                     "events in both": both,
                     "match": both / max(ea.height, eb.height, 1),
                     "match, spaces stripped": both_stripped / max(ea.height, es.height, 1)})
    return pl.DataFrame(rows)


def predicate_codes(path: Path) -> dict:
    """MEDS-DEV predicates file -> {name: ("regex", pattern) or ("any", [codes])}."""
    import yaml

    preds = yaml.safe_load(Path(path).read_text())["predicates"]
    out = {}
    for name, p in preds.items():
        code = p.get("code") if isinstance(p, dict) else None
        if isinstance(code, dict) and "regex" in code:
            out[name] = ("regex", code["regex"])
        elif isinstance(code, dict) and "any" in code:
            out[name] = ("any", list(code["any"]))
        elif isinstance(code, str):
            out[name] = ("any", [code])
    return out


def compare_predicates(export: pl.DataFrame, community: pl.DataFrame, preds: dict
                       ) -> pl.DataFrame:
    """Rows each predicate matches on both sides."""
    rows = []
    for name, (kind, value) in preds.items():
        match = (pl.col("code").str.contains(value) if kind == "regex"
                 else pl.col("code").is_in(value))
        a, b = export.filter(match).height, community.filter(match).height
        rows.append({"predicate": name, "community rows": b, "export rows": a,
                     "ratio": a / b if b else (1.0 if a == 0 else float("inf"))})
    return pl.DataFrame(rows)


def markdown(df: pl.DataFrame) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{100 * v:.2f}%" if v <= 10 else f"{v:.2f}"
        return f"{v:,}" if isinstance(v, int) else ("" if v is None else str(v))

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.iter_rows()]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("meds_dir")
    ap.add_argument("--community", required=True, help="the community's conversion: one "
                    "parquet of (subject_id, time, code, ...) rows")
    ap.add_argument("--predicates", default=None, help="MEDS-DEV's MIMIC-IV predicates.yaml")
    ap.add_argument("--tools-python", default=None, help="the MEDS tools venv's python, to "
                    "find MEDS-DEV's predicates file (tests/meds_tools_setup.sh)")
    args = ap.parse_args(argv)
    export, community = read_export(Path(args.meds_dir)), read_community(Path(args.community))
    print(markdown(compare(export, community)))
    predicates = args.predicates
    if predicates is None and args.tools_python:
        import aces_agreement as agr

        predicates = agr.meds_dev_dir(agr.tools_python(args.tools_python)) / agr.PREDICATES
    if predicates:
        print()
        print(markdown(compare_predicates(export, community, predicate_codes(predicates))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
