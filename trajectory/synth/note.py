"""note/: discharge summaries and radiology reports (MIMIC-IV-Note's shape). A method of the
generator; `generate` calls it in order."""
from __future__ import annotations

import numpy as np
import polars as pl

from .catalog import CHIEF, DAY, DRUGS, DX, EXAMS, HOUR, ICU_UNITS, MIN, PX, SERVICES
from .common import Generator, _cumcount, _join, _rep, _ts


class NoteTables(Generator):
    # ---------------------------------------------------------------- notes
    def notes(self):
        r, A = self.r, self.A
        sex = np.where(self.female[self.P], "F", "M").tolist()
        word = np.where(self.female[self.P], "woman", "man").tolist()
        age, cc, dx = self.age_adm.tolist(), self.pick(len(CHIEF), A).tolist(), self.dx_top.tolist()
        vit = np.c_[r.normal(95, 15, A), r.normal(128, 18, A), r.normal(72, 10, A),
                    np.clip(r.normal(95, 2.5, A), 85, 100)].astype(int).tolist()
        labs = {k: ["___" if x != x else f"{x:g}" for x in v.tolist()]  # ___: not drawn
                for k, v in self.first_labs.items()}
        meds = [f"{d[0]} {d[5]} {d[6]} {d[10]} {d[11]}" for d in DRUGS]
        svc = {"CSURG": "CARDIOTHORACIC", "NSURG": "NEUROSURGERY", "NMED": "NEUROLOGY",
               "ORTHO": "ORTHOPAEDICS", "SURG": "SURGERY", "VSURG": "SURGERY", "TRAUM": "SURGERY"}
        dispo = ["Home", "Home With Service", "Extended Care", "Extended Care", "Extended Care",
                 "Home With Service", "Home", "Home", "Expired"]
        allergy = ["No Known Allergies / Adverse Drug Reactions", "Penicillins",
                   "Sulfa (Sulfonamide Antibiotics) / Codeine"]

        def results(a):
            g = {k: v[a] for k, v in labs.items()}
            return (f"___ 06:10AM BLOOD WBC-{g[51301]} Hgb-{g[51222]} Hct-{g[51221]} Plt Ct-"
                    f"{g[51265]}\n___ 06:10AM BLOOD Glucose-{g[50931]} UreaN-{g[51006]} Creat-"
                    f"{g[50912]} Na-{g[50983]} K-{g[50971]} Cl-{g[50902]} HCO3-{g[50882]}")

        def discharge(a, j):
            t1, t2, t3 = (DX[i][2] for i in dx[a])
            m = [meds[i] for i in self.rx_top[a]]
            if j:  # later notes of an admission are addenda
                return (f"ADDENDUM:\n \nDischarge medications were reviewed with the patient; "
                        f"{m[0]} was \"held\" at discharge, to be restarted by the PCP, ___.\n \n"
                        f"Pertinent Results:\n{results(a)}\n")
            complaint = CHIEF[cc[a]]
            icu = (f"The patient was transferred to the {ICU_UNITS[self.adm_unit[a]]} for closer "
                   "monitoring, and returned to the floor once stable.\n"
                   if self.adm_unit[a] >= 0 else "")
            hr, sbp, dbp, spo2 = vit[a]
            sections = {
                "Chief Complaint": complaint,
                "Major Surgical or Invasive Procedure":
                    PX[self.px_first[a]][2] if self.px_first[a] >= 0 else "None",
                "History of Present Illness":
                    f"{age[a]} y/o {word[a]} with a history of {t2.lower()}, {t3.lower()} who "
                    f"presents with {complaint.lower()}. Per the patient, \"it started "
                    f"{2 + a % 6} days ago, and it has been getting worse.\" In the ED, initial "
                    f"vitals were HR {hr}, BP {sbp}/{dbp}, SpO2 {spo2}% on RA.",
                "Past Medical History": f"- {t2}\n- {t3}",
                "Pertinent Results": f"ADMISSION LABS:\n{results(a)}",
                "Brief Hospital Course":
                    f"Mr./Ms. ___ is a {age[a]} y/o {word[a]} admitted with {t1.lower()}.\n{icu}"
                    f"# {t1}: Treated with {m[0]}, with improvement.\n"
                    f"# {t2}: Continued home regimen, stable.",
                "Discharge Medications": "\n".join(f"{i}. {x}" for i, x in enumerate(m, 1)),
                "Discharge Disposition": dispo[self.dloc[a]],
                "Discharge Diagnosis": f"Primary: {t1}\nSecondary: {t2}, {t3}",
                "Discharge Condition": "Mental Status: Clear and coherent.\nLevel of "
                    "Consciousness: Alert and interactive.\nActivity Status: Ambulatory - "
                    "Independent.",
                "Discharge Instructions":
                    f"Dear Mr./Ms. ___,\n \nIt was a pleasure caring for you at ___. You were "
                    f"admitted for \"{complaint.lower()}\". Please take your medications as "
                    "prescribed, and call your doctor if you develop fever, chest pain, or "
                    "shortness of breath.",
                "Followup Instructions": "___"}
            return (f" \nName:  ___                     Unit No:   ___\n \nAdmission Date:  ___"
                    f"              Discharge Date:   ___\n \nDate of Birth:  ___             "
                    f"Sex:   {sex[a]}\n \nService: "
                    f"{svc.get(SERVICES[self.service[a]], 'MEDICINE')}\n \nAllergies: \n"
                    f"{allergy[a % 3]}\n \nAttending: ___.\n"
                    + "".join(f" \n{k}:\n{v}\n" for k, v in sections.items()))

        def radiology(a, e):
            exam, tech, findings, impression = EXAMS[e]
            return (f"EXAMINATION:  {exam}\n \nINDICATION:  ___ year old {word[a]} with "
                    f"{DX[dx[a][0]][2].lower()}, {CHIEF[cc[a]].lower()}.  // Evaluate for "
                    f"\"interval change\".\n \nTECHNIQUE:  {tech}\n \nCOMPARISON:  ___\n \n"
                    f"FINDINGS: \n \n{findings}\n \nIMPRESSION: \n \n{impression}\n")

        self.note_rows = {}
        for kind, counts in (("DS", self.pick(3, A, [.8, .15, .05]) + 1),
                             ("RR", self.pick(6, A, [.3, .25, .2, .12, .08, .05]))):
            na = _rep(counts)
            N, pat = len(na), self.P[na]
            seq = _cumcount(pat) + 1
            if kind == "DS":  # written at discharge
                t = self.disch[na]
                text = [discharge(a, k) for a, k in zip(na.tolist(), _cumcount(na).tolist())]
                store = t + r.integers(HOUR, 2 * DAY, N)
            else:
                seq += r.integers(0, 30, self.n)[pat]  # MIMIC-IV-Note RR numbering has gaps
                t = self.during(na) // MIN * MIN
                # An admission's 2nd (5th, ...) report is a second study ordered with the one
                # before it (a CT chest with a CT abdomen): the same charttime, as
                # MIMIC-IV-Note has. No draw: every other value stays as it was.
                k = _cumcount(na)
                same = np.flatnonzero((k > 0) & (k % 3 == 1))
                t[same] = t[same - 1]
                exam = self.pick(len(EXAMS), N)
                text = [radiology(a, e) for a, e in zip(na.tolist(), exam.tolist())]
                store = t + r.integers(HOUR // 2, 8 * HOUR, N)
            self.note_rows[kind] = {"note_id": _join(self.sid[pat], kind, seq),
                                    "subject_id": self.sid[pat],
                                    "exam": exam if kind == "RR" else None}
            self.emit("note/discharge" if kind == "DS" else "note/radiology", {
                "note_id": _join(self.sid[pat], kind, seq), **self.ids(na), "note_type": kind,
                "note_seq": seq, "charttime": _ts(t), "storetime": _ts(store),
                "text": pl.Series(text, dtype=pl.String)})

