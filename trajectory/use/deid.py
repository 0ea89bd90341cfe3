"""De-identification for `export share` (docs/SHARE.md): keyed ids, per-patient time shifts,
an anchor (age, year, birth) that says nothing of the shift, age top-coding, and the rewrite
of one record (rare codes are generalised in deid_codes.py). Pure: bytes, ints, dicts and
numpy arrays in and out; `jobs/export_share.py` runs them.

Every secret-dependent value is HMAC-SHA256 under the user's key of a message
`"<kind>:<original id>"`, so ids of different kinds never share a hash input and nothing
without the key maps an original id to its copy (or back).

What an attacker must not learn from the copy is the shift: with it, a patient's admission
times join raw MIMIC-IV (issue 24: 97 of 100 demo patients re-identified when the birth time
moved with the shift). A published value may therefore depend on the offset only through the
patient's shifted times themselves; a value whose source is the same for every patient (birth
on 1 January, a window grid on multiples of the step) is recomputed on the copy's clock
instead of shifted (`anchor`, the windows in `rewrite`).
"""
from __future__ import annotations

import hashlib
import hmac
import re
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from .deid_codes import CodeMap

MIN_KEY_BYTES = 16  # 128 bits: below that a key could be guessed by trying keys against ids
ID_KINDS = ("subject_id", "hadm_id", "stay_id", "note_id")
WEEK = 7 * 86400
# Offsets are whole weeks, 1 to 260 (about 5 years) either way, never 0, uniform (a keyed
# hash mod 520). Whole weeks because MIMIC-IV keeps the real time of day and weekday through
# its own shift (its docs: "time of day, day of the week, and approximate seasonality were
# conserved"), and both have strong patterns (morning lab rounds, fewer elective admissions
# at weekends): an offset of whole days would leave the weekday pattern rotated by the
# offset mod 7, an offset of any seconds the daily one by the offset mod 24 h, each readable
# from a patient's own events. With whole weeks both are the source's exactly and tell
# nothing (offset mod 1 week is 0 for everyone). The day of the year moves (the season
# is not kept): its source distribution is nearly flat, so it tells little (measured in
# tests/test_deid_attacks.py: no better than guessing).
MAX_SHIFT_WEEKS = 260
YEAR = 31_556_952  # seconds in a mean Gregorian year (365.2425 days)
AGE_CAP = 90  # HIPAA Safe Harbor: ages over 89 are aggregated into one "90 or older"
DATETIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d")  # datetimeevents.value as MIMIC writes it
# tables whose texts carry ids, names or times: dropped with or without --keep-text
ID_TEXT_TABLES = ("radiology_detail", "discharge_detail", "poe_detail")
# the `flags` bits computed from an event's original code: `range` from its concept's
# plausible range, `outlier` from the code's own thresholds (trajectory/cleaning/flags.py BITS)
RANGE_BIT, OUTLIER_BIT = 1 << 0, 1 << 1
# What --keep-text keeps, said once for the CLI, the report and SHARE.md
KEEP_TEXT = ("MIMIC-IV's own texts verbatim (note bodies, text results, comments, dose "
             "ranges): whatever they hold stays, and dates inside them are not shifted, but "
             "for datetimeevents values (shifted, or dropped where they do not parse); user "
             "tables' texts and the detail tables' fields (ids, authors, times) are dropped "
             "even so")


def read_key(path) -> bytes:
    """The key file's bytes, without trailing line breaks (an editor's or `echo`'s newline
    does not change the key). A missing, empty or short file is an error."""
    if path is None or str(path) == "":
        raise ValueError("export share needs --key-file KEY: a file holding a secret of at "
                         f"least {MIN_KEY_BYTES} bytes (e.g. `openssl rand -hex 32 > KEY`)")
    p = Path(path).expanduser()
    try:
        key = p.read_bytes().rstrip(b"\r\n")
    except OSError as e:
        raise ValueError(f"--key-file {p}: cannot read it ({e.strerror})") from e
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"--key-file {p}: the key is {len(key)} bytes, expected at least "
                         f"{MIN_KEY_BYTES} (e.g. `openssl rand -hex 32 > {p}`)")
    return key


def _digest(key: bytes, kind: str, value) -> bytes:
    return hmac.digest(key, f"{kind}:{value}".encode(), hashlib.sha256)


def keyed_id(key: bytes, kind: str, value) -> int:
    """A positive int64: the first 8 bytes of HMAC-SHA256(key, "<kind>:<value>"), big-endian,
    top bit cleared. 0 is refused (ids are positive)."""
    h = int.from_bytes(_digest(key, kind, value)[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF
    if h == 0:
        raise ValueError(f"keyed hash of a {kind} is 0: choose another key")
    return h


def key_fingerprint(key: bytes) -> str:
    """Names the key without revealing it: two copies with the same fingerprint were made with
    the same key (so their ids link)."""
    return _digest(key, "fingerprint", "export share")[:8].hex()


def time_offset(key: bytes, subject_id: int) -> int:
    """The patient's shift in seconds: a whole number of weeks in [-260, -1] or [1, 260],
    from the keyed hash of "time_shift:<subject_id>" (uniform: 2^64 mod 520 is a bias of
    under 3e-17)."""
    u = int.from_bytes(_digest(key, "time_shift", subject_id)[:8], "big") % (2 * MAX_SHIFT_WEEKS)
    weeks = u - MAX_SHIFT_WEEKS if u < MAX_SHIFT_WEEKS else u - MAX_SHIFT_WEEKS + 1
    return weeks * WEEK


def hash_ids(key: bytes, kind: str, values) -> dict:
    """original -> keyed id for the distinct `values` (None and -1 are skipped); two
    originals that meet in one hash are an error."""
    out = {v: keyed_id(key, kind, v) for v in set(values) if v is not None and v != -1}
    if len(set(out.values())) != len(out):
        raise ValueError(f"keyed hash collision between two {kind}s: choose another key")
    return out


# ---- one record ---------------------------------------------------------------------------


def _value_order(value: np.ndarray) -> np.ndarray:
    """uint32 bits that sort as the float32 values, NaN (no value) last: the build's order."""
    u = np.ascontiguousarray(value, np.float32).view(np.uint32).astype(np.uint64)
    bits = np.where(u & 0x8000_0000, ~u & 0xFFFF_FFFF, u | 0x8000_0000)
    return np.where(np.isnan(value), 0xFFFF_FFFF, bits)


def _shift_datetime_text(text: str, offset: int) -> str | None:
    for fmt in DATETIME_FORMATS:
        try:
            t = datetime.strptime(text, fmt)
        except ValueError:
            continue
        return (t + timedelta(seconds=offset)).strftime(fmt)
    return None


def _times(section: dict, columns: tuple, offset: int) -> dict:
    return {c: ([None if t is None else t + offset for t in v] if c in columns else v)
            for c, v in section.items()}


ADMISSION_TIMES = ("admittime", "dischtime", "deathtime", "edregtime", "edouttime")
STAY_TIMES = ("intime", "outtime")


def year_of(t: int) -> int:
    """The calendar year of epoch seconds `t` (UTC, as MIMIC-IV's times are read)."""
    return int(np.datetime64(int(t), "s").astype("datetime64[Y]").astype(np.int64)) + 1970


def jan1(year: int) -> int:
    """Epoch seconds of 1 January `year`, 00:00."""
    return int(np.datetime64(year - 1970, "Y").astype("datetime64[s]").astype(np.int64))


def anchor(static: dict, last: int | None, offset: int) -> tuple[dict, dict]:
    """The copy's `static`: anchor_age, anchor_year and birth_time that tell nothing of the
    offset, ages top-coded at AGE_CAP, dod shifted. `last`: the patient's latest source time
    not placed at birth (events, admission, stay and death times), None if there is none.

    The source's birth is 1 January of anchor_year - anchor_age for every patient, so a
    birth shifted with the patient gives the offset modulo a year, and anchor_year moved by
    the offset in whole years pins it (issue 24). Here both are laid on the copy's own clock
    instead: anchor_year keeps its distance in calendar years to the patient's last time
    (`gap`, a source value), and birth is 1 January of anchor_year - anchor_age again. The
    published values are functions of the shifted last time and of source values, so they
    say nothing the times do not. MIMIC's rule (age = anchor_age + year - anchor_year) then
    gives at the last time the source's own age; at another time it may differ by one
    (calendar years fall elsewhere); the birth interval is kept to within a year.

    Top-coding: a patient 90 or older at the last time by that rule (or with anchor_age
    over 89, MIMIC's 91) gets anchor_age 90 in the year of the last time and a birth exactly
    90 years (of 365.2425 days) before it, so no rule gives more than 90 at any time; their
    earlier ages are understated by the same amount. The birth time of anyone else is moved
    the same way in the rare case that 1 January would put the last time more than 90 years
    after it (leap days)."""
    out = dict(static)
    if out.get("dod") is not None:
        out["dod"] += offset
    age, year = static.get("anchor_age"), static.get("anchor_year")
    counts = {"anchor_age_top_coded": 0, "birth_time_capped": 0}
    if age is None or year is None:  # no anchor: the build placed no birth either
        if out.get("birth_time") is not None:
            out["birth_time"] += offset
        return out, counts
    if last is None:
        # nothing but birth: no time the anchor could follow, and none the offset could
        # unshift; the year moves by the offset in whole years so that no source value
        # is kept as it is
        out["anchor_age"] = min(age, AGE_CAP)
        out["anchor_year"] = year + int(np.floor(offset / YEAR + 0.5))
        out["birth_time"] = jan1(out["anchor_year"] - out["anchor_age"])
        counts["anchor_age_top_coded"] = int(age > AGE_CAP - 1)
        return out, counts
    new_last, gap = last + offset, year_of(last) - year
    if max(age, age + gap) >= AGE_CAP:
        out["anchor_age"], out["anchor_year"] = AGE_CAP, year_of(new_last)
        out["birth_time"] = new_last - AGE_CAP * YEAR
        counts["anchor_age_top_coded"] = counts["birth_time_capped"] = 1
        return out, counts
    out["anchor_year"] = year_of(new_last) - gap
    birth = jan1(out["anchor_year"] - age)
    if new_last - birth > AGE_CAP * YEAR:
        birth, counts["birth_time_capped"] = new_last - AGE_CAP * YEAR, 1
    out["birth_time"] = birth
    return out, counts


def _shift(ev: dict, static: dict, adm: dict, stays: dict, offset: int) -> tuple[dict, dict]:
    """Shift the event times in place by the patient's offset, every event at the source's
    birth time (BIRTH, GENDER, a user table's `at = "static"`: whatever the build placed
    there) to the copy's birth; returns the copy's `static` and counts. Admission and stay
    times are shifted by the caller."""
    birth = static.get("birth_time")
    at_birth = (np.zeros(len(ev["time"]), bool) if birth is None else ev["time"] == birth)
    times = [ev["time"][~at_birth]] + [
        np.array([t for t in section.get(c, []) if t is not None], np.int64)
        for section, cols in ((adm, ADMISSION_TIMES), (stays, STAY_TIMES)) for c in cols]
    if static.get("dod") is not None:
        times.append(np.array([static["dod"]], np.int64))
    last = max((int(t.max()) for t in times if len(t)), default=None)
    new, counts = anchor(static, last, offset)
    ev["time"] = ev["time"] + offset
    if birth is not None:
        ev["time"][at_birth] = new["birth_time"]
    counts["events_at_birth"] = int(at_birth.sum())
    return new, counts


def rewrite(rec: dict, key: bytes, codes: CodeMap, keep_text: bool, sources: dict,
            grid) -> tuple[dict, dict]:
    """One decoded record (`record.unpack`) -> the copy's record (events as bytes, ready for
    `record.pack`) and what was changed, by rule. `sources`: source id -> table name;
    `grid`: the version's window settings (`grids.GridSpec`), with which the windows are
    made again on the copy's events."""
    from ..windows.grids import patient_windows
    from ..record import events_to_bytes

    sid = int(rec["subject_id"])
    new_sid = keyed_id(key, "subject_id", sid)
    offset = time_offset(key, sid)
    ev = {k: np.array(v) for k, v in rec["events"].items()}
    adm, stays = rec["admissions"], rec["stays"]
    hadm = hash_ids(key, "hadm_id", [*adm.get("hadm_id", []), *stays.get("hadm_id", []),
                                     *np.unique(ev["hadm_id"]).tolist(),
                                     *(w["id"] for w in rec["windows"] if w["kind"] != "stay")])
    stay = hash_ids(key, "stay_id", [*stays.get("stay_id", []),
                                     *np.unique(ev["stay_id"]).tolist(),
                                     *(w["id"] for w in rec["windows"] if w["kind"] == "stay")])
    static, moved = _shift(ev, rec["static"], adm, stays, offset)
    counts = {"events": len(ev["time"]), "text_dropped": {}, "datetime_text_shifted": 0,
              "datetime_text_unparsed_dropped": 0,
              "notes": len(set(rec["notes"]["note_id"])),  # `notes` lists details too
              **moved, **_recode(ev, codes)}
    ev["hadm_id"] = _map_ids(ev["hadm_id"], hadm)
    ev["stay_id"] = _map_ids(ev["stay_id"], stay)

    # texts: dropped, or kept with dates inside datetime values shifted like every time
    pool = list(rec["texts"])
    if keep_text:
        dt = (ev["source"] == _source_id(sources, "datetimeevents")) & (ev["text"] >= 0)
        shifted = {}
        for t in np.unique(ev["text"][dt]).tolist():
            s = _shift_datetime_text(pool[t], offset)
            shifted[t] = -1 if s is None else len(pool)
            if s is not None:
                pool.append(s)
        lut = np.array([shifted.get(t, t) for t in range(len(rec["texts"]))] or [-1], np.int64)
        n_ok = int((lut[ev["text"][dt]] >= 0).sum())
        counts["datetime_text_shifted"] = n_ok
        counts["datetime_text_unparsed_dropped"] = int(dt.sum()) - n_ok
        ev["text"] = np.where(ev["text"] >= 0, lut[np.maximum(ev["text"], 0)], -1)
        # Detail fields are not free text: radiology_detail's hold the original note ids of
        # linked reports, discharge_detail's the author, poe_detail's times ("Consult Status
        # Time"), none under this copy's keys or offsets. A user table's text is whatever the
        # user's file holds (issue 24: "consent of patient 10021312 signed 2113-08-16", an
        # original id and an unshifted date). Both dropped even with --keep-text.
        for name in [*ID_TEXT_TABLES, *user_tables(sources)]:
            drop = (ev["source"] == _source_id(sources, name)) & (ev["text"] >= 0)
            if drop.any():
                counts["text_dropped"][name] = int(drop.sum())
                ev["text"] = np.where(drop, -1, ev["text"])
    else:
        has = ev["text"] >= 0
        for s, n in zip(*np.unique(ev["source"][has], return_counts=True)):
            counts["text_dropped"][sources.get(int(s), str(s))] = int(n)
        ev["text"] = np.full(len(ev["text"]), -1, np.int32)

    # the build's order, (time, source, code, value), stable: new code ids and a moved birth
    # can reorder ties
    order = np.lexsort((_value_order(ev["value"]), ev["code"], ev["source"], ev["time"]))
    if not np.array_equal(order, np.arange(len(order))):
        ev = {k: v[order] for k, v in ev.items()}
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    texts, ev["text"] = _first_use(ev["text"], pool)
    notes = sorted((int(inverse[e]), None if n is None else str(keyed_id(key, "note_id", n)))
                   for e, n in zip(rec["notes"]["event"], rec["notes"]["note_id"]))
    new_adm = ({**_times(adm, ADMISSION_TIMES, offset),
                "hadm_id": [hadm[h] for h in adm["hadm_id"]]} if adm else {})
    new_stays = ({**_times(stays, STAY_TIMES, offset),
                  "hadm_id": [hadm.get(h) for h in stays["hadm_id"]],
                  "stay_id": [stay[s] for s in stays["stay_id"]]} if stays else {})
    # The windows are made again, as the build makes them, on the copy's events: a grid
    # shifted with the patient would start at `offset mod step` past a multiple of the step
    # (the build floors starts to multiples of it), which tells the offset modulo the step
    # for any step that does not divide a week (issue 24: 79 of 100 demo patients with 100
    # min); and the dropped concepts leave the aggregates too. For a step that divides a
    # week and no dropped concept, they are the source's, shifted.
    windows = patient_windows(ev["time"], ev["concept"], ev["concept_value"], ev["flags"],
                              new_stays, new_adm, grid)
    out = {"format": rec["format"], "subject_id": new_sid, "static": static,
           "admissions": new_adm, "stays": new_stays,
           "events": events_to_bytes(ev), "texts": texts,
           "notes": {"event": [e for e, _ in notes], "note_id": [n for _, n in notes]},
           "windows": windows}
    for k in rec:  # keys a later format version adds are not silently copied
        if k not in out:
            raise ValueError(f"record key {k!r} is unknown to the de-identification")
    return out, counts


def _recode(ev: dict, codes: CodeMap) -> dict:
    """New code ids in place; concept, concept_value and the flags computed from the
    original code cleared where `codes` says so. Returns counts."""
    old = ev["code"]
    ev["code"] = codes.lut[old]
    if (ev["code"] < 0).any():
        raise ValueError("a record uses a code the version's codes.parquet counts for no "
                         "patient: records and codes.parquet disagree")
    drop = ~codes.keep_concept[old] & (ev["concept"] >= 0)
    clear = (np.where(~codes.keep_concept[old], RANGE_BIT, 0)
             | np.where(~codes.keep_outlier[old], OUTLIER_BIT, 0)).astype(np.uint8)
    cleared = (ev["flags"] & clear) != 0
    ev["concept"] = np.where(drop, -1, ev["concept"]).astype(ev["concept"].dtype)
    ev["concept_value"] = np.where(drop, np.nan, ev["concept_value"]).astype(
        ev["concept_value"].dtype)
    ev["flags"] = (ev["flags"] & ~clear).astype(ev["flags"].dtype)
    return {"concept_dropped": int(drop.sum()), "flags_cleared": int(cleared.sum())}


def user_tables(sources: dict) -> list[str]:
    """The names of `sources` that are not MIMIC-IV tables of the build: EXTRA_TABLES'."""
    from ..events.tables import SOURCE_ID

    return [n for n in sources.values() if n not in SOURCE_ID]


def _map_ids(col: np.ndarray, keyed: dict) -> np.ndarray:
    """Each id of `col` by its keyed id, -1 (none) where `keyed` has none."""
    if not keyed:
        return np.full(len(col), -1, np.int64)
    old = np.array(sorted(keyed), np.int64)
    new = np.array([keyed[k] for k in old.tolist()], np.int64)
    at = np.minimum(np.searchsorted(old, col), len(old) - 1)
    return np.where(old[at] == col, new[at], -1)


def _first_use(col: np.ndarray, pool: list) -> tuple[list, np.ndarray]:
    """The record's texts as the build writes them: distinct strings in order of first use,
    and the events' indexes into them (-1: none)."""
    has = col >= 0
    u, first = np.unique(col[has], return_index=True)
    index, lut = {}, np.full(len(pool) or 1, -1, np.int32)
    for t in u[np.argsort(first)].tolist():
        lut[t] = index.setdefault(pool[t], len(index))
    return list(index), np.where(has, lut[np.maximum(col, 0)], -1).astype(np.int32)


def _source_id(sources: dict, name: str) -> int:
    return next((i for i, n in sources.items() if n == name), -1)


def patient_codes(rec: dict) -> np.ndarray:
    """The distinct code ids of one decoded record."""
    return np.unique(rec["events"]["code"])


def qc_for_copy(qc: dict, kept: set, keep: tuple, cleaning_keep: tuple) -> tuple[dict, dict]:
    """The copy's qc_report.json: per-table counts without input paths; per-code entries
    only for codes of at least K patients (the others name rare codes); keys outside `keep`
    (and `cleaning_keep` within "cleaning") dropped. Returns it and what was removed."""
    out = {k: qc[k] for k in keep if k in qc}
    out["tables"] = {t: {k: v for k, v in d.items() if k != "input"}
                     for t, d in qc.get("tables", {}).items()}
    cleaning = {k: v for k, v in qc.get("cleaning", {}).items() if k in cleaning_keep}
    removed = {"input_paths": sum("input" in d for d in qc.get("tables", {}).values()),
               "keys": sorted(set(qc) - set(keep)) + sorted(
                   f"cleaning.{k}" for k in set(qc.get("cleaning", {})) - set(cleaning_keep))}
    for name in ("codes", "unit_conversions"):
        if name in cleaning:
            rows = cleaning[name]
            cleaning[name] = [r for r in rows if r.get("code") in kept]
            removed[f"cleaning.{name}_entries_of_rare_codes"] = len(rows) - len(cleaning[name])
    out["cleaning"] = cleaning
    return out, removed


# ---- the reports --------------------------------------------------------------------------

# A number standing alone in a string (not part of a hex digest or a word): the form an id
# takes in a file name or a message ("admissions_10000032_fixed.csv", "patient 10000032").
_NUMBER = re.compile(r"(?<![0-9A-Za-z])[0-9]+(?![0-9A-Za-z])")


def numbers_in_strings(obj, path: str = "") -> list[tuple[str, int]]:
    """(where, number) for every number standing alone in a string of a JSON-like document,
    keys included: what a report's text could carry an id in."""
    out = []
    if isinstance(obj, str):
        out += [(path, int(m)) for m in _NUMBER.findall(obj)]
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out += numbers_in_strings(str(k), f"{path}/{k}")
            out += numbers_in_strings(v, f"{path}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out += numbers_in_strings(v, f"{path}[{i}]")
    return out


def public_warnings(warnings: list[str], tables: set[str]) -> tuple[list[str], int]:
    """The source's dataset.json warnings that may go into the copy, and how many are
    withheld. Kept: only the fixed message "table <module>/<name> not found in DATA_DIR:
    skipped" naming one of `tables` (the build's own MIMIC-IV tables), which can hold no id
    and no path. Every other warning can name a file, a cache entry or an id (issue 24:
    "file hosp/old/admissions_10000032_fixed.csv not read") and is withheld."""
    kept = []
    for w in warnings:
        m = re.fullmatch(r"table (\S+) not found in DATA_DIR: skipped", w)
        if m and m.group(1) in tables:
            kept.append(w)
    return kept, len(warnings) - len(kept)
