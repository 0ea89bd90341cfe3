"""icu/: chartevents (with the planted blood-pressure signal), outputs, datetime and procedure
events, inputs and ingredients. Methods of the generator; `generate` calls them in order."""
from __future__ import annotations

import numpy as np
import polars as pl

from .catalog import DAY, HOUR, INPUTS, MIN, SIGNAL_SBP_DROP, UNIT
from .common import Generator, _cumcount, _ids, _num, _rep, _text_num, _ts, _voc


class IcuTables(Generator):
    # ---------------------------------------------------------------- ICU event tables
    def chart(self):
        r, S = self.r, self.S
        ts = _rep(np.maximum((self.sout - self.sin) // HOUR, 1))  # a charting round an hour
        k = _cumcount(ts)
        T = len(ts)
        tt = self.sin_m[ts] + k * HOUR + r.integers(0, 10, T) * MIN
        self.art, self.vent, self.cvc = (r.random(S) < p for p in (0.35, 0.35, 0.3))
        self.stay_w = np.round(np.clip(self.weight[self.P[self.sa]] + r.normal(0, 2, S), 40, 180),
                               1)
        num, txt = [], []

        def add(itemid, sel, v, dec=0):
            idx = np.flatnonzero(sel)
            num.append((idx, itemid, np.round(v[idx], dec), dec == 0))

        def walk(mean, s_stay, s_tick, lo, hi):  # a per-stay level plus hourly noise
            return np.clip(r.normal(mean, s_stay, S)[ts] + r.normal(0, s_tick, T), lo, hi)

        every = lambda h, phase=0: k % h == phase  # noqa: E731
        for itemid, args in ((220045, (85, 10, 6, 60, 120)), (220210, (18, 3, 3, 10, 35)),
                             (220277, (96, 1.5, 1.5, 88, 100))):
            add(itemid, np.ones(T, bool), walk(*args))
        sbp = walk(120, 14, 10, 80, 190)
        # planted signal (module docstring): ICU deaths lose pressure over the first 24 h
        sbp = sbp - SIGNAL_SBP_DROP * self.dies_in_icu[ts] * np.minimum(
            (tt - self.sin_m[ts]) / (24 * HOUR), 1.0)
        dbp = np.clip(sbp * 0.55 + r.normal(0, 6, T), 40, 110)
        art = self.art[ts]  # arterial lines replace hourly cuff pressures
        for ids, sel in (((220179, 220180, 220181), ~art | every(4)),
                         ((220050, 220051, 220052), art)):
            for itemid, v in zip(ids, (sbp, dbp, (sbp + 2 * dbp) / 3)):
                add(itemid, sel, v)
        temp = walk(98.6, 0.7, 0.5, 96, 103)
        celsius = r.random(T) < 0.2
        add(223761, every(4) & ~celsius, temp, 1)
        add(223762, every(4) & celsius, (temp - 32) / 1.8, 1)
        for itemid, top in ((220739, 4), (223900, 5), (223901, 6)):
            add(itemid, every(4), walk(top - 0.5, 1, 0.5, 1, top))
        add(220621, every(6, 2), walk(140, 30, 20, 60, 300))
        add(223835, every(4, 1) & self.vent[ts], walk(45, 10, 5, 21, 100))
        add(226512, k == 0, self.stay_w[ts], 1)
        add(224639, every(24, 12), np.maximum(self.stay_w[ts] + r.normal(0, 1.5, T), 40), 1)
        height = self.height[self.P[self.sa]][ts]
        add(226730, k == 0, height)
        add(226707, k == 0, height / 2.54)
        for itemid, vocab, p in (
                (220048, ["SR (Sinus Rhythm)", "ST (Sinus Tachycardia)", "AF (Atrial Fibrillation)",
                          "SB (Sinus Bradycardia)"], [.6, .2, .12, .08]),
                (224650, ["None", "PVC's", "PAC's"], [.8, .15, .05])):
            idx = np.flatnonzero(every(4))
            txt.append((idx, itemid, _voc(vocab, self.pick(len(vocab), len(idx), p))))
        parts = num + txt
        rows, sizes = np.concatenate([p[0] for p in parts]), [len(p[0]) for p in parts]
        vn = np.concatenate([p[2] for p in num])
        t = tt[rows]
        self.emit("icu/chartevents", {
            **self.stay_ids(ts[rows]), "charttime": _ts(t),
            "storetime": _ts(t + r.integers(0, 45, len(t)) * MIN),
            "itemid": np.repeat([p[1] for p in parts], sizes),
            "value": pl.concat([_text_num(vn, np.repeat([p[3] for p in num], sizes[:len(num)]))]
                               + [p[2] for p in txt]),
            "valuenum": pl.concat([pl.Series(vn), pl.repeat(None, len(t) - len(vn),
                                                            dtype=pl.Float64, eager=True)]),
            "valueuom": _voc([UNIT[p[1]] for p in parts], _rep(sizes)), "warning": 0})

    def icu_events(self):
        r, S, sin, dur = self.r, self.S, self.sin_m, self.sout - self.sin_m
        # Outputs every 2 h: Foley for catheterised stays, voids (4-hourly) otherwise.
        os_ = _rep(np.maximum(dur // (2 * HOUR), 1))
        ok = _cumcount(os_)
        foley = (r.random(S) < 0.7)[os_]
        tube = (r.random(S) < 0.1)[os_] & (ok % 2 == 1)
        keep = np.r_[np.flatnonzero(foley | (ok % 2 == 0)), np.flatnonzero(tube)]
        item = np.where(foley, 0, 1)[keep]
        item[len(keep) - tube.sum():] = 2
        ot = sin[os_][keep] + ok[keep] * 2 * HOUR + r.integers(1, 60, len(keep)) * MIN
        self.emit("icu/outputevents", {
            **self.stay_ids(os_[keep]), "charttime": _ts(ot),
            "storetime": _ts(ot + r.integers(-20, 30, len(keep)) * MIN),
            "itemid": np.array([226559, 226560, 226588])[item], "valueuom": "ml",
            "value": np.choose(item, [r.integers(lo, hi, len(keep))
                                      for lo, hi in ((20, 300), (100, 600), (10, 200))])})
        # Line dates: the day a line went in, charted during the stay.
        specs = [(224288, self.art), (224290, self.art & (dur > 3 * DAY)), (224280, self.cvc),
                 (225754, r.random(S) < 0.5)]
        st = np.concatenate([np.flatnonzero(m) for _, m in specs])
        dt = sin[st] + (dur[st] * self.u(0, 0.9, len(st))).astype(np.int64) // MIN * MIN + MIN
        self.emit("icu/datetimeevents", {
            **self.stay_ids(st), "charttime": _ts(dt),
            "storetime": _ts(dt + r.integers(0, 30, len(st)) * MIN),
            "itemid": np.repeat([i for i, _ in specs], [m.sum() for _, m in specs]),
            "value": _ts((dt - r.integers(0, 3, len(st)) * DAY) // DAY * DAY),
            "valueuom": "Date", "warning": 0})
        # Procedures: tasks (1 minute) and continuous processes (duration in minutes).
        specs = [(225459, r.random(S) < 0.6, "Imaging", [None], None),
                 (225402, r.random(S) < 0.4, "Procedures", [None], None),
                 (225792, self.vent, "Ventilation", [None], None),
                 (224263, self.cvc, "Invasive Lines", ["Left IJ", "Right IJ", "Right Subclavian"],
                  "Invasive Venous"),
                 (224277, r.random(S) < 0.5, "Peripheral Lines",
                  ["Left Antecubital", "Right Forearm", "Left Hand", None], "Peripheral")]
        st = np.concatenate([np.flatnonzero(s[1]) for s in specs])
        sp = _rep([s[1].sum() for s in specs])
        m = len(st)
        cont = sp >= 2
        start = sin[st] + (dur[st] * np.where(cont, self.u(0, .15, m), self.u(0, .95, m))
                           ).astype(np.int64) // MIN * MIN + MIN
        end = np.where(cont, start + ((self.sout[st] - start) * self.u(.4, .95, m)
                                      ).astype(np.int64) // MIN * MIN, start + MIN)
        minutes = np.where(cont, (end - start) // MIN, 1)
        loc = pl.concat([_voc(s[3], self.pick(len(s[3]), s[1].sum())) for s in specs])
        oid = _ids(r, 1, 9_999_999, m)
        self.emit("icu/procedureevents", {
            **self.stay_ids(st), "starttime": _ts(start), "endtime": _ts(end),
            "storetime": _ts(end + r.integers(0, 60, m) * MIN),
            "itemid": np.array([s[0] for s in specs])[sp], "value": minutes,
            "valueuom": _voc(["None", "min"], cont.astype(int)), "location": loc,
            "locationcategory": _voc([s[4] for s in specs], sp), "orderid": oid,
            "linkorderid": oid, "ordercategoryname": _voc([s[2] for s in specs], sp),
            "ordercategorydescription": _voc(["Task", "ContinuousProcess"], cont.astype(int)),
            "patientweight": self.stay_w[st], "isopenbag": cont.astype(np.int64),
            "continueinnextdept": 0, "statusdescription": "FinishedRunning",
            "ORIGINALAMOUNT": minutes, "ORIGINALRATE": cont.astype(np.int64)})
        self.inputs(dur)

    def inputs(self, dur):
        r, S = self.r, self.S
        spec = list(zip(*INPUTS))
        col = lambda i: np.array(spec[i])[it]  # noqa: E731
        st = _rep(r.integers(2, 9, S))
        m = len(st)
        it = self.pick(len(INPUTS), m, [.2, .2, .15, .12, .1, .13, .1])
        cont = col(2) != ""
        start = self.sin_m[st] + (dur[st] * self.u(0, .8, m)).astype(np.int64) // MIN * MIN + MIN
        span = np.where(cont, self.u(1, 12, m) * HOUR, self.u(1, 30, m) * MIN).astype(np.int64)
        end = np.minimum(start + span // MIN * MIN, self.sout[st] // MIN * MIN)
        hours = (end - start) / HOUR
        lo, hi = col(3).astype(float), col(4).astype(float)
        rate = np.round(lo + (hi - lo) * r.random(m), 3)
        per_kg = col(2) == "mcg/kg/min"
        amount = np.round(np.where(cont, np.where(per_kg, rate * self.stay_w[st] * hours * 0.06,
                                                  rate * hours), col(5).astype(float)), 3)
        oid = _ids(r, 1, 9_999_999, m)
        common = {**self.stay_ids(st), "starttime": _ts(start), "endtime": _ts(end),
                  "storetime": _ts(end + r.integers(-30, 30, m) * MIN), "orderid": oid,
                  "linkorderid": oid, "statusdescription": "FinishedRunning"}
        self.emit("icu/inputevents", {
            **common, "itemid": col(0).astype(np.int64), "amount": amount,
            "amountuom": _voc(spec[1], it), "rate": _num(rate, ~cont),
            "rateuom": _voc(spec[2], it), "ordercategoryname": _voc(spec[6], it),
            "secondaryordercategoryname": _voc(spec[7], it),
            "ordercomponenttypedescription": "Main order parameter",
            "ordercategorydescription": _voc(spec[8], it), "patientweight": self.stay_w[st],
            "totalamount": col(9).astype(np.int64), "totalamountuom": "ml", "isopenbag": 0,
            "continueinnextdept": 0, "originalamount": amount,
            "originalrate": np.where(cont, rate, 0)})
        # Each order's carrier volume is its "Water" ingredient, as MIMIC-IV splits it.
        water = np.round(np.where(col(1) == "ml", amount,
                                  np.where(cont, hours * self.u(5, 20, m), 100)), 3)
        wrate = np.round(water / np.maximum(hours, 1 / 60), 3)
        self.emit("icu/ingredientevents", {
            **common, "itemid": 220490, "amount": water, "amountuom": "ml",
            "rate": _num(wrate, ~cont), "rateuom": _voc([None, "mL/hour"], cont.astype(int)),
            "originalamount": 0, "originalrate": np.where(cont, wrate, 0)})

