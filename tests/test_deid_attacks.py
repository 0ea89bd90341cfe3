"""`export share` under attack (issue 24): each test is one attack an adversary holding only
the copy and a raw MIMIC-IV download would try, on the real demo and on the synthetic demo
(with notes), each with a user table (a fact placed at birth, and a comment naming the
patient and an unshifted date), a stray input file whose name holds a subject id, and a stray
file of that kind in the version folder; with the default window step (60 min) and an odd one
(100 min), with and without `--keep-text`.

The tests know the key, so they know each patient's true offset: "better than chance" is
measured against it. Four builds (two datasets, two steps; those of one dataset share a
stage-1 cache) and eight copies, each made and decoded once: about 20 s on 2 cores.
"""
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import msgpack
import numpy as np
import polars as pl
import pytest

from jobs.export_share import export_share
from trajectory import synth
from trajectory.cleaning.flags import rule_mask
from trajectory.use import deid
from trajectory.use.store import open_version
from trajectory.windows.grids import GridSpec, patient_windows

from .conftest import REPO, demo_dir, make_cfg

KEY = b"attack-test-key-0123456789abcdef"
WEEK, DAY, YEAR = 7 * 86400, 86400, deid.YEAR
# 8-digit runs: MIMIC-IV's subject, hadm and stay ids (and the synthetic ones) have 8 digits
ID_TOKEN = re.compile(r"(?<!\d)\d{8}(?!\d)")

USER_TOML = """
# attack fixture: a consent registry keyed by subject_id, a fact at birth and a comment
[[table]]
name = "consent_registry"
file = "consent.csv"
key = "subject_id"

[[table.event]]
name = "genotype"
code = ["GENOTYPE", "genotype"]
at = "static"

[[table.event]]
name = "consent"
code = ["CONSENT"]
time = ["consent_time"]
text = ["comment"]
text_always = true
"""


# ---- the scenarios ------------------------------------------------------------------------


def _raw_demo(root: Path) -> Path:
    """The real demo as links, so a stray file can be added beside its tables."""
    src, raw = demo_dir(), root / "raw"  # skips the demo's cases where it is missing
    for module in ("hosp", "icu"):
        (raw / module).mkdir(parents=True)
        for f in (src / module).iterdir():
            (raw / module / f.name).symlink_to(f)
    return raw


def _add_user_table(raw: Path, spec_head: str = "") -> tuple[Path, int]:
    """The consent registry (every patient: a genotype at birth, a consent at the first
    admission with a comment naming the subject and the admission's date), a stray input
    file named after the first subject; returns the spec and that subject."""
    adm = (pl.read_csv(raw / "hosp" / "admissions.csv.gz",
                       columns=["subject_id", "admittime"],
                       schema_overrides={"admittime": pl.String})
           .group_by("subject_id").agg(pl.col("admittime").min()).sort("subject_id"))
    (raw / "extra").mkdir(exist_ok=True)
    pl.DataFrame({
        "subject_id": adm["subject_id"],
        "genotype": ["AA" if i % 2 else "AB" for i in range(adm.height)],
        "consent_time": adm["admittime"],
        "comment": [f"consent of patient {s} signed {t[:10]}"
                    for s, t in zip(adm["subject_id"], adm["admittime"])],
    }).write_csv(raw / "extra" / "consent.csv")
    spec = raw / "extra" / "attack_tables.toml"
    spec.write_text(spec_head + USER_TOML)
    first = int(adm["subject_id"][0])
    (raw / "hosp" / "old").mkdir()
    (raw / "hosp" / "old" / f"admissions_{first}_fixed.csv").write_text("subject_id\n")
    return spec, first


@pytest.fixture(scope="module")
def version(tmp_path_factory):
    """(dataset, step) -> (raw folder, its built version), each made once per module; the
    builds of one dataset share a stage-1 cache. Lazy: without the real demo, only its
    cases skip."""
    from jobs.driver import run_build

    raws, versions = {}, {}

    def raw_of(dataset: str) -> tuple:
        if dataset not in raws:
            root = tmp_path_factory.mktemp(f"attack_raw_{dataset}")
            if dataset == "demo":
                raws[dataset] = (_raw_demo(root), "")
            else:
                raws[dataset] = (synth.generate(root / "raw", n_patients=60, seed=11),
                                 synth.EXTRA_TOML)  # notes, and the generator's registry
            raws[dataset] = (raws[dataset][0], *_add_user_table(*raws[dataset]))
        return raws[dataset]

    def get(dataset: str, step: int) -> tuple[Path, Path]:
        if (dataset, step) not in versions:
            raw, spec, first = raw_of(dataset)
            out = tmp_path_factory.mktemp(f"attack_{dataset}_{step}")
            cfg = make_cfg(raw, out, extra_tables=str(spec), window_step_minutes=step,
                           cache_dir=str(raw.parent / "cache"))
            run_build(cfg, progress=False)
            (cfg.version_dir / f"export_{first}.csv").write_text("kept aside\n")
            versions[dataset, step] = cfg.version_dir
        return raw_of(dataset)[0], versions[dataset, step]
    return get


SCENARIOS = [(d, s, t) for d in ("demo", "synth") for s in (60, 100) for t in (False, True)]


@pytest.fixture(scope="module", params=SCENARIOS,
                ids=[f"{d}-step{s}-{'text' if t else 'notext'}" for d, s, t in SCENARIOS])
def case(request, version, tmp_path_factory):
    """One copy, decoded once, with what the test (not the attacker) knows: the source.
    Module scope with parameters: pytest runs every test of one copy, then drops it."""
    dataset, step, keep_text = request.param
    raw, vdir = version(dataset, step)
    root = tmp_path_factory.mktemp("attack_copy")
    key = root / "key"
    key.write_bytes(KEY)
    out = root / "copy"
    export_share(vdir, out, key_file=key, keep_text=keep_text, progress=False)
    return Case(dataset, step, keep_text, raw, vdir, out)


class Case:
    def __init__(self, dataset, step, keep_text, raw, vdir, out):
        self.dataset, self.step, self.keep_text, self.raw = dataset, step * 60, keep_text, raw
        self.vdir, self.out = vdir, out
        src, copy = open_version(vdir), open_version(out)
        self.meta = copy.meta
        self.orig = {deid.keyed_id(KEY, "subject_id", s): s for s in src.subject_ids}
        self.offset = {k: deid.time_offset(KEY, s) for k, s in self.orig.items()}
        self.src = {s: src.raw(s) for s in src.subject_ids}
        self.copy = {s: copy.raw(s) for s in copy.subject_ids}
        self.manifest = {r["subject_id"]: r for r in copy.manifest.iter_rows(named=True)}
        self.src_manifest = {r["subject_id"]: r for r in src.manifest.iter_rows(named=True)}
        self.t_first = {}
        for sid, r in self.manifest.items():
            with open(out / r["path"], "rb") as f:
                f.seek(r["offset"])
                outer = msgpack.unpackb(f.read(r["bytes"]), raw=False)
            self.t_first[sid] = outer["chunks"]["t_first"]
        self.codes, self.src_codes = copy.codes, src.codes
        self.sources = {int(i): n for i, n in copy.meta["sources"].items()}
        ids = set()
        for r in self.src.values():
            ids.add(r["subject_id"])
            ids.update(r["admissions"].get("hadm_id", []), r["stays"].get("stay_id", []))
        self.ids = {str(i) for i in ids}


# ---- helpers ------------------------------------------------------------------------------


def _year(t: int) -> int:
    return int(np.datetime64(int(t), "s").astype("datetime64[Y]").astype(int)) + 1970


def _jan1(year: int) -> int:
    return int((np.datetime64(f"{year:04d}-01-01") - np.datetime64("1970-01-01"))
               .astype("timedelta64[s]").astype(int))


def _doy(t: int) -> float:
    return (t - _jan1(_year(t))) / DAY


def _times(rec: dict) -> list[int]:
    """Every time of a record: events, admissions, stays, death."""
    out = rec["events"]["time"].tolist()
    for section in (rec["admissions"], rec["stays"]):
        for c in deid.ADMISSION_TIMES + deid.STAY_TIMES:
            out += [t for t in section.get(c, []) if t is not None]
    if rec["static"].get("dod") is not None:
        out.append(rec["static"]["dod"])
    return out


def _strings(obj):
    """Every string of a JSON document, keys included."""
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def _chance(hits: int, n: int, rate: float) -> bool:
    """At most what guessing gives (`rate`), with room for the luck of n draws (3 sigma)."""
    return hits <= n * rate + 3 * np.sqrt(n * rate * (1 - rate)) + 1


# ---- 1. the shift cannot be undone --------------------------------------------------------


def _birth_convention_offsets(birth: int) -> list[int]:
    """Every admissible offset (whole weeks, 1 to 260 either way) under which the copy's birth
    time was the source's: Jan 1, 00:00 (the build's convention for every patient)."""
    out = []
    for w in range(-deid.MAX_SHIFT_WEEKS, deid.MAX_SHIFT_WEEKS + 1):
        t = birth - w * WEEK
        if w and t == _jan1(_year(t)):
            out.append(w * WEEK)
    return out


def _pinned_offsets(static: dict) -> list[int]:
    """The issue's pin: birth was Jan 1 of anchor_year - anchor_age, and anchor_year moved by
    the offset in whole years; the offsets that fit both."""
    fits = []
    for o in _birth_convention_offsets(static["birth_time"]):
        r = int(np.floor(o / YEAR + 0.5))
        for age in {static["anchor_age"], 91}:  # MIMIC writes 91 for every age over 89
            if static["birth_time"] - o == _jan1(static["anchor_year"] - r - age):
                fits.append(o)
    return fits or _birth_convention_offsets(static["birth_time"])


def test_attack1_shift_cannot_be_undone_and_joined(case):
    """Undo each patient's shift from the copy's own fields, then join the admission times
    against raw admissions: no better than guessing an offset."""
    adm = pl.read_csv(case.raw / "hosp" / "admissions.csv.gz",
                      columns=["subject_id", "admittime"],
                      schema_overrides={"admittime": pl.String})
    times = adm["admittime"].str.to_datetime("%Y-%m-%d %H:%M:%S").dt.epoch("s")
    by_time: dict = {}
    for s, t in zip(adm["subject_id"].to_list(), times.to_list()):
        by_time.setdefault(t, set()).add(s)
    found = tried = 0
    for sid, rec in case.copy.items():
        candidates = _pinned_offsets(rec["static"])
        tried += len(candidates)
        for o in candidates:
            hits = [by_time.get(t - o, set()) for t in rec["admissions"].get("admittime", [])]
            match = set.intersection(*hits) if hits else set()
            if match == {case.orig[sid]}:
                found += 1
                break
    n = len(case.copy)
    # guessing: each candidate is right with probability 1 / 520
    assert _chance(found, n, max(tried / n, 1) / (2 * deid.MAX_SHIFT_WEEKS)), \
        f"{found} of {n} patients re-identified by undoing the shift"


def _fields(case: Case, which: str) -> dict:
    """keyed (or source) subject -> {field: time} of the copy (or the source)."""
    recs = case.copy if which == "copy" else case.src
    man = case.manifest if which == "copy" else case.src_manifest
    out = {}
    for sid, rec in recs.items():
        st, adm = rec["static"], rec["admissions"]
        f = {"birth_time": st["birth_time"], "anchor_year": _jan1(st["anchor_year"]),
             "first_time": man[sid]["first_time"], "last_time": man[sid]["last_time"],
             "dod": st.get("dod"),
             "admittime": (adm.get("admittime") or [None])[0],
             "window_start": rec["windows"][0]["start"] if rec["windows"] else None}
        if which == "copy":
            f["chunk_t_first"] = case.t_first[sid][0] if case.t_first[sid] else None
        else:
            f["chunk_t_first"] = man[sid]["first_time"]
        out[sid] = f
    return out


def test_attack1_no_field_tells_the_offset_modulo_a_year(case):
    """For every published time, the attacker (who can rebuild the source from raw MIMIC-IV
    and knows where its values fall in the year) guesses the offset modulo a year as the
    copy's day of the year minus the source's most common day (of 7-day bins). No field may
    do better than that guess on a field spread over the year."""
    src, copy = _fields(case, "source"), _fields(case, "copy")
    names = next(iter(copy.values())).keys()
    bad = {}
    for name in names:
        days = [_doy(f[name]) for f in src.values() if f[name] is not None]
        if len(days) < 10:
            continue
        mode = (np.bincount(np.floor(np.array(days) / 7).astype(int)).argmax() + 0.5) * 7
        hits = n = 0
        for sid, f in copy.items():
            if f[name] is None:
                continue
            n += 1
            guess = (_doy(f[name]) - mode) % 365.2425
            true = (case.offset[sid] / DAY) % 365.2425
            d = abs(guess - true)
            hits += min(d, 365.2425 - d) <= 4.5  # the bin's half width, and leap days
        if not _chance(hits, n, 0.05):
            bad[name] = f"{hits} of {n}"
    assert not bad, f"offset modulo a year read off: {bad}"


def test_attack1_time_of_day_and_weekday_carry_nothing(case):
    """Whole-week offsets: time of day and weekday are the source's exactly, so they say
    nothing about the offset; the offsets spread over the whole range, both signs."""
    off = np.array(list(case.offset.values()))
    assert (off % WEEK == 0).all() and (off != 0).all()
    assert np.abs(off).max() <= deid.MAX_SHIFT_WEEKS * WEEK
    assert (off > 0).mean() > 0.25 and (off < 0).mean() > 0.25


def test_attack1_anchor_fields_are_not_the_offset(case):
    """anchor_year: its distance to the patient's own times is the source's (it says nothing
    the times do not); anchor_year_group is the source's (it does not depend on the shift)."""
    moved = 0
    for sid, rec in case.copy.items():
        src = case.src[case.orig[sid]]
        assert rec["static"]["anchor_year_group"] == src["static"]["anchor_year_group"]
        last, last_src = max(_times(_own(rec))), max(_times(_own(src)))
        gap, gap_src = (_year(last) - rec["static"]["anchor_year"],
                        _year(last_src) - src["static"]["anchor_year"])
        moved += gap != gap_src and rec["static"]["anchor_age"] != deid.AGE_CAP
    assert moved == 0, f"{moved} of {len(case.copy)} anchor years moved with the offset"


def _own(rec: dict) -> dict:
    """The record without its birth-placed events (their time is the birth's)."""
    ev = rec["events"]
    keep = ev["time"] != rec["static"]["birth_time"]
    return {**rec, "events": {k: v[keep] for k, v in ev.items()}}


# ---- 2. no age over 90 --------------------------------------------------------------------


def test_attack2_no_age_over_90_by_any_rule(case):
    """MIMIC-IV's rule (anchor_age + year - anchor_year) and the birth time (time -
    birth_time) give no age over 90 at any time; ages of 90 and over are all 90 at the last
    time, whatever the source's anchor_age was."""
    over, wrong = [], []
    for sid, rec in case.copy.items():
        st = rec["static"]
        times = np.array(_times(rec) + [w["start"] for w in rec["windows"]], np.int64)
        years = times.astype("datetime64[s]").astype("datetime64[Y]").astype(np.int64) + 1970
        mimic = int(st["anchor_age"] + years.max() - st["anchor_year"])
        by_birth = (int(times.max()) - st["birth_time"]) / YEAR
        if mimic > deid.AGE_CAP or by_birth > deid.AGE_CAP or st["anchor_age"] > deid.AGE_CAP:
            over.append((mimic, round(by_birth, 2)))
        ss = case.src[case.orig[sid]]["static"]
        src_age = ss["anchor_age"] + _year(max(_times(_own(case.src[case.orig[sid]])))) - \
            ss["anchor_year"]
        top = src_age >= deid.AGE_CAP or ss["anchor_age"] > deid.AGE_CAP - 1
        if (mimic, st["anchor_age"] == deid.AGE_CAP) != \
                ((deid.AGE_CAP, True) if top else (src_age, False)):
            wrong.append((src_age, mimic, st["anchor_age"]))
    assert not over, f"ages over {deid.AGE_CAP} (MIMIC's rule, by birth time): {over[:5]}"
    assert not wrong, f"age at the last time (source, copy, anchor_age): {wrong[:5]}"


# ---- 3. what is at birth moves with birth -------------------------------------------------


def test_attack3_events_at_birth_move_with_birth(case):
    """Every event the source places at birth (BIRTH, GENDER, a user table's `static`) is at
    the copy's birth time; none lies 90 years before the patient's last time."""
    codes = case.codes["code"].to_list()
    src_codes = case.src_codes["code"].to_list()
    n_static, left = 0, []
    for sid, rec in case.copy.items():
        src = case.src[case.orig[sid]]
        at_birth = src["events"]["time"] == src["static"]["birth_time"]
        want = Counter(src_codes[c].split("//")[0] for c in src["events"]["code"][at_birth])
        assert want["BIRTH"] == 1, want
        n_static += want["GENOTYPE"]
        ev = rec["events"]
        here = ev["time"] == rec["static"]["birth_time"]
        got = Counter(codes[c].split("//")[0] for c in ev["code"][here])
        if got != want:
            left.append((sorted((want - got).elements()),
                         round((max(_times(rec)) - ev["time"].min()) / YEAR, 1)))
    assert n_static >= len(case.copy) // 2  # the user table's fact at birth
    assert not left, f"{len(left)} patients: left behind by birth (years before the last " \
        f"time): {left[:5]}"


# ---- 4. no path, file name or id in the reports -------------------------------------------


def test_attack4_no_path_name_or_id_in_the_reports(case):
    stray = [p.name for p in (case.raw / "hosp" / "old").iterdir()] + [
        p.name for p in case.vdir.glob("export_*")]
    for name in ("dataset.json", "deid_report.json", "qc_report.json"):
        doc = json.loads((case.out / name).read_text())
        for s in _strings(doc):
            assert not any(x in s for x in stray), (name, s)
            assert "/old/" not in s and "old/" not in s, (name, s)
            assert not s.startswith(("/", "~")) and str(case.raw) not in s, (name, s)
            assert not set(ID_TOKEN.findall(s)) & case.ids, (name, s)
    report = json.loads((case.out / "deid_report.json").read_text())
    assert report["warnings_withheld"] >= 1  # the stray input file's


# ---- 5. a generalised code cannot be named through its concept, unit or label -------------


def test_attack5_generalised_codes_do_not_name_the_rare_one(case):
    """Each code of the copy carries one concept on all its events (concept is a function of
    the original code: two would tell members apart); the flags computed from the original
    code (range from its concept, outlier from its own thresholds) are not set where the
    concept is gone; a new string's table, label and unit are its members' common ones."""
    per_code: dict = {}
    range_bit, outlier_bit = 1 << 0, 1 << 1
    for rec in case.copy.values():
        ev = rec["events"]
        for c, k in set(zip(ev["code"].tolist(), ev["concept"].tolist())):
            per_code.setdefault(c, set()).add(k)
        no_concept = ev["concept"] < 0
        assert not (ev["flags"][no_concept] & range_bit).any()
    strings = case.codes["code"].to_list()
    mixed = {strings[c]: sorted(k) for c, k in per_code.items() if len(k) > 1}
    assert not mixed, f"codes whose concept tells members apart: {list(mixed.items())[:5]}"
    src = set(case.src_codes["code"].to_list())
    new = [s for s in strings if s not in src]
    generalised = {i for i, s in enumerate(strings) if s in new}
    for rec in case.copy.values():
        ev = rec["events"]
        assert not (ev["flags"][np.isin(ev["code"], list(generalised))] & outlier_bit).any()
    own = case.src_codes.filter(pl.col("count") > 0)
    copy_strings = set(strings)
    for row in case.codes.filter(pl.col("code").is_in(new)).iter_rows(named=True):
        s = row["code"]
        members = own.filter(pl.col("code").str.starts_with(s + "//"))
        members = members.filter(pl.Series([_target(c, copy_strings) == s
                                            for c in members["code"].to_list()],
                                           dtype=pl.Boolean))
        for col in ("table", "label", "unit"):
            values = set(members[col].to_list())
            assert row[col] is None or values == {row[col]}, (s, col, row[col], values)


def _target(code: str, strings: set) -> str | None:
    """The longest prefix of `code` that is a string of the copy."""
    parts = code.split("//")
    for i in range(len(parts), 0, -1):
        s = "//".join(parts[:i])
        if s in strings:
            return s
    return None


# ---- 6. window starts --------------------------------------------------------------------


def test_attack6_window_starts_leak_nothing(case):
    """Every window starts on the copy's own clock (a multiple of the step), so `start %
    step` is the same for every patient; and the windows are those the build's own function
    gives on the copy's events (no aggregate of a dropped concept is left in them)."""
    assert case.meta["windows"]["step_seconds"] == case.step
    spec = GridSpec(step=case.step, max_windows=case.meta["windows"]["max"],
                    admissions=case.meta["windows"]["admissions"],
                    n_concepts=len(case.meta["concepts"]),
                    exclude=rule_mask(case.meta["windows"]["exclude"]))
    leaks = off_grid = n = 0
    for sid, rec in case.copy.items():
        starts = [w["start"] for w in rec["windows"]]
        n += bool(starts)
        leaks += any(s % case.step == case.offset[sid] % case.step != 0 for s in starts)
        off_grid += any(s % case.step for s in starts)
    assert leaks == off_grid == 0, \
        f"start % step is the offset % step for {leaks} of {n} patients with windows"
    for sid, rec in case.copy.items():
        ev = rec["events"]
        again = patient_windows(ev["time"], ev["concept"], ev["concept_value"], ev["flags"],
                                rec["stays"], rec["admissions"], spec)
        assert len(again) == len(rec["windows"])
        for a, b in zip(again, rec["windows"]):
            assert (a["kind"], a["id"], a["start"], a["features"], a["shape"]) == \
                (b["kind"], b["id"], b["start"], b["features"], b["shape"])
            assert np.array_equal(np.frombuffer(a["data"], "<f4"),
                                  np.asarray(b["data"], "<f4").ravel(), equal_nan=True)
    assert n > 10


# ---- 7. --keep-text -----------------------------------------------------------------------


def test_attack7_no_id_or_unshifted_date_in_texts(case):
    """With or without --keep-text: a user table's text (here: a subject id and an unshifted
    date) is not in the copy; no text holds an original id; what --keep-text keeps is said in
    the report and in the CLI's help."""
    comments = set(pl.read_csv(case.raw / "extra" / "consent.csv")["comment"].to_list())
    n_texts = n_user = 0
    for rec in case.copy.values():
        for t in rec["texts"]:
            n_texts += 1
            assert t not in comments and "consent of patient" not in t, t
            assert not set(ID_TOKEN.findall(t)) & case.ids, t
        user = np.isin(rec["events"]["source"],
                       [i for i, n in case.sources.items() if n == "consent_registry"])
        n_user += int(user.sum())
        assert (rec["events"]["text"][user] == -1).all()
    assert n_user >= len(case.copy) and (n_texts > 0) == case.keep_text
    report = json.loads((case.out / "deid_report.json").read_text())["text"]
    assert report["kept"] is case.keep_text
    assert "consent_registry" in report["events_with_text_dropped"]
    if case.keep_text:
        assert "verbatim" in report["what_is_kept"] and "user tables" in report["what_is_kept"]


def test_cli_help_says_what_keep_text_keeps():
    out = subprocess.run([sys.executable, "build_patient_files.py", "export", "--help"],
                         cwd=REPO, check=True, capture_output=True, text=True).stdout
    help_text = " ".join(out.split())
    assert "verbatim" in help_text and "user tables" in help_text and "dates" in help_text


# ---- what an attacker can still measure (docs/SHARE.md) -----------------------------------


def test_structure_still_matches_a_copy_to_its_source(case):
    """SHARE.md says so, and what a user must add to stop it: structure is kept on purpose.
    The number of events per patient alone finds every demo patient's source record; and the
    offset's range is public, so trying each of the 520 offsets and joining admit and
    discharge times on raw admissions finds every one too, though no field of the copy tells
    the offset (the attacks above)."""
    if case.dataset != "demo" or case.step != 3600 or case.keep_text:
        pytest.skip("measured once, on the demo")
    counts = Counter(r["n_events"] for r in case.src_manifest.values())
    unique = sum(counts[case.manifest[s]["n_events"]] == 1 for s in case.copy)
    assert unique == len(case.copy) == 100
    adm = pl.read_csv(case.raw / "hosp" / "admissions.csv.gz",
                      columns=["subject_id", "admittime", "dischtime"],
                      schema_overrides={"admittime": pl.String, "dischtime": pl.String})
    epoch = [adm[c].str.to_datetime("%Y-%m-%d %H:%M:%S").dt.epoch("s").to_list()
             for c in ("admittime", "dischtime")]
    raw: dict = {}
    for s, a, d in zip(adm["subject_id"].to_list(), *epoch):
        raw.setdefault((a, d), set()).add(s)
    weeks = [w for w in range(-deid.MAX_SHIFT_WEEKS, deid.MAX_SHIFT_WEEKS + 1) if w]
    found = 0
    for sid, rec in case.copy.items():
        a = rec["admissions"]
        match = set()
        for w in weeks:
            o = w * WEEK
            hits = [raw.get((x - o, y - o), set()) for x, y in zip(a["admittime"],
                                                                    a["dischtime"])]
            match |= set.intersection(*hits) if hits else set()
        found += match == {case.orig[sid]}
    assert found == len(case.copy) == 100
    share = " ".join((REPO / "docs" / "SHARE.md").read_text().split())
    assert "Trying all 520 offsets" in share and "100 of 100" in share
    assert "sampling" in share and "noise on counts" in share
