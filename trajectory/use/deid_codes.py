"""Rare codes for `export share` (docs/SHARE.md): a code of fewer than k patients moves up its
hierarchy (LAB//50912//mg/dL -> LAB//50912 -> LAB) until k patients share its string; the
copy's vocabulary, and what `deid.rewrite` keeps of an event whose code was generalised
(CodeMap). Pure: lists, numpy arrays and polars frames in and out."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

SEP = "//"  # code strings are PREFIX//part//part (docs/FORMAT.md)


def parent(code: str) -> str | None:
    """One level up: the code without its last part ('LAB//50912//mg/dL' -> 'LAB//50912' ->
    'LAB'); None at the top level."""
    i = code.rfind(SEP)
    return None if i < 0 else code[:i]


def depth(code: str) -> int:
    return code.count(SEP) + 1


def generalise(codes: list[str], patients: np.ndarray, pairs: pl.DataFrame, k: int
               ) -> tuple[list[str | None], dict]:
    """Each code's output string. A code of at least `k` patients stays. A rarer one moves up
    one level at a time, deepest first, until the codes that share its string cover at least
    `k` distinct patients (counted as a union, from `pairs`), the string is a code that has
    `k` patients itself, or it is at the top level. Codes of no patient get None (removed).

    `patients[i]`: distinct patients of code i; `pairs`: (patient, code_id), every pair of
    every code with fewer than `k` patients (patient: any id unique per patient)."""
    frequent = {codes[i] for i in np.flatnonzero(patients >= k)}
    out: list[str | None] = [c if n >= k else None for c, n in zip(codes, patients.tolist())]
    rare = [int(i) for i in np.flatnonzero((patients > 0) & (patients < k))]
    target = {i: codes[i] for i in rare}
    pairs = pairs.select(pl.col("patient").cast(pl.Int64), pl.col("code_id").cast(pl.Int64))
    while True:
        t = pl.DataFrame({"code_id": list(target), "target": list(target.values())},
                         schema={"code_id": pl.Int64, "target": pl.String})
        pop = dict(pairs.join(t, on="code_id").group_by("target")
                   .agg(pl.col("patient").n_unique()).iter_rows())
        open_ = [i for i, s in target.items()
                 if s not in frequent and pop.get(s, 0) < k and depth(s) > 1]
        if not open_:
            break
        deepest = max(depth(target[i]) for i in open_)
        for i in open_:
            if depth(target[i]) == deepest:
                target[i] = parent(target[i])
    for i, s in target.items():
        out[i] = s
    below = sorted({s for s in target.values() if s not in frequent and pop.get(s, 0) < k})
    report = {"min_patients": k, "codes_in": len(codes),
              "codes_kept": int((patients >= k).sum()),
              "codes_generalised": sum(1 for i in rare if target[i] != codes[i]),
              "codes_below_min_at_own_string": sum(1 for i in rare if target[i] == codes[i]),
              "codes_without_patients_removed": int((patients == 0).sum()),
              "levels_up": _levels(codes, target),
              "top_level_below_min": {s: int(pop.get(s, 0)) for s in below}}
    return out, report


def _levels(codes, target) -> dict:
    n: dict = {}
    for i, s in target.items():
        up = depth(codes[i]) - depth(s)
        if up:
            n[str(up)] = n.get(str(up), 0) + 1
    return dict(sorted(n.items()))


def vocabulary(codes: pl.DataFrame, out: list[str | None]) -> tuple[pl.DataFrame, np.ndarray]:
    """The copy's codes.parquet (sorted by code string, code_id = row) and old -> new code id.
    A string that is an original code keeps that code's table, label and unit; a new (more
    general) string keeps what all its members agree on, else null. count = the members'."""
    src = codes.sort("code_id").with_columns(pl.Series("new", out, dtype=pl.String))
    strings = sorted(set(s for s in out if s is not None))
    new_id = {s: i for i, s in enumerate(strings)}
    own = src.filter(pl.col("code") == pl.col("new")).select(
        pl.col("new"), pl.col("table").alias("t0"), pl.col("label").alias("l0"),
        pl.col("unit").alias("u0"))

    def agreed(c):
        return pl.when(pl.col(c).n_unique() == 1).then(pl.col(c).first())

    grouped = (src.filter(pl.col("new").is_not_null()).group_by("new")
               .agg(agreed("table").alias("table"), agreed("label").alias("label"),
                    agreed("unit").alias("unit"), pl.col("count").sum()))
    table = (pl.DataFrame({"code_id": range(len(strings)), "code": strings},
                          schema={"code_id": pl.Int32, "code": pl.String})
             .join(grouped, left_on="code", right_on="new", how="left")
             .join(own, left_on="code", right_on="new", how="left")
             .select("code_id", "code", pl.coalesce("t0", "table").alias("table"),
                     pl.when(pl.col("t0").is_not_null()).then("l0").otherwise("label")
                     .alias("label"),
                     pl.when(pl.col("t0").is_not_null()).then("u0").otherwise("unit")
                     .alias("unit"),
                     pl.col("count").cast(pl.Int64))
             .sort("code_id"))
    lut = np.array([new_id[s] if s is not None else -1 for s in out], np.int32)
    return table, lut


@dataclass(frozen=True)
class CodeMap:
    """What `rewrite` does to an event by its original code id: its new code id (`lut`),
    whether it keeps its concept (and concept_value, and the `range` flag computed from it),
    whether it keeps the `outlier` flag (computed from the original code's own thresholds)."""
    lut: np.ndarray
    keep_concept: np.ndarray
    keep_outlier: np.ndarray

    @classmethod
    def plain(cls, lut: np.ndarray) -> "CodeMap":
        """Recode only (every concept and flag kept): for codes that stay as they are."""
        n = len(lut)
        return cls(np.asarray(lut, np.int32), np.ones(n, bool), np.ones(n, bool))


def code_map(codes: list[str], out: list[str | None], lut: np.ndarray, concepts: dict
             ) -> tuple[CodeMap, dict]:
    """The CodeMap of `generalise`'s output. A string's events keep their concept only when
    every code it stands for has the same one (concept is a function of the original code:
    issue 24, LAB//51300//K/uL, of 1 patient, became LAB but kept concept `wbc`, which only
    51300 and 51301 have, so it named itself); otherwise none of them does. The outlier flag
    is kept only on a string that is one original code alone (the thresholds are the code's
    own, so on a shared string they would tell members apart). `concepts`: original code id
    -> the set of concepts its events carry (from the records)."""
    members: dict = {}
    for i, s in enumerate(out):
        if s is not None:
            members.setdefault(s, []).append(i)
    keep_concept, keep_outlier = np.ones(len(codes), bool), np.ones(len(codes), bool)
    for s, ids in members.items():
        seen = set().union(*(concepts.get(i, set()) for i in ids))
        if len(seen) > 1:
            keep_concept[ids] = False
        if not (len(ids) == 1 and codes[ids[0]] == s):
            keep_outlier[ids] = False
    dropped = [s for s, ids in members.items() if not keep_concept[ids[0]]]
    report = {"strings_concept_dropped": len(dropped),
              "codes_concept_dropped": sum(len(members[s]) for s in dropped)}
    return CodeMap(np.asarray(lut, np.int32), keep_concept, keep_outlier), report
