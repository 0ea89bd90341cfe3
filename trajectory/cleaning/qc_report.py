"""The cleaning part of qc_report.json: per table and per code, flags and drops by rule,
thresholds used, unit conversions, concept coverage; and the rate checks that stop a bad
table from silently polluting a version. Pure: frames in, dicts out.
"""
from __future__ import annotations

import polars as pl

from .flags import BITS

RULES = list(BITS)


def cleaning_report(qc: pl.DataFrame, vocab: pl.DataFrame, thresholds: pl.DataFrame,
                    concepts: pl.DataFrame, source_name: dict, cfg) -> dict:
    """`qc`: the shards' (code_id, source, kind, n, converted, <rule>, dropped_<rule>) rows."""
    per_code = (qc.group_by("code_id").agg(pl.exclude("source", "kind").sum())
                .join(vocab.select("code_id", "code", "table"), on="code_id")
                .join(thresholds.select("code_id", pl.col("lo").alias("outlier_lo"),
                                        pl.col("hi").alias("outlier_hi"),
                                        # true: fences from the log scale too (skewed code)
                                        *([pl.col("log_fences").alias("outlier_log")]
                                          if "log_fences" in thresholds.columns else [])),
                      on="code_id", how="left")
                .sort("code_id"))
    per_table = {}
    for (source,), part in sorted(qc.group_by("source"), key=lambda g: source_name[g[0][0]]):
        name = source_name[source]
        n = int(part["n"].sum())
        flagged = {r: int(part[r].sum()) for r in RULES}
        drops = {r: int(part[f"dropped_{r}"].sum()) for r in RULES}
        per_table[name] = {"events": n, "flagged": flagged, "dropped": drops,
                           "flag_rate": {r: round(v / n, 6) if n else 0.0
                                         for r, v in flagged.items()},
                           "drop_rate": round(sum(drops.values()) / n, 6) if n else 0.0}
    converted = per_code.filter(pl.col("converted") > 0)
    concept_names = concepts.unique("concept_id", maintain_order=True)
    mapped = concept_table_codes(vocab, concepts)
    coverage = (converted.join(mapped.select("code_id", "concept"), on="code_id")
                .group_by("concept").agg(pl.col("n").sum().alias("events"),
                                          pl.col("code").alias("codes")))
    covered = dict(zip(coverage["concept"].to_list(), coverage["events"].to_list()))
    flagged_codes = per_code.filter(pl.sum_horizontal(RULES) > 0).sort(
        pl.sum_horizontal(RULES), descending=True)
    return {
        "rules": {r: {"bit": b, "drops": r in cfg.drop_rules} for r, b in BITS.items()},
        "settings": {"outlier_method": cfg.outlier_method, "outlier_k": cfg.outlier_k,
                     "outlier_min_count": cfg.outlier_min_count,
                     "clip_to_range": cfg.clip_to_range,
                     "death_margin_hours": cfg.death_margin_hours,
                     "stay_margin_hours": cfg.stay_margin_hours},
        "tables": per_table,
        "concepts": {c: {"events": int(covered.get(c, 0))}
                     for c in concept_names["concept"].to_list()},
        "unit_conversions": mapped
        .filter((pl.col("scale") != 1) | (pl.col("offset") != 0))
        .join(per_code.select("code_id", "n"), on="code_id", how="left")
        .select("code", "concept", "unit", "unit_out", "scale", "offset",
                pl.col("n").fill_null(0).alias("events")).to_dicts(),
        # every code with a flag, most flagged first; thresholds shown where they exist
        "codes": [{k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}
                  for row in flagged_codes.drop("code_id").to_dicts()],
    }


def concept_table_codes(vocab: pl.DataFrame, concepts: pl.DataFrame) -> pl.DataFrame:
    from .flags import concept_table

    return concept_table(vocab, concepts)


def rate_failures(report: dict, cfg) -> list[str]:
    """Tables whose flag rate (any one rule) or cleaning drop rate exceeds the limits."""
    problems = []
    for name, t in report["tables"].items():
        for rule, rate in t["flag_rate"].items():
            if rate > cfg.qc_max_flag_rate:
                problems.append(f"{name}: {rate:.1%} of events flagged by '{rule}' "
                                f"(QC_MAX_FLAG_RATE {cfg.qc_max_flag_rate:.1%})")
        if t["drop_rate"] > cfg.qc_max_drop_rate:
            problems.append(f"{name}: {t['drop_rate']:.1%} of events dropped by cleaning "
                            f"(QC_MAX_DROP_RATE {cfg.qc_max_drop_rate:.1%})")
    return problems
