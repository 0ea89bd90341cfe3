"""hosp/ (and icu/icustays): patients, admissions, transfers and ICU stays, labs (with the
planted lactate signal), microbiology, billing codes, medications and orders, omr, and the
d_* dictionaries. Methods of the generator; `generate` calls them in a fixed order."""
from __future__ import annotations

import numpy as np
import polars as pl

from .catalog import (ABX, DAY, DRG, DRUGS, DX, D_ITEMS, HCPCS, HEADERS, HOUR, ICU_UNITS, LABS,
                      MICRO, MIN, ORGS, PANEL_P, PX, SERVICES, SIGNAL_LACTATE,
                      SIGNAL_LACTATE_NORMAL, SIGNAL_LACTATE_SD, TEXT_LABS, WARDS)
from .common import (Generator, _cumcount, _date, _ids, _join, _null, _num, _rep, _text_num, _ts,
                     _voc)


class HospTables(Generator):
    # ---------------------------------------------------------------- patients, admissions
    def admissions(self):
        r, n = self.r, self.n
        self.sid = 10_000_000 + np.cumsum(r.integers(1, max(2, min(1000, 9_000_000 // n)), n))
        self.female = r.random(n) < 0.52
        age, ayear = r.integers(18, 92, n), r.integers(2110, 2201, n)
        self.agroup = self.pick(4, n)  # also the patient's ICD era (older groups: ICD-9)
        self.height = np.where(self.female, 162, 176) + r.normal(0, 7, n)
        self.weight = np.clip(r.normal(np.where(self.female, 72, 86), 16), 40, 180)
        na = self.pick(4, n, [.45, .3, .15, .1]) + 1
        self.P = P = _rep(na)
        self.A = A = len(P)
        k = _cumcount(P)
        los = (np.clip(r.lognormal(np.log(4), 0.7, A), 1, 20) * DAY).astype(np.int64) // MIN * MIN
        gap = (np.where(k == 0, self.u(0, 730, A), 7 + r.exponential(180, A)) * DAY)
        seg = gap.astype(np.int64) + los
        before = np.cumsum(seg) - seg  # admissions follow each other, a gap apart
        year0 = (ayear - 1970).astype("datetime64[Y]").astype("datetime64[s]").astype(np.int64)
        self.admit = (year0[P] + before - np.repeat(before[k == 0], na) + gap.astype(np.int64)
                      ) // MIN * MIN
        self.disch = self.admit + los
        self.first_admit = self.admit[k == 0]
        self.age_adm = age[P] + (self.admit - year0[P]) // (365 * DAY)
        last = np.r_[P[1:] != P[:-1], True]
        self.died = last & (r.random(A) < self.death_rate)
        later = np.where(r.random(n) < 0.15, self.disch[last] + r.integers(1, 365, n) * DAY, -1)
        dod = np.where(self.died[last], self.disch[last], later)
        self.emit("hosp/patients", {
            "subject_id": self.sid, "gender": _voc("MF", self.female.astype(int)),
            "anchor_age": age, "anchor_year": ayear, "anchor_year_group": _voc(
                ["2008 - 2010", "2011 - 2013", "2014 - 2016", "2017 - 2019"], self.agroup),
            "dod": _date(dod, dod < 0)})
        self.hadm = _ids(r, 20_000_000, 10_000_000, A)
        self.has_ed = r.random(A) < 0.5
        self.edreg = self.admit - r.integers(60, 600, A) * MIN
        self.edout = self.admit + r.integers(0, 180, A) * MIN
        types = ["EW EMER.", "EU OBSERVATION", "OBSERVATION ADMIT", "URGENT", "ELECTIVE",
                 "SURGICAL SAME DAY ADMISSION", "DIRECT EMER.", "DIRECT OBSERVATION"]
        atype = np.where(self.has_ed, self.pick(4, A, [.6, .15, .15, .1]), 3 + self.pick(5, A))
        locs = ["EMERGENCY ROOM", "PHYSICIAN REFERRAL", "TRANSFER FROM HOSPITAL",
                "CLINIC REFERRAL", "PROCEDURE SITE", "WALK-IN/SELF REFERRAL"]
        dlocs = ["HOME", "HOME HEALTH CARE", "SKILLED NURSING FACILITY", "REHAB",
                 "CHRONIC/LONG TERM ACUTE CARE", "HOSPICE", "AGAINST ADVICE", None, "DIED"]
        self.dloc = np.where(self.died, 8, self.pick(8, A, [.4, .25, .15, .06, .04, .03, .02,
                                                           .05]))
        per_patient = [(["Medicare", "Medicaid", "Other"], None), (["ENGLISH", "?"], [.9, .1]),
                       (["MARRIED", "SINGLE", "WIDOWED", "DIVORCED", None], [.4, .3, .12, .1, .08]),
                       (["WHITE", "BLACK/AFRICAN AMERICAN", "HISPANIC/LATINO - PUERTO RICAN",
                         "ASIAN - CHINESE", "OTHER", "UNKNOWN"], [.6, .15, .07, .05, .06, .07])]
        insurance, language, marital, race = (_voc(v, self.pick(len(v), n, p)[P])
                                              for v, p in per_patient)
        self.emit("hosp/admissions", {
            **self.ids(np.arange(A)), "admittime": _ts(self.admit),
            "dischtime": _ts(self.disch), "deathtime": _ts(self.disch, ~self.died),
            "admission_type": _voc(types, atype), "admit_provider_id": self.prov(A, 0.02),
            "admission_location": _voc(locs, np.where(self.has_ed, 0, 1 + self.pick(5, A))),
            "discharge_location": _voc(dlocs, self.dloc), "insurance": insurance,
            "language": language, "marital_status": marital, "race": race,
            "edregtime": _ts(self.edreg, ~self.has_ed), "edouttime": _ts(self.edout, ~self.has_ed),
            "hospital_expire_flag": self.died.astype(np.int64)})

    # ---------------------------------------------------------------- ADT: transfers, stays
    def adt(self):
        r, A = self.r, self.A
        t0 = np.where(self.has_ed, self.edout, self.admit)  # ward/ICU care starts after the ED
        nicu = self.pick(3, A, [.4, .5, .1])
        self.sa = sa = _rep(nicu)
        S = len(sa)
        sk = _cumcount(sa)
        width = (self.disch - t0)[sa] / nicu[sa]  # stay k lies in the k-th slice of the admission
        a = np.where((sk == 0) & (r.random(S) < 0.4), 0.0, self.u(0, 0.35, S))
        sin = (t0[sa] + width * (sk + a)).astype(np.int64)
        sout = (sin + width * (1 - a) * self.u(0.35, 0.95, S)).astype(np.int64)
        last = np.r_[sa[1:] != sa[:-1], True] if S else np.zeros(0, bool)
        self.dies_in_icu = last & self.died[sa] & (r.random(S) < 0.6)  # death at outtime
        sout = np.where(self.dies_in_icu, self.disch[sa], sout)
        nu = len(ICU_UNITS)
        first_u = self.pick(nu, S, [.22, .2, .17, .17, .1, .1, .02, .01, .01])
        split = r.random(S) < 0.12  # moved to another unit mid-stay
        last_u = np.where(split, (first_u + r.integers(1, nu, S)) % nu, first_u)
        mid = (sin + sout) // 2
        prev_end = np.where(sk == 0, t0[sa], np.r_[0, sout[:-1]])
        tail = t0.copy()
        tail[sa[last]] = sout[last]
        ed, wb, wt = np.flatnonzero(self.has_ed), sin - prev_end >= MIN, self.disch - tail >= MIN
        wards = lambda m: 2 + nu + self.pick(len(WARDS), m)  # noqa: E731
        none = lambda m: np.full(m, -1)  # noqa: E731
        segs = [  # (admission, order, intime, outtime, unit, stay)
            (ed, 0 * ed, self.edreg[ed], self.edout[ed], 0 * ed, none(len(ed))),
            (sa[wb], 1 + 3 * sk[wb], prev_end[wb], sin[wb], wards(wb.sum()), none(wb.sum())),
            (sa, 2 + 3 * sk, sin, np.where(split, mid, sout), 2 + first_u, np.arange(S)),
            (sa[split], 3 + 3 * sk[split], mid[split], sout[split], 2 + last_u[split],
             none(split.sum())),
            (np.flatnonzero(wt), np.full(wt.sum(), 20), tail[wt], self.disch[wt], wards(wt.sum()),
             none(wt.sum())),
            (np.arange(A), np.full(A, 21), self.disch, none(A), np.ones(A, int), none(A))]
        cols = [np.concatenate(c) for c in zip(*segs)]
        o = np.lexsort((cols[1], cols[0]))
        adm, order, tin, tout, unit, stay = (c[o] for c in cols)
        care = np.flatnonzero((order > 0) & (order < 21))
        etype = np.where(order == 0, 0, np.where(order == 21, 3, 2))
        etype[care[np.r_[True, adm[care][1:] != adm[care][:-1]]]] = 1  # first unit: "admit"
        tid = _ids(r, 30_000_000, 10_000_000, len(adm))
        self.stay_id = np.zeros(S, np.int64)
        self.stay_id[stay[stay >= 0]] = tid[stay >= 0]  # MIMIC's stay_id is a transfer_id
        self.emit("hosp/transfers", {
            **self.ids(adm), "transfer_id": tid,
            "eventtype": _voc(["ED", "admit", "transfer", "discharge"], etype),
            "careunit": _voc(["Emergency Department", None] + ICU_UNITS + WARDS, unit),
            "intime": _ts(tin), "outtime": _ts(tout, tout < 0)})
        self.sin, self.sout, self.S = sin, sout, S
        self.sin_m = (sin + MIN - 1) // MIN * MIN  # stays are to the second, charting to the min
        stays = self.stay_ids(np.arange(S))
        del stays["caregiver_id"]
        self.emit("icu/icustays", {
            **stays, "first_careunit": _voc(ICU_UNITS, first_u),
            "last_careunit": _voc(ICU_UNITS, last_u), "intime": _ts(sin), "outtime": _ts(sout),
            "los": (sout - sin) / DAY})
        self.adm_unit = np.full(A, -1)
        self.adm_unit[sa[::-1]] = first_u[::-1]  # the admission's first ICU, for notes
        # Services: the admitting service and, for a quarter, a later change of service.
        sv = _rep(1 + (r.random(A) < 0.25))
        j = _cumcount(sv)
        self.service = self.pick(len(SERVICES), A)
        other = (self.service + r.integers(1, len(SERVICES), A)) % len(SERVICES)
        self.emit("hosp/services", {
            **self.ids(sv), "transfertime": _ts(np.where(j == 0, self.admit[sv],
                                                         self.during(sv, .2, .8))),
            "prev_service": _voc(SERVICES + [None], np.where(j == 0, -1, self.service[sv])),
            "curr_service": _voc(SERVICES, np.where(j == 0, self.service[sv], other[sv]))})

    # ---------------------------------------------------------------- hosp measurements
    def labs(self):
        r, A, n = self.r, self.A, self.n
        da = _rep(-(-(self.disch - self.admit) // DAY))  # a morning draw per hospital day...
        dk = _cumcount(da)
        dt = self.admit[da] + dk * DAY + r.integers(30, 240, len(da)) * MIN
        ok = dt < self.disch[da]
        da, dk, dt = da[ok], dk[ok], dt[ok]
        op = _rep(r.integers(0, 4, n))  # ...plus outpatient draws before the first admission
        ot = self.first_admit[op] - r.integers(5, 400, len(op)) * DAY + r.integers(
            420, 720, len(op)) * MIN
        adm, pat, t = np.r_[da, np.full(len(op), -1)], np.r_[self.P[da], op], np.r_[dt, ot]
        first = np.r_[dk == 0, np.zeros(len(op), bool)] & (adm >= 0)
        D = len(t)
        panels = {p: r.random(D) < q for p, q in PANEL_P.items()}
        panels["bg"] |= np.r_[self.adm_unit[da] >= 0, np.zeros(len(op), bool)] & (
            r.random(D) < 0.3)
        panels["ua"] &= adm >= 0
        spec = _ids(r, 1_000_000, 98_000_000, D * len(PANEL_P)).reshape(D, -1)
        level = r.normal(0, 1, (A + n, len(LABS)))  # shared within an admission (or outpatient)
        group = np.where(adm >= 0, adm, A + pat)
        draws, vals = [], []
        self.first_labs = {}
        for j, (itemid, *_, med, sd, dec, panel) in enumerate(LABS):
            d = np.flatnonzero(panels[panel])
            z = 0.8 * level[group[d], j] + 0.6 * r.normal(0, 1, len(d))
            vals.append(np.round(float(med) * np.exp(float(sd) * z), int(dec)))
            draws.append(d)
            self.first_labs[int(itemid)] = np.full(A, np.nan)
            self.first_labs[int(itemid)][adm[d][first[d]]] = vals[-1][first[d]]
        ua = np.flatnonzero(panels["ua"])
        tvals = [self.pick(len(x[3].split(",")), len(ua)) for x in TEXT_LABS]
        sizes = [len(d) for d in draws] + [len(ua)] * len(TEXT_LABS)
        it = _rep(sizes)
        d = np.concatenate(draws + [ua] * len(TEXT_LABS))
        v = np.concatenate(vals)
        lo, hi = (np.array([float(x[i]) for x in LABS])[it[:len(v)]] for i in (5, 6))
        text = pl.concat([_voc(x[3].split(","), i) for x, i in zip(TEXT_LABS, tvals)])
        flag = np.r_[(v < lo) | (v > hi), text.to_numpy() != "NEG"]
        N, nt = len(d), len(d) - len(v)
        fnull = pl.repeat(None, nt, dtype=pl.Float64, eager=True)
        hem = np.r_[(it[:len(v)] == 1) & (r.random(len(v)) < 0.03), np.zeros(nt, bool)]
        panel_of = [list(PANEL_P).index(x[10]) for x in LABS] + [5] * len(TEXT_LABS)
        o = np.lexsort((it, d))  # a draw's rows together, as MIMIC orders by labevent_id
        cols = {
            "subject_id": self.sid[pat[d]],
            "hadm_id": _num(self.hadm[np.maximum(adm[d], 0)], adm[d] < 0),
            "specimen_id": spec[d, np.array(panel_of)[it]],
            "itemid": np.array([int(x[0]) for x in LABS + TEXT_LABS])[it],
            "order_provider_id": self.prov(D, 0.7).gather(d), "charttime": _ts(t[d]),
            "storetime": _ts(t[d] + r.integers(20, 180, N) * MIN),
            "value": pl.concat([_text_num(v, np.array([x[9] == "0" for x in LABS])[
                it[:len(v)]]), text]),
            "valuenum": pl.concat([pl.Series(v), fnull]),
            "valueuom": _voc([x[4] for x in LABS] + [x[2] for x in TEXT_LABS], it),
            "ref_range_lower": pl.concat([pl.Series(lo), fnull]),
            "ref_range_upper": pl.concat([pl.Series(hi), fnull]),
            "flag": _voc([None, "abnormal"], flag.astype(int)),
            "priority": _voc(["ROUTINE", "STAT", None], self.pick(3, D, [.6, .3, .1])).gather(d),
            "comments": _voc([None, "HEMOLYSIS FALSELY ELEVATES K."], hem.astype(int))}
        cols = {c: pl.Series(s[o]) if isinstance(s, np.ndarray) else s[o]
                for c, s in cols.items()}
        extra = self.icu_lactate()
        cols = {c: pl.concat([s, extra[c].cast(s.dtype)]) for c, s in cols.items()}
        self.emit("hosp/labevents", {"labevent_id": np.arange(1, len(cols["itemid"]) + 1),
                                     **cols})

    def icu_lactate(self) -> dict:
        """The planted signal's lactates (module docstring): a blood gas every 4 h over the
        first 24 h of every ICU stay, rising for ICU deaths; drawn from `signal_rng`."""
        g, S = self.signal_rng, self.S
        st = np.repeat(np.arange(S), 6)
        h = np.tile(np.arange(0, 24, 4), S)
        t = self.sin_m[st] + h * HOUR + g.integers(5, 50, len(st)) * MIN
        ok = t < self.sout[st]
        st, h, t = st[ok], h[ok], t[ok]
        lo, hi = SIGNAL_LACTATE
        level = SIGNAL_LACTATE_NORMAL * np.exp(SIGNAL_LACTATE_SD * g.normal(0, 1, S))
        med = np.where(self.dies_in_icu[st], lo + (hi - lo) * h / 24, level[st])
        v = np.round(med * np.exp(SIGNAL_LACTATE_SD * g.normal(0, 1, len(st))), 1)
        n = len(st)
        adm = self.sa[st]
        return {"subject_id": pl.Series(self.sid[self.P[adm]]),
                "hadm_id": pl.Series(self.hadm[adm]),
                "specimen_id": pl.Series(100_000_000 + np.arange(n)),
                "itemid": pl.Series(np.full(n, 50813)),
                "order_provider_id": pl.Series([None] * n, dtype=pl.String),
                "charttime": _ts(t), "storetime": _ts(t + 20 * MIN),
                "value": pl.Series(v).cast(pl.String), "valuenum": pl.Series(v),
                "valueuom": pl.Series(["mmol/L"] * n),
                "ref_range_lower": pl.Series(np.full(n, 0.5)),
                "ref_range_upper": pl.Series(np.full(n, 2.0)),
                "flag": _voc([None, "abnormal"], (v > 2.0).astype(int)),
                "priority": pl.Series(["STAT"] * n),
                "comments": pl.Series([None] * n, dtype=pl.String)}

    def micro(self):
        r, A = self.r, self.A
        ma = _rep(self.pick(4, A, [.4, .3, .2, .1]))
        M = len(ma)
        tt = list(zip(*MICRO))
        ti = self.pick(len(MICRO), M, [.35, .3, .15, .12, .08])
        has_org = r.random(M) < np.array(tt[4], float)[ti]
        # A positive culture: the organism's row, then one row per antibiotic tested.
        sp = _rep(np.where(has_org, 1 + r.integers(3, len(ABX) + 1, M), 1))
        j = _cumcount(sp)
        R = len(sp)
        t = self.during(ma, 0, 0.9) // MIN * MIN
        day = t // DAY * DAY
        stored = day + r.integers(1, 4, M) * DAY
        org = self.pick(len(ORGS), M)[sp]
        ab, no_ab, no_org = np.maximum(j - 1, 0), j == 0, ~has_org[sp]
        interp = np.where(no_ab, 3, self.pick(3, R, [.8, .15, .05]))
        dil = np.where(interp == 0, np.array([a[2] for a in ABX])[ab],
                       np.where(interp == 1, 16, 8)).astype(float)
        dtext = pl.Series(np.array(["<=", "=>", "", ""])[interp]) + pl.Series(dil).cast(
            pl.String).str.replace(r"\.0$", "")
        cmt = np.where(no_org, ti[sp], 5)  # negative cultures carry only a comment
        cmt = np.where((cmt == 1) & (r.random(M) < 0.5)[sp], 0, cmt)  # "NO GROWTH." urines
        self.emit("hosp/microbiologyevents", {
            "microevent_id": np.arange(1, R + 1), **self.ids(ma[sp]),
            "micro_specimen_id": _ids(r, 1_000_000, 8_000_000, M)[sp],
            "order_provider_id": self.prov(M, 0.6).gather(sp), "chartdate": _ts(day[sp]),
            "charttime": _ts(t[sp], (r.random(M) < 0.1)[sp]),
            "spec_itemid": np.array(tt[0], np.int64)[ti][sp], "spec_type_desc": _voc(tt[1], ti[sp]),
            "test_seq": 1, "storedate": _ts(stored[sp]),
            "storetime": _ts(stored[sp] + r.integers(360, 1080, M)[sp] * MIN),
            "test_itemid": np.array(tt[2], np.int64)[ti][sp], "test_name": _voc(tt[3], ti[sp]),
            "org_itemid": _num(np.array([o[0] for o in ORGS])[org], no_org),
            "org_name": _voc([o[1] for o in ORGS] + [None], np.where(no_org, -1, org)),
            "isolate_num": _num(np.ones(R, np.int64), no_org),
            "quantity": _voc([None, ">100,000 CFU/mL"], (~no_org & (ti[sp] == 1)).astype(int)),
            "ab_itemid": _num(np.array([a[0] for a in ABX])[ab], no_ab),
            "ab_name": _voc([a[1] for a in ABX] + [None], np.where(no_ab, -1, ab)),
            "dilution_text": _null(dtext, no_ab), "dilution_comparison": _voc(
                ["<=        ", "=>        ", "=         ", None], interp),
            "dilution_value": _num(dil, no_ab), "interpretation": _voc(["S", "R", "I", None],
                                                                       interp),
            "comments": _voc(list(tt[5]) + [None], cmt)})

    # ---------------------------------------------------------------- billing codes
    def _codes(self, table, k, v10):
        """Per admission, k distinct codes of its ICD version (k <= codes of that version)."""
        ver10 = np.array([c[1] == "10" for c in table])
        order = np.argsort(self.r.random((self.A, len(table))) + (ver10 != v10[:, None]), axis=1)
        rows = _rep(k)
        j = _cumcount(rows)
        code = order[rows, j]
        return rows, j, code, order, {"icd_code": _voc([c[0] for c in table], code),
                                      "icd_version": np.array([c[1] for c in table], int)[code]}

    def coding(self):
        r, A = self.r, self.A
        v10 = r.random(A) < np.array([.1, .35, .75, .95])[self.agroup[self.P]]
        rows, j, _, order, icd = self._codes(DX, r.integers(3, 14, A), v10)
        self.dx_top = order[:, :3]
        self.emit("hosp/diagnoses_icd", {**self.ids(rows), "seq_num": j + 1, **icd})
        rows, j, _, order, icd = self._codes(PX, self.pick(5, A, [.45, .25, .15, .1, .05]), v10)
        self.px_first = np.where(np.bincount(rows, minlength=A) > 0, order[:, 0], -1)
        self.emit("hosp/procedures_icd", {**self.ids(rows), "seq_num": j + 1,
                                          "chartdate": _date(self.during(rows)), **icd})
        rows = _rep(np.where(r.random(A) < 0.15, r.integers(1, 4, A), 0))
        code = self.pick(len(HCPCS), len(rows))
        self.emit("hosp/hcpcsevents", {
            **self.ids(rows), "chartdate": _date(self.during(rows)),
            "hcpcs_cd": _voc([h[0] for h in HCPCS], code), "seq_num": _cumcount(rows) + 1,
            "short_description": _voc([h[3] for h in HCPCS], code)})
        apr = np.flatnonzero(r.random(A) < 0.7)
        rows = np.r_[np.arange(A), apr]
        code = np.r_[self.pick(5, A), 5 + self.pick(5, len(apr))]
        hcfa = np.arange(len(rows)) < A  # HCFA DRGs carry no severity or mortality
        self.emit("hosp/drgcodes", {
            **self.ids(rows), **{c: _voc([d[i] for d in DRG], code) for i, c in
                                 enumerate(("drg_type", "drg_code", "description"))},
            "drg_severity": _num(r.integers(1, 5, len(rows)), hcfa),
            "drg_mortality": _num(r.integers(1, 5, len(rows)), hcfa)})

    # ---------------------------------------------------------------- medications, orders
    def meds(self):
        r, A = self.r, self.A
        ra = _rep(r.integers(3, 13, A))
        R = len(ra)
        drug = self.pick(len(DRUGS), R)
        self.rx_top = drug[_cumcount(ra) < 3].reshape(A, 3)
        start = self.during(ra, 0, .7) // HOUR * HOUR + HOUR
        stop = start + ((self.disch[ra] - start) * self.u(.2, 1, R)).astype(np.int64) // HOUR \
            * HOUR
        no_stop = r.random(R) < 0.05
        enter = start - r.integers(0, 7200, R)
        # POE: each prescription's order plus other orders, numbered per subject in time order.
        oa = _rep(r.integers(3, 11, A))
        kinds = [("Lab", None), ("General Care", "Vitals/Monitoring"), ("General Care", "Activity"),
                 ("IV therapy", "IV fluids"), ("Radiology", "General Xray"),
                 ("Nutrition", "Diet Order"), ("Consults", None), ("ADT orders", "Discharge"),
                 ("Medications", None)]
        kind = np.r_[np.full(R, 8), self.pick(8, len(oa))]
        otime = np.where(kind[R:] == 7, self.disch[oa] - r.integers(1800, 6 * HOUR, len(oa)),
                         self.during(oa))
        pa, pt = np.r_[ra, oa], np.r_[enter, otime]
        o = np.lexsort((pt, self.P[pa]))
        seq = np.empty(len(pa), np.int64)
        seq[o] = _cumcount(self.P[pa][o]) + 1
        poe_id = _join(self.sid[self.P[pa]], seq)
        self.poe = {"poe_id": poe_id[o], "poe_seq": seq[o], "subject_id": self.sid[self.P[pa]][o],
                    "kind": kind[o], "ordertime": pt[o]}
        self.emit("hosp/poe", {
            "poe_id": poe_id[o], "poe_seq": seq[o], **{c: v[o] for c, v in self.ids(pa).items()},
            "ordertime": _ts(pt[o]), "order_type": _voc([k[0] for k in kinds], kind[o]),
            "order_subtype": _voc([k[1] for k in kinds], kind[o]),
            "transaction_type": _voc(["New", "D/C", "Change"],
                                     self.pick(3, len(pa), [.85, .1, .05])),
            "order_provider_id": self.prov(len(pa), 0.05), "order_status": "Inactive"})
        D = list(zip(*DRUGS))
        dcol = lambda i: _voc(D[i], drug)  # noqa: E731
        pharm = _ids(r, 10_000_000, 89_000_000, R)
        common = {**self.ids(ra), "pharmacy_id": pharm, "poe_id": poe_id[:R],
                  "starttime": _ts(start), "stoptime": _ts(stop, no_stop), "route": dcol(10),
                  "doses_per_24_hrs": dcol(9)}
        self.emit("hosp/prescriptions", {
            **common, "poe_seq": seq[:R], "order_provider_id": self.prov(R, 0.1),
            "drug_type": "MAIN", "drug": dcol(0), **{c: dcol(i) for i, c in enumerate(
                ("formulary_drug_cd", "gsn", "ndc", "prod_strength", "dose_val_rx", "dose_unit_rx",
                 "form_val_disp", "form_unit_disp"), start=1)}})
        self.emit("hosp/pharmacy", {
            **common, "medication": dcol(0), "proc_type": _voc(
                ["Unit Dose", "IV Piggyback"], (dcol(10) == "IV").to_numpy().astype(int)),
            "status": _voc(["Discontinued", "Discontinued via patient discharge",
                            "Inactive (Due to a change order)"], self.pick(3, R, [.5, .35, .15])),
            "entertime": _ts(enter), "verifiedtime": _ts(enter + r.integers(0, 1800, R)),
            "frequency": dcol(11), "disp_sched": dcol(12), "duration_interval": "Ongoing",
            "expiration_value": 36, "expiration_unit": "Hours", "dispensation": _voc(
                ["Omnicell", "Floor Stock Item"], (r.random(R) < 0.15).astype(int))})
        # eMAR: administrations at the drug's frequency while the order runs (at most 6).
        every = 24 / np.array([float(x or 1) for x in D[9]])[drug] * HOUR
        end = np.where(no_stop, self.disch[ra], stop) - 20 * MIN
        ea = _rep(np.clip((end - start) // every + 1, 1, 6).astype(int))
        ct = start[ea] + (_cumcount(ea) * every[ea]).astype(np.int64) + r.integers(
            -20, 20, len(ea)) * MIN
        eseq = _cumcount(self.P[ra][ea]) + 1
        etxt = self.pick(4, len(ea), [.85, .08, .04, .03])  # drawn where the dict drew it
        self.emar = {"subject_id": self.sid[self.P[ra][ea]], "emar_seq": eseq,
                     "drug": drug[ea], "pharmacy_id": pharm[ea], "given": etxt != 1}
        self.emit("hosp/emar", {
            **self.ids(ra[ea]), "emar_id": _join(self.sid[self.P[ra][ea]], eseq),
            "emar_seq": eseq, "poe_id": poe_id.gather(ea), "pharmacy_id": pharm[ea],
            "charttime": _ts(ct), "medication": dcol(0).gather(ea),
            "event_txt": _voc(["Administered", "Not Given", "Flushed", "Confirmed"], etxt),
            "scheduletime": _ts((ct + 30 * MIN) // HOUR * HOUR),
            "storetime": _ts(ct + r.integers(0, 20, len(ea)) * MIN)})

    def omr(self):
        r = self.r
        vp = _rep(r.integers(0, 6, self.n))  # outpatient visits before the first admission
        V = len(vp)
        day = _date(self.first_admit[vp] - r.integers(1, 900, V) * DAY)
        kg = self.weight[vp] + r.normal(0, 1.5, V)
        sbp = np.clip(r.normal(125, 15, V), 90, 190).astype(np.int64)
        dbp = np.clip(sbp * 0.6 + r.normal(0, 6, V), 50, 110).astype(np.int64)
        hv = np.flatnonzero(r.random(V) < 0.4)
        every = np.arange(V)
        results = [("Blood Pressure", every, _join(sbp, dbp).str.replace("-", "/")),
                   ("Weight (Lbs)", every, pl.Series(np.round(kg * 2.2046, 1))),
                   ("BMI (kg/m2)", every, pl.Series(np.round(kg / (self.height[vp] / 100) ** 2,
                                                             1))),
                   ("Height (Inches)", hv, pl.Series(np.round(self.height[vp][hv] / 2.54, 1)))]
        rows = np.concatenate([x[1] for x in results])
        self.emit("hosp/omr", {
            "subject_id": self.sid[vp][rows], "chartdate": day.gather(rows), "seq_num": 1,
            "result_name": _voc([x[0] for x in results], _rep([len(x[1]) for x in results])),
            "result_value": pl.concat([x[2].cast(pl.String) for x in results])})

    # ---------------------------------------------------------------- dictionaries
    def dictionaries(self):
        def table(name, rows, cols, ints=()):
            d = list(zip(*rows))
            self.emit(name, {c: np.array(d[i], np.int64) if c in ints else _voc(d[i], np.arange(
                len(rows))) for i, c in enumerate(cols)})

        table("icu/d_items", D_ITEMS, HEADERS["icu/d_items"].split(",")[:7], ("itemid",))
        table("hosp/d_labitems", [x[:4] for x in LABS] + [
            (x[0], x[1], "Urine", "Hematology") for x in TEXT_LABS],
              ("itemid", "label", "fluid", "category"), ("itemid",))
        for name, codes in (("hosp/d_icd_diagnoses", DX), ("hosp/d_icd_procedures", PX)):
            table(name, codes, ("icd_code", "icd_version", "long_title"), ("icd_version",))
        table("hosp/d_hcpcs", HCPCS, HEADERS["hosp/d_hcpcs"].split(","))


