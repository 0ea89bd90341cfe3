"""The tables drawn from their own random stream, after the others (so adding one changed no
other file): emar_detail, poe_detail, the note details, and the provider and caregiver id
lists."""
from __future__ import annotations

import numpy as np
import polars as pl

from .catalog import DRUGS, EXAMS, EXAM_CODES, HOUR
from .common import Generator, _join, _num, _ts, _voc


class DetailTables(Generator):
    # ---------------------------------------------------------------- detail tables
    def details(self):
        """emar_detail, poe_detail and the note details, from their own random stream."""
        r, e = self.detail_rng, self.emar
        E = len(e["subject_id"])
        D = list(zip(*DRUGS))
        drug = e["drug"]
        emar_id = _join(e["subject_id"], e["emar_seq"])
        iv = np.array([x == "IV" for x in D[10]])[drug]
        drip = iv & (r.random(E) < 0.3)  # IV drugs given as a continuous infusion
        # One summary row per administration (what was due, the infusion rate) and one row
        # per product given (1.1; a second product 1.2 for a tenth). A few rows name an
        # administration eMAR never recorded: the build drops them as parent_not_found.
        second = np.flatnonzero(e["given"] & (r.random(E) < 0.1))
        prod = np.r_[np.flatnonzero(e["given"]), second]
        ordinal = np.r_[np.full(len(prod) - len(second), "1.1"), np.full(len(second), "1.2")]
        due = _voc(D[5], drug)
        given = due.gather(prod).str.split("-").list.first()
        given = given.scatter(np.flatnonzero(r.random(len(prod)) < 0.01), "___")
        rate = _num(np.round(r.uniform(5, 150, E), 1), ~drip)
        orphan = np.union1d(np.flatnonzero(r.random(E) < 0.002), [E - 1])  # at least one
        rows = np.r_[np.arange(E), prod, orphan]
        n_sum, n_prod = E, len(prod)
        summary, product = np.arange(len(rows)) < n_sum, (np.arange(len(rows)) >= n_sum) & (
            np.arange(len(rows)) < n_sum + n_prod)
        eid = emar_id.gather(rows).scatter(
            np.arange(n_sum + n_prod, len(rows)),
            _join(e["subject_id"][orphan], e["emar_seq"][orphan] + 100_000))
        text = lambda v, mask: pl.Series(v, dtype=pl.String).scatter(  # noqa: E731
            np.flatnonzero(~mask), None)
        # each administration's rows together, its summary first (as in MIMIC-IV)
        o = np.lexsort((np.arange(len(rows)), np.r_[rows[:n_sum + n_prod], orphan]))
        self.emit("hosp/emar_detail", {c: v[o] if isinstance(v, np.ndarray) else v.gather(o)
                                       for c, v in {
            "subject_id": e["subject_id"][rows], "emar_id": eid, "emar_seq": e["emar_seq"][rows],
            "parent_field_ordinal": text(np.r_[[""] * n_sum, ordinal, ["1.1"] * len(orphan)],
                                         ~summary),
            "administration_type": text(np.where(drip, "IV Infusion", np.where(
                iv, "IV Bolus", "Standard Maintenance Medication"))[rows], summary),
            "pharmacy_id": _num(e["pharmacy_id"][rows], summary),
            "barcode_type": text(np.full(len(rows), "bc"), ~summary),
            "dose_due": due.gather(rows).scatter(np.flatnonzero(~summary | drip[rows]), None),
            "dose_due_unit": _voc(D[6], drug[rows]).scatter(np.flatnonzero(~summary), None),
            "dose_given": pl.concat([pl.Series([None] * n_sum, dtype=pl.String), given,
                                     due.gather(orphan)]),
            "dose_given_unit": _voc(D[6], drug[rows]).scatter(np.flatnonzero(summary), None),
            "product_code": _voc(D[1], drug[rows]).scatter(np.flatnonzero(summary), None),
            "product_description": (_voc(D[0], drug[rows]) + " " + _voc(D[4], drug[rows]))
            .scatter(np.flatnonzero(summary), None),
            "infusion_rate": rate.gather(rows).scatter(np.flatnonzero(~summary), None),
            "infusion_rate_unit": text(np.full(len(rows), "mL/hr"), summary & drip[rows]),
            "route": text(_voc(D[10], drug[rows]).to_numpy().astype(str), summary & ~iv[rows]),
        }.items()})
        # POE order fields, by order kind: discharge orders' planning, consults' status and
        # its time, IV fluids' indication.
        poe = self.poe
        fields = {7: [("Discharge Planning", ["Finalized"]), ("Discharge When", ["Discharge Now"])],
                  6: [("Consult Status", ["Accepted"]), ("Consult Status Time", None)],
                  3: [("Indication", ["Hydration", "Antibiotics", "Other"])]}
        out = []
        for k, fs in fields.items():
            rows = np.flatnonzero(poe["kind"] == k)
            for name, values in fs:
                v = (_ts(poe["ordertime"][rows] + r.integers(600, 4 * HOUR, len(rows)))
                     .dt.strftime("%Y-%m-%d %H:%M:%S") if values is None
                     else _voc(values, r.integers(0, len(values), len(rows))))
                out.append(pl.DataFrame({"row": rows, "field_name": name, "field_value": v}))
        pd = pl.concat(out).sort("row", maintain_order=True)
        rows = pd["row"].to_numpy()
        self.emit("hosp/poe_detail", {
            "poe_id": poe["poe_id"].gather(rows), "poe_seq": poe["poe_seq"][rows],
            "subject_id": poe["subject_id"][rows], "field_name": pd["field_name"],
            "field_value": pd["field_value"]})
        # Note details: every discharge summary's author; every radiology report's exam
        # name, exam code and CPT code, and for a few a second CPT code (field_ordinal 2).
        ds = self.note_rows["DS"]
        self.emit("note/discharge_detail", {
            "note_id": ds["note_id"], "subject_id": ds["subject_id"], "field_name": "author",
            "field_value": pl.Series(["___"] * len(ds["subject_id"])), "field_ordinal": 1})
        rr = self.note_rows["RR"]
        n, ex = len(rr["subject_id"]), rr["exam"]
        extra = np.flatnonzero(r.random(n) < 0.1)
        rows = np.r_[np.tile(np.arange(n), 3), extra]
        names = np.r_[np.repeat(["exam_name", "exam_code", "cpt_code"], n),
                      np.full(len(extra), "cpt_code")]
        values = np.r_[[x[0] for x in EXAMS], [c[0] for c in EXAM_CODES],
                       [c[1] for c in EXAM_CODES]]
        pick = np.r_[ex, len(EXAMS) + ex, 2 * len(EXAMS) + ex, 2 * len(EXAMS) + ex[extra]]
        o = np.lexsort((np.arange(len(rows)), rows))  # a note's fields together
        self.emit("note/radiology_detail", {
            "note_id": rr["note_id"].gather(rows[o]), "subject_id": rr["subject_id"][rows[o]],
            "field_name": pl.Series(names[o]), "field_value": pl.Series(values[pick][o]),
            "field_ordinal": np.r_[np.ones(3 * n, np.int64), np.full(len(extra), 2)][o]})

    def id_lists(self):
        """provider and caregiver: id lists with no events (the build lists them as not read)."""
        r = self.detail_rng
        self.emit("hosp/provider", {"provider_id": pl.Series(sorted(set(self.providers)))})
        self.emit("icu/caregiver", {"caregiver_id": np.unique(r.integers(100, 99999, 300))})

